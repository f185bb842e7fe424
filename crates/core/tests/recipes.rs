//! docs/architecture.md's recipes followed on a scratch copy of the checkout, so that the files
//! each touches are measured, not claimed: "add a probe with a setting", "add an engine
//! metric" and "add an event rule" on the fixture tier, and "add a probe with a setting" on a
//! product tier (clock), whose docs are regenerated as the recipe says. The copy is built with its own cargo (release, in the target
//! directory the Debian package test uses: the outer `cargo test` holds the usual one's lock),
//! and the built exporter must serve what the recipes added.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{eventually, require_tools, sample_value, Exporter, TempDir};

fn checkout() -> PathBuf {
    exporter_core::workspace_root(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The tracked files of the checkout, copied under `to`; their contents, by relative path.
fn copy_checkout(to: &Path) -> BTreeMap<String, Vec<u8>> {
    let root = checkout();
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success());
    let mut files = BTreeMap::new();
    for rel in listed.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = String::from_utf8(rel.to_vec()).expect("utf-8 path");
        let Ok(bytes) = std::fs::read(root.join(&rel)) else {
            continue; // deleted in the work tree
        };
        let dest = to.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, &bytes).unwrap();
        files.insert(rel, bytes);
    }
    files
}

/// Files under `dir` that differ from `before` or are new.
fn touched(dir: &Path, before: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut now = Vec::new();
    walk(dir, dir, &mut now);
    let mut changed: Vec<String> = now
        .into_iter()
        .filter(|(rel, bytes)| before.get(rel) != Some(bytes))
        .map(|(rel, _)| rel)
        .collect();
    changed.sort();
    changed
}

fn edit(dir: &Path, rel: &str, change: impl FnOnce(String) -> String) {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, change(text)).unwrap();
}

/// Recipe "add a probe to a tier", step 2: the probe's file, with its own setting.
const PROBE_FILE: &str = r#"//! The 1-minute load average, read from a file in /proc/loadavg's format.

use std::path::PathBuf;
use std::time::Duration;

use exporter_core::config::{Flag, Settings};
use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadAvgSettings {
    pub loadavg_file: PathBuf,
}

impl Default for LoadAvgSettings {
    fn default() -> Self {
        LoadAvgSettings {
            loadavg_file: PathBuf::from("/proc/loadavg"),
        }
    }
}

impl Settings for LoadAvgSettings {
    const SECTION: &'static str = "fixture";
    const FLAGS: &'static [Flag] = &[Flag::one(
        "fixture.loadavg-file",
        "fixture.loadavg_file",
        "File in /proc/loadavg's format",
    )];
}

exporter_core::metric_handles! {
    pub struct LoadAvgMetrics {
        one_minute: Gauge = "fixture_loadavg_1m",
    }
}

#[derive(Clone)]
pub struct LoadAvg {
    file: PathBuf,
    m: LoadAvgMetrics,
}

impl Probe for LoadAvg {
    type Settings = LoadAvgSettings;
    const SOURCE: &'static str = "loadavg";
    const INTERVAL: Duration = Duration::from_secs(1);
    const BUDGET: Duration = Duration::from_secs(1);

    fn bind(s: &LoadAvgSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        Ok(vec![LoadAvg {
            file: s.loadavg_file.clone(),
            m: LoadAvgMetrics::bind(metrics)?,
        }])
    }

    fn refresh(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        match text.split_whitespace().next().and_then(|w| w.parse::<f64>().ok()) {
            Some(v) => {
                let _ = self.m.one_minute.set(&[], v);
                Ok(format!("reading {}", self.file.display()))
            }
            None => {
                self.unknown();
                Err(format!("{}: no load average", self.file.display()))
            }
        }
    }

    fn unknown(&self) {
        let _ = self.m.one_minute.set_unknown(&[]);
    }
}
"#;

