//! Glue between the probes and the shared exporter runtime (exporter_core): a background task
//! that runs the probes and reports `/health`, and a scrape hook that copies the cached
//! results into the registry.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use exporter_core::schema::{SchemaError, Source};
use exporter_core::{Config, Gauge, Metric, Metrics, TaskContext, Tier};

use crate::probes::{ClockProbes, ProbeConfig};
use crate::samples::{Kind, Sample};
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
        let targets = ProbeMetrics::resolve(metrics)?;
        let applied = Mutex::new(BTreeSet::new());
        Ok(move || {
            let probes = cell.get_or_init(|| ClockProbes::new(probe_config.clone()));
            targets.apply(&probes.samples(), &applied);
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

type SeriesKey = (&'static str, Vec<String>);

/// Handles on every metric the clock probes write, resolved once from the schema; the
/// probes' sample names are checked against the same schema by a test.
pub struct ProbeMetrics {
    by_name: HashMap<String, Metric>,
    /// Unlabelled gauges: NaN while not measured, never a stale or made-up value.
    unlabelled_gauges: Vec<(String, Gauge)>,
}

impl ProbeMetrics {
    pub fn resolve(metrics: &Metrics) -> Result<ProbeMetrics, SchemaError> {
        let mut by_name = HashMap::new();
        let mut unlabelled_gauges = Vec::new();
        // Only what the probes measure: the engine-process gauges are core's engine probe's.
        let engine = exporter_core::schema::engine_metric_names(&metrics.tier().metric_prefix);
        let source_prefix = format!("{}source", metrics.tier().self_prefix);
        for (name, metric) in metrics.iter() {
            let def = metric.def();
            let probe = (def.source == Source::Probe && !engine.contains(&def.name))
                || def.name.starts_with(&source_prefix);
            if !probe {
                continue;
            }
            if let Metric::Gauge(g) = metric {
                if def.labels.is_empty() && def.source == Source::Probe {
                    unlabelled_gauges.push((name.to_owned(), g.clone()));
                }
            }
            by_name.insert(name.to_owned(), metric.clone());
        }
        if by_name.is_empty() {
            return Err(SchemaError::metric(
                "clock probes",
                "the schema declares no clock probe metric",
            ));
        }
        Ok(ProbeMetrics {
            by_name,
            unlabelled_gauges,
        })
    }

    /// Writes samples into the registry and retires gauge series that are no longer
    /// reported: a labelled one (a chrony source that went away, an NTP server that stopped
    /// answering) is removed, an unlabelled one (chrony tracking while chronyd is down)
    /// becomes NaN, so a stale reading never passes for a current one.
    pub fn apply(&self, samples: &[Sample], applied: &Mutex<BTreeSet<SeriesKey>>) {
        let mut now = BTreeSet::new();
        for s in samples {
            let Some(metric) = self.by_name.get(s.name) else {
                tracing::warn!(target: "clock", metric = s.name, "metric missing from the schema");
                continue;
            };
            let values: Vec<&str> = s.labels.iter().map(|(_, v)| v.as_str()).collect();
            let result = match (metric, s.kind) {
                (Metric::Gauge(g), Kind::Gauge) => g.set(&values, s.value),
                // Probes keep running totals; the registry's counter catches up by the
                // difference.
                (Metric::Counter(c), Kind::Counter) => {
                    let current = c.value(&values).unwrap_or(0.0);
                    if s.value > current {
                        c.inc_by(&values, s.value - current)
                    } else {
                        Ok(())
                    }
                }
                _ => {
                    tracing::warn!(target: "clock", metric = s.name, "sample type differs from the schema");
                    continue;
                }
            };
            if let Err(e) = result {
                tracing::debug!(target: "clock", metric = s.name, error = %e, "sample not applied");
                continue;
            }
            if s.kind == Kind::Gauge && !s.labels.is_empty() {
                now.insert((s.name, s.labels.iter().map(|(_, v)| v.clone()).collect()));
            }
        }
        let mut applied = applied.lock().unwrap_or_else(|e| e.into_inner());
        for (name, labels) in applied.difference(&now) {
            if let Some(Metric::Gauge(g)) = self.by_name.get(*name) {
                let values: Vec<&str> = labels.iter().map(String::as_str).collect();
                g.remove(&values);
            }
        }
        *applied = now;
        for (name, gauge) in &self.unlabelled_gauges {
            if !samples
                .iter()
                .any(|s| s.name == name && s.labels.is_empty())
            {
                let _ = gauge.set_unknown(&[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_metrics_come_from_the_schema() {
        let schema = exporter_core::Schema::parse(include_str!("../schema.toml")).expect("schema");
        let metrics = Metrics::new(&schema, Default::default()).expect("registry");
        let p = ProbeMetrics::resolve(&metrics).expect("resolve");
        let gauges: Vec<&str> = p
            .unlabelled_gauges
            .iter()
            .map(|(n, _)| n.as_str())
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
