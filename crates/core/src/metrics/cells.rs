//! The metric types prometheus-client lacks: a gauge that can be absent, and a probe total
//! that is exposed only once measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::MetricType as PcMetricType;

use super::Hist;

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

#[derive(Clone, Debug)]
pub struct HistogramCtor(pub(super) Arc<[f64]>);

impl MetricConstructor<Hist> for HistogramCtor {
    fn new_metric(&self) -> Hist {
        Hist::new(self.0.iter().copied())
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