#[test]
fn a_probe_an_engine_metric_and_an_event_rule_touch_only_their_files() {
    if !require_tools(&["git"]) {
        return;
    }
    let scratch = TempDir::new("recipes");
    let dir = scratch.path();
    let before = copy_checkout(dir);

    // Add a probe with a setting: its metric, its file, one line in main.rs (the fixture tier
    // has no docs to regenerate).
    edit(dir, "crates/core/fixture/schema.toml", |t| {
        t + "\n[[metrics]]\nname = \"fixture_loadavg_1m\"\ntype = \"gauge\"\n\
             help = \"Load average over one minute\"\nsource = \"probe\"\n"
    });
    edit(dir, "crates/core/fixture/loadavg.rs", |_| {
        PROBE_FILE.to_owned()
    });
    edit(dir, "crates/core/fixture/main.rs", |t| {
        t.replace("fn main()", "mod loadavg;\n\nfn main()").replace(
            "exporter_core::Tier::new(include_str!(\"schema.toml\"))",
            "exporter_core::Tier::new(include_str!(\"schema.toml\"))\n        .probe::<loadavg::LoadAvg>()",
        )
    });
    let probe_files = touched(dir, &before);
    // Add an engine metric: its schema entry (a product tier also regenerates docs/metrics.md).
    let mut before_metric = before.clone();
    for rel in &probe_files {
        before_metric.insert(rel.clone(), std::fs::read(dir.join(rel)).unwrap());
    }
    edit(dir, "crates/core/fixture/schema.toml", |t| {
        t + "\n[[metrics]]\nname = \"fixture_recipe_widgets_total\"\ntype = \"counter\"\n\
             help = \"Widgets made\"\nchannels = [\"statsd\", \"events\"]\n"
    });
    let metric_files = touched(dir, &before_metric);
    // Add an event rule: its schema entry.
    let mut before_rule = before_metric.clone();
    for rel in &metric_files {
        before_rule.insert(rel.clone(), std::fs::read(dir.join(rel)).unwrap());
    }
    edit(dir, "crates/core/fixture/schema.toml", |t| {
        t + "\n[[events]]\nevent = \"widget_made\"\n\
             effects = [{ op = \"inc\", metric = \"fixture_recipe_widgets_total\" }]\n"
    });
    let rule_files = touched(dir, &before_rule);

    assert_eq!(
        probe_files,
        [
            "crates/core/fixture/loadavg.rs",
            "crates/core/fixture/main.rs",
            "crates/core/fixture/schema.toml",
        ]
    );
    assert_eq!(metric_files, ["crates/core/fixture/schema.toml"]);
    assert_eq!(rule_files, ["crates/core/fixture/schema.toml"]);

    // The copy builds and serves both with nothing else changed.
    scratch_cargo(
        dir,
        &["build", "-p", "exporter-core", "--bin", "fixture-exporter"],
        &[],
    );
    let target = scratch_target();
    let loadavg = dir.join("loadavg");
    std::fs::write(&loadavg, "2.50 1.00 0.50 1/100 1234\n").unwrap();
    let bin = target.join("release/fixture-exporter");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").unwrap();
    let exp = Exporter::start(
        bin.to_str().unwrap(),
        &[
            &format!("--fixture.loadavg-file={}", loadavg.display()),
            &format!("--ingest.log-path={}", log.display()),
        ],
    );
    let probed = eventually(Duration::from_secs(10), || {
        let text = exp.scrape_text();
        (sample_value(&text, "fixture_exporter_source_up{source=\"loadavg\"}") == Some(1.0))
            .then(|| sample_value(&text, "fixture_loadavg_1m"))
            .flatten()
    });
    assert_eq!(probed, Some(2.5), "{}", exp.scrape_text());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"fixture_recipe_widgets:3|c", exp.statsd)
        .unwrap();
    exp.wait_for_value("fixture_recipe_widgets_total", 3.0, Duration::from_secs(10));
    exp.wait_for_follower();
    std::fs::write(
        &log,
        "{\"timestamp\":\"2026-12-07T10:00:00Z\",\"event\":\"widget_made\"}\n",
    )
    .unwrap();
    exp.wait_for_value("fixture_recipe_widgets_total", 4.0, Duration::from_secs(10));
    eprintln!(
        "recipes: a probe with a setting touched {} files ({}), an engine metric {} ({}), an event rule {} ({})",
        probe_files.len(),
        probe_files.join(", "),
        metric_files.len(),
        metric_files.join(", "),
        rule_files.len(),
        rule_files.join(", ")
    );
}

