//! A /proc read that never returns. In the field it is `/proc/<pid>/cmdline` of a process
//! whose memory map is locked by a task stuck in the kernel (what makes `ps` hang); here a
//! FIFO bind-mounted over the engine's /proc file, in the exporter's own mount namespace,
//! blocks the exporter's open the same way. Either read hanging leaves /metrics answering
//! within 1 s, shows the engine as not up, and lets SIGTERM exit within 5 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use testkit::namespace::{mount_in, mount_namespaces_work, start_in_mount_namespace};
use testkit::{eventually, sample_value, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const ENGINE: &str = "hungengine";

fn spawn_engine(dir: &TempDir) -> Child {
    testkit::spawn_fake_engine(dir, ENGINE)
}

/// The background look-up by name reads every process's cmdline: the engine's never answers.
#[test]
fn a_hung_cmdline_read_leaves_scrapes_and_shutdown_alone() {
    if !mount_namespaces_work() {
        return;
    }
    let dir = TempDir::new("hung-cmdline");
    let mut engine = spawn_engine(&dir);
    let fifo = dir.join("never");
    testkit::mkfifo(&fifo);
    let target = format!("/proc/{}/cmdline", engine.id());
    let exp = start_in_mount_namespace(
        BIN,
        &[&format!("--engine.process-name={ENGINE}")],
        Some((&fifo, Path::new(&target))),
    );
    let source_down = eventually(Duration::from_secs(20), || {
        sample_value(
            &exp.scrape_text(),
            "fixture_exporter_source_up{source=\"engine\"}",
        )
        .filter(|v| *v == 0.0)
    });
    let health = exp.get("/health", &[]).text();
    assert_eq!(source_down, Some(0.0), "engine source not down: {health}");
    assert!(health.contains("engine probe hung"), "{health}");
    let (slowest, body) = exp.scrape_series(10, Duration::from_millis(200));
    eprintln!("hung cmdline: slowest of 10 scrapes {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    assert_eq!(sample_value(&body, "fixture_exporter_engine_up"), Some(0.0));
    exp.terminate_within(Duration::from_secs(5));
    let _ = engine.kill();
    let _ = engine.wait();
}

/// The engine was found; then its /proc/<pid>/stat stops answering before the first scrape
/// reads it.
#[test]
fn a_hung_stat_read_at_scrape_time_leaves_scrapes_and_shutdown_alone() {
    if !mount_namespaces_work() {
        return;
    }
    let dir = TempDir::new("hung-stat");
    let mut engine = spawn_engine(&dir);
    let exp = start_in_mount_namespace(BIN, &[&format!("--engine.process-name={ENGINE}")], None);
    // /health, not /metrics: the scrape's reader must not have opened the file yet.
    let pid = engine.id();
    let found = eventually(Duration::from_secs(20), || {
        exp.get("/health", &[])
            .text()
            .contains(&format!("engine pid {pid}"))
            .then_some(())
    });
    assert!(found.is_some(), "{}", exp.get("/health", &[]).text());
    let fifo = dir.join("never");
    testkit::mkfifo(&fifo);
    let stat = format!("/proc/{pid}/stat");
    let target = std::ffi::OsStr::new(&stat);
    mount_in(
        exp.pid(),
        &["--bind".as_ref(), fifo.as_os_str(), target],
        None,
    );
    let (slowest, body) = exp.scrape_series(10, Duration::from_millis(200));
    eprintln!("hung stat: slowest of 10 scrapes {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    assert_eq!(sample_value(&body, "fixture_exporter_engine_up"), Some(0.0));
    let memory = sample_value(&body, "fixture_memory_used_bytes");
    assert!(
        memory.is_none_or(f64::is_nan),
        "memory {memory:?}: unknown, not a number"
    );
    assert!(exp.logs().contains("engine_read_hung"), "{}", exp.logs());
    exp.terminate_within(Duration::from_secs(5));
    let _ = engine.kill();
    let _ = engine.wait();
}
