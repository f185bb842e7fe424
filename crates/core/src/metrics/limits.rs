//! The bounds ingest works within, changed in place by a reload.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Longer label values are rejected: they are a sign of a bug upstream, not a real label.
pub(super) const MAX_LABEL_VALUE_LEN: usize = 256;

/// Options that bound what ingest can do to the registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum series per labelled engine metric.
    pub series_limit: usize,
    /// Labelled engine series not updated for this long are removed.
    pub series_ttl: Option<Duration>,
    /// Engine gauges not set for this long have no value any more (a gauge the engine stopped
    /// pushing must not keep its last reading forever).
    pub gauge_stale: Option<Duration>,
}

/// The limits in force, shared by every pushed metric and changed in place by a reload.
#[derive(Debug)]
pub struct LiveLimits {
    pub(super) series_limit: AtomicUsize,
    /// Milliseconds; 0: never.
    series_ttl_ms: AtomicU64,
    gauge_stale_ms: AtomicU64,
}

impl LiveLimits {
    pub(super) fn new(limits: Limits) -> LiveLimits {
        let live = LiveLimits {
            series_limit: AtomicUsize::new(0),
            series_ttl_ms: AtomicU64::new(0),
            gauge_stale_ms: AtomicU64::new(0),
        };
        live.set(limits);
        live
    }

    pub(super) fn set(&self, limits: Limits) {
        let ms = |d: Option<Duration>| d.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.series_limit
            .store(limits.series_limit, Ordering::Relaxed);
        self.series_ttl_ms
            .store(ms(limits.series_ttl), Ordering::Relaxed);
        self.gauge_stale_ms
            .store(ms(limits.gauge_stale), Ordering::Relaxed);
    }

    fn duration(ms: &AtomicU64) -> Option<Duration> {
        match ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn series_ttl(&self) -> Option<Duration> {
        Self::duration(&self.series_ttl_ms)
    }

    pub(crate) fn gauge_stale(&self) -> Option<Duration> {
        Self::duration(&self.gauge_stale_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            series_limit: 1000,
            series_ttl: None,
            gauge_stale: None,
        }
    }
}
