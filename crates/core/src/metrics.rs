//! The registry of one tier, built from its schema: every metric registered up front so that
//! every unlabelled series is exposed from the first scrape, and every update checked against
//! the metric's declared type and labels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::schema::{MetricDef, MetricType, Schema, Source, TierInfo};

/// Label values in the order the schema declares the label names.
pub type LabelSet = Vec<(&'static str, String)>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;
type Hist = HistogramWithExemplars<LabelSet>;

/// OpenMetrics limits an exemplar's label names and values to 128 characters in total.
const EXEMPLAR_MAX_CHARS: usize = 128;
/// Longer label values are rejected: they are a sign of a bug upstream, not a real label.
const MAX_LABEL_VALUE_LEN: usize = 256;

/// A trace reference attached to a histogram observation.
#[derive(Debug, Clone, Copy)]
pub struct Exemplar<'a> {
    pub trace_id: &'a str,
    pub span_id: Option<&'a str>,
}

impl Exemplar<'_> {
    fn label_set(&self) -> Option<LabelSet> {
        let valid = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !valid(self.trace_id, 64) {
            return None;
        }
        let mut set = vec![("trace_id", self.trace_id.to_owned())];
        if let Some(span) = self.span_id.filter(|s| valid(s, 32)) {
            set.push(("span_id", span.to_owned()));
        }
        let chars: usize = set.iter().map(|(k, v)| k.len() + v.len()).sum();
        (chars <= EXEMPLAR_MAX_CHARS).then_some(set)
    }
}

/// Why an update was refused; `reason()` is the label value of the rejection self-metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    WrongType,
    LabelMismatch,
    LabelValueTooLong,
    NotFinite,
    NegativeCounter,
    SeriesLimit,
}

impl UpdateError {
    pub fn reason(self) -> &'static str {
        match self {
            UpdateError::WrongType => "type_mismatch",
            UpdateError::LabelMismatch => "missing_label",
            UpdateError::LabelValueTooLong => "label_value_too_long",
            UpdateError::NotFinite => "invalid_value",
            UpdateError::NegativeCounter => "negative_counter",
            UpdateError::SeriesLimit => "series_limit",
        }
    }
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

#[derive(Clone)]
struct HistogramCtor(Arc<[f64]>);

impl MetricConstructor<Hist> for HistogramCtor {
    fn new_metric(&self) -> Hist {
        Hist::new(self.0.iter().copied())
    }
}

enum Store {
    Counter(FloatCounter),
    Gauge(FloatGauge),
    Histogram(Hist),
    CounterFamily(Family<LabelSet, FloatCounter>),
    GaugeFamily(Family<LabelSet, FloatGauge>),
    HistogramFamily(Family<LabelSet, Hist, HistogramCtor>),
}

/// One registered metric: its schema entry and its storage.
pub struct Metric {
    def: MetricDef,
    label_names: Vec<&'static str>,
    store: Store,
    series_limit: usize,
    series: AtomicUsize,
    creating: Mutex<()>,
    /// Last update per labelled series, kept only when a TTL is configured.
    touched: Option<Mutex<HashMap<LabelSet, Instant>>>,
}

impl Metric {
    pub fn def(&self) -> &MetricDef {
        &self.def
    }

    /// Adds to a counter.
    pub fn inc_by(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        if v < 0.0 {
            return Err(UpdateError::NegativeCounter);
        }
        match &self.store {
            Store::Counter(c) => {
                self.check_unlabelled(labels)?;
                c.inc_by(v);
            }
            Store::CounterFamily(f) => self.with_series(f, labels, |c| {
                c.inc_by(v);
            })?,
            _ => return Err(UpdateError::WrongType),
        }
        Ok(())
    }

    /// Sets a gauge.
    pub fn set(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        self.gauge_op(labels, v, |g| {
            g.set(v);
        })
    }

