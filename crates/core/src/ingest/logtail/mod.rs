//! Following the engine's JSON event logs: globs are re-expanded every poll, files are
//! known by device and inode (so a rename is not mistaken for a new file), and positions are
//! persisted so a restart neither loses nor repeats a line.
//!
//! Rotation by rename: the old file keeps its reader (found under its new name or not at
//! all) and is drained until it has been idle for a while; the new file at the path is read
//! from its beginning. Delete and re-create is the same without the rename. copytruncate:
//! the file shrinks below what was read, so reading restarts at 0.

pub mod ledger;
pub mod positions;
pub mod rate;
pub mod reader;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use self::ledger::{Ledger, LedgerState};
use self::positions::{FileId, Position};
use self::rate::ReadRate;
use self::reader::{Line, Reader};
use super::events::EventMapper;
use super::reason::EventReason;
use super::tally::{Counters, Tally};
use crate::context::TaskContext;
use crate::health::SourceHealth;
use crate::metrics::{BoundCounter, Counter, SelfMetrics};

/// How often globs are re-expanded and files checked for growth, busy or idle. Each poll is
/// a wake-up that finds its code and data cold: at 10k lines a second, 500 ms cost the
/// follower 0.23–0.27% of a core against 0.20–0.23% at 1 s. Metrics scraped every 15 s gain
/// nothing from fresher counts (Vector's file source waits 1 s too).
const POLL: Duration = Duration::from_secs(1);
/// A rotated-away file that has not grown for this long is closed.
const RETIRE_IDLE: Duration = Duration::from_secs(5);
/// Bytes read from one file per poll before moving on to the others.
const BUDGET: u64 = 8 << 20;
const CHUNK: usize = 64 * 1024;

pub struct Options {
    pub globs: Vec<String>,
    pub positions_file: Option<PathBuf>,
    pub read_from_start: bool,
    pub max_line_bytes: usize,
    /// 0: no limit.
    pub max_read_bytes_per_second: u64,
}

/// What a reload changes in a running follower; files and positions are kept.
pub struct Reconfigure {
    pub globs: Vec<String>,
    pub read_from_start: bool,
    pub max_line_bytes: usize,
    pub max_read_bytes_per_second: u64,
    pub mapper: Arc<EventMapper>,
}

/// A running follower: its task, the ledger a scrape serves through, and where reloads go.
pub struct Running {
    pub handle: JoinHandle<()>,
    pub ledger: Arc<Ledger>,
    pub reconfigure: std::sync::mpsc::Sender<Reconfigure>,
}

/// Checks the globs as start-up and reloads do.
pub fn check_globs(globs: &[String]) -> Result<(), String> {
    for g in globs {
        glob::Pattern::new(g).map_err(|e| format!("invalid glob {g:?}: {e}"))?;
    }
    Ok(())
}

/// Starts the follower; its ledger ties the positions file to what scrapes served.
pub fn spawn(ctx: &TaskContext, mapper: Arc<EventMapper>) -> Option<Running> {
    let ingest = &ctx.config.ingest;
    if ingest.log_path.is_empty() {
        return None;
    }
    let health = ctx.health.source("event_log");
    let counters = Counters::new(ctx.metrics.clone(), health.clone());
    if let Err(error) = check_globs(&ingest.log_path) {
        health.failed("not following", error);
        return None;
    }
    let options = Options {
        globs: ingest.log_path.clone(),
        positions_file: ingest.positions_file.clone(),
        read_from_start: ingest.read_from_start,
        max_line_bytes: ingest.max_line_bytes,
        max_read_bytes_per_second: ingest.log_max_read_bytes_per_second,
    };
    let health = ctx.health.clone();
    let glob_health = move |globs: &[String]| {
        globs
            .iter()
            .map(|g| health.source(&format!("log:{g}")))
            .collect()
    };
    let mut follower =
        Follower::new(options, mapper, counters).with_glob_health(glob_health(&ingest.log_path));
    let ledger = follower.ledger();
    let shutdown = ctx.shutdown.clone();
    let (reconfigure, reloads) = std::sync::mpsc::channel::<Reconfigure>();
    let started = crate::context::source_thread("log-follower", move || {
        loop {
            while let Ok(r) = reloads.try_recv() {
                let health = glob_health(&r.globs);
                follower.reconfigure(r, health);
            }
            let more = follower.tick();
            if shutdown.is_set() {
                break;
            }
            if more {
                continue;
            }
            if shutdown.sleep_blocking(POLL) {
                break;
            }
        }
        follower.save_positions();
        tracing::info!(target: "ingest", event = "follower_stopped", "event-log positions saved");
    });
    let handle = match started {
        Ok(handle) => handle,
        Err(e) => {
            for glob in &ingest.log_path {
                let health = ctx.health.source(&format!("log:{glob}"));
                health.failed("not following", format!("thread: {e}"));
            }
            return None;
        }
    };
    Some(Running {
        handle,
        ledger,
        reconfigure,
    })
}

