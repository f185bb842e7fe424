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

/// Metric names used by the bundle that an exporter is about to expose but whose schema entry has
/// not landed yet. Keep this list empty whenever possible.
const EXPECTED_SOON: &[&str] = &[];

/// Series that do not come from our exporters: Prometheus' own and the standard process metrics
/// every exporter exposes unprefixed. Kafka names are checked against what the JMX exporter
/// rules and kafka_exporter produce (`other_exporter_names`); nothing is allowed by prefix.
const EXTERNAL_NAMES: &[&str] = &[
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// The monitoring stack's own series that alerts/meta.rules.yml watches: Prometheus 2.x,
/// Alertmanager 0.2x and vmalert 1.79+ expose them under these names (checked against the real
/// binaries by `monitoring_stack_names_exist_in_the_real_binaries`).
const MONITORING_STACK_NAMES: &[&str] = &[
    "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_errors_total",
    "prometheus_notifications_sent_total",
    "prometheus_notifications_alertmanagers_discovered",
    "prometheus_remote_storage_highest_timestamp_in_seconds",
    "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
    "alertmanager_notifications_failed_total",
    "alertmanager_notifications_total",
    "vmalert_execution_errors_total",
    "vmalert_alerts_send_errors_total",
    // read by the runbooks only
    "prometheus_notifications_queue_length",
    "prometheus_remote_storage_samples_failed_total",
    "prometheus_remote_storage_shards",
    "vmalert_alerting_rules_error",
];

/// Kafka broker MBeans as the JMX exporter formats them (`domain<key=value, ...><>attribute`),
/// one for every metric deploy/kafka/jmx-exporter.yml should export (Kafka 3.x names).
const KAFKA_MBEANS: &[&str] = &[
    "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec, topic=db.changes><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec, topic=db.changes><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=BytesOutPerSec><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=FailedProduceRequestsPerSec><>Count",
    "kafka.server<type=ReplicaManager, name=UnderReplicatedPartitions><>Value",
    "kafka.server<type=ReplicaManager, name=UnderMinIsrPartitionCount><>Value",
    "kafka.server<type=ReplicaManager, name=IsrShrinksPerSec><>Count",
    "kafka.server<type=ReplicaManager, name=IsrExpandsPerSec><>Count",
    "kafka.controller<type=KafkaController, name=ActiveControllerCount><>Value",
    "kafka.controller<type=KafkaController, name=OfflinePartitionsCount><>Value",
    "kafka.server<type=FetcherLagMetrics, name=ConsumerLag, clientId=ReplicaFetcherThread-0-2, topic=db.changes, partition=0><>Value",
    "kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>99thPercentile",
];

/// What danielqsj/kafka_exporter 1.x exposes (its collector's metric names).
const KAFKA_EXPORTER_NAMES: &[&str] = &[
    "kafka_brokers",
    "kafka_topic_partitions",
    "kafka_topic_partition_current_offset",
    "kafka_topic_partition_oldest_offset",
    "kafka_topic_partition_in_sync_replica",
    "kafka_topic_partition_leader",
    "kafka_topic_partition_leader_is_preferred",
    "kafka_topic_partition_replicas",
    "kafka_topic_partition_under_replicated_partition",
    "kafka_consumergroup_current_offset",
    "kafka_consumergroup_current_offset_sum",
    "kafka_consumergroup_lag",
    "kafka_consumergroup_lag_sum",
    "kafka_consumergroup_members",
];

// "none": the always-firing Watchdog, which is routed to a dead man's switch only.
const SEVERITIES: &[&str] = &["critical", "warning", "info", "none"];

// ---------------------------------------------------------------------------------------------
// helpers

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Where the rendered bundle (alerts/, alerts/tests/, dashboards/) is checked: the repository,
/// or a rendering with another config (BUNDLE_DIR, set by `nondefault_rendering_passes_every_check`,
/// with the resolved config in BUNDLE_DIR/config.json).
fn bundle_dir() -> PathBuf {
    std::env::var_os("BUNDLE_DIR").map_or_else(root, PathBuf::from)
}

/// A string of the rendering's config: BUNDLE_DIR/config.json, else the shipped default.
fn config_str(key: &str, default: &str) -> String {
    match std::env::var_os("BUNDLE_DIR") {
        Some(dir) => json(&Path::new(&dir).join("config.json"))[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in config.json"))
            .to_owned(),
        None => default.to_owned(),
    }
}

/// The label that tells clusters apart, and the one that names a target.
fn cluster_label() -> String {
    config_str("clusterLabel", "cluster")
}

fn instance_label() -> String {
    config_str("instanceLabel", "instance")
}

/// The mixin config's `runbookBase` (mixin/config.libsonnet).
fn runbook_base() -> String {
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

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn yaml(p: &Path) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(p))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", p.display()));
    assert!(!docs.is_empty(), "{} is empty", p.display());
    docs.swap_remove(0)
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()))
}

/// Finds `name` on PATH. `None` means the caller must skip: this prints the skip notice, or
/// panics when EXPORTER_TEST_REQUIRE_TOOLS=1.
/// The tool to run, or None after a loud skip (a failure under EXPORTER_TEST_REQUIRE_TOOLS=1).
fn tool(name: &str) -> Option<PathBuf> {
    testkit::require_tool(name).then(|| PathBuf::from(name))
}

