//! What a clock probe yields at scrape time: samples of typed handles bound once at start-up
//! (no metric is looked up by name when a sample is written), plus the labels and the quality
//! scale every source shares.

use exporter_core::{Counter, Gauge};

/// Source label values. Kinds are prefixes so one `source` label covers all of them.
pub const KERNEL: &str = "kernel";
pub const CHRONYD: &str = "chronyd";

// Each source module has its own `source_label` (`chrony:NAME`, `ntp:HOST:PORT`, `ptp:DEVICE`).

/// Error scale of the quality score: a source whose error bound equals this scores half.
pub const QUALITY_ERROR_SCALE_SECONDS: f64 = 0.010;

/// One value to expose.
#[derive(Clone)]
pub struct Sample {
    pub metric: Handle,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

#[derive(Clone)]
pub enum Handle {
    Gauge(Gauge),
    /// A cumulative total the probe keeps: the registry's counter catches up by the
    /// difference.
    Counter(Counter),
}

impl Sample {
    /// The metric's exposed name (tests, debugging, the set of series written).
    pub fn name(&self) -> &str {
        match &self.metric {
            Handle::Gauge(g) => &g.def().name,
            Handle::Counter(c) => &c.def().name,
        }
    }
}

exporter_core::metric_handles! {
    /// What every source writes under its `source` label, and the summaries across sources.
    pub struct SourceMetrics {
        up: Gauge = "clock_exporter_source_up",
        last_success: Gauge = "clock_exporter_source_last_success_timestamp_seconds",
        errors: Counter = "clock_exporter_source_errors_total",
        offset: Gauge = "clock_master_source_offset_seconds",
        quality: Gauge = "clock_master_source_quality",
        now: Gauge = "clock_master_current_timestamp_seconds",
        uncertainty: Gauge = "clock_master_uncertainty_seconds",
        jitter: Gauge = "clock_master_jitter_seconds",
        drift: Gauge = "clock_master_drift_ppm",
    }
}

/// 1 for a perfect source, 0.5 when the error bound equals [`QUALITY_ERROR_SCALE_SECONDS`].
pub fn error_factor(error_seconds: f64) -> f64 {
    if !error_seconds.is_finite() || error_seconds < 0.0 {
        return 0.0;
    }
    1.0 / (1.0 + error_seconds / QUALITY_ERROR_SCALE_SECONDS)
}

/// Adds a gauge sample; a value that is not finite is left out (unknown, not made up).
pub fn gauge(out: &mut Vec<Sample>, gauge: &Gauge, labels: &[(&'static str, &str)], value: f64) {
    if value.is_finite() {
        out.push(Sample {
            metric: Handle::Gauge(gauge.clone()),
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value,
        });
    }
}

/// Adds a running total.
pub fn total(
    out: &mut Vec<Sample>,
    counter: &Counter,
    labels: &[(&'static str, &str)],
    value: f64,
) {
    out.push(Sample {
        metric: Handle::Counter(counter.clone()),
        labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        value,
    });
}

/// Renders samples in the Prometheus text format (debugging and tests without the core server).
pub fn render_text(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        s.push_str(x.name());
        if !x.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in x.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(k);
                s.push_str("=\"");
                s.push_str(
                    &v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n"),
                );
                s.push('"');
            }
            s.push('}');
        }
        s.push(' ');
        s.push_str(&x.value.to_string());
        s.push('\n');
    }
    s
}
