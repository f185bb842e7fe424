//! The shipped Alertmanager inhibition rules, in a real Alertmanager: alerts are posted to its
//! API and `inhibitedBy` is read back. A critical alert silences the warnings of its own
//! instance, and never the warnings of a whole cluster that have no instance.

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

fn alert(name: &str, severity: &str, instance: Option<&str>) -> serde_json::Value {
    let mut labels = serde_json::json!({
        "alertname": name, "severity": severity, "cluster": "prod-eu",
    });
    if let Some(i) = instance {
        labels["instance"] = i.into();
    }
    serde_json::json!({ "labels": labels, "annotations": { "summary": name } })
}

#[test]
fn a_critical_silences_its_instance_never_a_whole_cluster() {
    if !require_tool("prometheus-alertmanager") || !require_tool("curl") {
        return;
    }
    let dir = TempDir::new("inhibition");
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

    let alerts = serde_json::json!([
        // Cluster-wide critical, no instance.
        alert("ClusterReplicationLagHigh", "critical", None),
        // Cluster-wide warning, no instance: must stay active.
        alert("ExporterTargetsAbsent", "warning", None),
        // Instance critical and a warning on the same instance: inhibited.
        alert("ExporterEngineDown", "critical", Some("tx1:9090")),
        alert("HighTransactionLatency", "warning", Some("tx1:9090")),
        // The same warning on another instance: active.
        alert("HighConflictRate", "warning", Some("ingestion1:9091")),
    ]);
    let posted = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &alerts.to_string(),
        &api,
    ]);
    assert!(posted.is_some(), "posting alerts failed");

    let state = eventually(Duration::from_secs(10), || {
        let body = curl(&[&api])?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        (list.len() == 5).then_some(list)
    })
    .expect("alerts never listed");
    let inhibited = |name: &str| -> Vec<String> {
        let a = state
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        a["status"]["inhibitedBy"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(inhibited("ExporterTargetsAbsent").is_empty(), "{state:#?}");
    assert!(inhibited("HighConflictRate").is_empty(), "{state:#?}");
    assert!(
        inhibited("ClusterReplicationLagHigh").is_empty(),
        "{state:#?}"
    );
    assert_eq!(inhibited("HighTransactionLatency").len(), 1, "{state:#?}");
}
