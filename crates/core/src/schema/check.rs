//! What a schema may not contain: invalid names and labels, types and units that disagree,
//! buckets, seeds and derived ratios that cannot be served, event effects on metrics that
//! cannot take them.

use super::*;

/// Refuses metric `$name` with the reason formatted from the rest.
macro_rules! bad_metric {
    ($name:expr, $($arg:tt)*) => { return Err(SchemaError::metric($name, format!($($arg)*))) };
}

/// Refuses an event rule for `$event` with the reason formatted from the rest.
macro_rules! bad_rule {
    ($event:expr, $($arg:tt)*) => { return Err(SchemaError::event($event, format!($($arg)*))) };
}

impl Schema {
    pub(super) fn check_metric(&self, def: &MetricDef) -> Result<(), SchemaError> {
        self.check_naming(def)?;
        check_shape(def)?;
        self.check_derived(def)
    }

    /// The name: valid, the tier's prefix, `_total` on counters only, base units, its unit at
    /// the end; and a help text Prometheus can carry.
    fn check_naming(&self, def: &MetricDef) -> Result<(), SchemaError> {
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
        Ok(())
    }

    /// A derived gauge's rule: two unlabelled counters or gauges of the schema and a window.
    fn check_derived(&self, def: &MetricDef) -> Result<(), SchemaError> {
        let name = &def.name;
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

    pub(super) fn check_effect(&self, event: &str, effect: &Effect) -> Result<(), SchemaError> {
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

/// What a metric's source allows (channels, staleness), its labels, its initial series and its
/// buckets.
fn check_shape(def: &MetricDef) -> Result<(), SchemaError> {
    let name = &def.name;
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
    let buckets_ok =
        def.buckets.windows(2).all(|w| w[0] < w[1]) && def.buckets.iter().all(|b| b.is_finite());
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
    Ok(())
}
