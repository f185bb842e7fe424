//! Every scenario of `crates/engine-sim/scenarios/` at once, one cluster each, through real
//! Prometheus and Alertmanager; the dashboards' queries against the steady cluster.

use super::*;

/// What the harness needs of a scenario file.
pub(crate) struct ScenarioSpec {
    pub(crate) name: String,
    pub(crate) expect: Vec<String>,
    pub(crate) fault_after: Option<u64>,
    pub(crate) sidecar_faults: Vec<String>,
    /// The tiers whose engines (and sidecars) the cluster runs; None: all.
    pub(crate) tiers: Option<Vec<String>>,
    pub(crate) silent: Vec<String>,
    pub(crate) receivers: BTreeMap<String, String>,
    pub(crate) clock_masters: usize,
}

pub(crate) fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    v.and_then(|x| x.as_array()).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    })
}

pub(crate) fn load_scenarios() -> Vec<ScenarioSpec> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for f in files {
        let v: toml::Value = std::fs::read_to_string(&f).unwrap().parse().unwrap();
        out.push(ScenarioSpec {
            name: f.file_stem().unwrap().to_string_lossy().into_owned(),
            expect: strings(v.get("expect")).unwrap_or_default(),
            fault_after: v.get("fault").map(|_| FAULT_AFTER_S),
            sidecar_faults: strings(v.get("sidecar_faults")).unwrap_or_default(),
            tiers: strings(v.get("tiers")),
            silent: strings(v.get("silent")).unwrap_or_default(),
            receivers: v
                .get("receivers")
                .and_then(|r| r.as_table())
                .map(|t| {
                    t.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            clock_masters: v
                .get("clock_masters")
                .and_then(|n| n.as_integer())
                .map_or(1, |n| n as usize),
        });
    }
    out
}

/// Queries that are empty in a healthy steady state by design, or whose source is not part
/// of this stack, matched on a substring of the expression. The report says whether each had
/// data anyway (some do, from the other clusters, when they carry no instance filter).
pub(crate) const EMPTY_BY_DESIGN: &[(&str, &str)] = &[
    ("ALERTS{", "no alert fires in a steady state"),
    (
        "source_errors_total",
        "per-reason error counters exist once a source failed: none in a steady state",
    ),
    (
        "ingest_rejected_total",
        "per-reason rejection counters exist once an input was rejected: none in a steady state",
    ),
    (
        "log_rotations_total",
        "per-file counters exist once a file rotated: none here",
    ),
    (
        "log_truncations_total",
        "per-file counters exist once a file was truncated: none here",
    ),
];

pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) expr: String,
}

pub(crate) fn dashboard_panels() -> Vec<Panel> {
    dashboard_panels_of(&root().join("dashboards"))
}

pub(crate) fn dashboard_panels_of(dir: &Path) -> Vec<Panel> {
    fn walk(v: &serde_json::Value, dash: &str, out: &mut Vec<Panel>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(p, dash, out);
                continue;
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(Panel {
                        title: format!("{dash}: {}", p["title"].as_str().unwrap_or("")),
                        expr: e.to_string(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        walk(&v, &f.file_name().unwrap().to_string_lossy(), &mut out);
    }
    out
}

/// Grafana variables → values selecting the steady cluster's exporters.
pub(crate) fn substitute(expr: &str, instances: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "1s")
        // ".*": a single Prometheus's own series carry no cluster label.
        .replace("${cluster}", ".*")
        .replace("$cluster", ".*")
        .replace("${job}", ".+")
        .replace("$job", ".+")
        .replace("${instance}", instances)
        .replace("$instance", instances)
}

/// What the phases of the scenario test share: the checkout's tiers and their binaries.
pub(crate) struct Stack {
    pub(crate) dir: PathBuf,
    pub(crate) sim: PathBuf,
    pub(crate) schemas: Vec<exporter_core::Schema>,
    pub(crate) bins: BTreeMap<String, PathBuf>,
    /// job → (tier, self prefix).
    pub(crate) tier_of_job: BTreeMap<String, (String, String)>,
}

impl Stack {
    fn new(dir: &Path) -> Stack {
        let sim = PathBuf::from(env!("CARGO_BIN_EXE_engine-sim"));
        // The tiers are those of the checkout's schemas; only how many engines each cluster
        // runs of a tier is this test's choice.
        let schemas = exporter_core::Schema::discover(exporter_core::workspace_root(env!(
            "CARGO_MANIFEST_DIR"
        )))
        .expect("tier schemas");
        let bins: BTreeMap<String, PathBuf> = schemas
            .iter()
            .map(|s| (s.tier.binary.clone(), sibling(&s.tier.binary)))
            .collect();
        let tier_of_job: BTreeMap<String, (String, String)> = schemas
            .iter()
            .map(|s| {
                let t = &s.tier;
                (t.job.clone(), (t.name.clone(), t.self_prefix.clone()))
            })
            .collect();

        Stack {
            dir: dir.to_path_buf(),
            sim,
            schemas,
            bins,
            tier_of_job,
        }
    }
}

#[test]
fn scenarios_fire_their_alerts_through_prometheus_and_alertmanager() {
    if !require_tools(&[
        "prometheus",
        "prometheus-alertmanager",
        "promtool",
        "unshare",
    ]) {
        return;
    }
    let _stack = one_stack_at_a_time();
    let started = Instant::now();
    let tmp = TempDir::new("e2e");
    let stack = Stack::new(tmp.path());
    let dir = &stack.dir;

    // Rules and Alertmanager config, generated from the shipped ones.
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    let rule_files = write_fast_rules(&rules_dir);
    check_rules(&rule_files);
    let am_config = dir.join("alertmanager.yml");
    write_alertmanager_config(&am_config);

    let scenarios = load_scenarios();
    assert!(scenarios
        .iter()
        .any(|s| s.name == "steady" && s.tiers.is_none()));

    // One tmpfs per cluster for the OLAP data directory.
    let mounts: Vec<PathBuf> = scenarios
        .iter()
        .map(|sc| {
            let d = dir.join(format!("olap-data-{}", sc.name));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let holder = tmpfs_holder(&mounts, dir);
    if holder.is_none() {
        // A kernel or container restriction, not a missing tool: CI may run where mount
        // namespaces are refused, so this stays a loud skip even under EXPORTER_TEST_REQUIRE_TOOLS.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: unshare cannot create a mount namespace here; storage-nearly-full \
             is not played and the OLAP data dirs are on the real disk ***\n"
        );
    }
    let data_dir = |i: usize| -> PathBuf {
        match &holder {
            Some((_, pid)) => PathBuf::from(format!("/proc/{pid}/root"))
                .join(mounts[i].strip_prefix("/").unwrap()),
            None => mounts[i].clone(),
        }
    };

    let (mut clusters, mut ports, sims_started) =
        start_clusters(&stack, &scenarios, holder.is_some(), &data_dir);
    wait_for_engines(&mut clusters, &stack.tier_of_job, started);
    let mon = Monitoring::start(&stack, &clusters, &mut ports, &rule_files, &am_config);
    let mut seen = Observed::default();
    seen.watch(&mut clusters, &mon, &stack.tier_of_job, sims_started);
    let verdict = seen.judge(&clusters, &mon, &stack.tier_of_job, started);
    drop(mon);
    verdict.assert_holds();
}
