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

mod discover;
pub mod ledger;
pub mod positions;
pub mod rate;
mod read;
pub mod reader;
pub mod scan;
pub mod series;

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
use self::series::PathSeriesTable;
use super::events::EventMapper;
use super::reason::EventReason;
use super::tally::{Counters, Tally};
use crate::context::TaskContext;
use crate::health::SourceHealth;
use crate::metrics::BoundCounter;

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
pub struct RunningFollower {
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
pub fn spawn(ctx: &TaskContext, mapper: Arc<EventMapper>) -> Option<RunningFollower> {
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
    Some(RunningFollower {
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
    /// Matched, or rotated away and still being drained: its path keeps its series and its
    /// unread bytes count in `log_behind_bytes`.
    fn live(&self) -> bool {
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
                counters.health().error(e.to_string());
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
        more
    }

    /// The follower's ledger, for the scrape that serves what it applied.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
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
        for t in self.files.values().filter(|t| t.live()) {
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
                .filter(|t| t.live())
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
mod tests;
