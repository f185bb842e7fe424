//! Glue between the probes and the shared exporter runtime (exporter_core): a background task
//! that runs the probes and reports `/health`, and a scrape hook that copies the cached
//! results into the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use exporter_core::schema::SchemaError;
use exporter_core::{Config, Gauge, Metric, Metrics, TaskContext, Tier};

use crate::probes::{ClockMetrics, ClockProbes, ProbeConfig};
use crate::samples::{Handle, Sample};
use crate::settings::ClockSettings;

/// How often `/health` is brought up to date with the probes' state.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The probe configuration from the `[clock]` section (defaults when absent).
pub fn probe_config(config: &Config) -> ProbeConfig {
    let defaults = ClockSettings::default();
    let c = config.section::<ClockSettings>().unwrap_or(&defaults);
    ProbeConfig::from_parts(&c.chrony_address, &c.ntp_server, &c.ptp_device)
}

/// Adds the clock probes to a tier: `exporter_core::run(clock_exporter::register(Tier::new(..)))`.
pub fn register(tier: Tier) -> Tier {
    let tier = tier.settings::<ClockSettings>();
    // The task and the scrape hook are built separately by core; they share one probe set.
    let cell: Arc<OnceLock<ClockProbes>> = Arc::new(OnceLock::new());
    let for_task = cell.clone();
    tier.task("clock-probes", move |ctx: TaskContext| {
        Ok(async move {
            let probes = for_task
                .get_or_init(|| ClockProbes::new(probe_config(&ctx.config)))
                .clone();
            probes.start();
            report_health(probes, ctx).await;
        })
    })
    .on_scrape(move |config: &Config, metrics: &Metrics| {
        let probe_config = probe_config(config);
        let writer = ProbeWriter::bind(metrics)?;
        Ok(move || {
            let probes = cell.get_or_init(|| ClockProbes::new(probe_config.clone()));
            writer.apply(&probes.samples(writer.metrics()));
        })
    })
}

/// Mirrors every probe target into `/health`: ok when its last query worked, degraded (not
/// failed: the exporter itself is fine) when it did not.
async fn report_health(probes: ClockProbes, mut ctx: TaskContext) {
    let handles: Vec<_> = probes
        .status()
        .into_keys()
        .map(|target| {
            let h = ctx.health.source_unexposed(&format!("clock:{target}"));
            (target, h)
        })
        .collect();
    loop {
        let status = probes.status();
        for (target, h) in &handles {
            let Some(s) = status.get(target) else {
                continue;
            };
            if s.up {
                h.ok(s.detail.clone());
            } else if let Some(e) = &s.last_error {
                h.degraded(s.detail.clone(), e.clone());
            }
            // Neither: still starting.
        }
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}

/// The probes' samples written into the registry through the handles bound at start-up; it
/// remembers which series it wrote so that one no longer reported is retired.
pub struct ProbeWriter {
    metrics: ClockMetrics,
    /// Unlabelled gauges: NaN while not measured, never a stale or made-up value.
    unlabelled_gauges: Vec<Gauge>,
    /// Labelled gauge series written by the last scrape.
    written: Mutex<BTreeMap<(String, Vec<String>), Gauge>>,
}

impl ProbeWriter {
    pub fn bind(metrics: &Metrics) -> Result<ProbeWriter, SchemaError> {
        let metrics = ClockMetrics::bind(metrics)?;
        let unlabelled_gauges = metrics
            .all()
            .into_iter()
            .filter_map(|m| match m {
                Metric::Gauge(g) if g.def().labels.is_empty() => Some(g),
                _ => None,
            })
            .collect();
        Ok(ProbeWriter {
            metrics,
            unlabelled_gauges,
            written: Mutex::default(),
        })
    }

    pub fn metrics(&self) -> &ClockMetrics {
        &self.metrics
    }

    /// Writes samples into the registry and retires gauge series that are no longer
    /// reported: a labelled one (a chrony source that went away, an NTP server that stopped
    /// answering) is removed, an unlabelled one (chrony tracking while chronyd is down)
    /// becomes NaN, so a stale reading never passes for a current one.
    pub fn apply(&self, samples: &[Sample]) {
        let mut now = BTreeMap::new();
        let mut unlabelled_written = BTreeSet::new();
        for s in samples {
            let values: Vec<&str> = s.labels.iter().map(|(_, v)| v.as_str()).collect();
            let result = match &s.metric {
                Handle::Gauge(g) => g.set(&values, s.value),
                // Probes keep running totals; the registry's counter catches up by the
                // difference.
                Handle::Counter(c) => {
                    let current = c.value(&values).unwrap_or(0.0);
                    if s.value > current {
                        c.inc_by(&values, s.value - current)
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(target: "clock", metric = s.name(), error = %e, "sample not applied");
                continue;
            }
            if let Handle::Gauge(g) = &s.metric {
                if s.labels.is_empty() {
                    unlabelled_written.insert(s.name().to_owned());
                } else {
                    let labels = s.labels.iter().map(|(_, v)| v.clone()).collect();
                    now.insert((s.name().to_owned(), labels), g.clone());
                }
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
        for gauge in &self.unlabelled_gauges {
            if !unlabelled_written.contains(&gauge.def().name) {
                let _ = gauge.set_unknown(&[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_probe_gauges_are_the_probes_own() {
        let schema = exporter_core::Schema::parse(include_str!("../schema.toml")).expect("schema");
        let metrics = Metrics::new(&schema, Default::default()).expect("registry");
        let p = ProbeWriter::bind(&metrics).expect("bind");
        let gauges: Vec<&str> = p
            .unlabelled_gauges
            .iter()
            .map(|g| g.def().name.as_str())
            .collect();
        assert!(gauges.contains(&"clock_master_chrony_stratum"));
        assert!(gauges.contains(&"clock_master_drift_ppm"));
        assert!(
            !gauges.contains(&"clock_master_clients_connected"),
            "pushed by StatsD"
        );
        assert!(
            !gauges.contains(&"clock_master_memory_used_bytes"),
            "core's engine probe"
        );
    }
}
