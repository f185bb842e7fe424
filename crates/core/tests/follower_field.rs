//! The event-log follower under what an operator's week does to it, on the real
//! fixture-exporter binary: a log directory moved away and back, descriptors exhausted,
//! thousands of files, a stop right after a rename, rotations faster than the poll, a
//! positions file that cannot be written or is a FIFO, and a backlog caught up while
//! Prometheus and the kubelet keep asking. Every count is exact where docs/ingest.md
//! promises it.
#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const COMMITTED: &str = "fixture_transactions_committed_total";

/// Lines differ from their first bytes on, so files differ in their fingerprints.
fn lines(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            format!("{{\"timestamp\":\"2026-12-07T10:00:00Z\",\"seq\":{i},\"event\":\"transaction_committed\",\"duration_ms\":3}}\n")
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// Starts the exporter following `glob`, with positions in `dir`, and waits for the first
/// scan (so writes that follow are new lines, read from the file's beginning).
fn start(dir: &TempDir, glob: &Path, extra: &[&str], nofile: Option<u64>) -> Exporter {
    let glob = flag("ingest.log-path", glob.display());
    let positions = flag(
        "ingest.positions-file",
        dir.join("positions.json").display(),
    );
    let mut args = vec![glob.as_str(), positions.as_str(), "--log.level=warn"];
    args.extend_from_slice(extra);
    let exp = Exporter::start_limited(BIN, &args, &[], nofile);
    exp.wait_for_follower();
    exp
}

fn value(exp: &Exporter, series: &str) -> Option<f64> {
    sample_value(&exp.scrape_text(), series)
}

fn committed(exp: &Exporter) -> f64 {
    value(exp, COMMITTED).unwrap_or(f64::NAN)
}

/// Waits for the count to reach `want`, then checks it stays there (nothing read twice).
fn settles_at(exp: &Exporter, want: f64, timeout: Duration) {
    exp.wait_for_value(COMMITTED, want, timeout);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(committed(exp), want, "counted again: {}", exp.logs());
}

fn source_up(exp: &Exporter, source: &str) -> Option<f64> {
    value(
        exp,
        &format!("fixture_exporter_source_up{{source=\"{source}\"}}"),
    )
}

fn errors(exp: &Exporter, reason: &str) -> f64 {
    value(
        exp,
        &format!("fixture_exporter_log_follower_errors_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Item 1: a scan that misses a file (its directory renamed away and back, after the file
/// went idle) must not make it new: 2,000 lines stay 2,000, with a wildcard glob and with
/// a literal one.
#[test]
fn a_log_directory_moved_away_and_back_is_not_read_again() {
    let runs: Vec<(TempDir, Exporter, PathBuf)> = ["engine*.log", "engine.log"]
        .iter()
        .map(|pattern| {
            let dir = TempDir::new("moved-dir");
            std::fs::create_dir_all(dir.join("logs")).unwrap();
            let log = dir.join("logs/engine.log");
            std::fs::write(&log, "").unwrap();
            let exp = start(&dir, &dir.join("logs").join(pattern), &[], None);
            append(&log, &lines(0, 2000));
            (dir, exp, log)
        })
        .collect();
    for (_, exp, _) in &runs {
        exp.wait_for_value(COMMITTED, 2000.0, Duration::from_secs(20));
    }
    // Idle for longer than the rotate wait, then gone for two polls, then back.
    std::thread::sleep(Duration::from_secs(6));
    for (dir, _, _) in &runs {
        std::fs::rename(dir.join("logs"), dir.join("logs.away")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2500));
    for (dir, _, _) in &runs {
        std::fs::rename(dir.join("logs.away"), dir.join("logs")).unwrap();
    }
    for (_, exp, log) in &runs {
        settles_at(exp, 2000.0, Duration::from_secs(5));
        // And it is followed again where it is.
        append(log, &lines(2000, 10));
        settles_at(exp, 2010.0, Duration::from_secs(10));
    }
}

/// Item 1, by descriptors: the exporter runs out of them (its soft limit lowered under it to
/// what it holds, as an fd leak elsewhere in it would), so the glob's `opendir` fails with
/// EMFILE. That is a failed scan, counted, and the file keeps its position: 1,000 lines stay
/// 1,000. (Idle HTTP connections no longer exhaust descriptors: connections.rs closes the
/// idlest one when an accept fails with EMFILE.)
#[test]
fn a_glob_that_fails_with_emfile_keeps_its_files_positions() {
    let dir = TempDir::new("emfile");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let exp = start(&dir, &dir.join("engine*.log"), &[], Some(64));
    append(&log, &lines(0, 1000));
    exp.wait_for_value(COMMITTED, 1000.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(6));
    let held = std::fs::read_dir(format!("/proc/{}/fd", exp.pid()))
        .unwrap()
        .count() as u64;
    let set_limit = |n: u64| {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: 64,
        };
        // SAFETY: prlimit on our own child, with a valid struct and no old-limit output.
        let rc =
            unsafe { libc::prlimit(exp.pid(), libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    // Bounded: out of descriptors for 3 s.
    set_limit(held);
    std::thread::sleep(Duration::from_secs(3));
    set_limit(64);
    let back = eventually(Duration::from_secs(15), || {
        let r = std::panic::catch_unwind(|| exp.scrape_text()).ok()?;
        sample_value(&r, COMMITTED)
    });
    assert_eq!(back, Some(1000.0), "{}", exp.logs());
    settles_at(&exp, 1000.0, Duration::from_secs(5));
    assert!(errors(&exp, "scan") >= 1.0, "the failed scans are counted");
}

/// Item 2: 2,000 one-line files at systemd's default limit of 1,024 descriptors: each is
/// read once, within the open-file budget, and nothing waits at the end.
#[test]
fn two_thousand_files_at_a_thousand_descriptors_are_each_read_once() {
    let dir = TempDir::new("many-files");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let exp = start(&dir, &dir.join("logs/*.log"), &[], Some(1024));
    for i in 0..2000 {
        append(&dir.join(&format!("logs/{i:05}.log")), &lines(i, 1));
    }
    settles_at(&exp, 2000.0, Duration::from_secs(60));
    let text = exp.scrape_text();
    let open = sample_value(&text, "fixture_exporter_log_files_open").unwrap();
    assert!(open <= 128.0, "{open} files open");
    assert_eq!(
        sample_value(&text, "fixture_exporter_log_files_waiting"),
        Some(0.0)
    );
    assert_eq!(
        sample_value(&text, "fixture_exporter_log_files_followed"),
        Some(2000.0)
    );
    let glob = format!("log:{}", dir.join("logs/*.log").display());
    assert_eq!(source_up(&exp, &glob), Some(1.0));
}

/// Item 3: a literal glob, stopped (cleanly) after a rename and before the next poll: the
/// next run finds the rotated file by inode and drains its tail.
#[test]
fn a_stop_right_after_a_rename_still_drains_the_rotated_file() {
    let dir = TempDir::new("stop-rename");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let exp = start(&dir, &log, &[], None);
    append(&log, &lines(0, 1200));
    exp.wait_for_value(COMMITTED, 1200.0, Duration::from_secs(20));
    // Served, so persisted: the next run starts from here.
    assert_eq!(committed(&exp), 1200.0);
    append(&log, &lines(1200, 500));
    std::fs::rename(&log, dir.join("engine.log.1")).unwrap();
    std::fs::write(&log, "").unwrap();
    assert!(exp.terminate().success());
    let exp = start(&dir, &log, &[], None);
    settles_at(&exp, 500.0, Duration::from_secs(20));
}

/// Item 3: a literal glob and a rotation every 50 ms, twenty times faster than the poll:
/// every generation is found in the directory and read once, and every rotation counted.
#[test]
fn rotations_faster_than_the_poll_lose_nothing() {
    let dir = TempDir::new("fast-rotation");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let exp = start(&dir, &log, &[], None);
    let rotations = 40;
    for r in 0..rotations {
        append(&log, &lines(r * 100, 100));
        std::fs::rename(&log, dir.join(&format!("engine.log.{r}"))).unwrap();
        std::fs::write(&log, "").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    settles_at(&exp, (rotations * 100) as f64, Duration::from_secs(30));
    let series = format!(
        "fixture_exporter_log_rotations_total{{path=\"{}\"}}",
        log.display()
    );
    assert_eq!(value(&exp, &series), Some(rotations as f64));
}

/// Item 4: positions that cannot be written (a directory where the temporary file goes,
/// as a read-only or full filesystem would fail it): nothing is applied that a restart
/// would apply again, the scrape says so, and counting resumes when writes do.
#[test]
fn positions_that_cannot_be_written_stop_the_count_and_say_so() {
    let dir = TempDir::new("positions-fail");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let blocker = dir.join("positions.json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();

    // Failing from the start: nothing applied, visibly. (Read from the start: the next run
    // has no stored position for the file either.)
    let from_start = ["--ingest.read-from-start"];
    let exp = start(&dir, &log, &from_start, None);
    append(&log, &lines(0, 1000));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(committed(&exp), 0.0, "applied without a position on disk");
    assert_eq!(source_up(&exp, "event_log"), Some(0.0));
    assert!(errors(&exp, "positions_write") >= 1.0);
    let health = exp.get("/health", &[]);
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("positions"), "{}", health.text());
    drop(exp); // SIGKILL

    let exp = start(&dir, &log, &from_start, None);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(committed(&exp), 0.0);
    std::fs::remove_dir(&blocker).unwrap();
    exp.wait_for_value(COMMITTED, 1000.0, Duration::from_secs(20));
    assert_eq!(source_up(&exp, "event_log"), Some(1.0));

    // Failing mid-run: the scrape that fails to write says so, and the count stops there.
    std::fs::create_dir_all(&blocker).unwrap();
    append(&log, &lines(1000, 300));
    std::thread::sleep(Duration::from_millis(2500));
    let at_failure = committed(&exp);
    assert_eq!(source_up(&exp, "event_log"), Some(0.0));
    append(&log, &lines(1300, 200));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(committed(&exp), at_failure, "the count ran past the disk");
    std::fs::remove_dir(&blocker).unwrap();
    settles_at(&exp, 1500.0, Duration::from_secs(20));
    assert_eq!(source_up(&exp, "event_log"), Some(1.0));

    // Served and persisted: a SIGKILL and restart apply nothing again.
    drop(exp);
    let exp = start(&dir, &log, &[], None);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(committed(&exp), 0.0, "lines applied again after a restart");
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU time of the process, in seconds (utime + stime from /proc/PID/stat).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0] + f[1]) as f64 / 100.0
}

/// Item 5: 10,000 matched files cost a bounded number of descriptors and series; when they
/// are deleted, their series go.
#[test]
fn ten_thousand_files_stay_within_the_budgets() {
    let dir = TempDir::new("ten-thousand");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let n = 10_000;
    for i in 0..n {
        std::fs::write(dir.join(&format!("logs/{i:05}.log")), lines(i, 1)).unwrap();
    }
    let exp = start(
        &dir,
        &dir.join("logs/*.log"),
        &["--ingest.read-from-start"],
        None,
    );
    settles_at(&exp, n as f64, Duration::from_secs(120));
    let pid = exp.pid();
    let (cpu_before, started) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    let text = exp.scrape_text();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    let (open_fds, rss) = (fds(pid), rss_kib(pid));
    eprintln!(
        "10,000 files: {open_fds} descriptors, RSS {rss} KiB, idle CPU {:.1}% of a core, {samples} samples, {} bytes of /metrics",
        idle_cpu * 100.0,
        text.len()
    );
    assert!(open_fds <= 128 + 32, "{open_fds} descriptors");
    assert!(samples < 1500, "{samples} samples");
    let own = |metric: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("fixture_exporter_{metric}{{path=")))
            .count()
    };
    assert_eq!(own("log_lines_read_total"), 101, "100 paths and (other)");
    assert!(rss < 128 * 1024, "RSS {rss} KiB");

    for i in 0..n {
        std::fs::remove_file(dir.join(&format!("logs/{i:05}.log"))).unwrap();
    }
    let gone = eventually(Duration::from_secs(20), || {
        let text = exp.scrape_text();
        let left = text
            .lines()
            .filter(|l| l.contains("{path=\"") && !l.contains("(other)"))
            .count();
        (left == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "per-path series left:\n{}",
        exp.scrape_text()
    );
    assert_eq!(
        value(&exp, "fixture_exporter_log_files_followed"),
        Some(0.0)
    );
}

/// Item 6: while a backlog of 80 MB in 20 files is caught up, liveness probes and scrapes
/// answer within the kubelet's default probe timeout (1 s): a scrape waits for one slice of
/// lines, never for a whole poll.
#[test]
fn catching_up_a_backlog_never_stalls_http() {
    let dir = TempDir::new("backlog");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let (files, per_file) = (20, 4 << 20);
    let line = lines(0, 1);
    let per = per_file / line.len();
    for f in 0..files {
        let text: String = (0..per).map(|i| lines(f * per + i, 1)).collect();
        std::fs::write(dir.join(&format!("logs/{f:02}.log")), text).unwrap();
    }
    let total = (files * per) as f64;
    // Asked from the moment it listens, not from the end of its first poll.
    let glob = flag("ingest.log-path", dir.join("logs/*.log").display());
    let exp = Exporter::start(BIN, &[&glob, "--ingest.read-from-start"]);
    let (mut worst, mut asked) = (Duration::ZERO, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for path in ["/-/healthy", "/metrics"] {
            let sent = Instant::now();
            let r = exp.get(path, &[]);
            assert_eq!(r.status, 200);
            worst = worst.max(sent.elapsed());
            asked += 1;
        }
        if committed(&exp) >= total || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("slowest answer while catching up: {worst:?}");
    assert!(asked > 10, "caught up before it was asked: {asked} answers");
    assert!(worst < Duration::from_secs(1), "an answer took {worst:?}");
    settles_at(&exp, total, Duration::from_secs(10));
}

/// Item 7: a positions file that is a FIFO is refused (reported), not waited on: the
/// exporter listens, follows, and replaces it with a regular file at its first write.
#[test]
fn a_positions_file_that_is_a_fifo_does_not_keep_the_exporter_from_listening() {
    let dir = TempDir::new("fifo");
    let fifo = dir.join("positions.json");
    testkit::mkfifo(&fifo);
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let exp = start(&dir, &log, &[], None);
    assert_eq!(exp.get("/-/healthy", &[]).status, 200);
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("not a regular file"), "{health}");
    append(&log, &lines(0, 100));
    settles_at(&exp, 100.0, Duration::from_secs(20));
    assert!(std::fs::metadata(&fifo).unwrap().is_file());
}

/// The positions file's disk stops answering (a FUSE connection nobody answers, mounted over
/// its directory in the exporter's own mount namespace): each scrape is still served within
/// the write budget (2 s) and says the write failed, the count stops where the disk did, and
/// SIGTERM exits within 5 s. Before the budget, the first scrape after the hang never
/// returned, nor did any after it.
#[test]
fn a_positions_disk_that_stops_answering_does_not_stall_scrapes() {
    use testkit::namespace::{mount_namespaces_work, mount_silent_fuse, start_in_mount_namespace};
    if !mount_namespaces_work() {
        return;
    }
    let dir = TempDir::new("positions-hung");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let glob = flag("ingest.log-path", log.display());
    let positions = flag(
        "ingest.positions-file",
        state.join("positions.json").display(),
    );
    let exp = start_in_mount_namespace(BIN, &[&glob, &positions, "--log.level=warn"], None);
    exp.wait_for_follower();
    append(&log, &lines(0, 500));
    exp.wait_for_value(COMMITTED, 500.0, Duration::from_secs(20));

    let _fuse = mount_silent_fuse(exp.pid(), &state);
    append(&log, &lines(500, 300));
    let (slowest, text) = exp.scrape_series(8, Duration::from_millis(500));
    eprintln!("positions disk hung: slowest of 8 scrapes {slowest:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "slowest scrape {slowest:?}"
    );
    let up = "fixture_exporter_source_up{source=\"event_log\"}";
    assert_eq!(sample_value(&text, up), Some(0.0), "{text}");
    let failed = "fixture_exporter_log_follower_errors_total{reason=\"positions_write\"}";
    assert!(
        sample_value(&text, failed).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // What was served when the disk stopped is all that is counted: following paused.
    let at_failure = sample_value(&text, COMMITTED).unwrap();
    assert!((500.0..=800.0).contains(&at_failure), "{at_failure}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(committed(&exp), at_failure, "the count ran past the disk");
    exp.terminate_within(Duration::from_secs(5));
}
