//! Following the engine's JSON event logs, exactly once as Prometheus sees it.
//!
//! Every file the follower has met is an entry of one table, keyed by its identity (device
//! and inode, checked against a fingerprint of its first bytes), whether its file is open or
//! not: a file that a scan misses, that a glob error hides, that waits for an open slot or
//! that was closed to stay within the open-file budget keeps its offset, so when it is seen
//! again it resumes and is never read twice. A glob's expansion is redone every poll; a glob
//! that cannot be expanded (an unreadable directory, too many open files) is a failed source,
//! not an empty match.
//!
//! Rotation by rename: the old file is followed by identity (through its open file, or found
//! again by inode in its directory) and drained until it has been idle for the rotate wait;
//! the new file at the path is read from its beginning. A glob that names one file also
//! finds the generations a rotation made between two polls (`NAME.1`, `NAME-20261207`), so a
//! rotation faster than the poll loses nothing. copytruncate: the file shrinks below what was
//! read or its first bytes change, so reading restarts at 0.
//!
//! Where things are: `scan.rs` expands globs, `reader.rs` reads one file, `ledger.rs` ties
//! what was applied to what a scrape served and to the positions file (`positions.rs`).

pub mod ledger;
pub mod positions;
pub mod rate;
pub mod reader;
pub mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use self::ledger::{Ledger, WriteReport};
use self::positions::{FileId, IdMap, IdSet, Position};
use self::rate::ReadRate;
use self::reader::{Line, Reader};
use self::scan::DirEntries;
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
/// Bytes read from one file per poll before moving on to the others.
const BUDGET: u64 = 8 << 20;
/// Bytes applied under one hold of the ledger's lock: what a scrape may wait for (about a
/// millisecond of lines).
const SLICE: u64 = 256 << 10;
const CHUNK: usize = 64 * 1024;
/// A file no glob matches any more, read to its end, is remembered this long (so that if
/// it comes back, it resumes), unless it was deleted.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// At most this many such files are remembered; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 4096;
/// The `path` label of files past `ingest.log_path_series_limit`.
pub const OTHER_PATHS: &str = "(other)";

pub struct Options {
    pub globs: Vec<String>,
    pub positions_file: Option<PathBuf>,
    pub read_from_start: bool,
    pub max_line_bytes: usize,
    /// 0: no limit.
    pub max_read_bytes_per_second: u64,
    pub limits: FileLimits,
}

/// The follower's bounds on files, all reloadable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileLimits {
    /// Files held open at once.
    pub max_open_files: usize,
    /// How long a rotated-away file is read after it stopped growing.
    pub rotate_wait: Duration,
    /// Files with `log_*{path}` series of their own; the others share `path="(other)"`.
    pub path_series_limit: usize,
}

impl Default for FileLimits {
    fn default() -> FileLimits {
        FileLimits {
            max_open_files: 128,
            rotate_wait: Duration::from_secs(5),
            path_series_limit: 100,
        }
    }
}

/// What a reload changes in a running follower; files and positions are kept.
pub struct Reconfigure {
    pub globs: Vec<String>,
    pub read_from_start: bool,
    pub max_line_bytes: usize,
    pub max_read_bytes_per_second: u64,
    pub limits: FileLimits,
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

/// The follower's limits as configured.
pub fn limits(ingest: &crate::config::IngestConfig) -> FileLimits {
    FileLimits {
        max_open_files: ingest.log_max_open_files,
        rotate_wait: Duration::from_secs(ingest.log_rotate_wait_seconds),
        path_series_limit: ingest.log_path_series_limit,
    }
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
        limits: limits(ingest),
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

/// Why the follower could not do something, as `log_follower_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerError {
    /// A glob could not be expanded (a directory unreadable, too many open files).
    Scan,
    /// A file could not be opened (permissions, too many open files).
    Open,
    /// A file could not be read.
    Read,
    /// The positions file could not be written.
    PositionsWrite,
}

impl FollowerError {
    pub const ALL: [FollowerError; 4] = [
        FollowerError::Scan,
        FollowerError::Open,
        FollowerError::Read,
        FollowerError::PositionsWrite,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FollowerError::Scan => "scan",
            FollowerError::Open => "open",
            FollowerError::Read => "read",
            FollowerError::PositionsWrite => "positions_write",
        }
    }

