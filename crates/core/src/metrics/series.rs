//! Where a metric's series live: one unlabelled series or a family, with the bookkeeping that
//! caps labelled series and expires idle ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::error::UpdateError;
use super::limits::{LiveLimits, MAX_LABEL_VALUE_LEN};
use crate::schema::{MetricDef, MetricType, Source};

/// Label values in the order the schema declares the label names.
pub type LabelSet = Vec<(&'static str, String)>;

/// One series (unlabelled) or a family of labelled series.
pub(super) enum Cell<M, C> {
    One(M),
    Many(Family<LabelSet, M, C>),
}

/// A metric's storage and the bookkeeping that bounds its labelled series.
pub(super) struct Inner<M, C> {
    pub(super) def: MetricDef,
    pub(super) label_names: Vec<&'static str>,
    pub(super) cell: Cell<M, C>,
    /// The limits that apply (reloadable); None for the exporter's own metrics and what it
    /// measures, which are never capped nor expired.
    pub(super) limits: Option<Arc<LiveLimits>>,
    /// Which of the limits' expiries applies to this metric.
    pub(super) expiry: Expiry,
    pub(super) series: AtomicUsize,
    pub(super) creating: Mutex<()>,
    /// Last update per labelled series, kept while an expiry is set.
    pub(super) touched: Option<Mutex<HashMap<LabelSet, Instant>>>,
    /// Last update of an unlabelled series, kept while an expiry is set.
    /// Coarse monotonic milliseconds of the last update, + 1 (0: none since the last expiry).
    pub(super) last_update: AtomicU64,
}

/// Which expiry a pushed metric follows: idle labelled series are removed after
/// `series_ttl`, an engine gauge that goes stale becomes absent after `gauge_stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    Never,
    SeriesTtl,
    GaugeStale,
}

impl<M, C: MetricConstructor<M>> Inner<M, C> {
    pub(super) fn new(
        def: &MetricDef,
        one: impl FnOnce() -> M,
        ctor: C,
        limits: &Arc<LiveLimits>,
    ) -> Inner<M, C> {
        // Label names live as long as the process; leaking them once avoids a String per series.
        let label_names: Vec<&'static str> = def
            .labels
            .iter()
            .map(|l| &*Box::leak(l.clone().into_boxed_str()))
            .collect();
        let labelled = !label_names.is_empty();
        // Only what the engine pushes is subject to the series limit and to expiry; the
        // exporter's own series and what it measures never are.
        let pushed = def.source == Source::Engine;
        let expiry = match (pushed, def.kind) {
            (false, _) => Expiry::Never,
            (true, MetricType::Gauge) if def.goes_stale => Expiry::GaugeStale,
            (true, _) if labelled => Expiry::SeriesTtl,
            (true, _) => Expiry::Never,
        };
        Inner {
            def: def.clone(),
            label_names,
            cell: if labelled {
                Cell::Many(Family::new_with_constructor(ctor))
            } else {
                Cell::One(one())
            },
            limits: pushed.then(|| limits.clone()),
            expiry,
            series: AtomicUsize::new(0),
            creating: Mutex::new(()),
            touched: (labelled && expiry != Expiry::Never).then(Default::default),
            last_update: AtomicU64::new(0),
        }
    }

    /// How long an idle series lives now; None: forever.
    pub(super) fn expire_after(&self) -> Option<Duration> {
        let limits = self.limits.as_ref()?;
        match self.expiry {
            Expiry::Never => None,
            Expiry::SeriesTtl => limits.series_ttl(),
            Expiry::GaugeStale => limits.gauge_stale(),
        }
    }

    fn series_limit(&self) -> usize {
        self.limits
            .as_ref()
            .map_or(usize::MAX, |l| l.series_limit.load(Ordering::Relaxed))
    }

    /// Runs `op` on the series for `labels`, creating it if the series limit allows. The
    /// unlabelled series (what engines mostly push) is a few instructions inlined into the
    /// caller; a labelled one is looked up out of line, so callers stay small.
    #[inline]
    pub(super) fn with(&self, labels: &[&str], op: impl FnOnce(&M)) -> Result<(), UpdateError> {
        match &self.cell {
            Cell::One(m) if labels.is_empty() => {
                if self.expiry != Expiry::Never && self.expire_after().is_some() {
                    // On every engine gauge update: a relaxed store of a coarse clock, no
                    // lock and no precise clock read.
                    self.last_update.store(coarse_ms() + 1, Ordering::Relaxed);
                }
                op(m);
                Ok(())
            }
            _ => self.with_labelled(labels, op),
        }
    }

