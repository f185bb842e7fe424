//! The registry of one tier, built from its schema: every metric registered up front so that
//! every unlabelled series is exposed from the first scrape. Code updates metrics through
//! typed handles ([`Counter`], [`Gauge`], [`Histogram`]) resolved once at start-up, so a
//! misspelt or mistyped name is a start-up error, and a hot path never looks a name up.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::MetricType as PcMetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::schema::{MetricDef, MetricType, Schema, SchemaError, Source, TierInfo};
use crate::self_metrics::SelfMetrics;

/// Label values in the order the schema declares the label names.
pub type LabelSet = Vec<(&'static str, String)>;
type FloatCounter = PcCounter<f64, AtomicU64>;
type FloatGauge = ValueGauge;
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

/// Why an update was refused; the ingest channels turn it into their rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Not one value per declared label.
    LabelMismatch,
    LabelValueTooLong,
    NotFinite,
    NegativeCounter,
    SeriesLimit,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateError::LabelMismatch => "label values do not match the declared labels",
            UpdateError::LabelValueTooLong => "label value too long",
            UpdateError::NotFinite => "value is not a finite number",
            UpdateError::NegativeCounter => "negative counter increment",
            UpdateError::SeriesLimit => "series limit reached",
        })
    }
}

/// A gauge that can also be absent: an engine gauge has no series until the engine first sets
/// it, and loses it again when the engine stops pushing (see `ingest.gauge_stale_seconds`).
/// NaN stays a value (a measured gauge that cannot be measured right now).
#[derive(Debug, Clone)]
pub struct ValueGauge(Arc<AtomicU64>);

/// A NaN payload no arithmetic produces: "no value", as opposed to NaN, "unknown".
const ABSENT: u64 = 0x7ff8_0000_dead_0001;

impl Default for ValueGauge {
    fn default() -> Self {
        ValueGauge(Arc::new(AtomicU64::new(0f64.to_bits())))
    }
}

impl ValueGauge {
    fn absent() -> Self {
        ValueGauge(Arc::new(AtomicU64::new(ABSENT)))
    }

    fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != ABSENT).then(|| f64::from_bits(bits))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn clear(&self) {
        self.0.store(ABSENT, Ordering::Relaxed);
    }

    /// Adds `delta` (an absent value counts as 0, as in StatsD); false if the result would
    /// not be finite, leaving the value as it was.
    fn add(&self, delta: f64) -> bool {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let base = if current == ABSENT {
                0.0
            } else {
                f64::from_bits(current)
            };
            let next = base + delta;
            if !next.is_finite() {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

impl prometheus_client::metrics::TypedMetric for ValueGauge {
    const TYPE: PcMetricType = PcMetricType::Gauge;
}

impl EncodeMetric for ValueGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.get() {
            Some(v) => encoder.encode_gauge(&v),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> PcMetricType {
        PcMetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.get().is_none()
    }
}

#[derive(Clone, Debug)]
pub struct HistogramCtor(Arc<[f64]>);

impl MetricConstructor<Hist> for HistogramCtor {
    fn new_metric(&self) -> Hist {
        Hist::new(self.0.iter().copied())
    }
}

/// One series (unlabelled) or a family of labelled series.
enum Cell<M, C> {
    One(M),
    Many(Family<LabelSet, M, C>),
}

/// A metric's storage and the bookkeeping that bounds its labelled series.
struct Inner<M, C> {
    def: MetricDef,
    label_names: Vec<&'static str>,
    cell: Cell<M, C>,
    series_limit: usize,
    series: AtomicUsize,
    creating: Mutex<()>,
    /// Series not updated for this long are removed (labelled) or become absent
    /// (unlabelled gauges); None for the exporter's own metrics and what it measures.
    expire_after: Option<Duration>,
    /// Last update per labelled series, kept only when `expire_after` is set.
    touched: Option<Mutex<HashMap<LabelSet, Instant>>>,
    /// Last update of an unlabelled series, kept only when `expire_after` is set.
    last_update: Mutex<Option<Instant>>,
}

impl<M, C: MetricConstructor<M>> Inner<M, C> {
    fn new(def: &MetricDef, one: impl FnOnce() -> M, ctor: C, limits: Limits) -> Inner<M, C> {
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
        let expire_after = match (pushed, def.kind) {
            (false, _) => None,
            (true, MetricType::Gauge) if def.goes_stale => limits.gauge_stale,
            (true, _) => limits.series_ttl.filter(|_| labelled),
        };
        Inner {
            def: def.clone(),
            label_names,
            cell: if labelled {
                Cell::Many(Family::new_with_constructor(ctor))
            } else {
                Cell::One(one())
            },
            series_limit: if pushed {
                limits.series_limit
            } else {
                usize::MAX
            },
            series: AtomicUsize::new(0),
            creating: Mutex::new(()),
            expire_after,
            touched: (labelled && expire_after.is_some()).then(Default::default),
            last_update: Mutex::new(None),
        }
    }

    /// Runs `op` on the series for `labels`, creating it if the series limit allows.
    fn with(&self, labels: &[&str], op: impl FnOnce(&M)) -> Result<(), UpdateError> {
        let family = match &self.cell {
            Cell::One(m) if labels.is_empty() => {
                if self.expire_after.is_some() {
                    *lock(&self.last_update) = Some(Instant::now());
                }
                op(m);
                return Ok(());
            }
            Cell::One(_) => return Err(UpdateError::LabelMismatch),
            Cell::Many(f) => f,
        };
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

    /// Whether an update of the series for `labels` would be accepted (label values and the
    /// series limit), without changing anything.
    fn check(&self, labels: &[&str]) -> Result<(), UpdateError> {
        let family = match &self.cell {
            Cell::One(_) if labels.is_empty() => return Ok(()),
            Cell::One(_) => return Err(UpdateError::LabelMismatch),
            Cell::Many(f) => f,
        };
        let set = self.zip(labels)?;
        if family.get(&set).is_none() && self.series.load(Ordering::Relaxed) >= self.series_limit {
            return Err(UpdateError::SeriesLimit);
        }
        Ok(())
    }

    fn read<T>(&self, labels: &[&str], f: impl FnOnce(&M) -> T) -> Option<T> {
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

    fn remove(&self, labels: &[&str]) -> bool {
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
    fn expire(&self, now: Instant, clear_one: impl FnOnce(&M)) -> usize {
        let Some(ttl) = self.expire_after else {
            return 0;
        };
        if let Cell::One(m) = &self.cell {
            let mut last = lock(&self.last_update);
            if last.is_some_and(|t| now.duration_since(t) >= ttl) {
                *last = None;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type CounterCtor = fn() -> FloatCounter;
type GaugeCtor = fn() -> FloatGauge;

/// A counter of the schema. Label values come in the schema's label order.
#[derive(Clone)]
pub struct Counter(Arc<Inner<FloatCounter, CounterCtor>>);

impl Counter {
    /// Adds `v` (finite, >= 0).
    pub fn inc_by(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        if v < 0.0 {
            return Err(UpdateError::NegativeCounter);
        }
        let mut overflow = false;
        self.0.with(labels, |c| {
            // A counter stuck at +Inf would hide every later increase.
            if (c.get() + v).is_finite() {
                c.inc_by(v);
            } else {
                overflow = true;
            }
        })?;
        if overflow {
            return Err(UpdateError::NotFinite);
        }
        Ok(())
    }

    /// Adds a count the exporter itself made (always finite and non-negative); only a
    /// wrong label count can fail, which the self-metric tests rule out.
    pub fn add(&self, labels: &[&str], n: u64) {
        if let Err(e) = self.inc_by(labels, n as f64) {
            tracing::warn!(target: "metrics", metric = %self.0.def.name, error = %e, "self-metric update failed");
        }
    }

    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        self.0.read(labels, |c| c.get())
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// A gauge of the schema.
#[derive(Clone)]
pub struct Gauge(Arc<Inner<FloatGauge, GaugeCtor>>);

impl Gauge {
    pub fn set(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        self.0.with(labels, |g| g.set(v))
    }

    /// Adds a (possibly negative) delta.
    pub fn add(&self, labels: &[&str], delta: f64) -> Result<(), UpdateError> {
        if !delta.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        let mut overflow = false;
        self.0.with(labels, |g| overflow = !g.add(delta))?;
        if overflow {
            return Err(UpdateError::NotFinite);
        }
        Ok(())
    }

    /// Marks the value unknown (NaN): what it measures cannot be measured right now.
    pub fn set_unknown(&self, labels: &[&str]) -> Result<(), UpdateError> {
        self.0.with(labels, |g| g.set(f64::NAN))
    }

    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        self.0.read(labels, |g| g.get()).flatten()
    }

    /// Removes a labelled series; returns whether it existed.
    pub fn remove(&self, labels: &[&str]) -> bool {
        self.0.remove(labels)
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// A histogram of the schema.
#[derive(Clone)]
pub struct Histogram(Arc<Inner<Hist, HistogramCtor>>);

impl Histogram {
    /// Observes a finite value, with an optional exemplar.
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
        self.0.with(labels, |h| h.observe(v, exemplar, None))
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// The exposed cell of a [`Total`]: f64 bits, NaN while unmeasured (then not exposed).
#[derive(Debug, Clone)]
struct TotalCell(Arc<AtomicU64>);

impl TotalCell {
    fn get(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }
}

impl EncodeMetric for TotalCell {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.get() {
            Some(v) => encoder.encode_counter::<NoLabelSet, _, f64>(&v, None),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> PcMetricType {
        PcMetricType::Counter
    }

    fn is_empty(&self) -> bool {
        self.get().is_none()
    }
}

/// A running total the sidecar reads from elsewhere (the engine's CPU time): an unlabelled
/// probe counter of the schema. Absent until first measured and while unmeasurable, so that
/// neither a made-up 0 nor a jump from 0 to the first reading reaches rate().
#[derive(Clone)]
pub struct Total {
    def: Arc<MetricDef>,
    cell: TotalCell,
}

impl Total {
    /// The current total (finite, >= 0). A lower value than before is a reset (the process
    /// restarted), which Prometheus handles as for any counter.
    pub fn set(&self, v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        if v < 0.0 {
            return Err(UpdateError::NegativeCounter);
        }
        self.cell.0.store(v.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// No longer measurable: the series disappears until the next `set`.
    pub fn clear(&self) {
        self.cell.0.store(f64::NAN.to_bits(), Ordering::Relaxed);
    }

    pub fn value(&self) -> Option<f64> {
        self.cell.get()
    }

    pub fn def(&self) -> &MetricDef {
        &self.def
    }
}

/// Any metric of the registry, for code that handles every type (ingest mapping, tests).
#[derive(Clone)]
pub enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Total(Total),
}

impl Metric {
    pub fn def(&self) -> &MetricDef {
        match self {
            Metric::Counter(m) => m.def(),
            Metric::Gauge(m) => m.def(),
            Metric::Histogram(m) => m.def(),
            Metric::Total(m) => m.def(),
        }
    }

    /// Whether an update with these label values would be accepted now (label values and
    /// the series limit), without changing anything: a multi-effect input checks every
    /// effect before applying any.
    pub fn check(&self, labels: &[&str]) -> Result<(), UpdateError> {
        match self {
            Metric::Counter(m) => m.0.check(labels),
            Metric::Gauge(m) => m.0.check(labels),
            Metric::Histogram(m) => m.0.check(labels),
            // Nothing ingest can write.
            Metric::Total(_) => Err(UpdateError::LabelMismatch),
        }
    }

    /// Current value of a counter or gauge series; None for histograms and absent series.
    pub fn value(&self, labels: &[&str]) -> Option<f64> {
        match self {
            Metric::Counter(m) => m.value(labels),
            Metric::Gauge(m) => m.value(labels),
            Metric::Total(m) => labels.is_empty().then(|| m.value()).flatten(),
            Metric::Histogram(_) => None,
        }
    }

    fn expire(&self, now: Instant) -> usize {
        match self {
            Metric::Counter(m) => m.0.expire(now, |_| {}),
            Metric::Gauge(m) => m.0.expire(now, ValueGauge::clear),
            Metric::Histogram(m) => m.0.expire(now, |_| {}),
            Metric::Total(_) => 0,
        }
    }

    /// How long this metric's series live without an update, if they expire at all.
    fn expire_after(&self) -> Option<Duration> {
        match self {
            Metric::Counter(m) => m.0.expire_after,
            Metric::Gauge(m) => m.0.expire_after,
            Metric::Histogram(m) => m.0.expire_after,
            Metric::Total(_) => None,
        }
    }
}

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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            series_limit: 1000,
            series_ttl: None,
            gauge_stale: None,
        }
    }
}

/// The tier's registry: prometheus-client's registry plus a handle per schema metric.
pub struct Metrics {
    tier: TierInfo,
    registry: Registry,
    by_name: HashMap<String, Metric>,
    own: SelfMetrics,
}

impl Metrics {
    /// Registers every metric of the schema and resolves the exporter's own handles; fails
    /// when the schema lacks a self-metric the code needs.
    pub fn new(schema: &Schema, limits: Limits) -> Result<Metrics, SchemaError> {
        let mut registry = Registry::default();
        let mut by_name = HashMap::new();
        for def in &schema.metrics {
            let metric = register(&mut registry, def, limits);
            if let Metric::Counter(c) = &metric {
                for values in &def.initial {
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    // Checked by the schema: one value per label.
                    let _ = c.inc_by(&values, 0.0);
                }
            }
            by_name.insert(def.name.clone(), metric);
        }
        let own = SelfMetrics::resolve(&schema.tier.self_prefix, |name| by_name.get(name))?;
        Ok(Metrics {
            tier: schema.tier.clone(),
            registry,
            by_name,
            own,
        })
    }

    /// A metric by its exposed name, for start-up resolution and tests; never on a hot path.
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.by_name.get(name)
    }

    /// Every metric with its exposed name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Metric)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn counter(&self, name: &str) -> Result<Counter, SchemaError> {
        match self.get(name) {
            Some(Metric::Counter(c)) => Ok(c.clone()),
            other => Err(wrong(name, "counter", other)),
        }
    }

    pub fn gauge(&self, name: &str) -> Result<Gauge, SchemaError> {
        match self.get(name) {
            Some(Metric::Gauge(g)) => Ok(g.clone()),
            other => Err(wrong(name, "gauge", other)),
        }
    }

    pub fn total(&self, name: &str) -> Result<Total, SchemaError> {
        match self.get(name) {
            Some(Metric::Total(t)) => Ok(t.clone()),
            other => Err(wrong(name, "probe counter", other)),
        }
    }

    pub fn histogram(&self, name: &str) -> Result<Histogram, SchemaError> {
        match self.get(name) {
            Some(Metric::Histogram(h)) => Ok(h.clone()),
            other => Err(wrong(name, "histogram", other)),
        }
    }

    /// The exporter's own metrics.
    pub fn own(&self) -> &SelfMetrics {
        &self.own
    }

    pub fn tier(&self) -> &TierInfo {
        &self.tier
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Expires idle engine series (labelled ones past `series_ttl`, gauges past
    /// `gauge_stale`); returns how many.
    pub fn expire_series(&self, now: Instant) -> usize {
        self.by_name.values().map(|m| m.expire(now)).sum()
    }

    /// The shortest expiry of any metric: how often `expire_series` is worth calling.
    pub fn shortest_expiry(&self) -> Option<Duration> {
        self.by_name.values().filter_map(Metric::expire_after).min()
    }
}

pub(crate) fn wrong(name: &str, wanted: &str, found: Option<&Metric>) -> SchemaError {
    match found {
        Some(m) => SchemaError(format!(
            "{name} is a {}, the code needs a {wanted}",
            m.def().kind.as_str()
        )),
        None => SchemaError(format!("{name}: no such {wanted} in the schema")),
    }
}

fn register(registry: &mut Registry, def: &MetricDef, limits: Limits) -> Metric {
    let name = def.base_name().to_owned();
    let help = def.help.clone();
    let unit = def.unit.as_deref().map(unit_of);
    macro_rules! reg {
        ($inner:expr) => {{
            let inner = $inner;
            match (&inner.cell, unit) {
                (Cell::One(m), Some(u)) => registry.register_with_unit(name, help, u, m.clone()),
                (Cell::One(m), None) => registry.register(name, help, m.clone()),
                (Cell::Many(f), Some(u)) => registry.register_with_unit(name, help, u, f.clone()),
                (Cell::Many(f), None) => registry.register(name, help, f.clone()),
            }
            Arc::new(inner)
        }};
    }
    match def.kind {
        // A total the sidecar reads elsewhere: exposed only once measured.
        MetricType::Counter if def.is_measured_total() => {
            let cell = TotalCell(Arc::new(AtomicU64::new(f64::NAN.to_bits())));
            match unit {
                Some(u) => registry.register_with_unit(name, help, u, cell.clone()),
                None => registry.register(name, help, cell.clone()),
            }
            Metric::Total(Total {
                def: Arc::new(def.clone()),
                cell,
            })
        }
        MetricType::Counter => Metric::Counter(Counter(reg!(Inner::new(
            def,
            FloatCounter::default,
            FloatCounter::default as CounterCtor,
            limits
        )))),
        MetricType::Gauge => {
            // A measured value nobody has measured yet is unknown (NaN); a value the engine
            // has not pushed yet does not exist; only the exporter's own gauges start at 0.
            let first = match def.source {
                Source::Probe | Source::Derived => || {
                    let g = ValueGauge::default();
                    g.set(f64::NAN);
                    g
                },
                Source::Engine => ValueGauge::absent,
                Source::Exporter => ValueGauge::default,
            };
            Metric::Gauge(Gauge(reg!(Inner::new(
                def,
                first,
                ValueGauge::default as GaugeCtor,
                limits
            ))))
        }
        MetricType::Histogram => {
            let buckets: Arc<[f64]> = def.buckets.clone().into();
            let one = {
                let b = buckets.clone();
                move || Hist::new(b.iter().copied())
            };
            Metric::Histogram(Histogram(reg!(Inner::new(
                def,
                one,
                HistogramCtor(buckets),
                limits
            ))))
        }
    }
}

fn unit_of(unit: &str) -> Unit {
    match unit {
        "seconds" => Unit::Seconds,
        "bytes" => Unit::Bytes,
        other => Unit::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{test_schema_toml, TEST_METRICS};

    fn registry(limits: Limits) -> Metrics {
        let schema = Schema::parse(&test_schema_toml("tx", TEST_METRICS)).expect("schema");
        Metrics::new(&schema, limits).expect("registry")
    }

    fn render(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, m.registry()).expect("encode");
        out
    }

    #[test]
    fn handles_resolve_by_type_and_refuse_the_wrong_one() {
        let m = registry(Limits::default());
        assert!(m.counter("tx_engine_commits_total").is_ok());
        assert!(m.gauge("tx_engine_depth").is_ok());
        assert!(m.histogram("tx_engine_latency_seconds").is_ok());
        let e = m.gauge("tx_engine_commits_total").err().expect("a counter");
        assert!(e.0.contains("is a counter"), "{e}");
        let e = m.counter("tx_engine_commitz_total").err().expect("missing");
        assert!(e.0.contains("no such counter"), "{e}");
    }

    #[test]
    fn unlabelled_series_exist_from_the_start_and_measured_gauges_are_unknown() {
        let m = registry(Limits::default());
        let out = render(&m);
        assert!(out.contains("tx_engine_commits_total 0"), "{out}");
        // An engine gauge has no value before the engine sets it: absent, never 0.
        assert!(!out.contains("tx_engine_depth"), "{out}");
        assert!(out.contains("tx_engine_memory_bytes NaN"), "{out}");
        assert!(!out.contains("tx_engine_by_server_total{"), "{out}");
    }

    #[test]
    fn updates_are_checked() {
        let m = registry(Limits::default());
        let c = m.counter("tx_engine_commits_total").expect("counter");
        assert_eq!(c.inc_by(&[], -1.0), Err(UpdateError::NegativeCounter));
        assert_eq!(c.inc_by(&[], f64::INFINITY), Err(UpdateError::NotFinite));
        assert_eq!(c.inc_by(&["x"], 1.0), Err(UpdateError::LabelMismatch));
        c.inc_by(&[], 2.5).expect("valid");
        assert_eq!(c.value(&[]), Some(2.5));
        let g = m.gauge("tx_engine_lag_seconds").expect("gauge");
        assert_eq!(g.set(&[], 1.0), Err(UpdateError::LabelMismatch));
        assert_eq!(g.set(&["a", "b"], 1.0), Err(UpdateError::LabelMismatch));
        let long = "x".repeat(MAX_LABEL_VALUE_LEN + 1);
        assert_eq!(g.set(&[&long], 1.0), Err(UpdateError::LabelValueTooLong));
        assert_eq!(g.add(&["a"], f64::NAN), Err(UpdateError::NotFinite));
        g.set(&["a"], 3.0).expect("valid");
        g.add(&["a"], -1.0).expect("valid");
        assert_eq!(g.value(&["a"]), Some(2.0));
        assert!(g.remove(&["a"]));
        assert_eq!(g.value(&["a"]), None);
        // Finite inputs that would overflow are refused, leaving the value as it was.
        c.inc_by(&[], 1e308).expect("large but finite");
        assert_eq!(c.inc_by(&[], 1e308), Err(UpdateError::NotFinite));
        assert_eq!(c.value(&[]), Some(1e308 + 2.5));
        let d = m.gauge("tx_engine_depth").expect("gauge");
        d.set(&[], 1e308).expect("valid");
        assert_eq!(d.add(&[], 1e308), Err(UpdateError::NotFinite));
        assert_eq!(d.value(&[]), Some(1e308));
        let h = m.histogram("tx_engine_latency_seconds").expect("histogram");
        assert_eq!(h.observe(&[], f64::NAN, None), Err(UpdateError::NotFinite));
        h.observe(&[], 0.5, None).expect("valid");
        assert!(render(&m).contains("tx_engine_latency_seconds_count 1"));
    }

    #[test]
    fn the_series_limit_caps_engine_metrics_only() {
        let m = registry(Limits {
            series_limit: 2,
            series_ttl: None,
            ..Limits::default()
        });
        let c = m.counter("tx_engine_by_server_total").expect("counter");
        c.inc_by(&["a"], 1.0).expect("first");
        c.inc_by(&["b"], 1.0).expect("second");
        assert_eq!(c.inc_by(&["c"], 1.0), Err(UpdateError::SeriesLimit));
        c.inc_by(&["a"], 1.0)
            .expect("an existing series is not new");
        // The exporter's own labelled series are never capped.
        for i in 0..10 {
            m.own().log_lines_read.add(&[&format!("/var/log/{i}")], 1);
        }
        assert_eq!(m.own().log_lines_read.value(&["/var/log/9"]), Some(1.0));
    }

    #[test]
    fn the_ttl_expires_idle_engine_series_but_never_own_ones() {
        let m = registry(Limits {
            series_limit: 10,
            series_ttl: Some(Duration::from_secs(60)),
            ..Limits::default()
        });
        let c = m.counter("tx_engine_by_server_total").expect("counter");
        c.inc_by(&["a"], 1.0).expect("series");
        m.own().statsd_lines.add(&["udp"], 1);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(m.expire_series(later), 1);
        assert_eq!(c.value(&["a"]), None);
        assert_eq!(m.own().statsd_lines.value(&["udp"]), Some(1.0));
        // The expired series can be created again, within the limit.
        c.inc_by(&["a"], 1.0).expect("again");
    }

    #[test]
    fn engine_gauges_go_stale_when_the_engine_stops_setting_them() {
        let m = registry(Limits {
            gauge_stale: Some(Duration::from_secs(300)),
            ..Limits::default()
        });
        assert_eq!(m.shortest_expiry(), Some(Duration::from_secs(300)));
        let depth = m.gauge("tx_engine_depth").expect("gauge");
        let lag = m.gauge("tx_engine_lag_seconds").expect("gauge");
        // A delta on an absent gauge starts from 0, as in StatsD.
        depth.add(&[], 3.0).expect("delta");
        assert_eq!(depth.value(&[]), Some(3.0));
        lag.set(&["a"], 1.5).expect("set");
        assert_eq!(m.expire_series(Instant::now()), 0);
        let later = Instant::now() + Duration::from_secs(301);
        assert_eq!(m.expire_series(later), 2);
        assert_eq!(depth.value(&[]), None);
        assert_eq!(lag.value(&["a"]), None);
        assert!(!render(&m).contains("tx_engine_depth"));
        // Measured gauges and counters are not the engine's to let go stale.
        assert!(render(&m).contains("tx_engine_memory_bytes NaN"));
        depth.set(&[], 4.0).expect("set again");
        assert!(render(&m).contains("tx_engine_depth 4.0"));
    }

    #[test]
    fn exemplars_are_kept_only_when_valid() {
        let ok = Exemplar {
            trace_id: "abc123",
            span_id: Some("def"),
        };
        assert_eq!(ok.label_set().map(|s| s.len()), Some(2));
        let bad = Exemplar {
            trace_id: "not hex!",
            span_id: None,
        };
        assert!(bad.label_set().is_none());
        let too_long = "a".repeat(65);
        let long = Exemplar {
            trace_id: &too_long,
            span_id: None,
        };
        assert!(long.label_set().is_none());
    }
}