    /// Marks a gauge as unknown (NaN): the thing it measures cannot be measured right now.
    pub fn set_unknown(&self, labels: &[&str]) -> Result<(), UpdateError> {
        self.gauge_op(labels, 0.0, |g| {
            g.set(f64::NAN);
        })
    }

    /// Adds a (possibly negative) delta to a gauge.
    pub fn add(&self, labels: &[&str], delta: f64) -> Result<(), UpdateError> {
        self.gauge_op(labels, delta, |g| {
            g.inc_by(delta);
        })
    }

    fn gauge_op(
        &self,
        labels: &[&str],
        v: f64,
        op: impl FnOnce(&FloatGauge),
    ) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        match &self.store {
            Store::Gauge(g) => {
                self.check_unlabelled(labels)?;
                op(g);
            }
            Store::GaugeFamily(f) => self.with_series(f, labels, op)?,
            _ => return Err(UpdateError::WrongType),
        }
        Ok(())
    }

    /// Observes a value into a histogram, with an optional exemplar.
    pub fn observe(
        &self,
        labels: &[&str],
        v: f64,
        exemplar: Option<Exemplar<'_>>,
    ) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        let exemplar = exemplar.and_then(|e| e.label_set());
        match &self.store {
            Store::Histogram(h) => {
                self.check_unlabelled(labels)?;
                h.observe(v, exemplar, None);
            }
            Store::HistogramFamily(f) => {
                self.with_series(f, labels, |h| h.observe(v, exemplar, None))?
            }
            _ => return Err(UpdateError::WrongType),
        }
        Ok(())
    }

    /// Current value of a counter or gauge series; None for histograms and absent series.
    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        let set = || self.zip(labels).ok();
        match &self.store {
            Store::Counter(c) => Some(c.get()),
            Store::Gauge(g) => Some(g.get()),
            Store::CounterFamily(f) => f.get(&set()?).map(|c| c.get()),
            Store::GaugeFamily(f) => f.get(&set()?).map(|g| g.get()),
            Store::Histogram(_) | Store::HistogramFamily(_) => None,
        }
    }

    /// Removes a labelled series; returns whether it existed.
    pub fn remove(&self, labels: &[&str]) -> bool {
        let Ok(set) = self.zip(labels) else {
            return false;
        };
        if let Some(touched) = &self.touched {
            lock(touched).remove(&set);
        }
        self.remove_set(&set)
    }

    fn remove_set(&self, set: &LabelSet) -> bool {
        let _creating = lock(&self.creating);
        let removed = match &self.store {
            Store::CounterFamily(f) => f.remove(set),
            Store::GaugeFamily(f) => f.remove(set),
            Store::HistogramFamily(f) => f.remove(set),
            _ => false,
        };
        if removed {
            self.series.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn check_unlabelled(&self, labels: &[&str]) -> Result<(), UpdateError> {
        if labels.is_empty() {
            Ok(())
        } else {
            Err(UpdateError::LabelMismatch)
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

    /// Runs `op` on the series for `labels`, creating it if the per-metric cap allows.
    fn with_series<M, C: MetricConstructor<M>>(
        &self,
        family: &Family<LabelSet, M, C>,
        labels: &[&str],
        op: impl FnOnce(&M),
    ) -> Result<(), UpdateError> {
        let set = self.zip(labels)?;
        if let Some(touched) = &self.touched {
            lock(touched).insert(set.clone(), Instant::now());
        }
        if let Some(series) = family.get(&set) {
            op(&series);
            return Ok(());
        }
        // Creation is rare; serialising it keeps the series count exact.
        let _creating = lock(&self.creating);
        if family.get(&set).is_none() {
            if self.series.load(Ordering::Relaxed) >= self.series_limit {
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

    /// Number of labelled series this metric holds.
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    fn expire(&self, ttl: Duration, now: Instant) -> usize {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options that bound what ingest can do to the registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum series per labelled metric.
    pub series_limit: usize,
    /// Labelled series not updated for this long are removed.
    pub series_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            series_limit: 1000,
            series_ttl: None,
        }
    }
}

/// The tier's registry: prometheus-client's registry plus name-indexed handles.
pub struct Metrics {
    tier: TierInfo,
    registry: Registry,
    by_name: HashMap<String, Metric>,
    limits: Limits,
}

impl Metrics {
    pub fn new(schema: &Schema, limits: Limits) -> Metrics {
        let mut registry = Registry::default();
        let mut by_name = HashMap::new();
        for def in &schema.metrics {
            let metric = register(&mut registry, def, limits);
            for values in &def.initial {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                // Checked by the schema: counters with one value per label.
                let _ = metric.inc_by(&values, 0.0);
            }
            by_name.insert(def.name.clone(), metric);
        }
        Metrics {
            tier: schema.tier.clone(),
            registry,
            by_name,
            limits,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.by_name.get(name)
    }

    pub fn tier(&self) -> &TierInfo {
        &self.tier
    }

    /// A self-metric by its name without the tier's self prefix.
    pub fn self_metric(&self, suffix: &str) -> Option<&Metric> {
        self.get(&format!("{}{suffix}", self.tier.self_prefix))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Removes labelled series older than the TTL; returns how many were removed.
    pub fn expire_series(&self, now: Instant) -> usize {
        match self.limits.series_ttl {
            Some(ttl) => self.by_name.values().map(|m| m.expire(ttl, now)).sum(),
            None => 0,
        }
    }
}

fn register(registry: &mut Registry, def: &MetricDef, limits: Limits) -> Metric {
    // Label names live as long as the process; leaking them once avoids a String per series.
    let label_names: Vec<&'static str> = def
        .labels
        .iter()
        .map(|l| &*Box::leak(l.clone().into_boxed_str()))
        .collect();
    let labelled = !label_names.is_empty();
    let store = match (def.kind, labelled) {
        (MetricType::Counter, false) => Store::Counter(FloatCounter::default()),
        (MetricType::Gauge, false) => {
            let gauge = FloatGauge::default();
            // A measured value nobody has measured yet is unknown, not 0.
            if matches!(def.source, Source::Probe | Source::Derived) {
                gauge.set(f64::NAN);
            }
            Store::Gauge(gauge)
        }
        (MetricType::Histogram, false) => Store::Histogram(Hist::new(def.buckets.iter().copied())),
        (MetricType::Counter, true) => Store::CounterFamily(Family::default()),
        (MetricType::Gauge, true) => Store::GaugeFamily(Family::default()),
        (MetricType::Histogram, true) => Store::HistogramFamily(Family::new_with_constructor(
            HistogramCtor(def.buckets.clone().into()),
        )),
    };
    let name = def.base_name().to_owned();
    let help = def.help.clone();
    let unit = def.unit.as_deref().map(unit_of);
    macro_rules! reg {
        ($m:expr) => {
            match unit {
                Some(u) => registry.register_with_unit(name, help, u, $m.clone()),
                None => registry.register(name, help, $m.clone()),
            }
        };
    }
    match &store {
        Store::Counter(m) => reg!(m),
        Store::Gauge(m) => reg!(m),
        Store::Histogram(m) => reg!(m),
        Store::CounterFamily(m) => reg!(m),
        Store::GaugeFamily(m) => reg!(m),
        Store::HistogramFamily(m) => reg!(m),
    }
    Metric {
        def: def.clone(),
        label_names,
        store,
        series_limit: limits.series_limit,
        series: AtomicUsize::new(0),
        creating: Mutex::new(()),
        touched: (labelled && limits.series_ttl.is_some()).then(Default::default),
    }
}

fn unit_of(unit: &str) -> Unit {
    match unit {
        "seconds" => Unit::Seconds,
        "bytes" => Unit::Bytes,
        other => Unit::Other(other.to_owned()),
    }
}
