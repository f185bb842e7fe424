//! Shared runtime of the tier exporters. A tier binary hands over its schema (and any
//! tier-only probes); everything else lives here:
//! sources (StatsD, event logs, probes) → schema-checked updates → registry → `/metrics`.

pub mod budget;
pub mod config;
pub mod connections;
pub mod docs;
pub mod exposition;
pub mod health;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod profiling;
pub mod rejection;
pub mod reload;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod web_config;

mod build;
mod context;
mod runtime;

use std::path::Path;

pub use crate::config::Config;
pub use crate::context::{Shutdown, TaskContext};
pub use crate::health::{Health, SourceHealth};
pub use crate::metrics::{
    Counter, Exemplar, Gauge, Histogram, Limits, Metric, Metrics, UpdateError,
};
pub use crate::runtime::{run, Tier};
pub use crate::schema::Schema;
pub use build::{version_text, BRANCH, REVISION, RUSTC_VERSION, TARGET};

/// Path helper used by tests and docs: the repository root seen from a crate directory.
pub fn workspace_root(manifest_dir: &str) -> &Path {
    Path::new(manifest_dir)
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."))
}
