//! What a clock probe yields at scrape time: samples by metric name, plus the labels and the
//! quality scale every source shares.

/// Source label values. Kinds are prefixes so one `source` label covers all of them.
pub const KERNEL: &str = "kernel";
pub const CHRONYD: &str = "chronyd";

// Each source module has its own `source_label` (`chrony:NAME`, `ntp:HOST:PORT`, `ptp:DEVICE`).

/// Error scale of the quality score: a source whose error bound equals this scores half.
pub const QUALITY_ERROR_SCALE_SECONDS: f64 = 0.010;

/// One value to expose.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// A cumulative total: exposed as a counter.
    Counter,
}

/// 1 for a perfect source, 0.5 when the error bound equals [`QUALITY_ERROR_SCALE_SECONDS`].
pub fn error_factor(error_seconds: f64) -> f64 {
    if !error_seconds.is_finite() || error_seconds < 0.0 {
        return 0.0;
    }
    1.0 / (1.0 + error_seconds / QUALITY_ERROR_SCALE_SECONDS)
}

/// Adds a gauge sample; a value that is not finite is left out (unknown, not made up).
pub fn gauge(
    out: &mut Vec<Sample>,
    name: &'static str,
    labels: &[(&'static str, &str)],
    value: f64,
) {
    if value.is_finite() {
        out.push(Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value,
            kind: Kind::Gauge,
        });
    }
}

/// Renders samples in the Prometheus text format (debugging and tests without the core server).
pub fn render_text(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        s.push_str(x.name);
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
