//! The `[olap]` config section: what only the OLAP tier measures.

use std::path::PathBuf;

use exporter_core::config::{Flag, Settings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OlapSettings {
    /// The shard's data directory: its size and its filesystem's free space are measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Settings for OlapSettings {
    const SECTION: &'static str = "olap";
    const FLAGS: &'static [Flag] = &[Flag::one(
        "olap.data-dir",
        "olap.data_dir",
        "The shard's data directory: its allocated bytes and its filesystem's size and free space are measured",
    )];
}
