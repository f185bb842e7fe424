//! The follower's per-path self-metrics (`log_*_total{path}`): bound once per path, at most
//! `ingest.log_path_series_limit` paths with series of their own, the rest sharing
//! `path="(other)"`, and removed when no followed file has the path any more.

use std::collections::{HashMap, HashSet};

use super::positions::IdBuild;
use crate::metrics::{BoundCounter, Counter, SelfMetrics};

/// The `path` label of files past `ingest.log_path_series_limit`.
pub const OTHER_PATHS: &str = "(other)";

/// A followed path's `log_*{path}` series, resolved once: a read then adds to them without
/// a label lookup (a hash, an allocation and a lock each).
pub(super) struct PathSeries {
    pub(super) lines_read: BoundCounter,
    pub(super) read_bytes: BoundCounter,
    pub(super) rotations: BoundCounter,
    pub(super) truncations: BoundCounter,
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
pub(super) struct PathSeriesTable {
    pub(super) own: SelfMetrics,
    pub(super) limit: usize,
    pub(super) paths: HashMap<String, PathSeries, IdBuild>,
    pub(super) other: Option<PathSeries>,
    /// Labels whose `log_behind_bytes` was set at the last report.
    pub(super) behind_reported: HashSet<String>,
}

impl PathSeriesTable {
    pub(super) fn new(own: SelfMetrics, limit: usize) -> PathSeriesTable {
        PathSeriesTable {
            own,
            limit,
            paths: HashMap::default(),
            other: None,
            behind_reported: HashSet::new(),
        }
    }

    /// The label a file's counts go to (its own, or the shared one past the limit).
    pub(super) fn label<'a>(&self, label: &'a str) -> &'a str {
        if self.paths.contains_key(label) {
            label
        } else {
            OTHER_PATHS
        }
    }

    pub(super) fn ensure(&mut self, label: &str) {
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

    pub(super) fn get(&self, label: &str) -> Option<&PathSeries> {
        self.paths.get(label).or(self.other.as_ref())
    }

    /// Removes the series of paths no followed file has as its label.
    pub(super) fn retain(&mut self, live: &HashSet<&str>) {
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
