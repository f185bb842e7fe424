//! Shared runtime of the tier exporters. A tier binary hands over its schema (and any
//! tier-only probes); everything else lives here:
//! sources (StatsD, event logs, probes) → schema-checked updates → registry → `/metrics`.

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
pub mod reload;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod web_config;

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

/// Revision the binary was built from (set by build.rs from git, `-dirty` with uncommitted
/// changes, else "unknown").
pub const REVISION: &str = env!("EXPORTER_REVISION");
/// Git branch of the build, else "unknown".
pub const BRANCH: &str = env!("EXPORTER_BRANCH");
/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("EXPORTER_RUSTC_VERSION");
/// The target triple it was built for.
pub const TARGET: &str = env!("EXPORTER_TARGET");

/// `--version` text, laid out as node_exporter's.
pub fn version_text(binary: &str) -> String {
    format!(
        "{binary}, version {} (branch: {BRANCH}, revision: {REVISION})\n  rustc version:    {RUSTC_VERSION}\n  platform:         {TARGET}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Path helper used by tests and docs: the repository root seen from a crate directory.
pub fn workspace_root(manifest_dir: &str) -> &Path {
    Path::new(manifest_dir)
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."))
}
