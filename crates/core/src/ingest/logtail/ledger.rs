//! Exactly once as Prometheus sees it. The positions file holds how far each followed file
//! had been applied when the last scrape was served, so after a crash a line whose effect was
//! served is never applied again, and a line applied but never served is applied again (the
//! counters restart from 0, which Prometheus reads as a reset).
//!
//! The follower holds the ledger's lock while it applies lines and records how far it got;
//! a scrape renders the registry under the same lock, takes those positions as served, and
//! writes them before the response leaves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::positions::{self, FileId, Position};

pub struct Ledger {
    file: Option<PathBuf>,
    state: Mutex<LedgerState>,
}

pub struct LedgerState {
    /// How far each followed file has been applied to the registry right now.
    applied: Vec<Position>,
    /// What the last served scrape reflected, plus files opened since (at their start).
    served: BTreeMap<FileId, Position>,
    /// `served` differs from what the positions file holds.
    unsaved: bool,
}

impl LedgerState {
    /// The follower records how far it has applied every file it follows.
    pub fn set_applied(&mut self, applied: Vec<Position>) {
        self.applied = applied;
    }

    /// A file is followed from `position` on: persisted at once, so a crash before the next
    /// scrape neither skips it nor reads it from its end.
    pub fn opened(&mut self, position: Position) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.served.entry(position.id()) {
            e.insert(position);
            self.unsaved = true;
        }
    }
}

impl Ledger {
    /// `stored`: the positions file as loaded at start-up.
    pub fn new(file: Option<PathBuf>, stored: &[Position]) -> Ledger {
        Ledger {
            file,
            state: Mutex::new(LedgerState {
                applied: Vec::new(),
                served: stored.iter().map(|p| (p.id(), p.clone())).collect(),
                unsaved: false,
            }),
        }
    }

    /// Held by the follower while it applies lines and records their positions.
    pub fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `render` (the scrape) with no line being applied meanwhile, takes what it reflects
    /// as served and persists it before returning.
    pub fn serve<T>(&self, render: impl FnOnce() -> T) -> T {
        let mut state = self.lock();
        let out = render();
        let served: BTreeMap<FileId, Position> =
            state.applied.iter().map(|p| (p.id(), p.clone())).collect();
        if served != state.served {
            state.served = served;
            state.unsaved = true;
        }
        drop(state);
        self.persist();
        out
    }

    /// Writes the served positions if they changed since the last write.
    pub fn persist(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let mut state = self.lock();
        if !state.unsaved {
            return;
        }
        let list: Vec<Position> = state.served.values().cloned().collect();
        match positions::save(path, &list) {
            Ok(()) => state.unsaved = false,
            Err(e) => {
                tracing::error!(target: "ingest", event = "positions_write_failed", error = %e)
            }
        }
    }

    /// The positions the last served scrape reflected (tests).
    pub fn served(&self) -> Vec<Position> {
        self.lock().served.values().cloned().collect()
    }
}
