//! The registry of one tier, built from its schema: every metric registered up front so that
//! every unlabelled series is exposed from the first scrape. Code updates metrics through
//! typed handles ([`Counter`], [`Gauge`], [`Histogram`]) resolved once at start-up, so a
//! misspelt or mistyped name is a start-up error, and a hot path never looks a name up.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::{Registry, Unit};

use crate::schema::{MetricDef, MetricType, Schema, SchemaError, Source, TierInfo};

pub(crate) mod error;
mod exemplar;
mod handles;
mod limits;
mod self_metrics;
mod series;
mod value_types;

pub use self::error::UpdateError;
pub use self::exemplar::Exemplar;
use self::handles::wrong;
pub use self::handles::{Bind, BoundCounter, BoundGauge, Counter, Gauge, Histogram, Metric, Total};
use self::handles::{CounterCtor, GaugeCtor};
pub use self::limits::Limits;
use self::limits::LiveLimits;
pub use self::self_metrics::SelfMetrics;
pub use self::series::LabelSet;
use self::series::{Cell, Inner};
use self::value_types::{FloatCounter, Hist, HistogramCtor, TotalCell, ValueGauge};

/// The tier's registry: prometheus-client's registry plus a handle per schema metric.
pub struct Metrics {
    tier: TierInfo,
    registry: Registry,
    by_name: HashMap<String, Metric>,
    own: SelfMetrics,
    limits: Arc<LiveLimits>,
}

impl Metrics {
    /// Registers every metric of the schema and resolves the exporter's own handles; fails
    /// when the schema lacks a self-metric the code needs.
    pub fn new(schema: &Schema, limits: Limits) -> Result<Metrics, SchemaError> {
        let mut registry = Registry::default();
        let mut by_name = HashMap::new();
        let limits = Arc::new(LiveLimits::new(limits));
        for def in &schema.metrics {
            let metric = register(&mut registry, def, &limits);
            if let Metric::Counter(c) = &metric {
                for values in &def.initial {
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    // Checked by the schema: one value per label.
                    let _ = c.inc_by(&values, 0.0);
                }
            }
            by_name.insert(def.name.clone(), metric);
        }
        let own = SelfMetrics::resolve(&schema.tier.self_prefix, |name| by_name.get(name))?;
        Ok(Metrics {
            tier: schema.tier.clone(),
            registry,
            by_name,
            own,
            limits,
        })
    }

