//! The mixin rendered with other job names and labels (`mixin/tests/nondefault.libsonnet`)
//! fires the same alerts through a real Prometheus.

use super::*;

/// The Kubernetes-style names of mixin/tests/nondefault.libsonnet, as its jobs are scraped.
pub(crate) const NONDEFAULT_TX_JOB: &str = "db/tx-engine-metrics";

pub(crate) const NONDEFAULT_INGESTION_JOB: &str = "db/ingestion-engine-metrics";

/// The scrape config of a Prometheus whose names are the non-default config's: each job under
/// its own name, the target named by `pod`, the cluster by `dc`.
pub(crate) fn nondefault_scrape_config(jobs: &[(&str, Vec<String>)], rules: &[PathBuf]) -> String {
    let mut scrape = String::new();
    for (job, targets) in jobs {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        scrape.push_str(&format!(
            "  - job_name: '{job}'\n    static_configs:\n      - targets: [{}]\n        labels: {{dc: 'e2e'}}\n\
             \x20   relabel_configs:\n      - source_labels: [__address__]\n        target_label: pod\n",
            targets.join(", ")
        ));
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n{}\nscrape_configs:\n{scrape}",
        rules
            .iter()
            .map(|f| format!("  - '{}'\n", f.display()))
            .collect::<String>()
    )
}

/// The active alerts of a Prometheus: (name, labels) of each.
pub(crate) fn prometheus_alerts(url: &str) -> Vec<(String, serde_json::Value)> {
    let Some(v) = get_json(&format!("{url}/api/v1/alerts")) else {
        return Vec::new();
    };
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
            (name, a["labels"].clone())
        })
        .collect()
}

/// A user whose Prometheus names its jobs otherwise (mixin/tests/nondefault.libsonnet: jobs
/// `db/...`, cluster label `dc`, instance label `pod`, HighReplicationLag at 8 s for 4m as a
/// warning, ClusterReplicationLagHigh at 30 s) renders the mixin with that config: the
/// replication-lag scenario pages through those names, and the alerts that look for the
/// tiers' jobs (ExporterTargetsAbsent, InsufficientTXEngines) stay silent, which the default
/// rendering would not be with these job names.
#[test]
fn nondefault_mixin_rendering_fires_with_other_job_names() {
    if !require_tools(&["prometheus", "promtool", "jsonnet", "python3"])
        || !testkit::require_python(&["grafana_foundation_sdk", "yaml"])
    {
        return;
    }
    let _stack = one_stack_at_a_time();
    let tmp = TempDir::new("e2e-mixin");
    let dir = tmp.path().to_path_buf();
    let (bundle, rules) = render_nondefault(&dir);
    let mut ports = Ports::default();
    let (mut procs, jobs, fault_at) = start_nondefault_stack(&dir, &mut ports);
    let prom_port = ports.tcp();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, nondefault_scrape_config(&jobs, &rules)).unwrap();
    ports.release(&[prom_port], &[]);
    let prom = spawn_prometheus("mixin-prometheus", &config, prom_port, &dir);
    let url = format!("http://127.0.0.1:{prom_port}");
    wait_for_three_targets(&url, &prom);
    let (fired, absent) = watch_nondefault_alerts(&url, &mut procs, fault_at);
    judge_nondefault_alerts(&fired, &absent);
    dashboards_show_the_stack(&bundle, &url);
}

/// The bundle rendered with the non-default config, and its rules with fast `for:`s.
fn render_nondefault(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let bundle = dir.join("bundle");
    let rendered = Command::new("python3")
        .arg(root().join("mixin/render.py"))
        .arg("--config")
        .arg(root().join("mixin/tests/nondefault.libsonnet"))
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    let rules = write_fast_rules_of(&bundle.join("alerts"), &rules_dir);
    check_rules(&rules);
    (bundle, rules)
}

