//! What a scrape reads at its own moment: the system clock, and the summary gauges across
//! sources (chronyd's view while it answers, else the kernel's), taken from the values the
//! chrony and kernel probes last wrote.

use exporter_core::schema::SchemaError;
use exporter_core::{Gauge, Metrics};

use crate::chrony::ChronyMetrics;
use crate::kernel::KernelMetrics;
use crate::samples::{unix_now, SourceMetrics};

/// The scrape hook: `clock_master_current_timestamp_seconds`, uncertainty, jitter and drift.
pub struct Summary {
    src: SourceMetrics,
    chrony: ChronyMetrics,
    kernel: KernelMetrics,
}

impl Summary {
    pub fn bind(metrics: &Metrics) -> Result<Summary, SchemaError> {
        Ok(Summary {
            src: SourceMetrics::bind(metrics)?,
            chrony: ChronyMetrics::bind(metrics)?,
            kernel: KernelMetrics::bind(metrics)?,
        })
    }

    pub fn write(&self) {
        let _ = self.src.now.set(&[], unix_now());
        let (uncertainty, jitter, drift) = self.discipline();
        for (g, v) in [
            (&self.src.uncertainty, uncertainty),
            (&self.src.jitter, jitter),
            (&self.src.drift, drift),
        ] {
            match v {
                Some(v) => {
                    let _ = g.set(&[], v);
                }
                None => {
                    let _ = g.set_unknown(&[]);
                }
            }
        }
    }

    /// Uncertainty, jitter and drift: chronyd's when it answered last, else the kernel's.
    fn discipline(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let c = &self.chrony;
        if let (Some(delay), Some(dispersion), Some(rms), Some(freq)) = (
            known(&c.root_delay),
            known(&c.root_dispersion),
            known(&c.rms_offset),
            known(&c.frequency),
        ) {
            return (Some(delay / 2.0 + dispersion), Some(rms), Some(freq));
        }
        let k = &self.kernel;
        (
            known(&k.max_error),
            known(&k.estimated_error),
            // The kernel's freq is the correction applied, so the oscillator's own error is
            // minus it.
            known(&k.frequency).map(|f| -f),
        )
    }
}

/// An unlabelled gauge's value, None while unknown.
fn known(g: &Gauge) -> Option<f64> {
    g.value(&[]).filter(|v| v.is_finite())
}
