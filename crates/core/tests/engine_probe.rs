//! The engine probe against real processes: found, killed, restarted; by pid file, by
//! process name and by listening address.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::net::TcpListener;
use std::process::Child;
use std::time::Duration;

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
/// The probe re-finds the engine every 5 s; allow two rounds.
const REFIND: Duration = Duration::from_secs(12);

fn value(exporter: &Exporter, series: &str) -> Option<f64> {
    sample_value(&exporter.scrape_text(), series)
}

fn wait_for(exporter: &Exporter, series: &str, want: f64) {
    let got = eventually(REFIND, || value(exporter, series).filter(|v| *v == want));
    assert_eq!(
        got,
        Some(want),
        "{series} never became {want}: {}",
        exporter.scrape_text()
    );
}

fn spawn_engine(dir: &TempDir, name: &str) -> Child {
    testkit::spawn_fake_engine(dir, name)
}

#[test]
fn engine_found_by_pid_file_then_killed_then_restarted() {
    let dir = TempDir::new("engine-pid");
    let pid_file = dir.join("engine.pid");
    let mut engine = spawn_engine(&dir, "engine-a");
    std::fs::write(&pid_file, engine.id().to_string()).unwrap();
    let exporter = Exporter::start(BIN, &[&format!("--engine.pid-file={}", pid_file.display())]);
    wait_for(&exporter, "fixture_exporter_engine_up", 1.0);
    let rss = value(&exporter, "fixture_memory_used_bytes").expect("memory series");
    assert!(rss > 100_000.0 && rss < 1e9, "engine RSS {rss}");
    assert!(
        eventually(REFIND, || value(&exporter, "fixture_cpu_usage_percent")
            .filter(|v| v.is_finite()))
        .is_some(),
        "cpu percent becomes a number"
    );
    let cpu = value(&exporter, "fixture_cpu_seconds_total").expect("engine CPU counter");
    assert!(
        (0.0..10.0).contains(&cpu),
        "a sleeping engine used {cpu} s of CPU"
    );
    // Scrapes do not move the percentage: it is taken over a fixed window in the background.
    let a = value(&exporter, "fixture_cpu_usage_percent");
    let b = value(&exporter, "fixture_cpu_usage_percent");
    assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits));

    engine.kill().unwrap();
    engine.wait().unwrap();
    // The scrape itself notices the process is gone.
    assert_eq!(value(&exporter, "fixture_exporter_engine_up"), Some(0.0));
    assert!(value(&exporter, "fixture_memory_used_bytes").is_some_and(f64::is_nan));
    assert_eq!(
        value(&exporter, "fixture_cpu_seconds_total"),
        None,
        "absent, not 0"
    );

    let mut engine = spawn_engine(&dir, "engine-a");
    std::fs::write(&pid_file, engine.id().to_string()).unwrap();
    wait_for(&exporter, "fixture_exporter_engine_up", 1.0);
    engine.kill().unwrap();
    engine.wait().unwrap();
}

#[test]
fn engine_found_by_process_name() {
    let dir = TempDir::new("engine-name");
    let name = format!("eng-{}", std::process::id() % 100_000);
    let exporter = Exporter::start(BIN, &[&format!("--engine.process-name={name}")]);
    assert_eq!(
        value(&exporter, "fixture_exporter_engine_up"),
        Some(0.0),
        "absent engine: series exists, 0"
    );
    let mut engine = spawn_engine(&dir, &name);
    wait_for(&exporter, "fixture_exporter_engine_up", 1.0);
    engine.kill().unwrap();
    engine.wait().unwrap();
    wait_for(&exporter, "fixture_exporter_engine_up", 0.0);
    // Restarted under a new pid: the probe keeps the process it found only while it lives.
    let mut engine = spawn_engine(&dir, &name);
    wait_for(&exporter, "fixture_exporter_engine_up", 1.0);
    engine.kill().unwrap();
    engine.wait().unwrap();
    wait_for(&exporter, "fixture_exporter_engine_up", 0.0);
}

#[test]
fn engine_found_by_listening_address_and_up_needs_connections() {
    // This test process plays the engine: it listens on the address.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let exporter = Exporter::start(BIN, &[&format!("--engine.address={addr}")]);
    wait_for(&exporter, "fixture_exporter_engine_up", 1.0);
    let health: serde_json::Value =
        serde_json::from_slice(&exporter.get("/health", &[]).body).unwrap();
    assert_eq!(health["sources"]["engine"]["state"], "ok", "{health}");
    drop(listener);
    wait_for(&exporter, "fixture_exporter_engine_up", 0.0);
    let health: serde_json::Value =
        serde_json::from_slice(&exporter.get("/health", &[]).body).unwrap();
    assert_eq!(health["sources"]["engine"]["state"], "degraded", "{health}");
}

/// A stale pid file that points at another process is not the engine when a process name is
/// also given; a pid file that is a FIFO is not read (it would block the probe for ever) and
/// the probe reports the engine down instead of "starting".
#[test]
fn a_stale_or_fifo_pid_file_is_not_trusted() {
    let dir = TempDir::new("pidfile-hostile");
    let mut other = spawn_engine(&dir, "unrelated");
    let stale = dir.join("stale.pid");
    std::fs::write(&stale, other.id().to_string()).unwrap();
    let exp = Exporter::start(
        BIN,
        &[
            &format!("--engine.pid-file={}", stale.display()),
            "--engine.process-name=the-real-engine",
        ],
    );
    wait_for(&exp, "fixture_exporter_engine_up", 0.0);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(value(&exp, "fixture_exporter_engine_up"), Some(0.0));
    drop(exp);

    let fifo = dir.join("fifo.pid");
    testkit::mkfifo(&fifo);
    let exp = Exporter::start(BIN, &[&format!("--engine.pid-file={}", fifo.display())]);
    wait_for(&exp, "fixture_exporter_engine_up", 0.0);
    let health = exp.get("/health", &[]).text();
    let up = eventually(REFIND, || {
        value(&exp, "fixture_exporter_source_up{source=\"engine\"}").filter(|v| *v == 0.0)
    });
    assert_eq!(up, Some(0.0), "engine source not down: {health}");
    let t = std::time::Instant::now();
    exp.terminate();
    assert!(t.elapsed() < Duration::from_secs(5));
    let _ = other.kill();
    let _ = other.wait();
}
