//! Typed handles on the registry's metrics: what code holds to update them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::UpdateError;
use super::exemplar::Exemplar;
use super::series::Inner;
use super::value_types::{FloatCounter, FloatGauge, Hist, HistogramCtor, TotalCell, ValueGauge};
use crate::schema::{MetricDef, SchemaError};

pub(super) type CounterCtor = fn() -> FloatCounter;
pub(super) type GaugeCtor = fn() -> FloatGauge;

/// A counter of the schema. Label values come in the schema's label order.
#[derive(Clone)]
pub struct Counter(pub(super) Arc<Inner<FloatCounter, CounterCtor>>);

impl Counter {
    /// Adds `v` (finite, >= 0).
    #[inline]
    pub fn inc_by(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        if v < 0.0 {
            return Err(UpdateError::NegativeCounter);
        }
        let mut result = Ok(());
        self.0.with(labels, |c| result = add_finite(c, v))?;
        result
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

    /// The series for `labels`, created now (at 0), for counts flushed many times a second.
    /// Only for the exporter's own counters; one that is later removed must drop its bound
    /// handle with it (counts into a removed series are not served).
    pub fn bind(&self, labels: &[&str]) -> Result<BoundCounter, UpdateError> {
        self.0.bind(labels, |_| {}).map(BoundCounter)
    }

    /// Removes a labelled series (its subject is gone); returns whether it existed.
    pub fn remove(&self, labels: &[&str]) -> bool {
        self.0.remove(labels)
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// Adds `v` unless the counter would become infinite: stuck at +Inf it would hide every
/// later increase.
#[inline]
fn add_finite(c: &FloatCounter, v: f64) -> Result<(), UpdateError> {
    if (c.get() + v).is_finite() {
        c.inc_by(v);
        Ok(())
    } else {
        Err(UpdateError::NotFinite)
    }
}

/// One series of one of the exporter's own counters, resolved once by [`Counter::bind`].
#[derive(Clone)]
pub struct BoundCounter(FloatCounter);

impl BoundCounter {
    pub fn add(&self, n: u64) {
        self.0.inc_by(n as f64);
    }
}

/// A gauge of the schema.
#[derive(Clone)]
pub struct Gauge(pub(super) Arc<Inner<FloatGauge, GaugeCtor>>);

impl Gauge {
    #[inline]
    pub fn set(&self, labels: &[&str], v: f64) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        self.0.with(labels, |g| g.set(v))
    }

    /// Adds a (possibly negative) delta.
    #[inline]
    pub fn add(&self, labels: &[&str], delta: f64) -> Result<(), UpdateError> {
        if !delta.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        let mut added = true;
        self.0.with(labels, |g| added = g.add(delta))?;
        if added {
            Ok(())
        } else {
            Err(UpdateError::NotFinite)
        }
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

    /// The series for `labels`, created now with the value `v`, for a gauge set many times
    /// a second. Only for the exporter's own gauges, whose series are never removed.
    pub fn bind(&self, labels: &[&str], v: f64) -> Result<BoundGauge, UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        self.0.bind(labels, |g| g.set(v)).map(BoundGauge)
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// One series of one of the exporter's own gauges, resolved once by [`Gauge::bind`].
#[derive(Clone)]
pub struct BoundGauge(FloatGauge);

impl BoundGauge {
    /// Sets a finite value; a value that is not finite leaves the gauge as it was.
    pub fn set(&self, v: f64) {
        if v.is_finite() {
            self.0.set(v);
        }
    }
}

/// A histogram of the schema.
#[derive(Clone)]
pub struct Histogram(pub(super) Arc<Inner<Hist, HistogramCtor>>);

impl Histogram {
    /// Observes a finite value, with an optional exemplar.
    #[inline]
    pub fn observe(
        &self,
        labels: &[&str],
        v: f64,
        exemplar: Option<Exemplar<'_>>,
    ) -> Result<(), UpdateError> {
        if !v.is_finite() {
            return Err(UpdateError::NotFinite);
        }
        self.0.with(labels, |h| h.observe(v, exemplar))
    }

    pub fn def(&self) -> &MetricDef {
        &self.0.def
    }
}

/// A running total the sidecar reads from elsewhere (the engine's CPU time): an unlabelled
/// probe counter of the schema. Absent until first measured and while unmeasurable, so that
/// neither a made-up 0 nor a jump from 0 to the first reading reaches rate().
#[derive(Clone)]
pub struct Total {
    pub(super) def: Arc<MetricDef>,
    pub(super) cell: TotalCell,
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

    pub(super) fn expire(&self, now: Instant) -> usize {
        match self {
            Metric::Counter(m) => m.0.expire(now, |_| {}),
            Metric::Gauge(m) => m.0.expire(now, ValueGauge::clear),
            Metric::Histogram(m) => m.0.expire(now, |_| {}),
            Metric::Total(_) => 0,
        }
    }

    /// How long this metric's series live without an update, if they expire at all.
    pub(super) fn expire_after(&self) -> Option<Duration> {
        match self {
            Metric::Counter(m) => m.0.expire_after(),
            Metric::Gauge(m) => m.0.expire_after(),
            Metric::Histogram(m) => m.0.expire_after(),
            Metric::Total(_) => None,
        }
    }
}

/// The start-up error for a metric the code needs as `wanted` but the schema lacks or
/// declares with another type.
pub(crate) fn wrong(name: &str, wanted: &str, found: Option<&Metric>) -> SchemaError {
    match found {
        Some(m) => SchemaError::metric(
            name,
            format!("is a {}, the code needs a {wanted}", m.def().kind.as_str()),
        ),
        None => SchemaError::metric(name, format!("no such {wanted} in the schema")),
    }
}

/// A typed handle bound once from the registry by its schema name: a name the schema lacks,
/// or declares with another type, is an error at start-up, never a silent miss at update time.
pub trait Bind: Sized {
    fn bind(metrics: &super::Metrics, name: &str) -> Result<Self, crate::schema::SchemaError>;
}

impl Bind for Gauge {
    fn bind(metrics: &super::Metrics, name: &str) -> Result<Self, crate::schema::SchemaError> {
        metrics.gauge(name)
    }
}

impl Bind for Counter {
    fn bind(metrics: &super::Metrics, name: &str) -> Result<Self, crate::schema::SchemaError> {
        metrics.counter(name)
    }
}

impl Bind for Total {
    fn bind(metrics: &super::Metrics, name: &str) -> Result<Self, crate::schema::SchemaError> {
        metrics.total(name)
    }
}

impl Bind for Histogram {
    fn bind(metrics: &super::Metrics, name: &str) -> Result<Self, crate::schema::SchemaError> {
        metrics.histogram(name)
    }
}

/// Declares a struct of typed handles that a probe writes, each bound once from its schema
/// name by `bind(&Metrics)`:
///
/// ```text
/// exporter_core::metric_handles! {
///     /// What the kernel probe writes.
///     pub struct KernelMetrics {
///         offset: Gauge = "clock_master_kernel_offset_seconds",
///     }
/// }
/// ```
#[macro_export]
macro_rules! metric_handles {
    ($(#[$doc:meta])* $vis:vis struct $name:ident {
        $($(#[$fdoc:meta])* $field:ident: $kind:ident = $metric:literal,)+
    }) => {
        $(#[$doc])*
        #[derive(Clone)]
        $vis struct $name {
            $($(#[$fdoc])* pub $field: $crate::metrics::$kind,)+
        }

        impl $name {
            /// The metric names these handles write.
            pub const NAMES: &'static [&'static str] = &[$($metric,)+];

            /// Every handle, untyped (to walk them all).
            pub fn all(&self) -> Vec<$crate::Metric> {
                vec![$($crate::Metric::$kind(self.$field.clone()),)+]
            }

            pub fn bind(metrics: &$crate::Metrics) -> Result<Self, $crate::schema::SchemaError> {
                Ok($name {
                    $($field: <$crate::metrics::$kind as $crate::metrics::Bind>::bind(metrics, $metric)?,)+
                })
            }
        }
    };
}