/// The Debian test's target directory: the outer `cargo test` holds the usual one's lock.
fn scratch_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| checkout().join("target"))
        .join("deb")
}

/// Cargo in the scratch copy: release, in [`scratch_target`].
fn scratch_cargo(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = scratch_target();
    let out = Command::new(&cargo)
        .args(args)
        .args(["--release", "--offline", "--locked"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .envs(env.iter().copied())
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in the recipe's copy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The recipe on the clock tier, docs included: the probe's metric in the schema, its file,
/// one line in lib.rs (and its `mod`), and docs/metrics.md regenerated (its metric by core's
/// docs test, its flag by the tier's): four files, and the built exporter serves it.
#[test]
fn a_probe_with_a_setting_on_a_product_tier_touches_four_files() {
    if !require_tools(&["git"]) {
        return;
    }
    let scratch = TempDir::new("recipes-clock");
    let dir = scratch.path();
    let before = copy_checkout(dir);
    edit(dir, "crates/clock-exporter/schema.toml", |t| {
        t + "\n[[metrics]]\nname = \"clock_master_loadavg_1m\"\ntype = \"gauge\"\n\
             help = \"Load average over one minute\"\nsource = \"probe\"\n"
    });
    edit(dir, "crates/clock-exporter/src/loadavg.rs", |_| {
        PROBE_FILE
            .replace("\"fixture\"", "\"loadavg\"")
            .replace("\"fixture.", "\"loadavg.")
            .replace("fixture_loadavg_1m", "clock_master_loadavg_1m")
    });
    edit(dir, "crates/clock-exporter/src/lib.rs", |t| {
        t.replace("pub mod kernel;", "pub mod kernel;\npub mod loadavg;")
            .replace(
                ".probe::<kernel::KernelProbe>()",
                ".probe::<kernel::KernelProbe>()\n        .probe::<loadavg::LoadAvg>()",
            )
    });
    // Regenerate docs/metrics.md as the recipe says: core's docs test (here its function, on
    // the copy's schemas, keeping the tiers' settings blocks) and the tier's own test.
    let schemas = exporter_core::Schema::discover(dir).unwrap();
    let doc_path = dir.join("docs/metrics.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let regenerated = exporter_core::docs::metrics_markdown_keeping_settings(&schemas, &doc);
    std::fs::write(&doc_path, regenerated).unwrap();
    scratch_cargo(
        dir,
        &[
            "test",
            "-p",
            "clock-exporter",
            "--lib",
            "settings_reference_is_current",
        ],
        &[("UPDATE_DOCS", "1")],
    );
    let files = touched(dir, &before);
    assert_eq!(
        files,
        [
            "crates/clock-exporter/schema.toml",
            "crates/clock-exporter/src/lib.rs",
            "crates/clock-exporter/src/loadavg.rs",
            "docs/metrics.md",
        ]
    );
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    assert!(
        doc.contains("| `clock_master_loadavg_1m` | gauge |"),
        "metric row"
    );
    assert!(
        doc.contains("| `--loadavg.loadavg-file` | `loadavg.loadavg_file` | `/proc/loadavg` |"),
        "flag row"
    );

    scratch_cargo(dir, &["build", "-p", "clock-exporter"], &[]);
    let loadavg = dir.join("loadavg");
    std::fs::write(&loadavg, "2.50 1.00 0.50 1/100 1234\n").unwrap();
    let target = scratch_target();
    let bin = target.join("release/clock-exporter");
    let exp = Exporter::start(
        bin.to_str().unwrap(),
        &[
            &format!("--loadavg.loadavg-file={}", loadavg.display()),
            "--clock.chrony-address=",
        ],
    );
    let probed = eventually(Duration::from_secs(10), || {
        let text = exp.scrape_text();
        (sample_value(&text, "clock_exporter_source_up{source=\"loadavg\"}") == Some(1.0))
            .then(|| sample_value(&text, "clock_master_loadavg_1m"))
            .flatten()
    });
    assert_eq!(probed, Some(2.5), "{}", exp.scrape_text());
    eprintln!(
        "recipes: a probe with a setting on the clock tier touched {} files ({})",
        files.len(),
        files.join(", ")
    );
}
