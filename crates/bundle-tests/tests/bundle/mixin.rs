//! The bundle as a mixin: the default rendering is the shipped bundle byte for byte; other
//! renderings (other knobs, no cluster label, a new tier) pass the checks of this binary.

use super::*;

#[test]
fn bundle_matches_the_mixin() {
    // mixin/render.py renders the rules with jsonnet and the dashboards with Grafana's
    // grafana-foundation-sdk (PyPI); the shipped files are its default rendering, byte for byte,
    // and mixin/tiers.json is the [tier] tables of the schemas.
    if tool("jsonnet").is_none()
        || tool("python3").is_none()
        || !testkit::require_python(&["grafana_foundation_sdk"])
    {
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("mixin/render.py")).arg("--check");
    run(cmd);
    // What a jsonnet user imports (prometheusAlerts + prometheusRules, kube-prometheus' way)
    // is what the rule files hold: the same groups, rules and expressions.
    let mut cmd = Command::new("jsonnet");
    cmd.arg("-J").arg(root().join("mixin")).arg("-e").arg(
        "local m = import 'mixin.libsonnet'; m.prometheusAlerts.groups + m.prometheusRules.groups",
    );
    let imported: serde_json::Value = serde_json::from_str(&run(cmd)).expect("jsonnet JSON");
    let mut from_import: Vec<(String, String, String)> = Vec::new();
    for g in imported.as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .unwrap_or_default();
            from_import.push((
                g["name"].as_str().unwrap_or_default().to_owned(),
                name.to_owned(),
                r["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let mut from_files: Vec<(String, String, String)> = rules()
        .into_iter()
        .map(|r| (r.group, r.alert.or(r.record).unwrap_or_default(), r.expr))
        .collect();
    from_import.sort();
    from_files.sort();
    assert_eq!(from_import.len(), from_files.len());
    assert!(
        from_import == from_files,
        "the imported mixin differs from alerts/"
    );
    // The mixin's sources are formatted as jsonnetfmt writes them (Debian's jsonnet ships it).
    if tool("jsonnetfmt").is_some() {
        let mut sources = Vec::new();
        for dir in [
            "mixin",
            "mixin/lib",
            "mixin/alerts",
            "mixin/rules",
            "mixin/tests",
        ] {
            sources.extend(files(&root().join(dir), "sonnet"));
        }
        assert!(sources.len() >= 10, "{sources:?}");
        let mut cmd = Command::new("jsonnetfmt");
        cmd.arg("--test").args(&sources);
        run(cmd);
    }
}

/// The checks that read the rendered bundle, run again on a rendering with another config.
pub(crate) const CHECKS_OF_A_RENDERING: &[&str] = &[
    "alerts::promtool_check_rules",
    "alerts::rules_select_histogram_buckets_that_exist",
    "alerts::promtool_test_rules",
    "alerts::alerts_follow_the_conventions",
    "alerts::exporter_alerts_cover_every_tier",
    "alerts::every_alert_has_firing_and_silent_unit_tests",
    "dashboards::dashboards_follow_the_conventions",
    "names::metric_names_exist_in_the_schemas",
    "dashboards::dashboard_exprs_parse_as_promql",
    "alerts::vmalert_loads_the_rules_unchanged",
];

/// The knobs work: the bundle rendered with mixin/tests/nondefault.libsonnet (other job names,
/// `dc` for the cluster label, `pod` for the instance label, other thresholds, `for`,
/// severities, runbook base and dashboard settings) passes the promtool suite rewritten for it,
/// the threshold tests rendered for it, and the bundle checks above, run by this same test
/// binary on the rendering.
#[test]
fn nondefault_rendering_passes_every_check() {
    if !can_render_other_configs() {
        return;
    }
    let tmp = testkit::TempDir::new("nondefault");
    let out = render_with(
        &tmp.path().join("bundle"),
        "mixin/tests/nondefault.libsonnet",
    );
    let rules = read(&out.join("alerts/exporters.rules.yml"));
    for want in [
        "db/tx-engine-metrics",
        "by (dc, job, pod)",
        "wiki.example.org/sre/db-runbooks/",
    ] {
        assert!(rules.contains(want), "the rendering lacks {want}");
    }
    assert!(
        !rules.contains("tx-engines") && !rules.contains("cluster,"),
        "a default name is left in the rendering"
    );
    run_checks_on(&out, CHECKS_OF_A_RENDERING);
}

/// The bundle of a config without a cluster label loads in promtool and vmalert, passes the
/// threshold tests rendered for it, and its dashboards' queries parse and name real metrics.
#[test]
fn rendering_without_a_cluster_label_loads_and_passes() {
    if !can_render_other_configs() {
        return;
    }
    let tmp = testkit::TempDir::new("no-cluster-label");
    let out = render_with(
        &tmp.path().join("bundle"),
        "mixin/tests/no-cluster-label.libsonnet",
    );
    let rules: String = files(&out.join("alerts"), ".rules.yml")
        .iter()
        .map(|f| read(f))
        .collect();
    for left in [
        "(cluster",
        "cluster=",
        "$labels.cluster",
        "$labels. ",
        "$labels.}",
        "(, ",
    ] {
        assert!(!rules.contains(left), "the rendering still has {left:?}");
    }
    let tests = out.join("alerts/tests");
    let mut cmd = Command::new("promtool");
    cmd.current_dir(&tests)
        .args(["test", "rules", "thresholds.test.yml"]);
    run(cmd);
    run_checks_on(
        &out,
        &[
            "alerts::promtool_check_rules",
            "names::metric_names_exist_in_the_schemas",
            "dashboards::dashboard_exprs_parse_as_promql",
            "alerts::vmalert_loads_the_rules_unchanged",
        ],
    );
}

/// A config that names a knob the mixin does not have, or gives one a value it cannot use, is
/// refused with every problem named, and nothing is rendered: no knob is silently ignored.
#[test]
fn a_misspelt_knob_is_refused() {
    if tool("jsonnet").is_none() || tool("python3").is_none() {
        return;
    }
    let tmp = testkit::TempDir::new("misspelt");
    let config = tmp.path().join("my.libsonnet");
    fs::write(
        &config,
        "{ _config+:: { clusterLable: 'dc', jobs+: { txx: 'a' }, alerts+: {\n\
         HighReplicationLagg+: { threshold: 3 },\n\
         HighReplicationLag+: { treshold: 3, severity: 'page', 'for': '5 minutes' } },\n\
         runbookBase: 'https://wiki.example.org/runbooks' } }\n",
    )
    .expect("write");
    let out = tmp.path().join("out");
    let said = Command::new("python3")
        .arg(root().join("mixin/render.py"))
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3");
    assert!(!said.status.success(), "a misspelt config was rendered");
    let err = String::from_utf8_lossy(&said.stderr);
    for want in [
        "clusterLable: no such knob",
        "jobs.txx: no such knob",
        "alerts.HighReplicationLagg: no such knob",
        "alerts.HighReplicationLag.treshold: no such knob",
        "alerts.HighReplicationLag.severity: 'page'",
        "alerts.HighReplicationLag.for: '5 minutes'",
        "runbookBase: must end with /",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    assert!(!out.join("alerts").exists(), "something was rendered");
}

/// Whether this run renders other configs: not inside a run on a rendering (BUNDLE_DIR), and
/// with jsonnet, promtool and the Python packages render.py needs.
pub(crate) fn can_render_other_configs() -> bool {
    std::env::var_os("BUNDLE_DIR").is_none()
        && tool("jsonnet").is_some()
        && tool("promtool").is_some()
        && tool("python3").is_some()
        && testkit::require_python(&["grafana_foundation_sdk", "yaml"])
}

/// `mixin/render.py --tests` with the config at `config` (relative to the checkout) into `out`.
pub(crate) fn render_with(out: &Path, config: &str) -> PathBuf {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("mixin/render.py"))
        .arg("--config")
        .arg(root().join(config))
        .arg("--out")
        .arg(out)
        .arg("--tests");
    let said = run(cmd);
    assert!(said.contains("rendered"), "{said}");
    out.to_path_buf()
}

/// Runs `checks` of this test binary again on the rendering in `dir` (BUNDLE_DIR).
pub(crate) fn run_checks_on(dir: &Path, checks: &[&str]) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.env("BUNDLE_DIR", dir)
        .arg("--exact")
        .args(checks)
        .arg("--test-threads=2");
    let out = run(cmd);
    let passed = format!("{} passed; 0 failed", checks.len());
    assert!(out.contains(&passed), "{out}");
}

/// A fifth tier, added in a scratch copy the way docs/architecture.md says (its crate's
/// schema.toml, then `python3 mixin/render.py`), gets its exporter alerts, its scrape job in
/// each example Prometheus config and its dashboard with no hand edit outside the tier: the
/// fixture tier's schema plays the new tier.
#[test]
fn a_new_tier_gets_alerts_scrape_jobs_and_a_dashboard() {
    if tool("jsonnet").is_none()
        || tool("promtool").is_none()
        || tool("python3").is_none()
        || !testkit::require_python(&["grafana_foundation_sdk"])
    {
        return;
    }
    let tmp = testkit::TempDir::new("fifth-tier");
    let scratch = tmp.path();
    for dir in [
        "mixin",
        "alerts",
        "dashboards",
        "deploy/prometheus",
        "deploy/scale-out",
    ] {
        copy_dir(&root().join(dir), &scratch.join(dir));
    }
    for schema in tiers() {
        let crate_dir = scratch.join(format!("crates/{}", schema.tier.binary));
        fs::create_dir_all(&crate_dir).expect("crate dir");
        fs::copy(
            root().join(format!("crates/{}/schema.toml", schema.tier.binary)),
            crate_dir.join("schema.toml"),
        )
        .expect("copy schema");
    }
    let before = tree_digest(scratch);
    // The new tier: its crate's schema.toml is the one hand-written file the bundle needs.
    let fifth = scratch.join("crates/fixture-exporter");
    fs::create_dir_all(&fifth).expect("crate dir");
    fs::copy(
        root().join("crates/core/fixture/schema.toml"),
        fifth.join("schema.toml"),
    )
    .expect("copy");
    let mut cmd = Command::new("python3");
    cmd.arg(scratch.join("mixin/render.py"));
    run(cmd);
    let after = tree_digest(scratch);
    let mut touched: Vec<&String> = after
        .iter()
        .filter(|(path, digest)| before.get(*path) != Some(*digest))
        .map(|(path, _)| path)
        .collect();
    touched.sort();
    eprintln!("a fifth tier touched {} files: {touched:?}", touched.len());

    let rules = read(&scratch.join("alerts/exporters.rules.yml"));
    for want in [
        "fixture_exporter_engine_up == 0",
        "up{job=\"fixture\"}",
        "fixture_exporter_ingest_rejected_total",
    ] {
        assert!(rules.contains(want), "exporters.rules.yml lacks {want}");
    }
    for config in [
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/prometheus-ec2.yml",
        "deploy/scale-out/prometheus-shard.yml",
    ] {
        let doc = yaml(&scratch.join(config));
        let job = doc["scrape_configs"]
            .as_vec()
            .expect("scrape_configs")
            .iter()
            .find(|j| j["job_name"].as_str() == Some("fixture"))
            .unwrap_or_else(|| panic!("{config}: no fixture job"))
            .clone();
        let port_or_file = job["ec2_sd_configs"][0]["port"].as_i64() == Some(9190)
            || job["file_sd_configs"][0]["files"][0].as_str() == Some("file_sd/fixture.json");
        assert!(port_or_file, "{config}: {job:?}");
    }
    let dashboard = json(&scratch.join("dashboards/fixture.json"));
    let mut panels = Vec::new();
    panels_of(&dashboard, "fixture", &mut panels);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    assert!(read(&scratch.join("dashboards/exporter-health.json")).contains("fixture_exporter_"));
    let mut cmd = Command::new("promtool");
    cmd.arg("check")
        .arg("rules")
        .args(files(&scratch.join("alerts"), ".rules.yml"));
    run(cmd);
    // Nothing outside the new crate and the rendered files changed.
    for path in &touched {
        assert!(
            path.starts_with("crates/fixture-exporter/")
                || *path == "mixin/tiers.json"
                || *path == "mixin/dashboards.libsonnet"
                || path.starts_with("alerts/")
                || path.starts_with("dashboards/")
                || path.starts_with("deploy/"),
            "{path} changed"
        );
    }
}

/// Every file under `dir`, relative, with its contents.
pub(crate) fn tree_digest(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p
                    .strip_prefix(base)
                    .expect("under base")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