    #[inline(never)]
    fn with_labelled(&self, labels: &[&str], op: impl FnOnce(&M)) -> Result<(), UpdateError> {
        let Cell::Many(family) = &self.cell else {
            return Err(UpdateError::LabelMismatch);
        };
        let set = self.zip(labels)?;
        if let Some(touched) = &self.touched {
            if self.expire_after().is_some() {
                lock(touched).insert(set.clone(), Instant::now());
            }
        }
        if let Some(series) = family.get(&set) {
            op(&series);
            return Ok(());
        }
        // Creation is rare; serialising it keeps the series count exact.
        let _creating = lock(&self.creating);
        if family.get(&set).is_none() {
            if self.series.load(Ordering::Relaxed) >= self.series_limit() {
                if let Some(touched) = &self.touched {
                    lock(touched).remove(&set);
                }
                return Err(UpdateError::SeriesLimit);
            }
            self.series.fetch_add(1, Ordering::Relaxed);
        }
        op(&family.get_or_create(&set));
        Ok(())
    }

    /// The series for `labels`, created now and given its first value by `init`, to update
    /// later without the lookup (a hash of the label set, an allocation per label and a read
    /// lock). Only for series nothing removes: the exporter's own.
    pub(super) fn bind(&self, labels: &[&str], init: impl FnOnce(&M)) -> Result<M, UpdateError>
    where
        M: Clone,
    {
        debug_assert!(
            self.limits.is_none(),
            "{}: its series may expire",
            self.def.name
        );
        let mut series = None;
        self.with(labels, |m| {
            init(m);
            series = Some(m.clone());
        })?;
        series.ok_or(UpdateError::LabelMismatch)
    }

    /// Whether an update of the series for `labels` would be accepted (label values and the
    /// series limit), without changing anything.
    pub(super) fn check(&self, labels: &[&str]) -> Result<(), UpdateError> {
        let family = match &self.cell {
            Cell::One(_) if labels.is_empty() => return Ok(()),
            Cell::One(_) => return Err(UpdateError::LabelMismatch),
            Cell::Many(f) => f,
        };
        let set = self.zip(labels)?;
        if family.get(&set).is_none() && self.series.load(Ordering::Relaxed) >= self.series_limit()
        {
            return Err(UpdateError::SeriesLimit);
        }
        Ok(())
    }

    pub(super) fn read<T>(&self, labels: &[&str], f: impl FnOnce(&M) -> T) -> Option<T> {
        match &self.cell {
            Cell::One(m) => labels.is_empty().then(|| f(m)),
            Cell::Many(family) => family.get(&self.zip(labels).ok()?).map(|m| f(&m)),
        }
    }

    fn zip(&self, labels: &[&str]) -> Result<LabelSet, UpdateError> {
        if labels.len() != self.label_names.len() {
            return Err(UpdateError::LabelMismatch);
        }
        if labels.iter().any(|v| v.len() > MAX_LABEL_VALUE_LEN) {
            return Err(UpdateError::LabelValueTooLong);
        }
        Ok(self
            .label_names
            .iter()
            .zip(labels)
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect())
    }

    pub(super) fn remove(&self, labels: &[&str]) -> bool {
        let Ok(set) = self.zip(labels) else {
            return false;
        };
        if let Some(touched) = &self.touched {
            lock(touched).remove(&set);
        }
        self.remove_set(&set)
    }

    fn remove_set(&self, set: &LabelSet) -> bool {
        let Cell::Many(family) = &self.cell else {
            return false;
        };
        let _creating = lock(&self.creating);
        let removed = family.remove(set);
        if removed {
            self.series.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes labelled series idle for `expire_after`; returns how many. An idle unlabelled
    /// series is handed to `clear_one` (a gauge becomes absent) and counts as one.
    pub(super) fn expire(&self, now: Instant, clear_one: impl FnOnce(&M)) -> usize {
        let Some(ttl) = self.expire_after() else {
            // Expiry turned off (by a reload): what was tracked no longer expires.
            if let Some(touched) = &self.touched {
                lock(touched).clear();
            }
            self.last_update.store(0, Ordering::Relaxed);
            return 0;
        };
        if let Cell::One(m) = &self.cell {
            // `now` may lie ahead of the clock (tests): shift the coarse clock by as much.
            let now_ms =
                coarse_ms() + now.saturating_duration_since(Instant::now()).as_millis() as u64;
            let last = self.last_update.load(Ordering::Relaxed);
            let idle = last > 0 && now_ms.saturating_sub(last - 1) >= ttl.as_millis() as u64;
            if idle
                && self
                    .last_update
                    .compare_exchange(last, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                clear_one(m);
                return 1;
            }
            return 0;
        }
        let Some(touched) = &self.touched else {
            return 0;
        };
        let stale: Vec<LabelSet> = {
            let mut map = lock(touched);
            let stale: Vec<LabelSet> = map
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &stale {
                map.remove(k);
            }
            stale
        };
        stale.iter().filter(|set| self.remove_set(set)).count()
    }
}

/// CLOCK_MONOTONIC_COARSE in milliseconds: a few nanoseconds to read, precise to a few ms,
/// ample for expiries measured in minutes.
pub(super) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