    /// A metric by its exposed name, for start-up resolution and tests; never on a hot path.
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.by_name.get(name)
    }

    /// Every metric with its exposed name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Metric)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn counter(&self, name: &str) -> Result<Counter, SchemaError> {
        match self.get(name) {
            Some(Metric::Counter(c)) => Ok(c.clone()),
            other => Err(wrong(name, "counter", other)),
        }
    }

    pub fn gauge(&self, name: &str) -> Result<Gauge, SchemaError> {
        match self.get(name) {
            Some(Metric::Gauge(g)) => Ok(g.clone()),
            other => Err(wrong(name, "gauge", other)),
        }
    }

    pub fn total(&self, name: &str) -> Result<Total, SchemaError> {
        match self.get(name) {
            Some(Metric::Total(t)) => Ok(t.clone()),
            other => Err(wrong(name, "probe counter", other)),
        }
    }

    pub fn histogram(&self, name: &str) -> Result<Histogram, SchemaError> {
        match self.get(name) {
            Some(Metric::Histogram(h)) => Ok(h.clone()),
            other => Err(wrong(name, "histogram", other)),
        }
    }

    /// The exporter's own metrics.
    pub fn own(&self) -> &SelfMetrics {
        &self.own
    }

    pub fn tier(&self) -> &TierInfo {
        &self.tier
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Expires idle engine series (labelled ones past `series_ttl`, gauges past
    /// `gauge_stale`); returns how many.
    pub fn expire_series(&self, now: Instant) -> usize {
        self.by_name.values().map(|m| m.expire(now)).sum()
    }

    /// Applies new limits (a reload): a lower series limit refuses new series until some
    /// expire; a new expiry counts from each series' next update.
    pub fn set_limits(&self, limits: Limits) {
        self.limits.set(limits);
    }

    /// The shortest expiry of any metric: how often `expire_series` is worth calling.
    pub fn shortest_expiry(&self) -> Option<Duration> {
        self.by_name.values().filter_map(Metric::expire_after).min()
    }
}

fn register(registry: &mut Registry, def: &MetricDef, limits: &Arc<LiveLimits>) -> Metric {
    let name = def.base_name().to_owned();
    let help = def.help.clone();
    let unit = def.unit.as_deref().map(unit_of);
    macro_rules! reg {
        ($inner:expr) => {{
            let inner = $inner;
            match (&inner.cell, unit) {
                (Cell::One(m), Some(u)) => registry.register_with_unit(name, help, u, m.clone()),
                (Cell::One(m), None) => registry.register(name, help, m.clone()),
                (Cell::Many(f), Some(u)) => registry.register_with_unit(name, help, u, f.clone()),
                (Cell::Many(f), None) => registry.register(name, help, f.clone()),
            }
            Arc::new(inner)
        }};
    }
    match def.kind {
        // A total the sidecar reads elsewhere: exposed only once measured.
        MetricType::Counter if def.is_measured_total() => {
            let cell = TotalCell(Arc::new(AtomicU64::new(f64::NAN.to_bits())));
            match unit {
                Some(u) => registry.register_with_unit(name, help, u, cell.clone()),
                None => registry.register(name, help, cell.clone()),
            }
            Metric::Total(Total {
                def: Arc::new(def.clone()),
                cell,
            })
        }
        MetricType::Counter => Metric::Counter(Counter(reg!(Inner::new(
            def,
            FloatCounter::default,
            FloatCounter::default as CounterCtor,
            limits
        )))),
        MetricType::Gauge => {
            // A measured value nobody has measured yet is unknown (NaN); a value the engine
            // has not pushed yet does not exist; only the exporter's own gauges start at 0.
            let first = match def.source {
                Source::Probe | Source::Derived => || {
                    let g = ValueGauge::default();
                    g.set(f64::NAN);
                    g
                },
                Source::Engine => ValueGauge::absent,
                Source::Exporter => ValueGauge::default,
            };
            Metric::Gauge(Gauge(reg!(Inner::new(
                def,
                first,
                ValueGauge::default as GaugeCtor,
                limits
            ))))
        }
        MetricType::Histogram => {
            let buckets: Arc<[f64]> = def.buckets.clone().into();
            let one = {
                let b = buckets.clone();
                move || Hist::new(b)
            };
            Metric::Histogram(Histogram(reg!(Inner::new(
                def,
                one,
                HistogramCtor(buckets),
                limits
            ))))
        }
    }
}

fn unit_of(unit: &str) -> Unit {
    match unit {
        "seconds" => Unit::Seconds,
        "bytes" => Unit::Bytes,
        other => Unit::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{test_schema_toml, TEST_METRICS};

    fn registry(limits: Limits) -> Metrics {
        let schema = Schema::parse(&test_schema_toml("tx", TEST_METRICS)).expect("schema");
        Metrics::new(&schema, limits).expect("registry")
    }

    fn render(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, m.registry()).expect("encode");
        out
    }

    #[test]
    fn handles_resolve_by_type_and_refuse_the_wrong_one() {
        let m = registry(Limits::default());
        assert!(m.counter("tx_engine_commits_total").is_ok());
        assert!(m.gauge("tx_engine_depth").is_ok());
        assert!(m.histogram("tx_engine_latency_seconds").is_ok());
        let e = m.gauge("tx_engine_commits_total").err().expect("a counter");
        assert!(e.to_string().contains("is a counter"), "{e}");
        let e = m.counter("tx_engine_commitz_total").err().expect("missing");
        assert!(e.to_string().contains("no such counter"), "{e}");
    }

    #[test]
    fn unlabelled_series_exist_from_the_start_and_measured_gauges_are_unknown() {
        let m = registry(Limits::default());
        let out = render(&m);
        assert!(out.contains("tx_engine_commits_total 0"), "{out}");
        // An engine gauge has no value before the engine sets it: absent, never 0.
        assert!(!out.contains("tx_engine_depth"), "{out}");
        assert!(out.contains("tx_engine_memory_bytes NaN"), "{out}");
        assert!(!out.contains("tx_engine_by_server_total{"), "{out}");
    }

    #[test]
    fn updates_are_checked() {
        let m = registry(Limits::default());
        let c = m.counter("tx_engine_commits_total").expect("counter");
        assert_eq!(c.inc_by(&[], -1.0), Err(UpdateError::NegativeCounter));
        assert_eq!(c.inc_by(&[], f64::INFINITY), Err(UpdateError::NotFinite));
        assert_eq!(c.inc_by(&["x"], 1.0), Err(UpdateError::LabelMismatch));
        c.inc_by(&[], 2.5).expect("valid");
        assert_eq!(c.value(&[]), Some(2.5));
        let g = m.gauge("tx_engine_lag_seconds").expect("gauge");
        assert_eq!(g.set(&[], 1.0), Err(UpdateError::LabelMismatch));
        assert_eq!(g.set(&["a", "b"], 1.0), Err(UpdateError::LabelMismatch));
        let long = "x".repeat(limits::MAX_LABEL_VALUE_LEN + 1);
        assert_eq!(g.set(&[&long], 1.0), Err(UpdateError::LabelValueTooLong));
        assert_eq!(g.add(&["a"], f64::NAN), Err(UpdateError::NotFinite));
        g.set(&["a"], 3.0).expect("valid");
        g.add(&["a"], -1.0).expect("valid");
        assert_eq!(g.value(&["a"]), Some(2.0));
        assert!(g.remove(&["a"]));
        assert_eq!(g.value(&["a"]), None);
        // Finite inputs that would overflow are refused, leaving the value as it was.
        c.inc_by(&[], 1e308).expect("large but finite");
        assert_eq!(c.inc_by(&[], 1e308), Err(UpdateError::NotFinite));
        assert_eq!(c.value(&[]), Some(1e308 + 2.5));
        let d = m.gauge("tx_engine_depth").expect("gauge");
        d.set(&[], 1e308).expect("valid");
        assert_eq!(d.add(&[], 1e308), Err(UpdateError::NotFinite));
        assert_eq!(d.value(&[]), Some(1e308));
        let h = m.histogram("tx_engine_latency_seconds").expect("histogram");
        assert_eq!(h.observe(&[], f64::NAN, None), Err(UpdateError::NotFinite));
        h.observe(&[], 0.5, None).expect("valid");
        assert!(render(&m).contains("tx_engine_latency_seconds_count 1"));
    }

    #[test]
    fn a_bound_counter_is_the_series_it_was_bound_to() {
        let m = registry(Limits::default());
        let lines = &m.own().statsd_lines;
        let bound = lines.bind(&["udp"]).expect("bind");
        // Bound at 0, as a listener's counts start.
        assert_eq!(lines.value(&["udp"]), Some(0.0));
        bound.add(7);
        lines.add(&["udp"], 3);
        bound.clone().add(2);
        assert_eq!(lines.value(&["udp"]), Some(12.0));
        assert_eq!(lines.value(&["unixgram"]), None);
        assert!(lines.bind(&[]).is_err(), "wrong label count");
    }

    #[test]
    fn the_series_limit_caps_engine_metrics_only() {
        let m = registry(Limits {
            series_limit: 2,
            series_ttl: None,
            ..Limits::default()
        });
        let c = m.counter("tx_engine_by_server_total").expect("counter");
        c.inc_by(&["a"], 1.0).expect("first");
        c.inc_by(&["b"], 1.0).expect("second");
        assert_eq!(c.inc_by(&["c"], 1.0), Err(UpdateError::SeriesLimit));
        c.inc_by(&["a"], 1.0)
            .expect("an existing series is not new");
        // The exporter's own labelled series are never capped.
        for i in 0..10 {
            m.own().log_lines_read.add(&[&format!("/var/log/{i}")], 1);
        }
        assert_eq!(m.own().log_lines_read.value(&["/var/log/9"]), Some(1.0));
    }

    #[test]
    fn new_limits_apply_to_a_running_registry() {
        let m = registry(Limits::default());
        let c = m.counter("tx_engine_by_server_total").expect("counter");
        c.inc_by(&["a"], 1.0).expect("first");
        assert_eq!(m.shortest_expiry(), None);
        m.set_limits(Limits {
            series_limit: 1,
            series_ttl: Some(Duration::from_secs(60)),
            gauge_stale: None,
        });
        assert_eq!(c.inc_by(&["b"], 1.0), Err(UpdateError::SeriesLimit));
        assert_eq!(m.shortest_expiry(), Some(Duration::from_secs(60)));
        // The expiry counts from the next update of each series.
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(m.expire_series(later), 0);
        c.inc_by(&["a"], 1.0).expect("update");
        assert_eq!(m.expire_series(later), 1);
        c.inc_by(&["b"], 1.0).expect("room again");
        // Expiry off again: nothing tracked expires.
        m.set_limits(Limits::default());
        assert_eq!(m.expire_series(later + Duration::from_secs(600)), 0);
        assert_eq!(c.value(&["b"]), Some(1.0));
    }

    #[test]
    fn the_ttl_expires_idle_engine_series_but_never_own_ones() {
        let m = registry(Limits {
            series_limit: 10,
            series_ttl: Some(Duration::from_secs(60)),
            ..Limits::default()
        });
        let c = m.counter("tx_engine_by_server_total").expect("counter");
        c.inc_by(&["a"], 1.0).expect("series");
        m.own().statsd_lines.add(&["udp"], 1);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(m.expire_series(later), 1);
        assert_eq!(c.value(&["a"]), None);
        assert_eq!(m.own().statsd_lines.value(&["udp"]), Some(1.0));
        // The expired series can be created again, within the limit.
        c.inc_by(&["a"], 1.0).expect("again");
    }

    #[test]
    fn engine_gauges_go_stale_when_the_engine_stops_setting_them() {
        let m = registry(Limits {
            gauge_stale: Some(Duration::from_secs(300)),
            ..Limits::default()
        });
        assert_eq!(m.shortest_expiry(), Some(Duration::from_secs(300)));
        let depth = m.gauge("tx_engine_depth").expect("gauge");
        let lag = m.gauge("tx_engine_lag_seconds").expect("gauge");
        // A delta on an absent gauge starts from 0, as in StatsD.
        depth.add(&[], 3.0).expect("delta");
        assert_eq!(depth.value(&[]), Some(3.0));
        lag.set(&["a"], 1.5).expect("set");
        assert_eq!(m.expire_series(Instant::now()), 0);
        let later = Instant::now() + Duration::from_secs(301);
        assert_eq!(m.expire_series(later), 2);
        assert_eq!(depth.value(&[]), None);
        assert_eq!(lag.value(&["a"]), None);
        assert!(!render(&m).contains("tx_engine_depth"));
        // Measured gauges and counters are not the engine's to let go stale.
        assert!(render(&m).contains("tx_engine_memory_bytes NaN"));
        depth.set(&[], 4.0).expect("set again");
        assert!(render(&m).contains("tx_engine_depth 4.0"));
    }
}
