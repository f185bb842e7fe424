//! Reading a tier's schema: its file, the shared self and engine metrics merged in under the
//! tier's prefixes, and event rules added from the schema or the config file.

use std::collections::HashMap;

use serde::Deserialize;

use super::{EventRule, MetricDef, Schema, SchemaError, TierInfo, ENGINE_SCHEMA, SELF_SCHEMA};
use crate::rejection::{rejection_series, CHANNELS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    tier: TierInfo,
    #[serde(default)]
    pub(super) metrics: Vec<MetricDef>,
    #[serde(default)]
    events: Vec<EventRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fragment {
    pub(super) metrics: Vec<MetricDef>,
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
}
