//! A /proc read that never returns. In the field it is `/proc/<pid>/cmdline` of a process
//! whose memory map is locked by a task stuck in the kernel (what makes `ps` hang); here a
//! FIFO bind-mounted over the engine's /proc file, in the exporter's own mount namespace,
//! blocks the exporter's open the same way. Either read hanging leaves /metrics answering
//! within 1 s, shows the engine as not up, and lets SIGTERM exit within 5 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const ENGINE: &str = "hungengine";

/// Mount namespaces are a machine permission, not a tool: a loud skip when refused.
fn mount_namespaces_work() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: this machine refuses mount namespaces (unshare -m) ***\n"
        );
    }
    ok
}

fn spawn_engine(dir: &TempDir) -> Child {
    testkit::spawn_fake_engine(dir, ENGINE)
}

/// Starts the exporter in a mount namespace of its own, private so nothing mounted there
/// reaches this machine's; with `bind = Some((fifo, target))` the FIFO is mounted over target
/// before the exporter runs.
fn exporter_in_namespace(args: &[&str], bind: Option<(&Path, &Path)>) -> Exporter {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let bind = bind.map(|(fifo, target)| (c(fifo), c(target)));
    let root = CString::new("/").unwrap();
    Exporter::start_customized(BIN, args, &[], move |cmd| {
        // SAFETY: unshare and mount are async-signal-safe system calls on C strings made
        // before the fork; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return fail();
                }
                let private = libc::MS_REC | libc::MS_PRIVATE;
                let none = std::ptr::null();
                if libc::mount(none, root.as_ptr(), none, private, std::ptr::null()) != 0 {
                    return fail();
                }
                if let Some((fifo, target)) = &bind {
                    let flags = libc::MS_BIND;
                    if libc::mount(
                        fifo.as_ptr(),
                        target.as_ptr(),
                        none,
                        flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                }
                Ok(())
            });
        }
    })
}

/// Ten scrapes, 200 ms apart: the slowest, and the last body.
fn scrape_ten(exp: &Exporter) -> (Duration, String) {
    let mut slowest = Duration::ZERO;
    let mut body = String::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = testkit::try_request("GET", &exp.url("/metrics"), &[("Accept", "text/plain")])
            .unwrap_or_else(|e| panic!("scrape failed: {e}; {}", exp.logs()));
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
        body = r.text();
        std::thread::sleep(Duration::from_millis(200));
    }
    (slowest, body)
}

fn terminates_quickly(exp: Exporter) {
    let t = Instant::now();
    let status = exp.terminate();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        t.elapsed()
    );
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
    let exp = exporter_in_namespace(
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
    let (slowest, body) = scrape_ten(&exp);
    eprintln!("hung cmdline: slowest of 10 scrapes {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    assert_eq!(sample_value(&body, "fixture_exporter_engine_up"), Some(0.0));
    terminates_quickly(exp);
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
    let exp = exporter_in_namespace(&[&format!("--engine.process-name={ENGINE}")], None);
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
    let mounted = Command::new("nsenter")
        .args(["-t", &exp.pid().to_string(), "-m", "mount", "--bind"])
        .arg(&fifo)
        .arg(format!("/proc/{pid}/stat"))
        .status()
        .expect("nsenter");
    assert!(mounted.success(), "nsenter mount: {mounted}");
    let (slowest, body) = scrape_ten(&exp);
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
    terminates_quickly(exp);
    let _ = engine.kill();
    let _ = engine.wait();
}
