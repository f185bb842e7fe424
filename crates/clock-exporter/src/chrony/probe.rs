//! chronyd's tracking and sources, asked over cmdmon every few seconds.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;

use super::{collect, query, source_label, Address, ChronyMetrics, Report};
use crate::samples::{unlabelled_gauges, SourceMetrics, Target, Value, CHRONYD};
use crate::settings::ClockSettings;

/// Per-attempt reply timeout.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Sends of one request (first try + resends).
const ATTEMPTS: u16 = 2;
/// Sources asked about in the worst case the budget allows for.
const MAX_SOURCES: u32 = 32;

#[derive(Clone)]
pub struct ChronyProbe {
    address: String,
    m: ChronyMetrics,
    src: SourceMetrics,
    target: Arc<Target>,
    /// Sources seen before: reported down (not dropped) while chronyd is unreachable.
    known: Arc<Mutex<BTreeSet<String>>>,
}

impl Probe for ChronyProbe {
    type Settings = ClockSettings;
    const SOURCE: &'static str = "clock:chronyd";
    const EXPOSED: bool = false;
    const INTERVAL: Duration = Duration::from_secs(5);
    /// Tracking, the number of sources and each source, every request with its resends.
    const BUDGET: Duration = Duration::from_millis(
        TIMEOUT.as_millis() as u64 * ATTEMPTS as u64 * (2 + MAX_SOURCES as u64),
    );

    fn bind(settings: &ClockSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let address = settings.chrony_address.trim();
        if address.is_empty() {
            return Ok(Vec::new());
        }
        let m = ChronyMetrics::bind(metrics)?;
        let src = SourceMetrics::bind(metrics)?;
        let unlabelled = unlabelled_gauges(m.all());
        Ok(vec![ChronyProbe {
            address: address.to_owned(),
            target: Arc::new(Target::new(CHRONYD.into(), src.clone(), false, unlabelled)),
            m,
            src,
            known: Arc::default(),
        }])
    }

    fn refresh(&self) -> Result<String, String> {
        match Address::parse(&self.address).and_then(|a| query(&a, TIMEOUT, ATTEMPTS, None)) {
            Ok(report) => {
                let detail = format!(
                    "reference {} stratum {}, {} sources",
                    report.tracking.ref_name(),
                    report.tracking.stratum,
                    report.sources.len()
                );
                self.target.read(&self.values(Some(&report)));
                Ok(detail)
            }
            Err(e) => {
                self.target.failed(e.reason(), &self.values(None));
                Err(format!("chronyd at {}: {e}", self.address))
            }
        }
    }

    fn unknown(&self) {
        self.target.failed("timeout", &self.values(None));
    }
}

impl ChronyProbe {
    /// The values of a report, or with none its known sources as down (its tracking is then
    /// not written: unknown).
    fn values(&self, report: Option<&Report>) -> Vec<Value> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = report {
            *known = r.sources.iter().map(|s| source_label(&s.name)).collect();
        }
        let mut values = Vec::new();
        collect(report, &known, &self.m, &self.src, &mut values);
        values
    }
}
