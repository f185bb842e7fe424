//! The metric schema of a tier, loaded from its `schema.toml` and checked once at start-up.
//!
//! The schema is the one source of truth: the registry is built from it, ingest validates
//! samples and events against it, and docs/metrics.md is generated from it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rejection::{rejection_series, CHANNELS};

/// Most labels a metric may declare; ingest keeps label values in arrays of this size.
pub const MAX_LABELS: usize = 8;

/// Self-metrics shared by every tier; names omit the tier's self prefix.
pub const SELF_SCHEMA: &str = include_str!("../self_schema.toml");

/// Engine-process metrics shared by every tier; names omit the tier's metric prefix.
pub const ENGINE_SCHEMA: &str = include_str!("../engine_schema.toml");

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
    toml::from_str::<Fragment>(ENGINE_SCHEMA)
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    tier: TierInfo,
    #[serde(default)]
    metrics: Vec<MetricDef>,
    #[serde(default)]
    events: Vec<EventRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    metrics: Vec<MetricDef>,
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

/// Refuses metric `$name` with the reason formatted from the rest.
macro_rules! bad_metric {
    ($name:expr, $($arg:tt)*) => { return Err(SchemaError::metric($name, format!($($arg)*))) };
}

/// Refuses an event rule for `$event` with the reason formatted from the rest.
macro_rules! bad_rule {
    ($event:expr, $($arg:tt)*) => { return Err(SchemaError::event($event, format!($($arg)*))) };
}

impl Schema {
    /// Parses a tier's schema.toml and merges in the shared self-metrics.
    pub fn parse(tier_toml: &str) -> Result<Schema, SchemaError> {
        let file: TierFile =
            toml::from_str(tier_toml).map_err(|e| SchemaError::file("tier schema", e))?;
        let own: Fragment =
            toml::from_str(SELF_SCHEMA).map_err(|e| SchemaError::file("self schema", e))?;
        let engine: Fragment =
            toml::from_str(ENGINE_SCHEMA).map_err(|e| SchemaError::file("engine schema", e))?;
        let mut metrics = file.metrics;
        for mut def in engine.metrics {
            def.name = format!("{}{}", file.tier.metric_prefix, def.name);
            def.help = def.help.replace("{engine}", &file.tier.engine);
            metrics.push(def);
        }
        for mut def in own.metrics {
            // The channels and their rejection reasons are closed enums in the code; the
            // series they name exist at 0 from the first scrape.
            match def.name.as_str() {
                "ingest_samples_accepted_total" => {
                    def.initial = CHANNELS.iter().map(|c| vec![(*c).to_owned()]).collect()
                }
                "ingest_rejected_total" => def.initial = rejection_series(),
                _ => {}
            }
            def.name = format!("{}{}", file.tier.self_prefix, def.name);
            metrics.push(def);
        }
        let mut schema = Schema {
            tier: file.tier,
            metrics,
            events: Vec::new(),
            index: HashMap::new(),
        };
        for (i, def) in schema.metrics.iter().enumerate() {
            if schema.index.insert(def.name.clone(), i).is_some() {
                return Err(SchemaError::Duplicate(def.name.clone()));
            }
        }
        for def in &schema.metrics {
            schema.check_metric(def)?;
        }
        schema.add_event_rules(file.events)?;
        Ok(schema)
    }