/// Each job's name and its targets.
type Jobs = Vec<(&'static str, Vec<String>)>;

/// Two TX sidecars and one ingestion sidecar, and engine-sim's replication-lag scenario
/// driving them: the processes, the jobs with their targets, and when the fault starts.
fn start_nondefault_stack(dir: &Path, ports: &mut Ports) -> (Vec<Proc>, Jobs, Instant) {
    let mut procs = Vec::new();
    let mut sim_args = vec![
        "--scenario=replication-lag".to_string(),
        "--duration=300s".into(),
        format!("--fault-after={FAULT_AFTER_S}s"),
        "--seed=7".into(),
        "--host=node-mixin".into(),
    ];
    let mut jobs: Jobs = Vec::new();
    let mut sim_ports = Vec::new();
    for (tier, bin, job, n) in [
        ("tx", "tx-exporter", NONDEFAULT_TX_JOB, 2),
        (
            "ingestion",
            "ingestion-exporter",
            NONDEFAULT_INGESTION_JOB,
            1,
        ),
    ] {
        let mut targets = Vec::new();
        for k in 0..n {
            let (web, statsd, engine) = (ports.tcp(), ports.udp(), ports.tcp());
            sim_ports.push(engine);
            let log = dir.join(format!("{tier}-{k}.log"));
            ports.release(&[web], &[statsd]);
            procs.push(Proc::spawn(
                &format!("mixin-{tier}-{k}"),
                &sibling(bin),
                &[
                    format!("--web.listen-address=127.0.0.1:{web}"),
                    format!("--ingest.statsd-udp=127.0.0.1:{statsd}"),
                    format!("--engine.address=127.0.0.1:{engine}"),
                    format!("--ingest.log-path={}", log.display()),
                    "--log.level=warn".into(),
                ],
                dir,
            ));
            sim_args.push(format!(
                "--{tier}=statsd=127.0.0.1:{statsd},engine=127.0.0.1:{engine},log={}",
                log.display()
            ));
            targets.push(format!("127.0.0.1:{web}"));
        }
        jobs.push((job, targets));
    }
    std::thread::sleep(Duration::from_millis(300));
    ports.release(&sim_ports, &[]);
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_engine-sim"));
    procs.push(Proc::spawn("mixin-sim", &sim, &sim_args, dir));
    let fault_at = Instant::now() + Duration::from_secs(FAULT_AFTER_S);
    (procs, jobs, fault_at)
}

fn wait_for_three_targets(url: &str, prom: &Proc) {
    // Prometheus evaluates rules from its start but takes up to 5 s to pick up static targets
    // (its scrape manager reloads every 5 s), longer than these fast rules' `for: 5s`: watch
    // from when every target has been scraped and the start-up alerts have resolved.
    let count_up = format!("{url}/api/v1/query?query={}", urlencode("count(up == 1)"));
    assert!(
        eventually(Duration::from_secs(30), || {
            let v = get_json(&count_up)?;
            (v["data"]["result"][0]["value"][1] == "3").then_some(())
        })
        .is_some(),
        "Prometheus never scraped the three sidecars:\n{}",
        prom.tail()
    );
    std::thread::sleep(Duration::from_secs(2));
}

/// Alerts as they fire: the replication-lag pages with when they fired, and the jobs
/// `ExporterTargetsAbsent` misses. Asserts meanwhile that nothing looks for the tiers under
/// the default names.
fn watch_nondefault_alerts(
    url: &str,
    procs: &mut [Proc],
    fault_at: Instant,
) -> (
    BTreeMap<String, (Duration, serde_json::Value)>,
    BTreeSet<String>,
) {
    // The tiers run here are found under their names; those not run are missed under theirs.
    let mut fired: BTreeMap<String, (Duration, serde_json::Value)> = BTreeMap::new();
    let mut absent = BTreeSet::new();
    let deadline = fault_at + FIRE_DEADLINE;
    while Instant::now() < deadline && fired.len() < 2 {
        for p in procs.iter_mut() {
            assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
        }
        for (name, labels) in prometheus_alerts(url) {
            let job = labels["job"].as_str().unwrap_or_default().to_owned();
            let ours = job == NONDEFAULT_TX_JOB || job == NONDEFAULT_INGESTION_JOB;
            assert!(
                !(name == "ExporterTargetsAbsent" && ours) && name != "InsufficientTXEngines",
                "{name} fires with the non-default job names: {labels}"
            );
            if name == "ExporterTargetsAbsent" {
                // The tiers this stack does not run are missed under their configured names.
                absent.insert(job);
            }
            if name == "HighReplicationLag" || name == "ClusterReplicationLagHigh" {
                let after = Instant::now().saturating_duration_since(fault_at);
                fired.entry(name).or_insert((after, labels));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("e2e mixin: fired {fired:?}");
    (fired, absent)
}

fn judge_nondefault_alerts(
    fired: &BTreeMap<String, (Duration, serde_json::Value)>,
    absent: &BTreeSet<String>,
) {
    let (after, lag) = fired
        .get("HighReplicationLag")
        .expect("HighReplicationLag never fired with the non-default names");
    assert_eq!(lag["job"], NONDEFAULT_TX_JOB, "{lag}");
    assert_eq!(lag["dc"], "e2e", "{lag}");
    assert!(
        lag["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{lag}"
    );
    assert_eq!(lag["severity"], "warning", "the config's severity: {lag}");
    eprintln!("e2e mixin: HighReplicationLag after {after:?}");
    let (_, cluster) = fired
        .get("ClusterReplicationLagHigh")
        .expect("ClusterReplicationLagHigh never fired with the non-default names");
    assert_eq!(cluster["dc"], "e2e", "{cluster}");
    assert!(
        absent.contains("db/olap-shard-metrics") && absent.contains("db/clock-master-metrics"),
        "the tiers not run here are not missed under their configured names: {absent:?}"
    );
}

/// The rendered TX and ingestion dashboards (dc, pod, the db/ jobs) show this stack.
fn dashboards_show_the_stack(bundle: &Path, url: &str) {
    let panels: Vec<Panel> = dashboard_panels_of(&bundle.join("dashboards"))
        .into_iter()
        .filter(|p| p.title.starts_with("tx-engine.json") || p.title.starts_with("ingestion.json"))
        .collect();
    let empty: Vec<&str> = panels
        .iter()
        .filter(|p| {
            let q = substitute(&p.expr, ".+");
            let v = get_json(&format!("{url}/api/v1/query?query={}", urlencode(&q)));
            !v.is_some_and(|v| {
                v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            })
        })
        .map(|p| p.title.as_str())
        .collect();
    eprintln!(
        "e2e mixin: {} of {} dashboard queries without data: {empty:?}",
        empty.len(),
        panels.len()
    );
    assert!(
        panels.len() >= 20 && empty.len() * 10 <= panels.len(),
        "{empty:?}"
    );
}
