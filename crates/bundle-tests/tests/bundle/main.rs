//! Checks of the monitoring bundle with the real tools and against the exporter schemas.
//!
//! - `promtool check rules` / `promtool test rules` on alerts/;
//! - `promtool check config` on every Prometheus config of deploy/, `amtool check-config` on the
//!   Alertmanager config;
//! - conventions of alerts (labels, annotations, runbooks, unit-test coverage) and dashboards
//!   (timeseries only, variables, units, descriptions, exemplars, `$__rate_interval`);
//! - a cross-check that every metric name used by rules and dashboards is exposed by an exporter
//!   (per the schema TOML files) or is a known external series, and that every dashboard expression
//!   parses as PromQL (through promtool, on a generated rules file).
//!
//! A missing tool skips the test that needs it with a loud `SKIPPED:` line on stderr, unless
//! `EXPORTER_TEST_REQUIRE_TOOLS=1` is set, in which case the test fails.

use bundle_tests::promql::metric_names;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

mod alerts;
mod dashboards;
mod deploy;
mod mixin;
mod names;

use alerts::*;
use dashboards::*;
use names::*;

// "none": the always-firing Watchdog, which is routed to a dead man's switch only.
pub(crate) const SEVERITIES: &[&str] = &["critical", "warning", "info", "none"];

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Where the rendered bundle (alerts/, alerts/tests/, dashboards/) is checked: the repository,
/// or a rendering with another config (BUNDLE_DIR, set by `nondefault_rendering_passes_every_check`,
/// with the resolved config in BUNDLE_DIR/config.json).
pub(crate) fn bundle_dir() -> PathBuf {
    std::env::var_os("BUNDLE_DIR").map_or_else(root, PathBuf::from)
}

/// A string of the rendering's config: BUNDLE_DIR/config.json, else the shipped default.
pub(crate) fn config_str(key: &str, default: &str) -> String {
    match std::env::var_os("BUNDLE_DIR") {
        Some(dir) => json(&Path::new(&dir).join("config.json"))[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in config.json"))
            .to_owned(),
        None => default.to_owned(),
    }
}

/// The label that tells clusters apart, and the one that names a target.
pub(crate) fn cluster_label() -> String {
    config_str("clusterLabel", "cluster")
}

pub(crate) fn instance_label() -> String {
    config_str("instanceLabel", "instance")
}

/// The mixin config's `runbookBase` (mixin/config.libsonnet).
pub(crate) fn runbook_base() -> String {
    if std::env::var_os("BUNDLE_DIR").is_some() {
        return config_str("runbookBase", "");
    }
    let config = read(&root().join("mixin/config.libsonnet"));
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("runbookBase: '"))
        .and_then(|rest| rest.split('\'').next())
        .expect("runbookBase in mixin/config.libsonnet")
        .to_owned()
}

pub(crate) fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

pub(crate) fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub(crate) fn yaml(p: &Path) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(p))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", p.display()));
    assert!(!docs.is_empty(), "{} is empty", p.display());
    docs.swap_remove(0)
}

pub(crate) fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()))
}

/// Finds `name` on PATH. `None` means the caller must skip: this prints the skip notice, or
/// panics when EXPORTER_TEST_REQUIRE_TOOLS=1.
/// The tool to run, or None after a loud skip (a failure under EXPORTER_TEST_REQUIRE_TOOLS=1).
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    testkit::require_tool(name).then(|| PathBuf::from(name))
}

pub(crate) fn run(mut cmd: Command) -> String {
    testkit::run_ok(&mut cmd)
}

pub(crate) fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bundle-tests-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("create temp dir");
    d
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let dst = to.join(p.file_name().expect("file name"));
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            fs::copy(&p, &dst).expect("copy");
        }
    }
}
