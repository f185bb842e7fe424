//! What every clock probe shares: the samples a reading yields (typed handles bound once at
//! start-up, so no metric is looked up by name), the writer that keeps a probe's series
//! current, the series each target writes about itself, and the quality scale.

use std::collections::BTreeMap;
use std::sync::Mutex;

use exporter_core::{Gauge, Metric};

/// Source label values. Kinds are prefixes so one `source` label covers all of them.
pub const KERNEL: &str = "kernel";
pub const CHRONYD: &str = "chronyd";

// Each source module has its own `source_label` (`chrony:NAME`, `ntp:HOST:PORT`, `ptp:DEVICE`).

/// Error scale of the quality score: a source whose error bound equals this scores half.
pub const QUALITY_ERROR_SCALE_SECONDS: f64 = 0.010;

/// One value to write: a gauge series and its value.
#[derive(Clone)]
pub struct Value {
    pub gauge: Gauge,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Value {
    /// The metric's exposed name (tests, debugging).
    pub fn name(&self) -> &str {
        &self.gauge.def().name
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
pub fn gauge(out: &mut Vec<Value>, gauge: &Gauge, labels: &[(&'static str, &str)], value: f64) {
    if value.is_finite() {
        out.push(Value {
            gauge: gauge.clone(),
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value,
        });
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The unlabelled gauges among `handles`: what a probe marks unknown when it cannot read.
pub fn unlabelled_gauges(handles: Vec<Metric>) -> Vec<Gauge> {
    handles
        .into_iter()
        .filter_map(|m| match m {
            Metric::Gauge(g) if g.def().labels.is_empty() => Some(g),
            _ => None,
        })
        .collect()
}

/// Writes one probe's readings and retires what its last reading wrote and this one did
/// not: a labelled series (a chrony source that went away) is removed, one of the probe's
/// unlabelled gauges (chrony tracking while chronyd is down) becomes NaN, so a stale reading
/// never passes for a current one.
pub struct SeriesWriter {
    /// The probe's unlabelled gauges: NaN while not measured.
    unlabelled: Vec<Gauge>,
    /// Labelled series the last reading wrote.
    written: Mutex<BTreeMap<(String, Vec<String>), Gauge>>,
}

impl SeriesWriter {
    pub fn new(unlabelled: Vec<Gauge>) -> SeriesWriter {
        SeriesWriter {
            unlabelled,
            written: Mutex::default(),
        }
    }

    /// Writes `values`; returns how many the registry refused (labels that do not match the
    /// schema: a defect the tests look for).
    pub fn apply(&self, values: &[Value]) -> usize {
        let mut refused = 0;
        let mut now = BTreeMap::new();
        let mut unlabelled_written = Vec::new();
        for s in values {
            let values: Vec<&str> = s.labels.iter().map(|(_, v)| v.as_str()).collect();
            if let Err(e) = s.gauge.set(&values, s.value) {
                tracing::debug!(target: "clock", metric = s.name(), error = %e, "sample not applied");
                refused += 1;
                continue;
            }
            if s.labels.is_empty() {
                unlabelled_written.push(s.name());
            } else {
                let labels = s.labels.iter().map(|(_, v)| v.clone()).collect();
                now.insert((s.name().to_owned(), labels), s.gauge.clone());
            }
        }
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for (key, gauge) in written.iter() {
            if !now.contains_key(key) {
                let values: Vec<&str> = key.1.iter().map(String::as_str).collect();
                gauge.remove(&values);
            }
        }
        *written = now;
        for gauge in &self.unlabelled {
            if !unlabelled_written.contains(&gauge.def().name.as_str()) {
                let _ = gauge.set_unknown(&[]);
            }
        }
        refused
    }
}

/// One target of a clock probe (the kernel, chronyd, an NTP server, a PTP device): the series
/// it writes about itself under its `source` label (up, the last success, errors by reason,
/// and for a time source a quality of 0 while it is down: its offset is unknown, so absent),
/// and the writer of its readings.
pub struct Target {
    pub label: String,
    m: SourceMetrics,
    /// An NTP server or PTP device, scored among the sources.
    scored: bool,
    out: SeriesWriter,
}

impl Target {
    /// A target not yet read: down until its first reading works. `unlabelled` are the
    /// probe's unlabelled gauges, unknown while it cannot read.
    pub fn new(label: String, m: SourceMetrics, scored: bool, unlabelled: Vec<Gauge>) -> Target {
        let t = Target {
            label,
            m,
            scored,
            out: SeriesWriter::new(unlabelled),
        };
        t.mark_down();
        t
    }

    /// A reading that worked: its values written, the target up.
    pub fn read(&self, values: &[Value]) {
        self.out.apply(values);
        let l = [self.label.as_str()];
        let _ = self.m.up.set(&l, 1.0);
        let _ = self.m.last_success.set(&l, unix_now());
    }

    /// A reading that failed, counted under `reason`: what its last reading wrote is retired
    /// but `values` (what still holds: chronyd's known sources, down), and the target is down.
    pub fn failed(&self, reason: &'static str, values: &[Value]) {
        self.out.apply(values);
        self.mark_down();
        self.m.errors.add(&[self.label.as_str(), reason], 1);
    }

    fn mark_down(&self) {
        let l = [self.label.as_str()];
        let _ = self.m.up.set(&l, 0.0);
        if self.scored {
            let _ = self.m.quality.set(&l, 0.0);
        }
    }
}
