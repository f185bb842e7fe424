//! The shipped Alertmanager routing and inhibition rules, in a real Alertmanager: alerts are
//! posted to its API and their receivers and `inhibitedBy` are read back. A critical alert
//! silences the warnings of its own instance (except the sidecar's own), and never the
//! warnings of a whole cluster that have no instance; each severity reaches the receivers
//! alerts/README.md promises.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{eventually, free_tcp_port, require_tool, TempDir};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped config with the receivers' integrations removed: nothing is sent anywhere.
fn config_without_integrations(path: &Path) {
    let text = std::fs::read_to_string(root().join("deploy/alertmanager/alertmanager.yml"))
        .expect("alertmanager.yml");
    let mut doc = YamlLoader::load_from_str(&text).expect("YAML").remove(0);
    let Yaml::Hash(top) = &mut doc else {
        panic!("not a mapping")
    };
    let name = Yaml::String("name".into());
    if let Some(Yaml::Array(receivers)) = top.get_mut(&Yaml::String("receivers".into())) {
        for r in receivers.iter_mut() {
            if let Yaml::Hash(h) = r {
                h.retain(|k, _| *k == name);
            }
        }
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&doc).expect("emit");
    std::fs::write(path, out).expect("write config");
}

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An alert labelled as the shipped rules label it.
fn alert(name: &str, severity: &str, component: &str, instance: Option<&str>) -> serde_json::Value {
    let mut labels = serde_json::json!({
        "alertname": name, "severity": severity, "component": component, "cluster": "prod-eu",
    });
    if let Some(i) = instance {
        labels["instance"] = i.into();
    }
    serde_json::json!({ "labels": labels, "annotations": { "summary": name } })
}

/// Posts `alerts` to a real Alertmanager running the shipped config and returns its view of
/// them (`/api/v2/alerts`: receivers and `inhibitedBy`); None when a tool is missing.
fn alertmanager_view(tag: &str, alerts: &serde_json::Value) -> Option<Vec<serde_json::Value>> {
    if !require_tool("prometheus-alertmanager") || !require_tool("curl") {
        return None;
    }
    let dir = TempDir::new(tag);
    let config = dir.join("alertmanager.yml");
    config_without_integrations(&config);
    let port = free_tcp_port();
    let cluster_port = free_tcp_port();
    let _am = Alertmanager(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let up = eventually(Duration::from_secs(20), || {
        curl(&[&format!("http://127.0.0.1:{port}/-/ready")])
    });
    assert!(up.is_some(), "alertmanager never became ready");
    let posted = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &alerts.to_string(),
        &api,
    ]);
    assert!(posted.is_some(), "posting alerts failed");
    let n = alerts.as_array().map_or(0, Vec::len);
    let state = eventually(Duration::from_secs(10), || {
        let body = curl(&[&api])?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        (list.len() == n).then_some(list)
    })
    .expect("alerts never listed");
    Some(state)
}

fn find<'a>(state: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    state
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

fn strings(v: &serde_json::Value, field: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| match field {
            Some(f) => x[f].as_str().map(str::to_owned),
            None => x.as_str().map(str::to_owned),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_critical_silences_its_instance_never_a_whole_cluster() {
    let alerts = serde_json::json!([
        // Cluster-wide critical, no instance.
        alert("ClusterReplicationLagHigh", "critical", "cluster", None),
        // Cluster-wide warning, no instance: must stay active.
        alert("ExporterTargetsAbsent", "warning", "exporter", None),
        // Instance critical and a warning on the same instance: inhibited.
        alert(
            "ExporterEngineDown",
            "critical",
            "exporter",
            Some("tx1:9090")
        ),
        alert(
            "HighTransactionLatency",
            "warning",
            "tx-engine",
            Some("tx1:9090")
        ),
        // The same warning on another instance: active.
        alert(
            "HighConflictRate",
            "warning",
            "ingestion",
            Some("ingestion1:9091")
        ),
    ]);
    let Some(state) = alertmanager_view("inhibition", &alerts) else {
        return;
    };
    let inhibited = |name: &str| strings(&find(&state, name)["status"]["inhibitedBy"], None);
    assert!(inhibited("ExporterTargetsAbsent").is_empty(), "{state:#?}");
    assert!(inhibited("HighConflictRate").is_empty(), "{state:#?}");
    assert!(
        inhibited("ClusterReplicationLagHigh").is_empty(),
        "{state:#?}"
    );
    assert_eq!(inhibited("HighTransactionLatency").len(), 1, "{state:#?}");
}

/// Routing as alerts/README.md defines severities: critical pages (and shows in chat),
/// warning is a ticket for the same day (and shows in chat), info shows in chat. A critical
/// alert on an instance silences that instance's other warnings, but not the sidecar's own
/// (component="exporter": UDP drops, a follower behind), which say whether the critical
/// alert's figures can be trusted.
#[test]
fn routing_follows_the_severity_convention_and_keeps_the_sidecars_warnings() {
    // The same address in a second cluster of the same store: not silenced by the first's.
    let mut other_cluster = alert(
        "HighTransactionErrorRatio",
        "warning",
        "tx-engine",
        Some("tx1:9090"),
    );
    other_cluster["labels"]["cluster"] = "prod-us".into();
    let alerts = serde_json::json!([
        other_cluster,
        alert(
            "HighReplicationLag",
            "critical",
            "tx-engine",
            Some("tx1:9090")
        ),
        alert("LowCacheHitRate", "warning", "tx-engine", Some("tx1:9090")),
        alert(
            "ExporterLogFollowerBehind",
            "warning",
            "exporter",
            Some("tx1:9090")
        ),
        alert(
            "ExporterStatsdUdpDrops",
            "warning",
            "exporter",
            Some("tx1:9090")
        ),
        alert(
            "HighTransactionLatency",
            "warning",
            "tx-engine",
            Some("tx2:9090")
        ),
        alert(
            "ClockSkewGrowing",
            "info",
            "clock-sync",
            Some("clock1:9093")
        ),
    ]);
    let Some(state) = alertmanager_view("routing", &alerts) else {
        return;
    };
    // name → (receivers, inhibited)
    let want = [
        ("HighReplicationLag", "team-db-chat team-db-pager", false),
        ("LowCacheHitRate", "team-db-chat team-db-tickets", true),
        (
            "ExporterLogFollowerBehind",
            "team-db-chat team-db-tickets",
            false,
        ),
        (
            "ExporterStatsdUdpDrops",
            "team-db-chat team-db-tickets",
            false,
        ),
        (
            "HighTransactionLatency",
            "team-db-chat team-db-tickets",
            false,
        ),
        ("ClockSkewGrowing", "team-db-chat", false),
        (
            "HighTransactionErrorRatio",
            "team-db-chat team-db-tickets",
            false,
        ),
    ];
    let got: Vec<(String, String, bool)> = want
        .iter()
        .map(|(name, _, _)| {
            let a = find(&state, name);
            let receivers = strings(&a["receivers"], Some("name")).join(" ");
            let inhibited = !strings(&a["status"]["inhibitedBy"], None).is_empty();
            ((*name).to_owned(), receivers, inhibited)
        })
        .collect();
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(n, r, i)| ((*n).to_owned(), (*r).to_owned(), *i))
        .collect();
    assert_eq!(got, want, "(alert, receivers, inhibited)");
}
