//! Exactly once as Prometheus sees it, through SIGKILLs: while an engine appends to its event
//! log, the exporter is killed at random moments between scrapes, 22 times. Summed over the
//! runs, what each run last served plus what the final run serves must be every line written,
//! exactly: a served line is never applied again, an unserved one is applied after the
//! restart.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const SERIES: &str = "fixture_transactions_committed_total";
const KILLS: usize = 22;
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

fn start(dir: &TempDir) -> Exporter {
    Exporter::start_with_env(
        BIN,
        &[
            &format!("--ingest.log-path={}", dir.join("engine.log").display()),
            &format!(
                "--ingest.positions-file={}",
                dir.join("positions.json").display()
            ),
            "--log.level=warn",
        ],
        &[("FIXTURE_EXPORTER__INGEST__READ_FROM_START", "true")],
    )
}

#[test]
fn sigkill_at_random_moments_counts_every_line_exactly_once() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(88172645463325252, |d| d.as_nanos() as u64 | 1)
        });
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();

    // The engine: bursts of lines, bounded in count and time.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, log) = (written.clone(), stop.clone(), log.clone());
        let mut wrng = Rng(seed.rotate_left(17) | 1);
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let started = Instant::now();
            while written.load(Ordering::Relaxed) < LINES
                && started.elapsed() < Duration::from_secs(60)
            {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let burst = (1 + wrng.below(400)).min(LINES - written.load(Ordering::Relaxed));
                let mut buf = String::new();
                for _ in 0..burst {
                    buf.push_str("{\"event\":\"transaction_committed\",\"duration_ms\":2}\n");
                }
                f.write_all(buf.as_bytes()).unwrap();
                written.fetch_add(burst, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(wrng.below(120)));
            }
        })
    };

    let mut served_before_kills = 0.0;
    for kill in 0..KILLS {
        let exporter = start(&dir);
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

    let exporter = start(&dir);
    let want = total - served_before_kills;
    let got = eventually(Duration::from_secs(30), || {
        sample_value(&exporter.scrape_text(), SERIES).filter(|v| *v >= want)
    });
    // Settled: nothing more arrives after the expected value.
    std::thread::sleep(Duration::from_millis(500));
    let last = sample_value(&exporter.scrape_text(), SERIES);
    assert_eq!(
        (got, last),
        (Some(want), Some(want)),
        "seed {seed}: {total} lines written, {served_before_kills} served before the {KILLS} kills"
    );
}
