//! Glue between the probes and the shared exporter runtime (exporter_core): a background task
//! that runs the probes and reports `/health`, and a scrape hook that copies the cached
//! results into the registry.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use exporter_core::{Config, Metrics, TaskContext, Tier};

use crate::probes::{ClockProbes, Kind, ProbeConfig, Sample};

/// The tier schema (the binary embeds the same file).
const SCHEMA_TOML: &str = include_str!("../schema.toml");

/// Unlabelled gauges the probes measure: NaN until measured and while unmeasurable, rather
/// than the registry's initial 0, which would read as a perfect clock.
fn probe_gauges() -> Vec<String> {
    use exporter_core::schema::{MetricType, Source};
    exporter_core::Schema::parse(SCHEMA_TOML)
        .map(|s| {
            s.metrics
                .into_iter()
                .filter(|m| {
                    m.source == Source::Probe && m.kind == MetricType::Gauge && m.labels.is_empty()
                })
                .map(|m| m.name)
                .collect()
        })
        .unwrap_or_default()
}

/// How often `/health` is brought up to date with the probes' state.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The probe configuration from the core config's clock section (defaults when absent).
pub fn probe_config(config: &Config) -> ProbeConfig {
    match &config.clock {
        Some(c) => ProbeConfig::from_parts(&c.chrony_address, &c.ntp_server, &c.ptp_device),
        None => ProbeConfig::default(),
    }
}

/// Adds the clock probes to a tier: `exporter_core::run(clock_exporter::register(Tier::new(..)))`.
pub fn register(tier: Tier) -> Tier {
    // The task and the scrape hook are built separately by core; they share one probe set.
    let cell: Arc<OnceLock<ClockProbes>> = Arc::new(OnceLock::new());
    let for_task = cell.clone();
    tier.task("clock-probes", move |ctx: TaskContext| async move {
        let probes = for_task
            .get_or_init(|| ClockProbes::new(probe_config(&ctx.config)))
            .clone();
        probes.start();
        report_health(probes, ctx).await;
    })
    .on_scrape(move |config: &Config| {
        let probe_config = probe_config(config);
        let applied = Mutex::new(BTreeSet::new());
        let gauges = probe_gauges();
        move |metrics: &Metrics| {
            let probes = cell.get_or_init(|| ClockProbes::new(probe_config.clone()));
            apply(&probes.samples(), metrics, &applied, &gauges);
        }
    })
}

/// Mirrors every probe target into `/health`: ok when its last query worked, degraded (not
/// failed: the exporter itself is fine) when it did not.
async fn report_health(probes: ClockProbes, mut ctx: TaskContext) {
    let handles: Vec<_> = probes
        .status()
        .into_keys()
        .map(|target| {
            let h = ctx.health.source(&format!("clock:{target}"));
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

/// Writes samples into the registry and retires gauge series that are no longer reported:
/// a labelled one (a chrony source that went away, an NTP server that stopped answering) is
/// removed, an unlabelled one (chrony tracking while chronyd is down) becomes NaN, so a
/// stale reading never passes for a current one.
pub fn apply(
    samples: &[Sample],
    metrics: &Metrics,
    applied: &Mutex<BTreeSet<SeriesKey>>,
    probe_gauges: &[String],
) {
    let mut now = BTreeSet::new();
    for s in samples {
        let Some(metric) = metrics.get(s.name) else {
            tracing::warn!(target: "clock", metric = s.name, "metric missing from the schema");
            continue;
        };
        let values: Vec<&str> = s.labels.iter().map(|(_, v)| v.as_str()).collect();
        let result = match s.kind {
            Kind::Gauge => metric.set(&values, s.value),
            // Probes keep running totals; the registry's counter catches up by the difference.
            Kind::Counter => {
                let current = metric.value(&values).unwrap_or(0.0);
                if s.value > current {
                    metric.inc_by(&values, s.value - current)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(target: "clock", metric = s.name, error = e.reason(), "sample not applied");
            continue;
        }
        if s.kind == Kind::Gauge && !s.labels.is_empty() {
            now.insert((s.name, s.labels.iter().map(|(_, v)| v.clone()).collect()));
        }
    }
    let mut applied = applied.lock().unwrap_or_else(|e| e.into_inner());
    for (name, labels) in applied.difference(&now) {
        if let Some(m) = metrics.get(name) {
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            m.remove(&values);
        }
    }
    *applied = now;
    for name in probe_gauges {
        if !samples
            .iter()
            .any(|s| s.name == name && s.labels.is_empty())
        {
            if let Some(m) = metrics.get(name) {
                let _ = m.set_unknown(&[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_gauges_come_from_the_schema() {
        let g = probe_gauges();
        assert!(g.contains(&"clock_master_chrony_stratum".to_string()));
        assert!(g.contains(&"clock_master_drift_ppm".to_string()));
        assert!(
            !g.iter().any(|n| n == "clock_master_clients_connected"),
            "pushed by StatsD"
        );
    }
}