    pub fn cause(self) -> &'static str {
        match self {
            FollowerError::Scan => "a glob could not be expanded: a directory could not be read (permissions, too many open files); the glob's files keep their positions and the glob's `source_up` is 0",
            FollowerError::Open => "a file could not be opened (permissions, too many open files); it waits with its position and is tried again at the next poll",
            FollowerError::Read => "a file could not be read; it is tried again at the next poll",
            FollowerError::PositionsWrite => "the positions file could not be written (read-only or full filesystem); no line is applied until a write succeeds, and `source_up{source=\"event_log\"}` is 0",
        }
    }
}

/// One file the follower knows, open or not.
struct Tracked {
    reader: Reader,
    /// The glob that found it; None for a file only known from the positions file or found
    /// as a rotated generation.
    glob: Option<usize>,
    /// Found by the last scan.
    matched: bool,
    /// When a scan last stopped finding it.
    unmatched_since: Option<Instant>,
    /// Not matched, read to its end and closed: kept only to be recognised if it comes back.
    drained: bool,
}

impl Tracked {
    /// Counted as followed: matched, or rotated away and still being drained.
    fn followed(&self) -> bool {
        !self.drained
    }
}

/// A glob naming one file: what its directory held at the last look, to tell the
/// generations a rotation made since.
#[derive(Default)]
struct LiteralDir {
    looked: bool,
    /// The file at the live path at the last look.
    live: Option<FileId>,
    /// Inodes under rotated names at the last look.
    seen: HashSet<u64>,
}

pub struct Follower {
    options: Options,
    mapper: Arc<EventMapper>,
    counters: Counters<EventReason>,
    files: IdMap<Tracked>,
    /// The file last seen at each matched path (as bytes: hashing a `Path` walks its
    /// components), to tell a rotation from a file that grew.
    path_ids: HashMap<OsString, FileId, positions::IdBuild>,
    /// Paths the positions file held at start-up, and the files it held at each.
    stored_paths: HashMap<PathBuf, HashSet<FileId>>,
    /// When the positions file was last written before start-up.
    stored_modified: Option<SystemTime>,
    first_scan: bool,
    /// Globs a reload added: files they find now were there before, as at start-up.
    new_globs: HashSet<usize>,
    literal_dirs: HashMap<usize, LiteralDir>,
    ledger: Arc<Ledger>,
    chunk: Vec<u8>,
    followed_reported: Option<usize>,
    /// Per glob (same order as the options): its `source_up` handle, this tick's error, and
    /// what was last reported.
    glob_health: Vec<SourceHealth>,
    glob_errors: Vec<Option<String>>,
    glob_reported: Vec<Option<(usize, bool)>>,
    rate: Option<ReadRate>,
    series: PathSeriesTable,
    errors: [Option<BoundCounter>; 4],
    /// Files that want reading but found no open slot at the last poll.
    waiting: usize,
    /// Files were added, drained or forgotten since the per-path series were last pruned.
    series_dirty: bool,
    /// Tests: every glob's expansion fails, as when its directory cannot be read.
    #[cfg(test)]
    scan_fails: bool,
}

/// A followed path's `log_*{path}` series, resolved once: a read then adds to them without
/// a label lookup (a hash, an allocation and a lock each).
struct PathSeries {
    lines_read: BoundCounter,
    read_bytes: BoundCounter,
    rotations: BoundCounter,
    truncations: BoundCounter,
}

const PATH_COUNTERS: usize = 4;

fn path_counters(own: &SelfMetrics) -> [&Counter; PATH_COUNTERS] {
    [
        &own.log_lines_read,
        &own.log_read_bytes,
        &own.log_rotations,
        &own.log_truncations,
    ]
}

impl PathSeries {
    /// Creates the series at 0, so that increase() sees the first event.
    fn bind(own: &SelfMetrics, label: &str) -> Option<PathSeries> {
        match path_counters(own).map(|c| c.bind(&[label])) {
            [Ok(lines_read), Ok(read_bytes), Ok(rotations), Ok(truncations)] => Some(PathSeries {
                lines_read,
                read_bytes,
                rotations,
                truncations,
            }),
            // A path over the label length limit, or a schema without the path label.
            _ => {
                tracing::warn!(target: "metrics", label, "no log self-metrics for this path");
                None
            }
        }
    }
}