pub struct Follower {
    options: Options,
    mapper: Arc<EventMapper>,
    counters: Counters<EventReason>,
    active: HashMap<FileId, Reader>,
    retired: Vec<Reader>,
    /// The file last seen at each path, to tell a rotation from a file that merely grew.
    path_ids: HashMap<PathBuf, FileId>,
    /// Positions loaded at start-up, consumed as their files are found.
    stored: Vec<Position>,
    first_scan: bool,
    /// Globs a reload added: files they find now were there before, as at start-up.
    new_globs: HashSet<usize>,
    ledger: Arc<Ledger>,
    chunk: Vec<u8>,
    followed_reported: Option<usize>,
    /// Per glob (same order as the options): its `source_up` handle, the glob each followed
    /// file (by label) was found by, this tick's error, and what was last reported.
    glob_health: Vec<SourceHealth>,
    label_glob: HashMap<String, usize>,
    glob_errors: Vec<Option<String>>,
    glob_reported: Vec<Option<(usize, bool)>>,
    rate: Option<ReadRate>,
    /// Per followed path (by label): its own counters, bound when it is first opened.
    path_series: HashMap<String, PathSeries>,
}

/// A followed path's `log_*_total{path}` series, resolved once: a read then adds to them
/// without a label lookup (a hash, an allocation and a lock each). They are never removed.
struct PathSeries {
    lines_read: BoundCounter,
    read_bytes: BoundCounter,
    rotations: BoundCounter,
    truncations: BoundCounter,
}

impl PathSeries {
    /// Creates the series at 0, so that increase() sees the first event.
    fn bind(own: &SelfMetrics, label: &str) -> Option<PathSeries> {
        let bind = |c: &Counter| c.bind(&[label]);
        match (
            bind(&own.log_lines_read),
            bind(&own.log_read_bytes),
            bind(&own.log_rotations),
            bind(&own.log_truncations),
        ) {
            (Ok(lines_read), Ok(read_bytes), Ok(rotations), Ok(truncations)) => Some(PathSeries {
                lines_read,
                read_bytes,
                rotations,
                truncations,
            }),
            // The self-metric tests hold the path label; a mismatch is a bug, not an input.
            _ => {
                tracing::error!(target: "metrics", label, "log self-metrics do not take a path label");
                None
            }
        }
    }
}

