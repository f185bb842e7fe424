//! Exactly once as Prometheus sees it. The positions file holds how far each followed file
//! had been applied when the last scrape was served, so after a crash a line whose effect was
//! served is never applied again, and a line applied but never served is applied again (the
//! counters restart from 0, which Prometheus reads as a reset).
//!
//! The follower holds the ledger's lock while it applies one slice of lines and records how
//! far it got (a bounded piece of work, so a scrape never waits long); a scrape takes the
//! positions of that moment as served, writes them, and renders the registry under the same
//! lock. A write that fails is served as a failure in that very render (`source_up` 0 and a
//! counted error) and stops the follower until a write succeeds, so what is served never
//! runs further ahead of the disk than the lines applied before the failure. A write that
//! has not finished within [`WRITE_BUDGET`] (a disk that stopped answering) is such a failure:
//! the scrape is served, and the write is waited for, not started again, on its own thread.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::positions::{self, FileId, Position};
use crate::budget::Worker;
use crate::health::SourceHealth;
use crate::metrics::BoundCounter;

/// How long a scrape waits for the positions write (a write and an fsync of a few KiB).
pub const WRITE_BUDGET: Duration = Duration::from_secs(2);

pub struct Ledger {
    file: Option<PathBuf>,
    writer: Worker<(PathBuf, Vec<Position>), Result<(), positions::PositionsError>>,
    state: Mutex<LedgerState>,
    report: Option<WriteReport>,
    /// Scrapes waiting for the lock: the follower lets them in between two slices (a
    /// futex mutex is not fair, and a follower that takes it again at once would starve
    /// them for a whole backlog).
    scrapes_waiting: AtomicUsize,
}

/// Where a failed positions write shows: the `event_log` source and a counter.
pub struct WriteReport {
    pub health: SourceHealth,
    pub failures: BoundCounter,
}

pub struct LedgerState {
    /// How far each followed file has been applied to the registry right now.
    applied: HashMap<FileId, Position>,
    /// What the last served scrape reflected, plus files followed since (at their start).
    served: BTreeMap<FileId, Position>,
    /// `served` differs from what the positions file holds.
    unsaved: bool,
    /// The last write failed, and why: nothing more is applied until one succeeds.
    write_error: Option<String>,
}

impl LedgerState {
    /// A file is followed from `position` on: persisted at once, so a crash before the next
    /// scrape neither skips it nor reads it from its end.
    pub fn track(&mut self, position: Position) {
        let id = position.id();
        if let std::collections::btree_map::Entry::Vacant(e) = self.served.entry(id) {
            e.insert(position.clone());
            self.unsaved = true;
        }
        self.applied.insert(id, position);
    }

    /// Lines of file `id` were applied up to `offset`.
    pub fn advance(&mut self, id: FileId, offset: u64, head: Option<(u64, u32)>) {
        if let Some(p) = self.applied.get_mut(&id) {
            p.offset = offset;
            p.head = head;
        }
    }

    /// File `id` is at `path` now.
    pub fn moved(&mut self, id: FileId, path: &std::path::Path) {
        if let Some(p) = self.applied.get_mut(&id) {
            if p.path != path {
                p.path = path.to_path_buf();
            }
        }
    }

    /// File `id` is no longer followed (deleted and drained, or forgotten).
    pub fn forget(&mut self, id: FileId) {
        self.applied.remove(&id);
    }

    /// Whether the positions file cannot be written right now.
    pub fn write_failing(&self) -> bool {
        self.write_error.is_some()
    }
}

impl Ledger {
    /// `stored`: the positions file as loaded at start-up.
    pub fn new(file: Option<PathBuf>, stored: &[Position], report: Option<WriteReport>) -> Ledger {
        Ledger {
            file,
            writer: Worker::new(
                "positions-write",
                WRITE_BUDGET,
                |(path, list): (PathBuf, Vec<Position>)| positions::save(&path, &list),
            ),
            state: Mutex::new(LedgerState {
                applied: HashMap::new(),
                served: stored.iter().map(|p| (p.id(), p.clone())).collect(),
                unsaved: false,
                write_error: None,
            }),
            report,
            scrapes_waiting: AtomicUsize::new(0),
        }
    }

    /// Called by the follower between two slices: a waiting scrape goes first.
    pub fn let_scrapes_in(&self) {
        let deadline = Instant::now() + Duration::from_millis(100);
        while self.scrapes_waiting.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// Held by the follower while it applies a slice of lines and records their positions.
    pub fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what is applied now as served, persists it, then runs `render` (the scrape)
    /// with no line being applied meanwhile: the render shows a failed write.
    pub fn serve<T>(&self, render: impl FnOnce() -> T) -> T {
        self.scrapes_waiting.fetch_add(1, Ordering::AcqRel);
        let mut state = self.lock();
        self.scrapes_waiting.fetch_sub(1, Ordering::AcqRel);
        let changed = state.served.len() != state.applied.len()
            || state
                .applied
                .iter()
                .any(|(id, p)| state.served.get(id) != Some(p));
        if changed {
            let served: BTreeMap<FileId, Position> = state
                .applied
                .iter()
                .map(|(id, p)| (*id, p.clone()))
                .collect();
            state.served = served;
            state.unsaved = true;
        }
        self.write(&mut state);
        render()
    }

    /// Writes the served positions if they changed since the last write (or the last write
    /// failed).
    pub fn persist(&self) {
        let mut state = self.lock();
        self.write(&mut state);
    }

    fn write(&self, state: &mut LedgerState) {
        let Some(path) = &self.file else {
            return;
        };
        if !state.unsaved {
            return;
        }
        let list: Vec<Position> = state.served.values().cloned().collect();
        let written = self
            .writer
            .call((path.clone(), list))
            .unwrap_or_else(|overrun| {
                Err(positions::PositionsError::Hung {
                    path: path.clone(),
                    overrun,
                })
            });
        match written {
            Ok(()) => {
                state.unsaved = false;
                if state.write_error.take().is_some() {
                    tracing::info!(target: "ingest", event = "positions_written", "positions file written again; following resumes");
                    // Up again before any line is applied, so no scrape shows the lines that
                    // follow with the source still down.
                    if let Some(report) = &self.report {
                        report.health.ok("positions file written again");
                    }
                }
            }
            Err(e) => {
                let e = e.to_string();
                if let Some(report) = &self.report {
                    report.failures.add(1);
                    report.health.failed(
                        "positions file cannot be written: following paused",
                        e.clone(),
                    );
                }
                if state.write_error.is_none() {
                    tracing::error!(target: "ingest", event = "positions_write_failed", error = %e, "following paused until the positions file can be written");
                }
                state.write_error = Some(e);
            }
        }
    }

    /// Whether the last positions write failed.
    pub fn write_failing(&self) -> bool {
        self.lock().write_failing()
    }

    /// The positions the last served scrape reflected (tests).
    pub fn served(&self) -> Vec<Position> {
        self.lock().served.values().cloned().collect()
    }
}

impl crate::exposition::RenderGuard for Ledger {
    fn serve(
        &self,
        render: &mut dyn FnMut() -> crate::exposition::Rendered,
    ) -> crate::exposition::Rendered {
        Ledger::serve(self, render)
    }
}
