//! The metric schema of a tier, loaded from its `schema.toml` and checked once at start-up.
//!
//! The schema is the one source of truth: the registry is built from it, ingest validates
//! samples and events against it, and docs/metrics.md is generated from it. Here: the model
//! (what a metric, an event rule and a tier are); `load.rs` reads and merges the files,
//! `check.rs` refuses what cannot be served. The StatsD spellings of a name live beside the
//! StatsD mapper (`ingest/statsd/names.rs`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

mod check;
mod load;

/// Most labels a metric may declare; ingest keeps label values in arrays of this size.
pub const MAX_LABELS: usize = 8;

/// Self-metrics shared by every tier; names omit the tier's self prefix.
pub const SELF_SCHEMA: &str = include_str!("../../self_schema.toml");

/// Engine-process metrics shared by every tier; names omit the tier's metric prefix.
pub const ENGINE_SCHEMA: &str = include_str!("../../engine_schema.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// How the engine feeds a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Statsd,
    Events,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Statsd => "statsd",
            Channel::Events => "events",
        }
    }
}

/// Who produces a metric's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Pushed by the engine: StatsD samples or JSON events.
    #[default]
    Engine,
    /// Measured by the sidecar itself (process, filesystem, clock).
    Probe,
    /// Computed by the sidecar from its own counters.
    Derived,
    /// The exporter's own health and bookkeeping.
    #[serde(rename = "self")]
    Exporter,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Engine => "engine",
            Source::Probe => "probe",
            Source::Derived => "derived",
            Source::Exporter => "self",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricType,
    pub help: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub buckets: Vec<f64>,
    /// The seed design's name when the exposed name differs.
    #[serde(default)]
    pub seed: Option<String>,
    #[serde(default)]
    pub source: Source,
    /// Label values of series that exist (at 0) from the first scrape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial: Vec<Vec<String>>,
    /// For `source = "derived"`: how the sidecar computes the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<Derived>,
    /// An engine gauge loses its value when not set for `ingest.gauge_stale_seconds`; false
    /// for a gauge whose last value stays true however old (an event's timestamp).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub goes_stale: bool,
    /// Which channels feed an engine metric. Unset: the event log when an event rule targets
    /// the metric, else StatsD, so one engine action is never counted through both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

/// A derived gauge: `scale × numerator / denominator`. For counters the ratio is of their
/// increases over the sliding window; for gauges, of their current values. Undefined
/// (no denominator yet) is exposed as NaN rather than a made-up 0.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    pub numerator: String,
    pub denominator: String,
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_window() -> u64 {
    300
}

fn default_scale() -> f64 {
    1.0
}

impl MetricDef {
    /// A running total the sidecar reads elsewhere (an unlabelled probe counter, such as the
    /// engine's CPU time): served only once measured, never as a made-up 0.
    pub fn is_measured_total(&self) -> bool {
        self.kind == MetricType::Counter && self.source == Source::Probe && self.labels.is_empty()
    }

    /// Whether the first scrape already serves a series of it. Not: labelled metrics (their
    /// series come with their label values), measured totals (once measured) and engine
    /// gauges (once the engine sets them: unknown is not 0).
    pub fn served_from_first_scrape(&self) -> bool {
        self.labels.is_empty()
            && !self.is_measured_total()
            && !(self.kind == MetricType::Gauge && self.source == Source::Engine)
    }

    /// The name to register with prometheus-client, which appends `_total` to counters and
    /// the unit itself.
    pub fn base_name(&self) -> &str {
        let name = self.name.as_str();
        let name = match self.kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        match &self.unit {
            Some(unit) => name
                .strip_suffix(unit.as_str())
                .and_then(|n| n.strip_suffix('_'))
                .unwrap_or(name),
            None => name,
        }
    }
}