    /// Every tier of a checkout: each `crates/*/schema.toml` under `root`, in port order.
    /// Tests, generators and bundle checks take the tier list from here.
    pub fn discover(root: &std::path::Path) -> Result<Vec<Schema>, SchemaError> {
        let dir = root.join("crates");
        let entries = std::fs::read_dir(&dir).map_err(|e| SchemaError::file(dir.display(), e))?;
        let mut schemas = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("schema.toml");
            if !path.is_file() {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| SchemaError::file(path.display(), e))?;
            schemas.push(Schema::parse(&text).map_err(|e| SchemaError::file(path.display(), e))?);
        }
        schemas.sort_by_key(|s| s.tier.port());
        Ok(schemas)
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.index.get(name).map(|&i| &self.metrics[i])
    }

    pub fn event(&self, name: &str) -> Option<&EventRule> {
        self.events.iter().find(|r| r.event == name)
    }

    /// Adds event rules (from the schema or the config file) after checking each effect
    /// against the metrics. A rule for an event that already has one replaces it.
    pub fn add_event_rules(&mut self, rules: Vec<EventRule>) -> Result<(), SchemaError> {
        for rule in rules {
            if rule.event.is_empty() {
                return Err(SchemaError::EmptyEvent);
            }
            for effect in &rule.effects {
                self.check_effect(&rule.event, effect)?;
            }
            match self.events.iter_mut().find(|r| r.event == rule.event) {
                Some(existing) => *existing = rule,
                None => self.events.push(rule),
            }
        }
        Ok(())
    }

    fn check_metric(&self, def: &MetricDef) -> Result<(), SchemaError> {
        let name = &def.name;
        if !valid_name(name) {
            bad_metric!(name, "not a valid Prometheus metric name");
        }
        let tier = &self.tier;
        if !name.starts_with(&tier.metric_prefix) && !name.starts_with(&tier.self_prefix) {
            bad_metric!(
                name,
                "must start with {} or {}",
                tier.metric_prefix,
                tier.self_prefix
            );
        }
        match def.kind {
            MetricType::Counter if !name.ends_with("_total") => {
                bad_metric!(name, "a counter's name must end in _total")
            }
            MetricType::Gauge | MetricType::Histogram if name.ends_with("_total") => {
                bad_metric!(name, "only counters may end in _total")
            }
            _ => {}
        }
        if name.contains("nanoseconds") || name.contains("milliseconds") {
            bad_metric!(name, "use base units (_seconds)");
        }
        if let Some(unit) = &def.unit {
            let stem = name.strip_suffix("_total").unwrap_or(name);
            if !stem.ends_with(&format!("_{unit}")) {
                bad_metric!(name, "name must end in its unit _{unit}");
            }
        }
        if def.help.trim().is_empty() || def.help.contains(['\n', '\\', '"']) {
            bad_metric!(name, "help must be one line without backslashes or quotes");
        }
        if !def.channels.is_empty() && def.source != Source::Engine {
            bad_metric!(name, "channels apply to engine metrics only");
        }
        if !def.goes_stale && (def.kind != MetricType::Gauge || def.source != Source::Engine) {
            bad_metric!(name, "goes_stale applies to engine gauges only");
        }
        if def.labels.len() > MAX_LABELS {
            bad_metric!(name, "at most {MAX_LABELS} labels");
        }
        for label in &def.labels {
            if !valid_label(label) || label == "le" || label == "quantile" {
                bad_metric!(name, "invalid label name {label:?}");
            }
        }
        if def
            .initial
            .iter()
            .any(|values| values.len() != def.labels.len() || def.kind != MetricType::Counter)
        {
            bad_metric!(
                name,
                "initial series need one value per label, on counters only"
            );
        }
        let buckets_ok = def.buckets.windows(2).all(|w| w[0] < w[1])
            && def.buckets.iter().all(|b| b.is_finite());
        match def.kind {
            MetricType::Histogram if def.buckets.is_empty() || !buckets_ok => {
                bad_metric!(
                    name,
                    "a histogram needs finite, strictly increasing buckets"
                )
            }
            MetricType::Counter | MetricType::Gauge if !def.buckets.is_empty() => {
                bad_metric!(name, "only histograms have buckets")
            }
            _ => {}
        }
        match (&def.derived, def.source) {
            (Some(d), Source::Derived) => {
                let inputs = [self.metric(&d.numerator), self.metric(&d.denominator)];
                let [Some(num), Some(den)] = inputs else {
                    bad_metric!(name, "derived from unknown metrics");
                };
                if def.kind != MetricType::Gauge
                    || num.kind != den.kind
                    || num.kind == MetricType::Histogram
                    || !num.labels.is_empty()
                    || !den.labels.is_empty()
                    || d.window_seconds == 0
                {
                    bad_metric!(
                        name,
                        "a derived gauge needs two unlabelled counters or gauges and a window"
                    );
                }
            }
            (None, Source::Derived) => {
                bad_metric!(name, "source = \"derived\" needs a [derived] rule")
            }
            (Some(_), _) => {
                bad_metric!(
                    name,
                    "only source = \"derived\" metrics have a derived rule"
                )
            }
            (None, _) => {}
        }
        Ok(())
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

    fn check_effect(&self, event: &str, effect: &Effect) -> Result<(), SchemaError> {
        let name = effect.metric();
        let Some(def) = self.metric(name) else {
            bad_rule!(event, "unknown metric {name}");
        };
        if !def.channels.is_empty() && !def.channels.contains(&Channel::Events) {
            bad_rule!(event, "{name} is fed by StatsD only (its schema channels)");
        }
        if def.kind != effect.required_kind() {
            bad_rule!(
                event,
                "{name} is a {}, which this op cannot update",
                def.kind.as_str()
            );
        }
        if def.source != Source::Engine {
            bad_rule!(
                event,
                "{name} is measured by the sidecar, events cannot set it"
            );
        }
        let mut declared: Vec<&String> = def.labels.iter().collect();
        let mut mapped: Vec<&String> = effect.labels().keys().collect();
        declared.sort();
        mapped.sort();
        if declared != mapped {
            bad_rule!(
                event,
                "{name} needs labels {declared:?}, the rule maps {mapped:?}"
            );
        }
        Ok(())
    }

    /// Every StatsD name that resolves to `def`: its exposed name and, for counters, the name
    /// without `_total` and the seed's spelling, unless another metric claims that name.
    pub fn statsd_names(&self, def: &MetricDef) -> Vec<String> {
        let mut names = vec![def.name.clone()];
        if def.kind == MetricType::Counter {
            names.extend(def.name.strip_suffix("_total").map(str::to_owned));
            names.extend(def.seed.clone());
        }
        names.retain(|n| self.resolve_statsd_name(n).map(|d| &d.name) == Some(&def.name));
        names.dedup();
        names
    }

    /// Resolves a StatsD name: the exposed name, or for counters the name without `_total`
    /// or the seed's spelling.
    pub fn resolve_statsd_name(&self, name: &str) -> Option<&MetricDef> {
        if let Some(def) = self.metric(name) {
            return Some(def);
        }
        if let Some(def) = self.metric(&format!("{name}_total")) {
            if def.kind == MetricType::Counter {
                return Some(def);
            }
        }
        self.metrics
            .iter()
            .find(|d| d.kind == MetricType::Counter && d.seed.as_deref() == Some(name))
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

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
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
mod tests {
    use super::*;

    const MINI_METRICS: &str = r#"

[[metrics]]
name = "tx_engine_commits_total"
type = "counter"
help = "Commits"
seed = "tx_engine_commits"
"#;

    fn mini() -> String {
        test_schema_toml("tx", MINI_METRICS)
    }

    #[test]
    fn parses_and_adds_self_metrics() {
        let schema = Schema::parse(&mini()).expect("valid schema");
        assert!(schema.metric("tx_engine_commits_total").is_some());
        assert!(schema.metric("tx_exporter_engine_up").is_some());
        assert!(schema.metric("tx_exporter_build_info").is_some());
    }

    #[test]
    fn statsd_names_accept_counter_aliases() {
        let schema = Schema::parse(&mini()).expect("valid schema");
        for alias in ["tx_engine_commits_total", "tx_engine_commits"] {
            let def = schema.resolve_statsd_name(alias).expect(alias);
            assert_eq!(def.name, "tx_engine_commits_total");
        }
        assert!(schema.resolve_statsd_name("tx_engine_nope").is_none());
    }

    #[test]
    fn rejects_bad_definitions() {
        let cases = [
            (
                "name = \"tx_engine_x\"\ntype = \"counter\"",
                "end in _total",
            ),
            (
                "name = \"tx_engine_x_total\"\ntype = \"gauge\"",
                "only counters",
            ),
            ("name = \"other_x\"\ntype = \"gauge\"", "must start with"),
            (
                "name = \"tx_engine_x_seconds\"\ntype = \"histogram\"\nbuckets = [2.0, 1.0]",
                "strictly increasing",
            ),
            (
                "name = \"tx_engine_x\"\ntype = \"gauge\"\nunit = \"seconds\"",
                "end in its unit",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("{}\n[[metrics]]\n{body}\nhelp = \"h\"\n", mini());
            let err = Schema::parse(&text).expect_err(body);
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn event_rules_are_checked_against_metrics() {
        let mut schema = Schema::parse(&mini()).expect("valid schema");
        let bad = EventRule {
            event: "e".into(),
            effects: vec![Effect::Observe {
                metric: "tx_engine_commits_total".into(),
                field: "duration_ms".into(),
                optional: false,
                labels: BTreeMap::new(),
            }],
        };
        assert!(schema.add_event_rules(vec![bad]).is_err());
        let good = EventRule {
            event: "e".into(),
            effects: vec![Effect::Inc {
                metric: "tx_engine_commits_total".into(),
                labels: BTreeMap::new(),
            }],
        };
        schema.add_event_rules(vec![good]).expect("valid rule");
        assert!(schema.event("e").is_some());
    }

    #[test]
    fn base_name_strips_total_and_unit() {
        let def = MetricDef {
            name: "olap_read_bytes_total".into(),
            kind: MetricType::Counter,
            help: "h".into(),
            unit: Some("bytes".into()),
            labels: vec![],
            buckets: vec![],
            seed: None,
            source: Source::Engine,
            initial: vec![],
            derived: None,
            goes_stale: true,
            channels: vec![],
        };
        assert_eq!(def.base_name(), "olap_read");
    }
}