fn run(mut cmd: Command) -> String {
    testkit::run_ok(&mut cmd)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bundle-tests-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn copy_dir(from: &Path, to: &Path) {
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

// ---------------------------------------------------------------------------------------------
// rules

struct Rule {
    file: String,
    group: String,
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    node: Yaml,
}

fn rule_files() -> Vec<PathBuf> {
    files(&bundle_dir().join("alerts"), ".rules.yml")
}

fn rules() -> Vec<Rule> {
    let mut out = Vec::new();
    for f in rule_files() {
        let doc = yaml(&f);
        let groups = doc["groups"].as_vec().expect("groups list");
        for g in groups {
            let group = g["name"].as_str().expect("group name").to_string();
            for r in g["rules"].as_vec().expect("rules list") {
                out.push(Rule {
                    file: f.file_name().expect("name").to_string_lossy().into_owned(),
                    group: group.clone(),
                    alert: r["alert"].as_str().map(str::to_string),
                    record: r["record"].as_str().map(str::to_string),
                    expr: r["expr"].as_str().expect("expr").to_string(),
                    node: r.clone(),
                });
            }
        }
    }
    out
}

fn alerts() -> Vec<Rule> {
    rules().into_iter().filter(|r| r.alert.is_some()).collect()
}

// ---------------------------------------------------------------------------------------------
// schema

/// Every tier of the checkout, from its schema (exporter_core parses and checks it).
fn tiers() -> Vec<exporter_core::Schema> {
    let tiers = exporter_core::Schema::discover(&root()).expect("tier schemas");
    assert!(!tiers.is_empty(), "no crates/*/schema.toml found");
    tiers
}

/// Every series name the exporters expose, from their schemas.
fn schema_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for schema in tiers() {
        for m in &schema.metrics {
            if m.kind == exporter_core::schema::MetricType::Histogram {
                // A histogram's base name is not a series.
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{s}", m.name));
                }
            } else {
                names.insert(m.name.clone());
            }
        }
    }
    names
}

/// Returns the names in `used` that are neither exposed, recorded, nor known external series.
fn unknown_names(used: &BTreeSet<String>, recorded: &BTreeSet<String>) -> Vec<String> {
    let known = schema_names();
    used.iter()
        .filter(|n| {
            !known.contains(*n)
                && !recorded.contains(*n)
                && !EXTERNAL_NAMES.contains(&n.as_str())
                && !MONITORING_STACK_NAMES.contains(&n.as_str())
                && !other_exporter_names().contains(*n)
                && !EXPECTED_SOON.contains(&n.as_str())
        })
        .cloned()
        .collect()
}

