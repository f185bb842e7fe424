//! The StatsD spellings of a schema name: a counter answers to its exposed name, to the name
//! without `_total` and to its seed's spelling, unless another metric claims that name.

use crate::schema::{MetricDef, MetricType, Schema};

impl Schema {
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
