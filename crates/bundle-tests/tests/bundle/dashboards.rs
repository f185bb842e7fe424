//! The dashboards: conventions (timeseries only, variables, units, descriptions, exemplars,
//! `$__rate_interval`) and every query parsing as PromQL.

use super::*;

pub(crate) struct Panel {
    pub(crate) dashboard: String,
    pub(crate) node: serde_json::Value,
}

pub(crate) fn dashboard_files() -> Vec<PathBuf> {
    files(&bundle_dir().join("dashboards"), ".json")
}

pub(crate) fn panels_of(v: &serde_json::Value, dashboard: &str, out: &mut Vec<Panel>) {
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

pub(crate) fn panels() -> Vec<Panel> {
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
pub(crate) fn substitute_variables(expr: &str) -> String {
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
pub(crate) fn dashboard_exprs() -> Vec<(String, String)> {
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