#[test]
fn cross_check_rejects_unknown_and_histogram_base_names() {
    // The seed's bugs: a histogram's base name and a metric that is not exposed.
    let used = metric_names(
        "histogram_quantile(0.99, tx_engine_transaction_duration_seconds) + olap_last_compaction_timestamp + up",
    );
    let unknown = unknown_names(&used, &BTreeSet::new());
    assert_eq!(
        unknown,
        [
            "olap_last_compaction_timestamp",
            "tx_engine_transaction_duration_seconds"
        ]
    );
    let ok = metric_names("tx_exporter_engine_up + clock_master_drift_ppm + olap_exporter_scrape_duration_seconds_bucket");
    assert!(unknown_names(&ok, &BTreeSet::new()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// alerts

#[test]
fn promtool_check_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut cmd = Command::new(promtool);
    cmd.arg("check").arg("rules").args(rule_files());
    let out = run(cmd);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_test_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = bundle_dir().join("alerts/tests");
    let tests = files(&dir, ".test.yml");
    assert!(
        tests.len() >= 5,
        "expected the unit test files in alerts/tests"
    );
    let mut cmd = Command::new(promtool);
    cmd.current_dir(&dir).arg("test").arg("rules").args(&tests);
    let out = run(cmd);
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn alerts_follow_the_conventions() {
    let root = root();
    // Every runbook_url is the config's runbookBase and the alert name.
    let runbook_base = runbook_base();
    assert!(
        runbook_base.starts_with("https://") && runbook_base.ends_with('/'),
        "runbookBase: {runbook_base:?}"
    );
    let mut seen = BTreeSet::new();
    for r in alerts() {
        let name = r.alert.as_deref().expect("alert");
        let at = format!("{name} ({}/{})", r.file, r.group);
        assert!(seen.insert(name.to_string()), "duplicate alert {at}");
        let labels = &r.node["labels"];
        let sev = labels["severity"].as_str().unwrap_or_default();
        assert!(SEVERITIES.contains(&sev), "{at}: severity {sev:?}");
        assert!(
            labels["component"].as_str().is_some(),
            "{at}: no component label"
        );
        let ann = &r.node["annotations"];
        let summary = ann["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.contains("{{"),
            "{at}: summary must be static text"
        );
        let desc = ann["description"].as_str().unwrap_or_default();
        assert!(desc.contains("{{"), "{at}: description must be templated");
        let url = ann["runbook_url"].as_str().unwrap_or_default();
        assert_eq!(url, format!("{runbook_base}{name}.md"), "{at}: runbook_url");
        let page = root.join(format!("docs/runbooks/{name}.md"));
        let text = read(&page);
        for section in ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"] {
            assert!(
                text.contains(section),
                "{}: no {section} section",
                page.display()
            );
        }
        assert!(
            text.contains(name),
            "{}: does not name the alert",
            page.display()
        );
    }
    assert!(seen.len() >= 20, "only {} alerts", seen.len());
    // Every alert of the monitoring design (seed 000) is kept under its name.
    for seed in [
        "HighTransactionLatency",
        "LowCacheHitRate",
        "HighReplicationLag",
        "ClockSyncDegraded",
        "ClockSyncLost",
        "HighConflictRate",
        "OLAPPushLagHigh",
        "MergeQueueBackup",
        "SlowOLAPQueries",
        "StorageHighUtilization",
        "CompactionLag",
        "ClusterReplicationLagHigh",
        "InsufficientTXEngines",
    ] {
        assert!(seen.contains(seed), "seed alert {seed} is missing");
    }
    // No runbook page for an alert that does not exist.
    for page in files(&root.join("docs/runbooks"), ".md") {
        let stem = page
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        assert!(
            stem == "README" || seen.contains(&stem),
            "{} has no alert",
            page.display()
        );
    }
}

/// The head of an alert's runbook, rendered from its rule: severity, `for:`, rule file and the
/// expression as it runs. Regenerate every runbook's head with
/// `UPDATE_RUNBOOKS=1 cargo test -p bundle-tests --test bundle runbooks_quote`.
fn runbook_head(r: &Rule) -> String {
    let name = r.alert.as_deref().expect("alert");
    let sev = r.node["labels"]["severity"].as_str().unwrap_or_default();
    let for_ = r.node["for"].as_str().unwrap_or("0s (fires at once)");
    format!(
        "# {name}\n\n| | |\n|---|---|\n| severity | `{sev}` |\n| for | {for_} |\n| rule file | `alerts/{}` |\n\n```promql\n{}\n```\n",
        r.file,
        r.expr.trim_end()
    )
}

#[test]
fn runbooks_quote_their_alert_from_the_rule_files() {
    let update = std::env::var_os("UPDATE_RUNBOOKS").is_some();
    let mut stale = Vec::new();
    for r in alerts() {
        let name = r.alert.clone().expect("alert");
        let page = root().join(format!("docs/runbooks/{name}.md"));
        let text = read(&page);
        let Some(body) = text.find("\n## Meaning") else {
            panic!("{}: no ## Meaning section", page.display());
        };
        let head = runbook_head(&r);
        if text[..body] != head {
            if update {
                fs::write(&page, format!("{head}{}", &text[body..])).expect("write runbook");
            } else {
                stale.push(name);
            }
        }
    }
    // The index: one row per alert, by group then name.
    let mut rows: Vec<(String, String, String, String)> = alerts()
        .iter()
        .map(|r| {
            (
                r.group.clone(),
                r.alert.clone().expect("alert"),
                r.node["labels"]["severity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r.node["annotations"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    rows.sort();
    let index_path = root().join("docs/runbooks/README.md");
    let index = read(&index_path);
    let header = "| alert | severity | group | summary |\n|---|---|---|---|\n";
    let at = index
        .find(header)
        .expect("docs/runbooks/README.md: no alert table")
        + header.len();
    let end = index[at..].find("\n\n").map_or(index.len(), |e| at + e + 1);
    let table: String = rows
        .iter()
        .map(|(g, a, sev, summary)| format!("| [{a}]({a}.md) | {sev} | {g} | {summary} |\n"))
        .collect();
    if index[at..end] != table {
        if update {
            fs::write(
                &index_path,
                format!("{}{table}{}", &index[..at], &index[end..]),
            )
            .expect("write index");
        } else {
            stale.push("README.md (the alert table)".to_owned());
        }
    }
    assert!(
        stale.is_empty(),
        "runbooks whose head differs from the rule (severity, for, file, expression): {stale:?}; \
         run UPDATE_RUNBOOKS=1 cargo test -p bundle-tests --test bundle runbooks_quote"
    );
}

/// Every PromQL query a runbook gives names series that exist (the schemas, the recording
/// rules, the other exporters and the monitoring stack), and every event-log directory it names
/// is one the Debian configs follow.
#[test]
fn runbook_queries_name_real_series_and_paths() {
    let recorded: BTreeSet<String> = rules().into_iter().filter_map(|r| r.record).collect();
    let log_dirs: BTreeSet<String> = files(&root().join("deploy/debian"), ".toml")
        .iter()
        .flat_map(|f| {
            read(f)
                .lines()
                .filter_map(|l| {
                    let at = l.find("/var/log/db/")?;
                    let rest = &l[at + "/var/log/db/".len()..];
                    Some(rest.split('/').next()?.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(log_dirs.len() >= 4, "log directories: {log_dirs:?}");
    let mut checked = 0;
    for page in files(&root().join("docs/runbooks"), ".md") {
        let text = read(&page);
        let mut in_promql = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("```") {
                in_promql = t == "```promql";
                continue;
            }
            for (i, _) in line.match_indices("/var/log/db/") {
                let dir = line[i + "/var/log/db/".len()..]
                    .split(['/', ' ', '`', ','])
                    .next()
                    .unwrap_or_default();
                assert!(
                    dir.starts_with('{') || log_dirs.contains(dir),
                    "{}: /var/log/db/{dir} is not a directory the Debian configs follow ({log_dirs:?})",
                    page.display()
                );
            }
            // Placeholders such as <tier>_exporter_... stand for several names.
            if !in_promql || t.contains("<tier>") {
                continue;
            }
            let query = t.split(" # ").next().unwrap_or_default();
            let names = metric_names(query);
            let unknown = unknown_names(&names, &recorded);
            assert!(
                unknown.is_empty(),
                "{}: query names series nothing exposes: {unknown:?}: {t}",
                page.display()
            );
            checked += names.len();
        }
    }
    assert!(
        checked >= 60,
        "only {checked} series names checked in the runbooks"
    );
}

/// An alert about the sidecars that covers several tiers covers every tier the schemas give
/// (one `or` leg per tier's self prefix), so a new tier cannot be left out of it silently.
#[test]
fn exporter_alerts_cover_every_tier() {
    let prefixes: Vec<String> = tiers().iter().map(|t| t.tier.self_prefix.clone()).collect();
    let mut checked = 0;
    for r in alerts() {
        let covered: Vec<&String> = prefixes
            .iter()
            .filter(|p| r.expr.contains(p.as_str()))
            .collect();
        if covered.len() < 2 {
            continue;
        }
        checked += 1;
        let name = r.alert.as_deref().unwrap_or_default();
        for p in &prefixes {
            assert!(
                r.expr.contains(p.as_str()),
                "{name} ({}) covers {covered:?} but not {p}",
                r.file
            );
        }
    }
    assert!(checked >= 8, "only {checked} multi-tier exporter alerts");
}

#[test]
fn every_alert_has_firing_and_silent_unit_tests() {
    let dir = bundle_dir().join("alerts/tests");
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for f in files(&dir, ".test.yml") {
        let doc = yaml(&f);
        // promtool orders groups that group_eval_order does not list arbitrarily, which makes
        // `for:` boundaries flaky; require the full list, recording rules first.
        let mut groups = Vec::new();
        for rf in doc["rule_files"].as_vec().expect("rule_files") {
            let rf = dir.join(rf.as_str().expect("rule file"));
            for g in yaml(&rf)["groups"].as_vec().expect("groups") {
                groups.push(g["name"].as_str().expect("name").to_string());
            }
        }
        let order: Vec<String> = doc["group_eval_order"]
            .as_vec()
            .unwrap_or_else(|| panic!("{}: no group_eval_order", f.display()))
            .iter()
            .map(|g| g.as_str().expect("group").to_string())
            .collect();
        let (mut a, mut b) = (order.clone(), groups.clone());
        a.sort();
        b.sort();
        assert_eq!(
            a,
            b,
            "{}: group_eval_order must list every group",
            f.display()
        );
        if groups.iter().any(|g| g == "db-recording") {
            assert_eq!(
                order[0],
                "db-recording",
                "{}: recording rules first",
                f.display()
            );
        }
        for t in doc["tests"].as_vec().expect("tests") {
            // The rendered threshold tests (thresholds.test.yml) query ALERTS{alertname="X", ...}.
            for case in t["promql_expr_test"].as_vec().into_iter().flatten() {
                let expr = case["expr"].as_str().unwrap_or_default();
                let Some(name) = expr
                    .strip_prefix("ALERTS{alertname=\"")
                    .and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                if case["exp_samples"].as_vec().is_some_and(|v| !v.is_empty()) {
                    firing.insert(name.to_string());
                } else {
                    silent.insert(name.to_string());
                }
            }
            for case in t["alert_rule_test"].as_vec().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_string();
                let n = case["exp_alerts"].as_vec().map_or(0, Vec::len);
                if n > 0 {
                    firing.insert(name);
                } else {
                    silent.insert(name);
                }
            }
        }
    }
    for r in alerts() {
        let name = r.alert.expect("alert");
        assert!(
            firing.contains(&name),
            "{name}: no unit test where it fires"
        );
        // Watchdog fires by design at every evaluation: it has no silent case.
        assert!(
            name == "Watchdog" || silent.contains(&name),
            "{name}: no unit test where it stays silent"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// dashboards

struct Panel {
    dashboard: String,
    node: serde_json::Value,
}

fn dashboard_files() -> Vec<PathBuf> {
    files(&bundle_dir().join("dashboards"), ".json")
}

fn panels_of(v: &serde_json::Value, dashboard: &str, out: &mut Vec<Panel>) {
    for p in v["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            panels_of(p, dashboard, out);
        } else {
            out.push(Panel {
                dashboard: dashboard.to_string(),
                node: p.clone(),
            });
        }
    }
}

fn panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for f in dashboard_files() {
        let d = json(&f);
        panels_of(
            &d,
            &f.file_name().expect("name").to_string_lossy(),
            &mut out,
        );
    }
    out
}

/// Replaces Grafana variables by values that keep the expression valid PromQL.
fn substitute_variables(expr: &str) -> String {
    let s: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] != '$' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (name, end) = if s.get(i + 1) == Some(&'{') {
            let close = (i..s.len()).find(|&k| s[k] == '}').expect("closing }");
            let inner: String = s[i + 2..close].iter().collect();
            (
                inner.split(':').next().unwrap_or_default().to_string(),
                close + 1,
            )
        } else {
            let mut k = i + 1;
            while k < s.len() && (s[k].is_ascii_alphanumeric() || s[k] == '_') {
                k += 1;
            }
            (s[i + 1..k].iter().collect(), k)
        };
        out.push_str(match name.as_str() {
            "__rate_interval" | "__interval" => "5m",
            "__range" => "1h",
            _ => "value",
        });
        i = end;
    }
    out
}

/// The PromQL of every dashboard target, and the selectors of `label_values()` variable queries.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels() {
        for t in p.node["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("target expr");
            out.push((
                format!("{}: {}", p.dashboard, p.node["title"]),
                expr.to_string(),
            ));
        }
    }
    for f in dashboard_files() {
        let d = json(&f);
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("variable query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| q.to_string());
            out.push((format!("{} variable {}", f.display(), v["name"]), inner));
        }
    }
    out
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = BTreeSet::new();
    let files = dashboard_files();
    assert!(files.len() >= 6, "expected at least 6 dashboards");
    for f in &files {
        let d = json(f);
        let at = f.display();
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{at}: stable uid required"
        );
        assert!(uids.insert(uid.to_string()), "{at}: duplicate uid {uid}");
        let vars: BTreeMap<String, serde_json::Value> = d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v.clone(),
                )
            })
            .collect();
        assert_eq!(
            vars.get("datasource").map(|v| &v["type"]),
            Some(&"datasource".into()),
            "{at}: datasource variable"
        );
        // The SLO dashboard (tag "slo") is per cluster: no job or instance to choose.
        let per_cluster = d["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "slo"));
        let needed: &[&str] = if per_cluster {
            &["cluster"]
        } else {
            &["cluster", "job", "instance"]
        };
        for v in needed {
            assert!(vars.contains_key(*v), "{at}: no {v} variable");
        }
        for v in vars.values().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{at}: variable {} datasource",
                v["name"]
            );
        }
    }
    let all = panels();
    for p in &all {
        let at = format!("{}: panel {}", p.dashboard, p.node["title"]);
        assert_eq!(p.node["type"], "timeseries", "{at}: only timeseries panels");
        assert_eq!(
            p.node["datasource"]["uid"], "${datasource}",
            "{at}: datasource variable"
        );
        let unit = p.node["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "{at}: no unit");
        let desc = p.node["description"].as_str().unwrap_or_default();
        assert!(desc.len() > 10, "{at}: no description");
        let targets = p.node["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{at}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            // Raw ranges use $__rate_interval; fixed windows only through recording rules.
            let mut rest = expr;
            while let Some(k) = rest.find('[') {
                let close = rest[k..].find(']').expect("]") + k;
                assert_eq!(
                    &rest[k..=close],
                    "[$__rate_interval]",
                    "{at}: range in {expr}"
                );
                rest = &rest[close..];
            }
            if expr.contains("histogram_quantile") && expr.contains("_bucket{") {
                assert_eq!(t["exemplar"], true, "{at}: latency panels enable exemplars");
            }
        }
    }
    // Every dashboard's panels follow its job and instance variables, and every query its
    // cluster variable (several clusters may share one store).
    for f in &files {
        let text = read(f);
        // The SLO dashboard is per cluster by design: it has no job or instance variable.
        if json(f)["templating"]["list"]
            .as_array()
            .is_some_and(|l| !l.iter().any(|v| v["name"] == "job"))
        {
            continue;
        }
        for v in [r#"=~\"$job\""#, r#"=~\"$instance\""#] {
            let used = text.matches(v).count();
            assert!(used >= 3, "{}: {v} used {used} times", f.display());
        }
    }
    for p in &all {
        for t in p.node["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains(&format!(r#"{}=~"$cluster""#, cluster_label())),
                "{}: panel {}: query ignores the cluster variable: {expr}",
                p.dashboard,
                p.node["title"]
            );
        }
    }
    assert!(all.len() >= 30, "only {} panels", all.len());
    // Per-instance aggregations keep `cluster`: equal addresses of two clusters sharing a
    // store must not be summed into one series.
    let by_instance = regex::Regex::new(r"by \(([^)]*)\)").expect("regex");
    for (at, expr) in dashboard_exprs() {
        for c in by_instance.captures_iter(&expr) {
            let labels: Vec<&str> = c[1].split(',').map(str::trim).collect();
            assert!(
                !labels.contains(&instance_label().as_str())
                    || labels.contains(&cluster_label().as_str()),
                "{at}: aggregates by instance without cluster: {expr}"
            );
        }
    }
    // The alert annotation keeps alerts that have no job label (cluster-wide ones).
    for f in dashboard_files() {
        let v = json(&f);
        for a in v["annotations"]["list"].as_array().into_iter().flatten() {
            let has_job = v["templating"]["list"]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v["name"] == "job"));
            if let Some(e) = a["expr"].as_str().filter(|e| e.contains("ALERTS")) {
                assert!(
                    !has_job || e.contains(r#"job=~"$job|""#),
                    "{}: the alert annotation drops alerts without a job: {e}",
                    f.display()
                );
            }
        }
    }
}

/// Every `le` a rule selects on a histogram's buckets (the latency SLO's threshold) is one of
/// that histogram's bucket boundaries in its schema: any other value selects no series, and
/// the SLO would read as all requests slow.
#[test]
fn rules_select_histogram_buckets_that_exist() {
    let buckets: BTreeMap<String, Vec<f64>> = tiers()
        .into_iter()
        .flat_map(|t| t.metrics)
        .filter(|m| !m.buckets.is_empty())
        .map(|m| (format!("{}_bucket", m.name), m.buckets))
        .collect();
    let selector = regex::Regex::new(r#"([a-z_:]+_bucket)\{le="([^"]+)"\}"#).expect("regex");
    let mut checked = 0;
    for r in rules() {
        for c in selector.captures_iter(&r.expr) {
            let at = format!(
                "{} ({})",
                r.alert
                    .as_deref()
                    .or(r.record.as_deref())
                    .unwrap_or_default(),
                r.file
            );
            let bounds = buckets
                .get(&c[1])
                .unwrap_or_else(|| panic!("{at}: {} is no histogram of the schemas", &c[1]));
            let le: f64 = c[2]
                .parse()
                .unwrap_or_else(|_| panic!("{at}: le={:?}", &c[2]));
            assert!(
                bounds.contains(&le),
                "{at}: le=\"{}\" is not a bucket boundary of {} ({bounds:?})",
                &c[2],
                &c[1]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "only {checked} bucket selectors (the tx-latency SLO reads 7 windows)"
    );
}

#[test]
fn metric_names_exist_in_the_schemas() {
    let all_rules = rules();
    let recorded: BTreeSet<String> = all_rules.iter().filter_map(|r| r.record.clone()).collect();
    let mut used = BTreeMap::<String, String>::new();
    for r in &all_rules {
        let at = r.alert.clone().or(r.record.clone()).expect("rule name");
        for n in metric_names(&r.expr) {
            used.entry(n).or_insert_with(|| format!("{}: {at}", r.file));
        }
    }
    for (at, expr) in dashboard_exprs() {
        for n in metric_names(&substitute_variables(&expr)) {
            used.entry(n).or_insert_with(|| at.clone());
        }
    }
    let names: BTreeSet<String> = used.keys().cloned().collect();
    let unknown: Vec<String> = unknown_names(&names, &recorded)
        .into_iter()
        .map(|n| format!("{n} (used by {})", used[&n]))
        .collect();
    assert!(
        unknown.is_empty(),
        "names not exposed by any exporter:\n{}",
        unknown.join("\n")
    );
    // Every recording rule is used by an alert or a dashboard.
    for r in &recorded {
        assert!(
            all_rules
                .iter()
                .any(|x| x.alert.is_some() && x.expr.contains(r.as_str()))
                || dashboard_exprs()
                    .iter()
                    .any(|(_, e)| e.contains(r.as_str()))
                || all_rules
                    .iter()
                    .any(|x| x.record.as_deref() != Some(r) && x.expr.contains(r.as_str())),
            "recording rule {r} is unused"
        );
    }
    for n in EXPECTED_SOON {
        assert!(
            !schema_names().contains(*n),
            "{n} is in the schema now: remove it from EXPECTED_SOON"
        );
    }
}

#[test]
fn dashboard_exprs_parse_as_promql() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = tmpdir("dashboards");
    let mut text = String::from("groups:\n  - name: dashboard-exprs\n    rules:\n");
    for (i, (at, expr)) in dashboard_exprs().iter().enumerate() {
        text.push_str(&format!(
            "      # {}\n      - record: dashboard_expr_{i}\n        expr: |\n",
            at.replace('\n', " ")
        ));
        for line in substitute_variables(expr).lines() {
            text.push_str(&format!("          {line}\n"));
        }
    }
    let file = dir.join("dashboards.rules.yml");
    fs::write(&file, text).expect("write");
    let mut cmd = Command::new(promtool);
    cmd.arg("check").arg("rules").arg(&file);
    run(cmd);
    let _ = fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// deploy

/// Lays out a Prometheus config the way it is installed (/etc/prometheus/{prometheus.yml, rules/,
/// file_sd/}) so that promtool also loads the rule files and checks the file_sd files.
fn check_prometheus_config(promtool: &Path, config: &Path) {
    let root = root();
    let dir = tmpdir(&config.file_stem().expect("stem").to_string_lossy());
    fs::copy(config, dir.join("prometheus.yml")).expect("copy config");
    copy_dir(&root.join("alerts"), &dir.join("rules"));
    copy_dir(
        &root.join("deploy/prometheus/file_sd"),
        &dir.join("file_sd"),
    );
    let mut cmd = Command::new(promtool);
    cmd.current_dir(&dir)
        .arg("check")
        .arg("config")
        .arg("prometheus.yml");
    let out = run(cmd);
    assert!(out.contains("SUCCESS"), "{}:\n{out}", config.display());
    let _ = fs::remove_dir_all(dir);
}

fn prometheus_configs() -> Vec<PathBuf> {
    let root = root();
    let mut all = files(&root.join("deploy/prometheus"), ".yml");
    all.extend(
        files(&root.join("deploy/scale-out"), ".yml")
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("prometheus"))
            }),
    );
    all
}

#[test]
fn promtool_check_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let configs = prometheus_configs();
    assert!(
        configs.len() >= 3,
        "expected the static, ec2 and shard configs: {configs:?}"
    );
    for c in configs {
        check_prometheus_config(&promtool, &c);
    }
}

#[test]
fn prometheus_configs_scrape_every_tier_on_its_port() {
    let root = root();
    let mut ports = BTreeMap::new();
    for schema in tiers() {
        ports.insert(schema.tier.job.clone(), schema.tier.port().to_string());
    }
    for c in prometheus_configs() {
        let doc = yaml(&c);
        let jobs = doc["scrape_configs"].as_vec().expect("scrape_configs");
        for (job, port) in &ports {
            let at = format!("{}: job {job}", c.display());
            let j = jobs
                .iter()
                .find(|j| j["job_name"].as_str() == Some(job))
                .unwrap_or_else(|| panic!("{at} missing"));
            let mut discovered = 0;
            for sc in j["static_configs"].as_vec().into_iter().flatten() {
                for t in sc["targets"].as_vec().expect("targets") {
                    let t = t.as_str().expect("target");
                    assert!(t.ends_with(&format!(":{port}")), "{at}: target {t}");
                    discovered += 1;
                }
            }
            for ec2 in j["ec2_sd_configs"].as_vec().into_iter().flatten() {
                assert_eq!(
                    ec2["port"].as_i64().map(|p| p.to_string()).as_deref(),
                    Some(port.as_str()),
                    "{at}: ec2 port"
                );
                discovered += 1;
            }
            // file_sd files are checked below
            discovered += j["file_sd_configs"].as_vec().map_or(0, Vec::len);
            assert!(discovered > 0, "{at}: no targets");
        }
    }
    // file_sd targets use the schema ports too.
    for f in files(&root.join("deploy/prometheus/file_sd"), ".json") {
        let v = json(&f);
        for group in v.as_array().expect("file_sd list") {
            let job = group["labels"]["job"].as_str().expect("job label");
            let Some(port) = ports.get(job) else {
                continue; // node, kafka
            };
            for t in group["targets"].as_array().expect("targets") {
                assert!(
                    t.as_str().expect("target").ends_with(&format!(":{port}")),
                    "{}: {t}",
                    f.display()
                );
            }
        }
    }
    // The packaged configuration listens where Prometheus scrapes, and the unit reads it.
    for schema in tiers() {
        let (bin, port) = (&schema.tier.binary, schema.tier.port().to_string());
        let config = read(&root.join(format!("deploy/debian/{bin}.toml")));
        assert!(
            config.contains(&format!("listen_address = \"0.0.0.0:{port}\"")),
            "deploy/debian/{bin}.toml port"
        );
        let unit = read(&root.join(format!("deploy/systemd/{bin}.service")));
        assert!(
            unit.contains(&format!("--config.file=/etc/{bin}/config.toml"))
                && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
            "{bin}.service"
        );
    }
}

#[test]
fn amtool_check_config() {
    let Some(amtool) = tool("amtool") else {
        return;
    };
    let mut cmd = Command::new(amtool);
    cmd.arg("check-config")
        .arg(root().join("deploy/alertmanager/alertmanager.yml"));
    let out = run(cmd);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn deploy_files_parse() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&root().join("deploy"), &mut all);
    let mut n = 0;
    for p in all {
        let name = p.to_string_lossy().into_owned();
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            YamlLoader::load_from_str(&read(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
        } else if name.ends_with(".json") {
            json(&p);
            n += 1;
        }
    }
    assert!(n >= 12, "only {n} YAML/JSON files in deploy/");
}

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
const CHECKS_OF_A_RENDERING: &[&str] = &[
    "promtool_check_rules",
    "rules_select_histogram_buckets_that_exist",
    "promtool_test_rules",
    "alerts_follow_the_conventions",
    "exporter_alerts_cover_every_tier",
    "every_alert_has_firing_and_silent_unit_tests",
    "dashboards_follow_the_conventions",
    "metric_names_exist_in_the_schemas",
    "dashboard_exprs_parse_as_promql",
    "vmalert_loads_the_rules_unchanged",
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
            "promtool_check_rules",
            "metric_names_exist_in_the_schemas",
            "dashboard_exprs_parse_as_promql",
            "vmalert_loads_the_rules_unchanged",
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
fn can_render_other_configs() -> bool {
    std::env::var_os("BUNDLE_DIR").is_none()
        && tool("jsonnet").is_some()
        && tool("promtool").is_some()
        && tool("python3").is_some()
        && testkit::require_python(&["grafana_foundation_sdk", "yaml"])
}

/// `mixin/render.py --tests` with the config at `config` (relative to the checkout) into `out`.
fn render_with(out: &Path, config: &str) -> PathBuf {
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
fn run_checks_on(dir: &Path, checks: &[&str]) {
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
fn tree_digest(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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

/// Labels the shipped log pipeline (deploy/alloy/config.alloy) puts on every stream: the
/// path targets' labels, `stage.labels` and `stage.static_labels`.
fn alloy_labels() -> BTreeSet<String> {
    let text = read(&root().join("deploy/alloy/config.alloy"));
    let mut labels = BTreeSet::new();
    let mut stage = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("//") {
            continue;
        }
        if let Some(s) = line.strip_prefix("stage.") {
            stage = s.split_whitespace().next().unwrap_or_default().to_owned();
        }
        if line.starts_with("{\"__path__\"") {
            for part in line.split(',') {
                let key = part.trim().trim_start_matches('{').trim();
                if let Some(name) = key.strip_prefix('"').and_then(|k| k.split('"').next()) {
                    if !name.starts_with("__") {
                        labels.insert(name.to_owned());
                    }
                }
            }
        } else if (stage == "labels" || stage == "static_labels") && line.contains(" = ") {
            let name = line.split(" = ").next().unwrap_or_default().trim();
            if name != "values" && !name.is_empty() {
                labels.insert(name.to_owned());
            }
        }
    }
    labels
}

#[test]
fn runbook_logql_uses_only_labels_the_log_pipeline_sets() {
    let labels = alloy_labels();
    for want in ["job", "tier", "level", "component", "host"] {
        assert!(
            labels.contains(want),
            "alloy config lacks label {want}: {labels:?}"
        );
    }
    let mut checked = 0;
    for page in files(&root().join("docs/runbooks"), ".md") {
        for line in read(&page).lines() {
            if !(line.contains("| json") || line.contains("|=") || line.contains("| logfmt")) {
                continue;
            }
            let Some(start) = line.find('{') else {
                continue;
            };
            let Some(end) = line[start..].find('}') else {
                continue;
            };
            for matcher in line[start + 1..start + end].split(',') {
                let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
                assert!(
                    labels.contains(name),
                    "{}: LogQL selects on `{name}`, which the log pipeline never sets ({labels:?}): {line}",
                    page.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} LogQL matchers found in the runbooks"
    );
}

/// The rule files load unchanged in the vmalert Debian ships (the scale-out path): every
/// expression and template is validated by `-dryRun`.
#[test]
fn vmalert_loads_the_rules_unchanged() {
    let Some(vmalert) = tool("vmalert") else {
        return;
    };
    let mut cmd = Command::new(vmalert);
    cmd.arg("-dryRun");
    for f in rule_files() {
        cmd.arg(format!("-rule={}", f.display()));
    }
    run(cmd);
}

/// The names the JMX exporter rules produce from `KAFKA_MBEANS` (first matching rule wins, as
/// in the JMX exporter; `$N` are the pattern's groups; lowercased when the config says so).
/// Every rule must match some MBean, so a rule that can never fire is caught.
fn jmx_exporter_names() -> BTreeSet<String> {
    let config = yaml(&root().join("deploy/kafka/jmx-exporter.yml"));
    let lowercase = config["lowercaseOutputName"].as_bool() == Some(true);
    let rules = config["rules"].as_vec().expect("rules");
    let compiled: Vec<(regex::Regex, String)> = rules
        .iter()
        .map(|r| {
            let pattern = r["pattern"].as_str().expect("pattern");
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).expect("pattern is a regex");
            (re, r["name"].as_str().expect("name").to_owned())
        })
        .collect();
    let mut used = vec![false; compiled.len()];
    let mut names = BTreeSet::new();
    for mbean in KAFKA_MBEANS {
        let Some((i, caps, template)) = compiled
            .iter()
            .enumerate()
            .find_map(|(i, (re, t))| re.captures(mbean).map(|c| (i, c, t)))
        else {
            panic!("no JMX exporter rule matches {mbean}");
        };
        used[i] = true;
        let mut name = template.clone();
        for k in (1..caps.len()).rev() {
            name = name.replace(&format!("${k}"), caps.get(k).map_or("", |m| m.as_str()));
        }
        if lowercase {
            name = name.to_lowercase();
        }
        names.insert(name);
    }
    for (i, used) in used.iter().enumerate() {
        assert!(
            used,
            "JMX exporter rule {i} matches none of the sample MBeans"
        );
    }
    names
}

fn other_exporter_names() -> BTreeSet<String> {
    let mut names = jmx_exporter_names();
    names.extend(KAFKA_EXPORTER_NAMES.iter().map(|s| (*s).to_owned()));
    names
}

#[test]
fn kafka_jmx_rules_produce_the_names_the_bundle_uses() {
    let names = jmx_exporter_names();
    for want in [
        "kafka_server_brokertopicmetrics_messagesin_total",
        "kafka_server_brokertopicmetrics_messagesin_alltopics_total",
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_server_replicamanager_isrshrinks_total",
        "kafka_controller_kafkacontroller_activecontrollercount",
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "kafka_server_replica_fetcher_lag_messages",
    ] {
        assert!(names.contains(want), "{want} is not produced: {names:#?}");
    }
    for n in &names {
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{n}: not a clean metric name"
        );
    }
}

/// The monitoring stack's series the meta rules and runbooks name exist in the real Prometheus,
/// Alertmanager and vmalert Debian ships: each is started on loopback (Prometheus with a rule
/// file, an Alertmanager, and remote write into VictoriaMetrics, so the queue has sent once)
/// and every name of MONITORING_STACK_NAMES is looked up in their /metrics.
#[test]
fn monitoring_stack_names_exist_in_the_real_binaries() {
    if !testkit::require_tools(&[
        "prometheus",
        "prometheus-alertmanager",
        "vmalert",
        "victoria-metrics",
    ]) {
        return;
    }
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = testkit::TempDir::new("stack-names");
    let port = || testkit::free_tcp_port();
    let (prom, am, vm, vma) = (port(), port(), port(), port());
    let spawn = |cmd: &str, args: Vec<String>| {
        Killed(
            Command::new(cmd)
                .args(args)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n",
    )
    .expect("rules");
    fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am}']}}]}}]}}\n\
             remote_write: [{{url: 'http://127.0.0.1:{vm}/api/v1/write'}}]\n\
             rule_files: [rules.yml]\n\
             scrape_configs: [{{job_name: prometheus, static_configs: [{{targets: ['127.0.0.1:{prom}']}}]}}]\n"
        ),
    )
    .expect("config");
    fs::write(
        dir.join("am.yml"),
        "route: {receiver: x}\nreceivers: [{name: x}]\n",
    )
    .expect("am");
    let _vm = spawn(
        "victoria-metrics",
        vec![
            format!("-httpListenAddr=127.0.0.1:{vm}"),
            format!("-storageDataPath={}", dir.join("vm").display()),
        ],
    );
    let _am = spawn(
        "prometheus-alertmanager",
        vec![
            "--config.file=am.yml".into(),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am}"),
            "--cluster.listen-address=".into(),
        ],
    );
    let _prom = spawn(
        "prometheus",
        vec![
            "--config.file=prometheus.yml".into(),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom}"),
        ],
    );
    let _vmalert = spawn(
        "vmalert",
        vec![
            format!("-rule={}", dir.join("rules.yml").display()),
            format!("-datasource.url=http://127.0.0.1:{prom}"),
            format!("-notifier.url=http://127.0.0.1:{am}"),
            format!("-httpListenAddr=127.0.0.1:{vma}"),
            "-evaluationInterval=1s".into(),
        ],
    );
    let scrape = || -> String {
        [prom, am, vma]
            .iter()
            .filter_map(|p| {
                testkit::try_request("GET", &format!("http://127.0.0.1:{p}/metrics"), &[]).ok()
            })
            .map(|r| r.text())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let has = |text: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
    };
    let all = testkit::eventually(std::time::Duration::from_secs(40), || {
        let text = scrape();
        MONITORING_STACK_NAMES
            .iter()
            .all(|n| has(&text, n))
            .then_some(())
    });
    let text = scrape();
    let missing: Vec<&&str> = MONITORING_STACK_NAMES
        .iter()
        .filter(|n| !has(&text, n))
        .collect();
    assert!(
        all.is_some(),
        "not exposed by the real Prometheus, Alertmanager or vmalert: {missing:?}"
    );
}