impl Follower {
    pub fn new(
        options: Options,
        mapper: Arc<EventMapper>,
        counters: Counters<EventReason>,
    ) -> Follower {
        let stored = match &options.positions_file {
            Some(path) => positions::load(path).unwrap_or_else(|e| {
                // Starting without positions is better than not starting: files present now
                // are read from their end, as on a first run.
                tracing::error!(target: "ingest", event = "positions_unreadable", error = %e);
                counters.health().error(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        let ledger = Arc::new(Ledger::new(options.positions_file.clone(), &stored));
        let rate = ReadRate::new(options.max_read_bytes_per_second, Instant::now());
        Follower {
            rate,
            options,
            mapper,
            counters,
            active: HashMap::new(),
            retired: Vec::new(),
            path_ids: HashMap::new(),
            stored,
            first_scan: true,
            new_globs: HashSet::new(),
            ledger,
            chunk: vec![0; CHUNK],
            followed_reported: None,
            glob_health: Vec::new(),
            label_glob: HashMap::new(),
            glob_errors: Vec::new(),
            glob_reported: Vec::new(),
            path_series: HashMap::new(),
        }
    }

    /// Reports each glob as a source of its own (`source_up{source="log:GLOB"}`): 0 while a
    /// file it matches cannot be opened or read.
    pub fn with_glob_health(mut self, health: Vec<SourceHealth>) -> Follower {
        self.set_glob_health(health);
        self
    }

    fn set_glob_health(&mut self, health: Vec<SourceHealth>) {
        self.glob_errors = vec![None; health.len()];
        self.glob_reported = vec![None; health.len()];
        self.glob_health = health;
    }

    /// Applies a reload: new globs, limits and event rules. Followed files and their
    /// positions are kept; files no glob matches any more are drained and closed, as after a
    /// rotation; the health of globs that are gone is removed.
    pub fn reconfigure(&mut self, r: Reconfigure, glob_health: Vec<SourceHealth>) {
        self.new_globs = (r.globs.iter().enumerate())
            .filter(|(_, g)| !self.options.globs.contains(g))
            .map(|(i, _)| i)
            .collect();
        let old_health = std::mem::take(&mut self.glob_health);
        for (g, health) in self.options.globs.iter().zip(old_health) {
            if !r.globs.contains(g) {
                health.remove();
            }
        }
        self.options.globs = r.globs;
        self.options.read_from_start = r.read_from_start;
        self.options.max_line_bytes = r.max_line_bytes;
        if r.max_read_bytes_per_second != self.options.max_read_bytes_per_second {
            self.rate = ReadRate::new(r.max_read_bytes_per_second, Instant::now());
            self.options.max_read_bytes_per_second = r.max_read_bytes_per_second;
        }
        self.mapper = r.mapper;
        self.label_glob.clear();
        self.followed_reported = None;
        self.set_glob_health(glob_health);
    }

    fn glob_error(&mut self, label: &str, error: String) {
        if let Some(e) = self
            .label_glob
            .get(label)
            .and_then(|&i| self.glob_errors.get_mut(i))
        {
            *e = Some(error);
        }
    }

    /// One poll: discover files, drain rotated ones, read new lines. Returns true when some
    /// file has more to read right away.
    pub fn tick(&mut self) -> bool {
        // No scrape renders while lines are applied and their positions recorded.
        let ledger = self.ledger.clone();
        let mut state = ledger.lock();
        let more = self.tick_locked(&mut state);
        state.set_applied(self.positions());
        drop(state);
        // Files opened in this tick are persisted at once.
        ledger.persist();
        more
    }

    /// The follower's ledger, for the scrape that serves what it applied.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    fn tick_locked(&mut self, state: &mut LedgerState) -> bool {
        if let Some(rate) = &mut self.rate {
            rate.refill(Instant::now());
        }
        self.glob_errors.iter_mut().for_each(|e| *e = None);
        let found = self.scan();
        let found_ids: HashSet<FileId> = found.iter().map(|(_, id, _)| *id).collect();
        // Files no longer matched (renamed away, deleted) are drained, not dropped.
        let gone: Vec<FileId> = self
            .active
            .keys()
            .filter(|id| !found_ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(r) = self.active.remove(&id) {
                self.retired.push(r);
            }
        }
        for (path, id, glob) in found {
            self.label_glob
                .entry(path.to_string_lossy().into_owned())
                .or_insert(glob);
            let present_before = self.first_scan || self.new_globs.contains(&glob);
            self.track(path, id, present_before, state);
        }
        self.first_scan = false;
        self.new_globs.clear();

        let mut more = false;
        let mut retired = std::mem::take(&mut self.retired);
        for r in &mut retired {
            more |= self.read(r);
        }
        retired.retain_mut(|r| {
            // Idle and read to its end: a file the read rate held back is not idle.
            if r.last_growth.elapsed() < RETIRE_IDLE || r.unread() > 0 {
                return true;
            }
            let mut tally = Tally::default();
            let mapper = &self.mapper;
            let lines = r.finish(self.options.max_line_bytes, |l| line(mapper, l, &mut tally));
            if let Some(series) = self.path_series.get(&r.label) {
                series.lines_read.add(lines);
            }
            self.counters.flush(&mut tally);
            tracing::info!(target: "ingest", event = "file_closed", path = %r.path.display(), "rotated file drained");
            false
        });
        self.retired = retired;

        let mut ids: Vec<FileId> = self.active.keys().copied().collect();
        ids.sort_by_key(|id| id.ino);
        for id in ids {
            if let Some(mut r) = self.active.remove(&id) {
                more |= self.read(&mut r);
                self.active.insert(id, r);
            }
        }
        self.report();
        more
    }

    /// Expands the globs into (path, file, index of the first glob matching it) for regular
    /// files.
    fn scan(&self) -> Vec<(PathBuf, FileId, usize)> {
        let mut found = BTreeMap::new();
        for (glob, pattern) in self.options.globs.iter().enumerate() {
            // A plain path (the common case) is one stat, not a directory walk.
            let literal = !pattern.contains(['*', '?', '[']);
            let paths: Box<dyn Iterator<Item = PathBuf>> = if literal {
                // Spelled as glob spells what it finds (`a//b` → `a/b`): the path is a label.
                Box::new(std::iter::once(Path::new(pattern).components().collect()))
            } else {
                match glob::glob(pattern) {
                    Ok(paths) => Box::new(paths.flatten()),
                    Err(_) => continue,
                }
            };
            for path in paths {
                // metadata() follows symlinks: a link to the current log is followed.
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        let id = FileId {
                            dev: m.dev(),
                            ino: m.ino(),
                        };
                        found.entry(path).or_insert((id, glob));
                    }
                    _ => {}
                }
            }
        }
        found
            .into_iter()
            .map(|(path, (id, glob))| (path, id, glob))
            .collect()
    }

    /// Records that `path` is file `id` now, opening a reader if the file is new to us.
    /// `present_before`: found by the first scan (at start-up, or of a glob a reload added),
    /// so the file was not created just now.
    fn track(&mut self, path: PathBuf, id: FileId, present_before: bool, state: &mut LedgerState) {
        let label = path.to_string_lossy().into_owned();
        match self.path_ids.insert(path.clone(), id) {
            Some(old) if old != id => {
                if let Some(series) = self.path_series.get(&label) {
                    series.rotations.add(1);
                }
                tracing::info!(target: "ingest", event = "rotation", path = %label);
            }
            _ => {}
        }
        if let Some(r) = self.active.get_mut(&id) {
            r.path = path;
            return;
        }
        if let Some(i) = self.retired.iter().position(|r| r.id == id) {
            let mut r = self.retired.swap_remove(i);
            r.path = path;
            self.active.insert(id, r);
            return;
        }
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let start = self.start_offset(&path, id, size, present_before);
        match Reader::open(path.clone(), id, label.clone(), start) {
            Ok(r) => {
                tracing::info!(target: "ingest", event = "file_opened", path = %label, offset = start);
                if !self.path_series.contains_key(&label) {
                    if let Some(series) = PathSeries::bind(self.counters.metrics().own(), &label) {
                        self.path_series.insert(label.clone(), series);
                    }
                }
                state.opened(Position {
                    path: path.clone(),
                    dev: id.dev,
                    ino: id.ino,
                    offset: start,
                    head: r.head(),
                });
                self.active.insert(id, r);
            }
            Err(e) => {
                // Removed between scan and open, or unreadable: retried next poll.
                self.path_ids.remove(&path);
                let error = format!("cannot open {label}: {e}");
                self.counters.health().error(error.clone());
                self.glob_error(&label, error);
            }
        }
    }

    fn start_offset(
        &mut self,
        path: &std::path::Path,
        id: FileId,
        size: u64,
        present_before: bool,
    ) -> u64 {
        if let Some(i) = self.stored.iter().position(|p| p.id() == id) {
            let p = self.stored.swap_remove(i);
            // Shrunk, or starts differently, since we were away: copytruncate, start over.
            let same_head = p.head.is_none_or(|(hash, len)| {
                let mut now = vec![0; len as usize];
                std::fs::File::open(path)
                    .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut now, 0))
                    .is_ok_and(|()| positions::fingerprint(&now) == (hash, len))
            });
            return if p.offset <= size && same_head {
                p.offset
            } else {
                0
            };
        }
        if !present_before {
            // Appeared while running (a new file, or the new file after a rotation):
            // everything in it is new.
            return 0;
        }
        if self.stored.iter().any(|p| p.path == path) {
            // Known path, different file: rotated while we were down.
            return 0;
        }
        if self.options.read_from_start {
            0
        } else {
            size
        }
    }

    /// Reads new lines of one file; returns true when it has more that may be read right
    /// away (false once the read rate's allowance is spent: the follower sleeps a poll).
    fn read(&mut self, r: &mut Reader) -> bool {
        let budget = self
            .rate
            .as_ref()
            .map_or(BUDGET, |rate| rate.budget(BUDGET));
        let mut tally = Tally::default();
        let mapper = &self.mapper;
        // Opened at the first line, so polls that find nothing new leave no span. It is not
        // entered per line: entering and leaving a span cost more than applying the line.
        let mut span: Option<tracing::Span> = None;
        let result = r.poll(&mut self.chunk, self.options.max_line_bytes, budget, |l| {
            span.get_or_insert_with(|| {
                tracing::info_span!(target: "ingest", "events.read", path = tracing::field::Empty, lines = tracing::field::Empty, bytes = tracing::field::Empty)
            });
            line(mapper, l, &mut tally)
        });
        self.counters.flush(&mut tally);
        if let (Some(span), Ok(stats)) = (&span, &result) {
            span.record("path", r.label.as_str());
            span.record("lines", stats.lines);
            span.record("bytes", stats.bytes);
        }
        let series = self.path_series.get(&r.label);
        match result {
            Ok(stats) => {
                if stats.truncated {
                    if let Some(series) = series {
                        series.truncations.add(1);
                    }
                    tracing::info!(target: "ingest", event = "truncation", path = %r.label);
                }
                if let Some(series) = series.filter(|_| stats.bytes > 0) {
                    series.lines_read.add(stats.lines);
                    series.read_bytes.add(stats.bytes);
                }
                match &mut self.rate {
                    Some(rate) => {
                        rate.spend(stats.bytes);
                        stats.more && rate.budget(BUDGET) > 0
                    }
                    None => stats.more,
                }
            }
            Err(e) => {
                let error = format!("reading {}: {e}", r.path.display());
                self.counters.health().error(error.clone());
                self.glob_error(&r.label, error);
                false
            }
        }
    }

    fn report(&mut self) {
        let n = self.active.len();
        let own = self.counters.metrics().own();
        let _ = own.log_files_followed.set(&[], n as f64);
        let mut behind: BTreeMap<&str, u64> = BTreeMap::new();
        for r in self.active.values().chain(self.retired.iter()) {
            *behind.entry(&r.label).or_default() += r.behind();
        }
        for (label, bytes) in behind {
            let _ = own.log_behind_bytes.set(&[label], bytes as f64);
        }
        if self.followed_reported != Some(n) {
            self.counters.health().ok(format!("following {n} files"));
            self.followed_reported = Some(n);
        }
        for (i, health) in self.glob_health.iter().enumerate() {
            let files = self
                .active
                .values()
                .filter(|r| self.label_glob.get(&r.label) == Some(&i))
                .count();
            let error = self.glob_errors.get(i).cloned().flatten();
            let now = (files, error.is_some());
            if self.glob_reported.get(i) == Some(&Some(now)) {
                continue;
            }
            match error {
                Some(e) => health.degraded(format!("following {files} files"), e),
                None => health.ok(format!("following {files} files")),
            }
            if let Some(r) = self.glob_reported.get_mut(i) {
                *r = Some(now);
            }
        }
    }

    /// How far every followed file has been applied.
    fn positions(&self) -> Vec<Position> {
        self.active
            .values()
            .chain(self.retired.iter())
            .map(|r| Position {
                path: r.path.clone(),
                dev: r.id.dev,
                ino: r.id.ino,
                offset: r.committed(),
                head: r.head(),
            })
            .collect()
    }

    /// Persists what the last served scrape reflected (at shutdown): lines applied since
    /// were never seen by Prometheus and are applied again after the restart.
    pub fn save_positions(&mut self) {
        self.ledger.persist();
    }
}