/// What an event does to one metric.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Effect {
    /// Counter +1.
    Inc {
        metric: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Counter + the value of a numeric field.
    Add {
        metric: String,
        field: String,
        #[serde(default)]
        optional: bool,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Gauge = the value of a numeric field.
    Set {
        metric: String,
        field: String,
        #[serde(default)]
        optional: bool,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Gauge = the event's `timestamp` as Unix seconds.
    SetTimestamp {
        metric: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Histogram observation of a numeric field; `_ms`/`_us`/`_ns` fields are converted to
    /// seconds (see [`duration_scale`]).
    Observe {
        metric: String,
        field: String,
        #[serde(default)]
        optional: bool,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
}

impl Effect {
    pub fn metric(&self) -> &str {
        match self {
            Effect::Inc { metric, .. }
            | Effect::Add { metric, .. }
            | Effect::Set { metric, .. }
            | Effect::SetTimestamp { metric, .. }
            | Effect::Observe { metric, .. } => metric,
        }
    }

    /// Label name → event field that supplies its value.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            Effect::Inc { labels, .. }
            | Effect::Add { labels, .. }
            | Effect::Set { labels, .. }
            | Effect::SetTimestamp { labels, .. }
            | Effect::Observe { labels, .. } => labels,
        }
    }

    fn required_kind(&self) -> MetricType {
        match self {
            Effect::Inc { .. } | Effect::Add { .. } => MetricType::Counter,
            Effect::Set { .. } | Effect::SetTimestamp { .. } => MetricType::Gauge,
            Effect::Observe { .. } => MetricType::Histogram,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    pub event: String,
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierInfo {
    pub name: String,
    pub binary: String,
    /// The Prometheus job that scrapes this tier in the shipped configs and dashboards.
    pub job: String,
    pub metric_prefix: String,
    pub self_prefix: String,
    /// What the engine beside the sidecar is called in help texts ("OLAP shard engine").
    pub engine: String,
    pub web_listen_address: String,
    pub statsd_udp: String,
}

/// Exposed names of the engine-process metrics ([`ENGINE_SCHEMA`]) under a metric prefix:
/// core's engine probe writes them, whatever the tier.
pub fn engine_metric_names(metric_prefix: &str) -> Vec<String> {
    toml::from_str::<load::Fragment>(ENGINE_SCHEMA)
        .map(|f| {
            f.metrics
                .into_iter()
                .map(|m| format!("{metric_prefix}{}", m.name))
                .collect()
        })
        .unwrap_or_default()
}

impl TierInfo {
    /// The default scrape port.
    pub fn port(&self) -> u16 {
        self.web_listen_address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

/// A tier's complete, validated schema: its own metrics, the self-metrics under its self
/// prefix, and its event rules.
#[derive(Debug, Clone)]
pub struct Schema {
    pub tier: TierInfo,
    pub metrics: Vec<MetricDef>,
    pub events: Vec<EventRule>,
    index: HashMap<String, usize>,
}

/// Why a schema, an event rule or a handle resolved against them cannot be used: start-up
/// stops (or a reload is refused) with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A schema file that cannot be read, is not TOML, or not of the schema's shape.
    #[error("{what}: {why}")]
    File { what: String, why: String },
    /// A metric declared twice.
    #[error("metric {0} is declared twice")]
    Duplicate(String),
    /// A metric definition, or a handle resolved against one, that cannot be used.
    #[error("{metric}: {why}")]
    Metric { metric: String, why: String },
    /// An event rule that does not fit the metrics it updates.
    #[error("event {event}: {why}")]
    EventRule { event: String, why: String },
    /// An event rule without an event name.
    #[error("an event rule has an empty event name")]
    EmptyEvent,
}

impl SchemaError {
    pub fn file(what: impl fmt::Display, why: impl fmt::Display) -> SchemaError {
        SchemaError::File {
            what: what.to_string(),
            why: why.to_string(),
        }
    }

    pub fn metric(metric: impl fmt::Display, why: impl fmt::Display) -> SchemaError {
        SchemaError::Metric {
            metric: metric.to_string(),
            why: why.to_string(),
        }
    }

    pub fn event(event: impl fmt::Display, why: impl fmt::Display) -> SchemaError {
        SchemaError::EventRule {
            event: event.to_string(),
            why: why.to_string(),
        }
    }
}

impl Schema {
    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.index.get(name).map(|&i| &self.metrics[i])
    }

    pub fn event(&self, name: &str) -> Option<&EventRule> {
        self.events.iter().find(|r| r.event == name)
    }

    /// The channels that feed `def`: its declared ones, else the event log if an event rule
    /// targets it, else StatsD.
    pub fn channels(&self, def: &MetricDef) -> Vec<Channel> {
        if !def.channels.is_empty() {
            return def.channels.clone();
        }
        let targeted = self
            .events
            .iter()
            .flat_map(|r| &r.effects)
            .any(|e| e.metric() == def.name);
        vec![if targeted {
            Channel::Events
        } else {
            Channel::Statsd
        }]
    }
}

/// Event fields named `*_ms`, `*_us`, `*_ns` hold durations in that unit; an `observe` scales
/// them to the histogram's seconds. Any other field is taken as is.
pub fn duration_scale(field: &str) -> f64 {
    if field.ends_with("_ms") {
        1e-3
    } else if field.ends_with("_us") {
        1e-6
    } else if field.ends_with("_ns") {
        1e-9
    } else {
        1.0
    }
}

/// Metrics of every kind for unit tests: a counter with a seed alias, labelled and unlabelled
/// counters and gauges, a histogram and a probe gauge.
#[cfg(test)]
pub(crate) const TEST_METRICS: &str = r#"
[[metrics]]
name = "tx_engine_commits_total"
type = "counter"
help = "c"
seed = "tx_engine_commits_seed"

[[metrics]]
name = "tx_engine_by_server_total"
type = "counter"
help = "c"
labels = ["server_id"]

[[metrics]]
name = "tx_engine_depth"
type = "gauge"
help = "g"

[[metrics]]
name = "tx_engine_lag_seconds"
type = "gauge"
unit = "seconds"
help = "g"
labels = ["server_id"]

[[metrics]]
name = "tx_engine_latency_seconds"
type = "histogram"
unit = "seconds"
help = "h"
buckets = [0.1, 1.0]

[[metrics]]
name = "tx_engine_memory_bytes"
type = "gauge"
unit = "bytes"
help = "probe"
source = "probe"
"#;

/// A tier schema for unit tests: the `[tier]` table of `tier` ("tx" or "olap") followed by
/// `metrics_toml`.
#[cfg(test)]
pub(crate) fn test_schema_toml(tier: &str, metrics_toml: &str) -> String {
    let (prefix, port) = match tier {
        "olap" => ("olap_", 9092),
        _ => ("tx_engine_", 9090),
    };
    format!(
        "[tier]\nname = \"{tier}\"\nbinary = \"{tier}-exporter\"\njob = \"{tier}\"\n\
         metric_prefix = \"{prefix}\"\nself_prefix = \"{tier}_exporter_\"\nengine = \"engine\"\n\
         web_listen_address = \"0.0.0.0:{port}\"\nstatsd_udp = \"127.0.0.1:8125\"\n\
         {metrics_toml}"
    )
}

#[cfg(test)]
mod tests;
