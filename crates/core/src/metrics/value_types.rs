//! The metric types prometheus-client lacks: a gauge that can be absent, a probe total that
//! is exposed only once measured, and a histogram that samples its exemplars.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::MetricType as PcMetricType;

use prometheus_client::metrics::exemplar::HistogramWithExemplars;

use super::exemplar::{Exemplar, TraceLabels};

pub(crate) type FloatCounter = prometheus_client::metrics::counter::Counter<f64, AtomicU64>;
pub(crate) type FloatGauge = ValueGauge;

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
    pub(super) fn absent() -> Self {
        ValueGauge(Arc::new(AtomicU64::new(ABSENT)))
    }

    pub(super) fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != ABSENT).then(|| f64::from_bits(bits))
    }

    pub(super) fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub(super) fn clear(&self) {
        self.0.store(ABSENT, Ordering::Relaxed);
    }

    /// Adds `delta` (an absent value counts as 0, as in StatsD); false if the result would
    /// not be finite, leaving the value as it was.
    pub(super) fn add(&self, delta: f64) -> bool {
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

/// How often a bucket's exemplar may be replaced. Building and storing one cost more than
/// the observation itself, and a scrape shows one per bucket whatever came in between.
const EXEMPLAR_EVERY_MS: u64 = 100;

/// A histogram whose buckets each keep a recent exemplar: the latest of those that came at
/// least EXEMPLAR_EVERY_MS after the one before it (Prometheus' Java client samples the same
/// way). A bucket that rarely fills (the slow tail) keeps the exemplar of its every
/// observation.
#[derive(Debug, Clone)]
pub(crate) struct Hist {
    inner: HistogramWithExemplars<TraceLabels>,
    bounds: Arc<[f64]>,
    /// Per bucket (the implicit +Inf one last): when its exemplar was set, in coarse
    /// monotonic milliseconds + 1; 0: never.
    exemplar_at: Arc<[AtomicU64]>,
}

impl Hist {
    pub(super) fn new(bounds: Arc<[f64]>) -> Hist {
        Hist {
            inner: HistogramWithExemplars::new(bounds.iter().copied()),
            exemplar_at: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            bounds,
        }
    }

    pub(super) fn observe(&self, v: f64, exemplar: Option<Exemplar<'_>>) {
        let labels = exemplar.and_then(|e| {
            // The bucket prometheus-client will count `v` in: the first bound >= v.
            let bucket = self.bounds.iter().position(|&b| b >= v);
            let at = &self.exemplar_at[bucket.unwrap_or(self.bounds.len())];
            let now = super::series::coarse_ms() + 1;
            let last = at.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) < EXEMPLAR_EVERY_MS {
                return None;
            }
            let labels = e.label_set()?;
            at.store(now, Ordering::Relaxed);
            Some(labels)
        });
        self.inner.observe(v, labels, None);
    }
}

impl prometheus_client::metrics::TypedMetric for Hist {
    const TYPE: PcMetricType = PcMetricType::Histogram;
}

impl EncodeMetric for Hist {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.inner.encode(encoder)
    }

    fn metric_type(&self) -> PcMetricType {
        PcMetricType::Histogram
    }
}

#[derive(Clone, Debug)]
pub struct HistogramCtor(pub(super) Arc<[f64]>);

impl MetricConstructor<Hist> for HistogramCtor {
    fn new_metric(&self) -> Hist {
        Hist::new(self.0.clone())
    }
}

/// The exposed cell of a [`Total`]: f64 bits, NaN while unmeasured (then not exposed).
#[derive(Debug, Clone)]
pub(super) struct TotalCell(pub(super) Arc<AtomicU64>);

impl TotalCell {
    pub(super) fn get(&self) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(h: &Hist) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "h", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    fn traced(trace_id: &str) -> Option<Exemplar<'_>> {
        Some(Exemplar {
            trace_id,
            span_id: None,
        })
    }

    #[test]
    fn a_bucket_exemplar_is_replaced_at_most_every_interval() {
        let h = Hist::new(Arc::from([0.1, 1.0]));
        h.observe(0.05, traced("aaaa"));
        h.observe(0.06, traced("bbbb"));
        // Another bucket has its own slot.
        h.observe(0.5, traced("cccc"));
        h.observe(5.0, traced("dddd"));
        let text = exposed(&h);
        assert!(
            text.contains("h_bucket{le=\"0.1\"} 2 # {trace_id=\"aaaa\"} 0.05"),
            "{text}"
        );
        assert!(!text.contains("bbbb"), "{text}");
        assert!(
            text.contains("h_bucket{le=\"1.0\"} 3 # {trace_id=\"cccc\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{le=\"+Inf\"} 4 # {trace_id=\"dddd\"} 5.0"),
            "{text}"
        );
        // An invalid trace id takes no slot: the next valid one is kept at once.
        let fresh = Hist::new(Arc::from([0.1]));
        fresh.observe(0.05, traced("not valid!"));
        fresh.observe(0.06, traced("ffff"));
        assert!(exposed(&fresh).contains("# {trace_id=\"ffff\"} 0.06"));
        std::thread::sleep(std::time::Duration::from_millis(EXEMPLAR_EVERY_MS + 50));
        h.observe(0.08, traced("eeee"));
        assert!(exposed(&h).contains("# {trace_id=\"eeee\"} 0.08"));
    }
}