fn line(mapper: &EventMapper, l: Line<'_>, tally: &mut Tally<EventReason>) {
    match l {
        Line::Complete(bytes) => mapper.apply_line(bytes, tally),
        Line::TooLong => tally.reject_with(EventReason::LineTooLong, String::new),
    }
}

#[cfg(test)]
mod tests {
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
            let dir =
                std::env::temp_dir().join(format!("follower-model-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let log = dir.join("app.log");
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
            let metrics = self.metrics.clone();
            self.last_served = self.follower.ledger().serve(|| {
                metrics
                    .get("tx_engine_lines_total")
                    .and_then(|m| m.value(&[]))
                    .unwrap_or(f64::NAN)
            });
        }

        /// A new run: a fresh registry (counters restart at 0) and follower, from the
        /// positions file.
        fn new_run(&mut self) {
            self.served_before += self.last_served;
            self.last_served = 0.0;
            self.metrics =
                Arc::new(Metrics::new(&self.schema, Limits::default()).expect("registry"));
            self.mapper = Arc::new(EventMapper::new(&self.metrics, &self.schema).expect("mapper"));
            self.follower = Self::follower(&self.dir, &self.metrics, &self.mapper);
        }

        fn follower(
            dir: &std::path::Path,
            metrics: &Arc<Metrics>,
            mapper: &Arc<EventMapper>,
        ) -> Follower {
            let options = Options {
                globs: vec![dir.join("app.log").to_string_lossy().into_owned()],
                positions_file: Some(dir.join("positions.json")),
                read_from_start: true,
                max_line_bytes: 1024,
                max_read_bytes_per_second: 0,
            };
            let counters = Counters::new(metrics.clone(), Health::default().source("event_log"));
            Follower::new(options, mapper.clone(), counters)
        }

        fn append(&mut self, n: usize) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.log)
                .expect("open log");
            for _ in 0..n {
                self.seq += 1;
                writeln!(f, "{{\"event\":\"line\",\"n\":{}}}", self.seq).expect("write");
            }
            self.in_file += n;
        }

        /// Polls until the follower has nothing more to read (bounded).
        fn settle(&mut self) {
            for _ in 0..50 {
                if !self.follower.tick() {
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
                    self.rotated += 1;
                    let away = self.dir.join(format!("app.log.{}", self.rotated));
                    std::fs::rename(&self.log, away).expect("rename");
                    std::fs::write(&self.log, b"").expect("new log");
                    self.in_file = 0;
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
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
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
        };
        let counters = Counters::new(w.metrics.clone(), Health::default().source("event_log"));
        w.follower = Follower::new(options, w.mapper.clone(), counters);
        let started = Instant::now();
        for _ in 0..20 {
            w.follower.tick();
            std::thread::sleep(Duration::from_millis(10));
        }
        let read = |f: &Follower| size - f.active.values().map(Reader::unread).sum::<u64>();
        // A second's burst, the rate since, and the chunk that overshot it at most.
        let allowed = rate as f64 * (1.0 + started.elapsed().as_secs_f64()) + CHUNK as f64;
        let held_back = read(&w.follower);
        assert!(
            held_back > 0 && (held_back as f64) <= allowed,
            "{held_back} of {size}"
        );
        assert!(w.follower.active.values().all(|r| r.behind() > 0));

        w.follower.reconfigure(
            Reconfigure {
                globs: vec![w.log.to_string_lossy().into_owned()],
                read_from_start: true,
                max_line_bytes: 1024,
                max_read_bytes_per_second: 0,
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
}
