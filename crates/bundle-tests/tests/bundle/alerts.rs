//! The rules of alerts/: promtool checks and unit tests, vmalert, the conventions every alert
//! follows (labels, annotations, runbooks quoting their rule, firing and silent tests), the
//! exporter alerts covering every tier, histogram buckets that exist.

use super::*;

pub(crate) struct Rule {
    pub(crate) file: String,
    pub(crate) group: String,
    pub(crate) alert: Option<String>,
    pub(crate) record: Option<String>,
    pub(crate) expr: String,
    pub(crate) node: Yaml,
}

pub(crate) fn rule_files() -> Vec<PathBuf> {
    files(&bundle_dir().join("alerts"), ".rules.yml")
}

pub(crate) fn rules() -> Vec<Rule> {
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

pub(crate) fn alerts() -> Vec<Rule> {
    rules().into_iter().filter(|r| r.alert.is_some()).collect()
}

/// Returns the names in `used` that are neither exposed, recorded, nor known external series.
pub(crate) fn unknown_names(used: &BTreeSet<String>, recorded: &BTreeSet<String>) -> Vec<String> {
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
pub(crate) fn runbook_head(r: &Rule) -> String {
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