/// The per-path series, at most `limit` paths with series of their own; the rest share
/// [`OTHER_PATHS`]. A path's series go when no followed file has its label any more.
struct PathSeriesTable {
    own: SelfMetrics,
    limit: usize,
    paths: HashMap<String, PathSeries, positions::IdBuild>,
    other: Option<PathSeries>,
    /// Labels whose `log_behind_bytes` was set at the last report.
    behind_reported: HashSet<String>,
}

impl PathSeriesTable {
    fn new(own: SelfMetrics, limit: usize) -> PathSeriesTable {
        PathSeriesTable {
            own,
            limit,
            paths: HashMap::default(),
            other: None,
            behind_reported: HashSet::new(),
        }
    }

    /// The label a file's counts go to (its own, or the shared one past the limit).
    fn label<'a>(&self, label: &'a str) -> &'a str {
        if self.paths.contains_key(label) {
            label
        } else {
            OTHER_PATHS
        }
    }

    fn ensure(&mut self, label: &str) {
        if self.paths.contains_key(label) {
            return;
        }
        if self.paths.len() < self.limit {
            if let Some(series) = PathSeries::bind(&self.own, label) {
                self.paths.insert(label.to_owned(), series);
                return;
            }
        }
        if self.other.is_none() {
            self.other = PathSeries::bind(&self.own, OTHER_PATHS);
        }
    }

    fn get(&self, label: &str) -> Option<&PathSeries> {
        self.paths.get(label).or(self.other.as_ref())
    }

    /// Removes the series of paths no followed file has as its label.
    fn retain(&mut self, live: &HashSet<&str>) {
        let own = &self.own;
        self.paths.retain(|label, _| {
            let keep = live.contains(label.as_str());
            if !keep {
                for c in path_counters(own) {
                    c.remove(&[label]);
                }
            }
            keep
        });
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
        let stored_modified = options
            .positions_file
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok());
        let own = counters.metrics().own().clone();
        let errors = FollowerError::ALL.map(|e| own.log_follower_errors.bind(&[e.label()]).ok());
        let report = errors[FollowerError::PositionsWrite as usize]
            .clone()
            .map(|failures| WriteReport {
                health: counters.health().clone(),
                failures,
            });
        let ledger = Arc::new(Ledger::new(options.positions_file.clone(), &stored, report));
        let rate = ReadRate::new(options.max_read_bytes_per_second, Instant::now());
        let mut files = IdMap::default();
        let mut stored_paths = HashMap::new();
        {
            // Every stored file is known from the start, found or not: one that is not
            // found now keeps its position, and one rotated away while the exporter was
            // down is found again by inode and drained.
            let mut state = ledger.lock();
            for p in stored {
                stored_paths
                    .entry(p.path.clone())
                    .or_insert_with(HashSet::new)
                    .insert(p.id());
                let label = p.path.to_string_lossy().into_owned();
                let reader = Reader::new(p.path.clone(), p.id(), label, p.offset, p.head);
                state.track(p.clone());
                files.insert(
                    p.id(),
                    Tracked {
                        reader,
                        glob: None,
                        matched: false,
                        unmatched_since: Some(Instant::now()),
                        drained: false,
                    },
                );
            }
        }
        Follower {
            rate,
            series: PathSeriesTable::new(own, options.limits.path_series_limit),
            options,
            mapper,
            counters,
            files,
            path_ids: HashMap::default(),
            series_dirty: true,
            stored_paths,
            stored_modified,
            first_scan: true,
            new_globs: HashSet::new(),
            literal_dirs: HashMap::new(),
            ledger,
            chunk: vec![0; CHUNK],
            followed_reported: None,
            glob_health: Vec::new(),
            glob_errors: Vec::new(),
            glob_reported: Vec::new(),
            errors,
            waiting: 0,
            #[cfg(test)]
            scan_fails: false,
        }
    }

    /// Reports each glob as a source of its own (`source_up{source="log:GLOB"}`): 0 while it
    /// cannot be expanded or a file it matches cannot be opened or read.
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
        // Glob indices change: each file is given its glob again by the next scan.
        for t in self.files.values_mut() {
            t.glob = None;
        }
        self.literal_dirs.clear();
        self.options.globs = r.globs;
        self.options.read_from_start = r.read_from_start;
        self.options.max_line_bytes = r.max_line_bytes;
        if r.max_read_bytes_per_second != self.options.max_read_bytes_per_second {
            self.rate = ReadRate::new(r.max_read_bytes_per_second, Instant::now());
            self.options.max_read_bytes_per_second = r.max_read_bytes_per_second;
        }
        self.options.limits = r.limits;
        self.series.limit = r.limits.path_series_limit;
        self.mapper = r.mapper;
        self.followed_reported = None;
        self.set_glob_health(glob_health);
    }

    fn count(&self, error: FollowerError) {
        if let Some(c) = &self.errors[error as usize] {
            c.add(1);
        }
    }

    /// Records an error against a glob (its `source_up` goes to 0 for this poll).
    fn glob_error(&mut self, glob: Option<usize>, error: String) {
        self.counters.health().error(error.clone());
        if let Some(e) = glob.and_then(|i| self.glob_errors.get_mut(i)) {
            *e = Some(error);
        }
    }

    /// One poll: discover files, read new lines, drain and close rotated ones. Returns true
    /// when some file has more to read right away.
    pub fn tick(&mut self) -> bool {
        if let Some(rate) = &mut self.rate {
            rate.refill(Instant::now());
        }
        if self.ledger.write_failing() {
            // Nothing is applied that could not be recorded: retry the write first.
            self.ledger.persist();
            if self.ledger.write_failing() {
                self.report();
                return false;
            }
        }
        self.glob_errors.iter_mut().for_each(|e| *e = None);
        #[allow(unused_mut)]
        let mut scan = scan::scan(&self.options.globs);
        #[cfg(test)]
        if self.scan_fails {
            scan.found.clear();
            scan.errors
                .iter_mut()
                .for_each(|e| *e = Some("injected".into()));
        }
        for (glob, error) in scan.errors.iter().enumerate() {
            if let Some(error) = error {
                self.count(FollowerError::Scan);
                self.glob_error(Some(glob), error.clone());
            }
        }
        self.reconcile(scan);
        self.first_scan = false;
        self.new_globs.clear();
        // Files first followed in this poll are persisted before any of their lines is
        // applied: if that fails, nothing is applied that a restart would apply again.
        self.ledger.persist();
        if self.ledger.write_failing() {
            self.report();
            return false;
        }
        let more = self.read_files();
        self.forget();
        self.report();
        // Files first followed in this poll are persisted at once.
        self.ledger.persist();
        more
    }

    /// The follower's ledger, for the scrape that serves what it applied.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// Brings the table up to date with a scan: new files, renamed ones, files no longer
    /// matched (unless their glob failed: a failed scan says nothing of its files).
    fn reconcile(&mut self, scan: scan::Scan) {
        let now = Instant::now();
        let mut matched = IdSet::default();
        matched.reserve(scan.found.len());
        let mut rotated_globs: HashSet<usize> = HashSet::new();
        for found in scan.found {
            matched.insert(found.id);
            match self.path_ids.get_mut(found.path.as_os_str()) {
                Some(id) if *id == found.id => {}
                Some(id) => {
                    *id = found.id;
                    rotated_globs.insert(found.glob);
                    self.rotated(&found.path);
                }
                None => {
                    self.path_ids
                        .insert(found.path.as_os_str().to_owned(), found.id);
                    self.series_dirty = true;
                }
            }
            let present_before = self.first_scan || self.new_globs.contains(&found.glob);
            if let Some(t) = self.files.get_mut(&found.id) {
                t.glob = Some(found.glob);
                t.matched = true;
                t.unmatched_since = None;
                t.drained = false;
                if !t.reader.is_open() {
                    t.reader.observed(found.size, found.modified);
                }
                if t.reader.path.as_os_str() != found.path.as_os_str() {
                    t.reader.path = found.path;
                    self.ledger.lock().moved(found.id, &t.reader.path);
                }
                continue;
            }
            let start = self.start_offset(&found.path, found.id, found.size, present_before);
            let label = found.path.to_string_lossy().into_owned();
            self.follow(found.path, found.id, label, Some(found.glob), start);
            if let Some(t) = self.files.get_mut(&found.id) {
                t.reader.observed(found.size, found.modified);
            }
        }
        let failed: HashSet<usize> = (self.glob_errors.iter().enumerate())
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| i)
            .collect();
        let mut lost: Vec<FileId> = Vec::new();
        for (id, t) in &mut self.files {
            if matched.contains(id) || t.glob.is_some_and(|g| failed.contains(&g)) {
                continue;
            }
            if t.matched {
                self.series_dirty = true;
                t.matched = false;
                t.unmatched_since = Some(now);
                lost.push(*id);
            } else if self.first_scan && !t.drained {
                // Known from the positions file and not matched: look for it.
                lost.push(*id);
            }
        }
        let known = self.path_ids.len();
        self.path_ids.retain(|_, id| self.files.contains_key(id));
        self.series_dirty |= self.path_ids.len() != known;
        self.follow_literal_globs(&rotated_globs, &failed);
        self.locate(lost);
    }

    /// A new file was found at `path` where another one was.
    fn rotated(&mut self, path: &Path) {
        let label = path.to_string_lossy();
        if let Some(series) = self.series.get(self.series.label(&label)) {
            series.rotations.add(1);
        }
        tracing::info!(target: "ingest", event = "rotation", path = %label);
    }

    /// Starts following file `id` at `path` from `start`; its counts go to `label`.
    fn follow(
        &mut self,
        path: PathBuf,
        id: FileId,
        label: String,
        glob: Option<usize>,
        start: u64,
    ) {
        let matched = glob.is_some();
        self.series.ensure(&label);
        self.series_dirty = true;
        let reader = Reader::new(path.clone(), id, label, start, None);
        self.ledger.lock().track(Position {
            path,
            dev: id.dev,
            ino: id.ino,
            offset: start,
            head: None,
        });
        self.files.insert(
            id,
            Tracked {
                reader,
                glob,
                matched,
                unmatched_since: (!matched).then(Instant::now),
                drained: false,
            },
        );
    }

    fn start_offset(&self, path: &Path, id: FileId, size: u64, present_before: bool) -> u64 {
        if !present_before {
            // Appeared while running (a new file, or the new file after a rotation):
            // everything in it is new.
            return 0;
        }
        if self
            .stored_paths
            .get(path)
            .is_some_and(|stored| !stored.contains(&id))
        {
            // Known path, different file: rotated while we were down.
            return 0;
        }
        if self.options.read_from_start {
            0
        } else {
            size
        }
    }

    /// A glob that names one file: when the file at its path changed (or at start-up, when
    /// it changed while the exporter was down), the rotated generations that appeared in its
    /// directory since the last look are read from their beginning; this catches rotations
    /// faster than the poll. Known files found there under a new name are followed there.
    fn follow_literal_globs(&mut self, rotated: &HashSet<usize>, failed: &HashSet<usize>) {
        for (glob, pattern) in self.options.globs.clone().iter().enumerate() {
            if !scan::is_literal(pattern) || failed.contains(&glob) {
                continue;
            }
            let live = scan::literal_path(pattern);
            let (Some(dir), Some(base)) = (live.parent(), live.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // A rotation while the exporter was down: the stored file at the path is another.
            let rotated_while_down = self.first_scan
                && self.stored_paths.get(&live).is_some_and(|stored| {
                    self.path_ids
                        .get(live.as_os_str())
                        .is_some_and(|now| !stored.contains(now))
                });
            // The directory is read before the live path is looked at: a generation seen
            // under its rotated name was renamed before that look, so the look sees the
            // path changed since the last poll and the generation is taken as new.
            let entries = match scan::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.count(FollowerError::Scan);
                    self.glob_error(Some(glob), format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            let live_now = std::fs::metadata(&live).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                FileId {
                    dev: m.dev(),
                    ino: m.ino(),
                }
            });
            let known = self.literal_dirs.entry(glob).or_default();
            let first_look = !known.looked;
            let rotated_now = rotated.contains(&glob)
                || rotated_while_down
                || (!first_look && live_now != known.live);
            known.looked = true;
            known.live = live_now;
            // Only rotated names: the file at the live name is not a generation yet.
            let seen_before = std::mem::replace(
                &mut known.seen,
                (entries.entries.iter())
                    .filter(|(name, _)| scan::is_rotated_name(base, name))
                    .map(|(_, ino)| *ino)
                    .collect(),
            );
            for (name, ino) in &entries.entries {
                if !scan::is_rotated_name(base, name) {
                    continue;
                }
                let id = FileId {
                    dev: entries.dev,
                    ino: *ino,
                };
                let path = dir.join(name);
                if let Some(t) = self.files.get_mut(&id) {
                    if !t.matched && !t.reader.is_open() {
                        // Renamed while closed, or a new generation that reuses the inode
                        // of a file deleted while closed: looked at again (its first bytes
                        // tell which, when it is opened).
                        if let Ok(meta) = std::fs::metadata(&path) {
                            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                            t.reader.observed(meta.len(), modified);
                            if t.drained && t.reader.wants_reading() {
                                t.drained = false;
                                t.unmatched_since = Some(Instant::now());
                            }
                        }
                        if t.reader.path != path {
                            t.reader.path = path;
                            self.ledger.lock().moved(id, &t.reader.path);
                        }
                    }
                    continue;
                }
                if !rotated_now {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let new = if first_look {
                    // At start-up, a generation written since the positions were last
                    // written was made while the exporter was down.
                    rotated_while_down
                        && meta.modified().ok() > self.stored_modified
                        && self.stored_modified.is_some()
                } else {
                    !seen_before.contains(ino)
                };
                if !new || !meta.is_file() {
                    continue;
                }
                tracing::info!(target: "ingest", event = "rotated_generation", path = %path.display(), "a generation rotated before it was seen: read from its beginning");
                self.rotated(&live);
                self.follow(path, id, live.to_string_lossy().into_owned(), None, 0);
                if let Some(t) = self.files.get_mut(&id) {
                    t.reader.observed(
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                }
            }
        }
    }

    /// Files that are no longer matched and not open: find them again by inode in their
    /// directory, so that a rename while closed (or while the exporter was down) still has
    /// its unread lines drained. One not found is kept as a position only.
    fn locate(&mut self, ids: Vec<FileId>) {
        let mut dirs: HashMap<PathBuf, Option<DirEntries>> = HashMap::new();
        for id in ids {
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            if t.reader.is_open() {
                continue;
            }
            // Where it was last seen, first: one stat.
            let at_path = std::fs::metadata(&t.reader.path).ok().filter(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_file() && (m.dev(), m.ino()) == (id.dev, id.ino)
            });
            let found = match at_path {
                Some(meta) => Some((t.reader.path.clone(), meta)),
                None => {
                    let dir = t
                        .reader
                        .path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .to_path_buf();
                    let entries = dirs
                        .entry(dir.clone())
                        .or_insert_with(|| scan::read_dir(&dir).ok());
                    entries.as_ref().and_then(|e| scan::find_in(&dir, e, id))
                }
            };
            match found {
                Some((path, meta)) => {
                    if t.reader.path != path {
                        t.reader.path = path;
                        self.ledger.lock().moved(id, &t.reader.path);
                    }
                    t.reader.observed(
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                    t.drained = !t.reader.wants_reading();
                }
                None => t.drained = true,
            }
            self.series_dirty |= t.drained;
        }
    }

    /// Reads every file that has something to read: open files first, then closed ones,
    /// oldest backlog first, opening them within the open-file budget (closing idle ones to
    /// make room). Returns true when some file has more to read right away.
    fn read_files(&mut self) -> bool {
        let mut more = false;
        let mut open: Vec<FileId> = (self.files.iter())
            .filter(|(_, t)| t.reader.is_open())
            .map(|(id, _)| *id)
            .collect();
        open.sort_by_key(|id| id.ino);
        for id in &open {
            more |= self.read(*id);
        }
        // Rotated-away files done with give their slots to the files that wait.
        self.retire();
        let open_count = self.files.values().filter(|t| t.reader.is_open()).count();
        let mut waiting: Vec<(SystemTime, FileId)> = (self.files.iter())
            .filter(|(_, t)| !t.reader.is_open() && !t.drained && t.reader.wants_reading())
            .map(|(id, t)| (t.reader.modified, *id))
            .collect();
        waiting.sort();
        let mut open_count = open_count;
        let mut left = waiting.len();
        for (_, id) in waiting {
            if open_count >= self.options.limits.max_open_files {
                if !self.close_one_idle() {
                    break;
                }
                open_count -= 1;
            }
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            match t.reader.open() {
                Ok(true) => {
                    left -= 1;
                    open_count += 1;
                    tracing::debug!(target: "ingest", event = "file_opened", path = %t.reader.path.display(), offset = t.reader.committed());
                    more |= self.read(id);
                }
                Ok(false) => {
                    // Replaced since the scan: the next scan finds where it is.
                    left -= 1;
                    if !t.matched {
                        t.drained = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Renamed or replaced since the scan: the next scan finds where it is.
                    left -= 1;
                    if !t.matched {
                        t.drained = true;
                    }
                }
                Err(e) => {
                    let glob = t.glob;
                    let error = format!("cannot open {}: {e}", t.reader.path.display());
                    self.count(FollowerError::Open);
                    self.glob_error(glob, error);
                }
            }
        }
        self.waiting = left;
        more
    }

    /// Closes the open file idle the longest (matched, nothing unread, no line being
    /// skipped), to give its slot to a file with something to read.
    fn close_one_idle(&mut self) -> bool {
        let victim = (self.files.iter())
            .filter(|(_, t)| t.reader.is_open() && t.matched && t.reader.unread() == 0)
            .min_by_key(|(_, t)| t.reader.last_growth)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.files.get_mut(&id)) {
            Some(t) => {
                t.reader.close();
                true
            }
            None => false,
        }
    }

    /// Reads new lines of one file, a slice at a time under the ledger's lock; returns true
    /// when it has more that may be read right away (false once the read rate's allowance is
    /// spent: the follower sleeps a poll).
    fn read(&mut self, id: FileId) -> bool {
        let mut read_this_poll = 0;
        loop {
            let allowance = self
                .rate
                .as_ref()
                .map_or(BUDGET, |rate| rate.budget(BUDGET))
                .min(BUDGET - read_this_poll);
            if allowance == 0 {
                return self.rate.is_none();
            }
            let Some(t) = self.files.get_mut(&id) else {
                return false;
            };
            let mut tally = Tally::default();
            let mapper = &self.mapper;
            let max_line = self.options.max_line_bytes;
            // Opened at the first line, so polls that find nothing new leave no span. It is
            // not entered per line: entering and leaving a span cost more than applying it.
            let mut span: Option<tracing::Span> = None;
            let ledger = self.ledger.clone();
            let mut state = ledger.lock();
            if state.write_failing() {
                return false;
            }
            let result = t.reader.poll(&mut self.chunk, max_line, allowance.min(SLICE), |l| {
                span.get_or_insert_with(|| {
                    tracing::info_span!(target: "ingest", "events.read", path = tracing::field::Empty, lines = tracing::field::Empty, bytes = tracing::field::Empty)
                });
                line(mapper, l, &mut tally)
            });
            state.advance(id, t.reader.committed(), t.reader.head());
            self.counters.flush(&mut tally);
            drop(state);
            ledger.let_scrapes_in();
            if let (Some(span), Ok(stats)) = (&span, &result) {
                span.record("path", t.reader.label.as_str());
                span.record("lines", stats.lines);
                span.record("bytes", stats.bytes);
            }
            let series = self.series.get(self.series.label(&t.reader.label));
            match result {
                Ok(stats) => {
                    if stats.truncated {
                        if let Some(series) = series {
                            series.truncations.add(1);
                        }
                        tracing::info!(target: "ingest", event = "truncation", path = %t.reader.label);
                    }
                    if let Some(series) = series.filter(|_| stats.bytes > 0) {
                        series.lines_read.add(stats.lines);
                        series.read_bytes.add(stats.bytes);
                    }
                    read_this_poll += stats.bytes;
                    if let Some(rate) = &mut self.rate {
                        rate.spend(stats.bytes);
                    }
                    if !stats.more {
                        return false;
                    }
                    if read_this_poll >= BUDGET {
                        return true;
                    }
                }
                Err(e) => {
                    let error = format!("reading {}: {e}", t.reader.path.display());
                    let glob = t.glob;
                    self.count(FollowerError::Read);
                    self.glob_error(glob, error);
                    return false;
                }
            }
        }
    }

    /// Files no glob matches any more (rotated away, deleted), read to their end and idle for
    /// the rotate wait, are finished (a last line without a newline is complete) and closed.
    /// A deleted one is forgotten; any other is remembered, closed, with its position.
    fn retire(&mut self) {
        let wait = self.options.limits.rotate_wait;
        let max_line = self.options.max_line_bytes;
        let mut forget = Vec::new();
        for (id, t) in &mut self.files {
            let r = &mut t.reader;
            if t.matched || !r.is_open() || r.last_growth.elapsed() < wait || r.unread() > 0 {
                continue;
            }
            let mut tally = Tally::default();
            let mapper = &self.mapper;
            let mut state = self.ledger.lock();
            if state.write_failing() {
                continue;
            }
            let lines = r.finish(max_line, |l| line(mapper, l, &mut tally));
            state.advance(*id, r.committed(), r.head());
            self.counters.flush(&mut tally);
            drop(state);
            if let Some(series) = self.series.get(self.series.label(&r.label)) {
                series.lines_read.add(lines);
            }
            tracing::info!(target: "ingest", event = "file_closed", path = %r.path.display(), "rotated file drained");
            if r.deleted() {
                forget.push(*id);
            }
            r.close();
            t.drained = true;
            self.series_dirty = true;
        }
        let mut state = self.ledger.lock();
        for id in forget {
            self.files.remove(&id);
            state.forget(id);
        }
    }

    /// Drained files are remembered for [`FORGET_AFTER`], at most [`MAX_REMEMBERED`] of them.
    fn forget(&mut self) {
        let mut drained: Vec<(Instant, FileId)> = (self.files.iter())
            .filter(|(_, t)| t.drained)
            .map(|(id, t)| (t.unmatched_since.unwrap_or_else(Instant::now), *id))
            .collect();
        let expired = drained
            .iter()
            .filter(|(since, _)| since.elapsed() >= FORGET_AFTER)
            .count();
        let over = drained.len().saturating_sub(MAX_REMEMBERED);
        let n = expired.max(over);
        if n == 0 {
            return;
        }
        drained.sort();
        self.series_dirty = true;
        let mut state = self.ledger.lock();
        for (_, id) in drained.into_iter().take(n) {
            self.files.remove(&id);
            state.forget(id);
        }
    }

    fn report(&mut self) {
        let own = self.counters.metrics().own();
        // Followed: what the globs match now (rotated files being drained are not counted).
        let followed = self.files.values().filter(|t| t.matched).count();
        let open = self.files.values().filter(|t| t.reader.is_open()).count();
        let _ = own.log_files_followed.set(&[], followed as f64);
        let _ = own.log_files_open.set(&[], open as f64);
        let _ = own.log_files_waiting.set(&[], self.waiting as f64);
        let mut behind: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.files.values().filter(|t| t.followed()) {
            *behind
                .entry(self.series.label(&t.reader.label))
                .or_default() += t.reader.behind();
        }
        let mut reported = HashSet::with_capacity(behind.len());
        for (label, bytes) in behind {
            let _ = own.log_behind_bytes.set(&[label], bytes as f64);
            reported.insert(label.to_owned());
        }
        for gone in self.series.behind_reported.difference(&reported) {
            own.log_behind_bytes.remove(&[gone]);
        }
        // Paths with no followed file lose their series; the shared one stays once made.
        if self.series_dirty {
            let live: HashSet<&str> = (self.files.values())
                .filter(|t| t.followed())
                .map(|t| t.reader.label.as_str())
                .chain(self.path_ids.keys().filter_map(|p| p.to_str()))
                .collect();
            self.series.retain(&live);
            self.series_dirty = false;
        }
        self.series.behind_reported = reported;
        // A failed positions write is the ledger's to report; once writes work again (at a
        // poll or at a scrape), the source is ok again.
        if self.ledger.write_failing() {
            self.followed_reported = None;
        } else if self.followed_reported != Some(followed) {
            self.counters
                .health()
                .ok(format!("following {followed} files"));
            self.followed_reported = Some(followed);
        }
        for (i, health) in self.glob_health.iter().enumerate() {
            let files = self
                .files
                .values()
                .filter(|t| t.matched && t.glob == Some(i))
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
            let dir =
                std::env::temp_dir().join(format!("follower-model-{}-{tag}", std::process::id()));
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
}
