//! What the sidecar measures itself, shared by every tier: the engine process, the exporter's
//! own process and the derived ratios declared in the schema. Tier-only probes live in the
//! tier crates.

pub mod derived;
pub mod engine;
pub mod process;

pub use crate::budget::Budgeted;
