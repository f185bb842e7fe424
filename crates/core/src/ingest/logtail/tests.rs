//! A model-based test of the follower (as Vector's file source does it): random sequences
//! of appends, rotations by rename, delete-and-recreate, copytruncate, scrapes and
//! restarts (with or without a scrape just before), after which every line written must
//! have been counted exactly once as Prometheus sees it: the sum of what each run last
//! served, plus what the current run serves.

use super::*;
use crate::health::Health;
use crate::metrics::{Limits, Metrics};
use crate::schema::{test_schema_toml, Schema};
use std::io::Write;

const SCHEMA: &str = r#"
[[metrics]]
name = "tx_engine_lines_total"
type = "counter"
help = "Lines seen"

[[events]]
event = "line"
effects = [{ op = "inc", metric = "tx_engine_lines_total" }]
"#;

/// A plain path skips glob's directory walk; it must name the file as glob would, since
/// the path is the label of the file's self-metrics.
#[test]
fn a_plain_path_is_spelled_as_glob_spells_it() {
    let dir = std::env::temp_dir().join(format!("follower-plain-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/a.log"), "").expect("write");
    let base = dir.display().to_string();
    for pattern in [
        format!("{base}/sub/a.log"),
        format!("{base}//sub/a.log"),
        format!("{base}/sub//a.log"),
        format!("{base}/./sub/a.log"),
        format!("{base}/sub/./a.log"),
    ] {
        let by_glob: Vec<PathBuf> = glob::glob(&pattern).expect("glob").flatten().collect();
        let plain: PathBuf = Path::new(&pattern).components().collect();
        assert_eq!(by_glob, vec![plain], "{pattern}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Debug, Clone)]
enum Op {
    /// Append lines and let the follower read them.
    Append(usize),
    /// Append lines, then rename the file away and start a new one before the next poll.
    AppendThenRotate(usize),
    /// Append lines, then a crash: a new run with a new registry, from the positions of
    /// the last served scrape.
    AppendThenCrash(usize),
    /// Append lines, scrape, then a clean stop and a new run.
    AppendScrapeRestart(usize),
    /// Delete the file and create an empty one at the same path.
    Recreate,
    /// copytruncate: the file is emptied in place.
    Truncate,
    /// A clean stop, then copytruncate and more lines than before while the exporter is
    /// down, then a new run: the file must be recognised as new by its first bytes.
    RefillWhileDown(usize),
    /// Append, then polls that miss the file (its directory renamed away) for longer than
    /// the rotate wait, then it is back.
    MissedScans(usize),
    /// Append, then polls whose glob expansion fails (an unreadable directory, EMFILE).
    GlobErrors(usize),
    /// Several rotations between two polls, each generation with lines of its own.
    FastRotations(usize, usize),
    /// Append, rotate, append to the new file, then a stop before the next poll.
    StopDuringRotation(usize),
    /// Positions cannot be written: what is served stops advancing until they can.
    WriteFailure(usize),
    /// More files than the open-file budget (a second log matched by the glob list).
    SecondFile(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (1usize..40).prop_map(Op::Append),
        (1usize..40).prop_map(Op::AppendThenRotate),
        (1usize..40).prop_map(Op::AppendThenCrash),
        (1usize..40).prop_map(Op::AppendScrapeRestart),
        Just(Op::Recreate),
        Just(Op::Truncate),
        (1usize..40).prop_map(Op::RefillWhileDown),
        (1usize..40).prop_map(Op::MissedScans),
        (1usize..40).prop_map(Op::GlobErrors),
        (1usize..5, 1usize..20).prop_map(|(k, n)| Op::FastRotations(k, n)),
        (1usize..40).prop_map(Op::StopDuringRotation),
        (1usize..40).prop_map(Op::WriteFailure),
        (1usize..40).prop_map(Op::SecondFile),
    ]
}

struct World {
    dir: PathBuf,
    log: PathBuf,
    rotated: usize,
    schema: Schema,
    metrics: Arc<Metrics>,
    mapper: Arc<EventMapper>,
    follower: Follower,
    /// The value each earlier run last served, summed.
    served_before: f64,
    /// What this run last served.
    last_served: f64,
    /// Lines written so far (numbered, so that files differ in their first bytes).
    seq: usize,
    /// Lines in the current file.
    in_file: usize,
}

impl World {
    fn new(tag: u64) -> World {
        let dir = std::env::temp_dir().join(format!("follower-model-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        let log = dir.join("logs/app.log");
        std::fs::write(&log, b"").expect("log");
        let schema = Schema::parse(&test_schema_toml("tx", SCHEMA)).expect("schema");
        let metrics = Arc::new(Metrics::new(&schema, Limits::default()).expect("registry"));
        let mapper = Arc::new(EventMapper::new(&metrics, &schema).expect("mapper"));
        let follower = Self::follower(&dir, &metrics, &mapper);
        World {
            dir,
            log,
            rotated: 0,
            schema,
            metrics,
            mapper,
            follower,
            served_before: 0.0,
            last_served: 0.0,
            seq: 0,
            in_file: 0,
        }
    }

    /// A scrape: what it serves is what Prometheus has seen of this run.
    fn scrape(&mut self) {
        let ledger = self.follower.ledger();
        self.last_served = ledger.serve(|| self.served_now());
    }

    /// A new run: a fresh registry (counters restart at 0) and follower, from the
    /// positions file.
    fn new_run(&mut self) {
        self.served_before += self.last_served;
        self.last_served = 0.0;
        self.metrics = Arc::new(Metrics::new(&self.schema, Limits::default()).expect("registry"));
        self.mapper = Arc::new(EventMapper::new(&self.metrics, &self.schema).expect("mapper"));
        self.follower = Self::follower(&self.dir, &self.metrics, &self.mapper);
    }

    fn follower(
        dir: &std::path::Path,
        metrics: &Arc<Metrics>,
        mapper: &Arc<EventMapper>,
    ) -> Follower {
        // A literal glob (the rotated generations are found by identity) and a second
        // file, with one open slot between them: every poll closes and reopens files.
        let options = Options {
            globs: vec![
                dir.join("logs/app.log").to_string_lossy().into_owned(),
                dir.join("logs/other.log").to_string_lossy().into_owned(),
            ],
            positions_file: Some(dir.join("positions.json")),
            read_from_start: true,
            max_line_bytes: 1024,
            max_read_bytes_per_second: 0,
            limits: FileLimits {
                max_open_files: 1,
                rotate_wait: Duration::ZERO,
                path_series_limit: 2,
            },
        };
        let counters = Counters::new(metrics.clone(), Health::default().source("event_log"));
        Follower::new(options, mapper.clone(), counters)
    }

    fn append(&mut self, n: usize) {
        let log = self.log.clone();
        self.append_to(&log, n);
        self.in_file += n;
    }

    fn append_to(&mut self, path: &std::path::Path, n: usize) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open log");
        for _ in 0..n {
            self.seq += 1;
            writeln!(f, "{{\"event\":\"line\",\"n\":{}}}", self.seq).expect("write");
        }
    }

    /// logrotate `create`: the live file is renamed to a numbered name, a new one made.
    fn rotate(&mut self) {
        self.rotated += 1;
        let away = self.dir.join(format!("logs/app.log.{}", self.rotated));
        std::fs::rename(&self.log, away).expect("rename");
        std::fs::write(&self.log, b"").expect("new log");
        self.in_file = 0;
    }

    fn served_now(&self) -> f64 {
        self.metrics
            .get("tx_engine_lines_total")
            .and_then(|m| m.value(&[]))
            .unwrap_or(f64::NAN)
    }

    /// Polls until the follower has nothing more to read and no file waits for an
    /// open slot (bounded).
    fn settle(&mut self) {
        for _ in 0..50 {
            if !self.follower.tick() && self.follower.waiting == 0 {
                break;
            }
        }
        self.follower.tick();
    }

    /// Every line as Prometheus sees it, after a scrape of the current run.
    fn counted(&mut self) -> f64 {
        self.scrape();
        self.served_before + self.last_served
    }

    fn run(&mut self, op: &Op) -> usize {
        match *op {
            Op::Append(n) => {
                self.append(n);
                self.settle();
                n
            }
            Op::AppendThenRotate(n) => {
                self.append(n);
                self.rotate();
                self.settle();
                n
            }
            Op::MissedScans(n) => {
                self.append(n);
                let (logs, away) = (self.dir.join("logs"), self.dir.join("logs.away"));
                std::fs::rename(&logs, &away).expect("move away");
                self.settle();
                self.settle();
                std::fs::rename(&away, &logs).expect("move back");
                self.settle();
                n
            }
            Op::GlobErrors(n) => {
                self.append(n);
                self.follower.scan_fails = true;
                self.settle();
                self.scrape();
                self.follower.scan_fails = false;
                self.settle();
                n
            }
            Op::FastRotations(k, n) => {
                for _ in 0..k {
                    self.append(n);
                    self.rotate();
                }
                self.settle();
                k * n
            }
            Op::StopDuringRotation(n) => {
                self.settle();
                self.scrape();
                self.append(n);
                self.rotate();
                self.append(n);
                self.follower.save_positions();
                self.new_run();
                self.settle();
                2 * n
            }
            Op::WriteFailure(n) => {
                // A directory where the temporary file goes: every write fails.
                let tmp = self.dir.join("positions.json.tmp");
                std::fs::create_dir_all(&tmp).expect("block writes");
                self.append(n);
                self.settle();
                self.scrape();
                let at_failure = self.last_served;
                self.append(n);
                self.settle();
                self.scrape();
                assert_eq!(
                    self.last_served, at_failure,
                    "served past what was persisted"
                );
                assert!(self.follower.ledger().write_failing());
                std::fs::remove_dir(&tmp).expect("unblock writes");
                self.settle();
                2 * n
            }
            Op::SecondFile(n) => {
                let other = self.dir.join("logs/other.log");
                self.append_to(&other, n);
                self.settle();
                n
            }
            Op::RefillWhileDown(n) => {
                self.settle();
                self.scrape();
                self.follower.save_positions();
                let more = self.in_file + n;
                std::fs::File::create(&self.log).expect("truncate");
                self.in_file = 0;
                self.append(more);
                self.new_run();
                self.settle();
                more
            }
            Op::AppendThenCrash(n) => {
                self.append(n);
                // Read, maybe not served: a crash loses no served line and repeats none.
                self.follower.tick();
                self.new_run();
                self.settle();
                n
            }
            Op::AppendScrapeRestart(n) => {
                self.append(n);
                self.settle();
                self.scrape();
                self.follower.save_positions();
                self.new_run();
                self.settle();
                n
            }
            Op::Recreate => {
                std::fs::remove_file(&self.log).expect("remove");
                std::fs::write(&self.log, b"").expect("recreate");
                self.in_file = 0;
                self.settle();
                0
            }
            Op::Truncate => {
                std::fs::File::create(&self.log).expect("truncate");
                self.in_file = 0;
                self.settle();
                0
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn every_line_is_applied_exactly_once(ops in proptest::collection::vec(op(), 1..12)) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CASE: AtomicU64 = AtomicU64::new(0);
        let mut world = World::new(CASE.fetch_add(1, Ordering::Relaxed));
        world.settle();
        let mut written = 0;
        for op in &ops {
            written += world.run(op);
            proptest::prop_assert_eq!(world.counted(), written as f64, "after {:?} of {:?}", op, ops);
        }
    }
}

#[test]
fn the_read_rate_holds_the_follower_back_and_a_reload_lifts_it() {
    let mut w = World::new(u64::MAX);
    w.append(40_000);
    let size = std::fs::metadata(&w.log).expect("log").len();
    let rate = 100_000;
    let options = Options {
        globs: vec![w.log.to_string_lossy().into_owned()],
        positions_file: None,
        read_from_start: true,
        max_line_bytes: 1024,
        max_read_bytes_per_second: rate,
        limits: FileLimits::default(),
    };
    let counters = Counters::new(w.metrics.clone(), Health::default().source("event_log"));
    w.follower = Follower::new(options, w.mapper.clone(), counters);
    let started = Instant::now();
    for _ in 0..20 {
        w.follower.tick();
        std::thread::sleep(Duration::from_millis(10));
    }
    let read = |f: &Follower| size - f.files.values().map(|t| t.reader.unread()).sum::<u64>();
    // A second's burst, the rate since, and the chunk that overshot it at most.
    let allowed = rate as f64 * (1.0 + started.elapsed().as_secs_f64()) + CHUNK as f64;
    let held_back = read(&w.follower);
    assert!(
        held_back > 0 && (held_back as f64) <= allowed,
        "{held_back} of {size}"
    );
    assert!(w.follower.files.values().all(|t| t.reader.behind() > 0));

    w.follower.reconfigure(
        Reconfigure {
            globs: vec![w.log.to_string_lossy().into_owned()],
            read_from_start: true,
            max_line_bytes: 1024,
            max_read_bytes_per_second: 0,
            limits: FileLimits::default(),
            mapper: w.mapper.clone(),
        },
        Vec::new(),
    );
    for _ in 0..100 {
        if read(&w.follower) == size {
            break;
        }
        w.follower.tick();
    }
    assert_eq!(read(&w.follower), size);
    let lines = w
        .metrics
        .get("tx_engine_lines_total")
        .and_then(|m| m.value(&[]));
    assert_eq!(lines, Some(40_000.0));
}
