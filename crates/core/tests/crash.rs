//! Exactly once as Prometheus sees it, through SIGKILLs: while an engine appends to its event
//! log and rotates it (rename, then a new file) every 0.4 to 1.6 seconds, the exporter is
//! killed at random moments between scrapes, 16 times. Summed over the runs, what each run
//! last served plus what the final run serves must be every line written, exactly: a served
//! line is never applied again, an unserved one is applied after the restart, and a file
//! rotated away while the exporter was down is found again and drained. Run with a literal
//! glob (the live file only: rotated files are found by identity) and with a wildcard glob
//! that matches the rotated names, for three seeds each (two fixed, one new every run).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const SERIES: &str = "fixture_transactions_committed_total";
const KILLS: usize = 16;
const LINES: u64 = 30_000;

/// xorshift64: no dependency, and the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn start(dir: &TempDir, glob: &str) -> Exporter {
    Exporter::start_with_env(
        BIN,
        &[
            &format!("--ingest.log-path={}", dir.join(glob).display()),
            &format!(
                "--ingest.positions-file={}",
                dir.join("positions.json").display()
            ),
            "--log.level=warn",
        ],
        &[("FIXTURE_EXPORTER__INGEST__READ_FROM_START", "true")],
    )
}

/// The engine: bursts of lines, and a rotation by rename every 0.4 to 1.6 seconds;
/// bounded in count and time.
fn engine(log: &Path, seed: u64, written: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let started = Instant::now();
    let mut next_rotation = started + Duration::from_millis(400 + rng.below(1200));
    let mut rotations = 0;
    while written.load(Ordering::Relaxed) < LINES && started.elapsed() < Duration::from_secs(60) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = written.load(Ordering::Relaxed);
        let burst = (1 + rng.below(200)).min(LINES - n);
        let mut buf = String::new();
        for i in n..n + burst {
            // Numbered, so every generation starts with bytes of its own.
            buf.push_str(&format!(
                "{{\"seq\":{i},\"event\":\"transaction_committed\",\"duration_ms\":2}}\n"
            ));
        }
        f.write_all(buf.as_bytes()).unwrap();
        written.fetch_add(burst, Ordering::Relaxed);
        if Instant::now() >= next_rotation {
            rotations += 1;
            let away = log.with_file_name(format!("engine.log.{rotations}"));
            std::fs::rename(log, away).unwrap();
            f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            next_rotation = Instant::now() + Duration::from_millis(400 + rng.below(1200));
        }
        std::thread::sleep(Duration::from_millis(rng.below(120)));
    }
    eprintln!("engine: {rotations} rotations");
}

fn seed(fixed: Option<u64>) -> u64 {
    if let Some(s) = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    fixed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(88172645463325252, |d| d.as_nanos() as u64 | 1)
    })
}

fn sigkill_at_random_moments_counts_every_line_exactly_once(glob: &str, seed: u64) {
    eprintln!("crash test ({glob}) seed {seed} (CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, log) = (written.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || engine(&log, seed, written, stop))
    };

    let mut served_before_kills = 0.0;
    for kill in 0..KILLS {
        let exporter = start(&dir, glob);
        let mut last_served = 0.0;
        for _ in 0..rng.below(4) {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            if let Some(v) = sample_value(&exporter.scrape_text(), SERIES) {
                last_served = v;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        drop(exporter); // SIGKILL
        served_before_kills += last_served;
        eprintln!("run {kill}: last served {last_served}");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = written.load(Ordering::Relaxed) as f64;

    let exporter = start(&dir, glob);
    let want = total - served_before_kills;
    let got = eventually(Duration::from_secs(30), || {
        sample_value(&exporter.scrape_text(), SERIES).filter(|v| *v >= want)
    });
    // Settled: nothing more arrives after the expected value.
    std::thread::sleep(Duration::from_millis(1500));
    let last = sample_value(&exporter.scrape_text(), SERIES);
    assert_eq!(
        (got, last),
        (Some(want), Some(want)),
        "{glob}, seed {seed}: {total} lines written, {served_before_kills} served before the {KILLS} kills\n{}",
        exporter.logs()
    );
}

#[test]
fn literal_glob_seed_1() {
    sigkill_at_random_moments_counts_every_line_exactly_once(
        "engine.log",
        seed(Some(0x9e37_79b9_7f4a_7c15)),
    );
}

#[test]
fn literal_glob_seed_2() {
    sigkill_at_random_moments_counts_every_line_exactly_once(
        "engine.log",
        seed(Some(0xd1b5_4a32_d192_ed03)),
    );
}

#[test]
fn literal_glob_new_seed() {
    sigkill_at_random_moments_counts_every_line_exactly_once("engine.log", seed(None));
}

#[test]
fn wildcard_glob_seed_1() {
    sigkill_at_random_moments_counts_every_line_exactly_once(
        "engine.log*",
        seed(Some(0x2545_f491_4f6c_dd1d)),
    );
}

#[test]
fn wildcard_glob_seed_2() {
    sigkill_at_random_moments_counts_every_line_exactly_once(
        "engine.log*",
        seed(Some(0x8cb9_2ba7_2f3d_8dd7)),
    );
}

#[test]
fn wildcard_glob_new_seed() {
    sigkill_at_random_moments_counts_every_line_exactly_once("engine.log*", seed(None));
}
