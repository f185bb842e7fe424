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

/// Starts every scenario's cluster (the storage scenario only with a tmpfs for its data
/// directory), clock exporters last, once their simulator serves NTP; returns the clusters,
/// the ports still held, and when the simulators started.
fn start_clusters(
    stack: &Stack,
    scenarios: &[ScenarioSpec],
    has_tmpfs: bool,
    data_dir: &dyn Fn(usize) -> PathBuf,
) -> (Vec<Cluster>, Ports, Instant) {
    let dir = &stack.dir;
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut ports = Ports::default();
    let mut clock_starts: Vec<ClockStart> = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        if !has_tmpfs && sc.name == "storage-nearly-full" {
            continue;
        }
        let index = clusters.len();
        clusters.push(start_cluster(
            stack,
            i,
            sc,
            &data_dir(i),
            &mut ports,
            &mut clock_starts,
            index,
        ));
    }
    let sims_started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    for (ci, args, web, statsd) in clock_starts {
        let c = &mut clusters[ci];
        ports.release(&[web], &[statsd]);
        let cdir = dir.join(&c.scenario);
        let k = c
            .procs
            .iter()
            .filter(|p| p.name.starts_with(&format!("{}-clock-", c.scenario)))
            .count();
        let p = Proc::spawn(
            &format!("{}-clock-{k}", c.scenario),
            &stack.bins["clock-exporter"],
            &args,
            &cdir,
        );
        c.procs.push(p);
    }

    (clusters, ports, sims_started)
}

/// A clock exporter to start after its simulator: (cluster index, args, web port, StatsD port).
type ClockStart = (usize, Vec<String>, u16, u16);

/// One scenario's cluster: its sidecars (two TX engines, clock masters as the scenario says,
/// one of every other tier) and its simulator.
fn start_cluster(
    stack: &Stack,
    i: usize,
    sc: &ScenarioSpec,
    data_dir: &Path,
    ports: &mut Ports,
    clock_starts: &mut Vec<ClockStart>,
    index: usize,
) -> Cluster {
    let (dir, sim) = (&stack.dir, &stack.sim);
    let (name, expect, fault_after, sidecar_faults) =
        (&sc.name, &sc.expect, &sc.fault_after, &sc.sidecar_faults);
    let cdir = dir.join(name);
    std::fs::create_dir_all(&cdir).unwrap();
    let mut c = Cluster {
        scenario: name.clone(),
        expect: expect.clone(),
        silent: sc.silent.clone(),
        receivers: sc.receivers.clone(),
        first_tier: sc
            .tiers
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_else(|| "tx".into()),
        hung_at: None,
        fault_after: *fault_after,
        targets: Vec::new(),
        ntp_source: String::new(),
        kafka: String::new(),
        procs: Vec::new(),
        sim_started: Instant::now(),
        sidecar_faults: sidecar_faults.clone(),
        sidecar_faults_played: false,
        tx0_log: cdir.join("tx-0.log"),
        tx0_config: cdir.join("tx-0.toml"),
        tx0_statsd: 0,
        statsd_squatter: None,
        last_burst: None,
    };
    let (mut sim_tcp, mut sim_udp): (Vec<u16>, Vec<u16>) = (Vec::new(), Vec::new());
    let mut sim_args = vec![
        format!("--scenario={name}"),
        "--duration=600s".to_string(),
        format!("--fault-after={FAULT_AFTER_S}s"),
        format!("--seed={}", 1000 + i),
        format!("--host=node-{name}"),
    ];
    for schema in &stack.schemas {
        let (bin, job, tier) = (
            schema.tier.binary.as_str(),
            schema.tier.job.as_str(),
            schema.tier.name.as_str(),
        );
        if sc
            .tiers
            .as_ref()
            .is_some_and(|t| !t.iter().any(|x| x == tier))
        {
            continue;
        }
        // Two TX engines per cluster, so that losing one is not losing the tier; clock
        // masters as the scenario says (a primary, then standbys).
        let n = match tier {
            "tx" => 2,
            "clock" => sc.clock_masters,
            _ => 1,
        };
        for k in 0..n {
            start_sidecar(
                stack,
                &mut c,
                (tier, job, bin, k),
                &cdir,
                data_dir,
                ports,
                (&mut sim_args, &mut sim_tcp, &mut sim_udp),
                (clock_starts, index),
            );
        }
    }
    let kafka = ports.tcp();
    sim_tcp.push(kafka);
    sim_args.push(format!("--kafka.listen=127.0.0.1:{kafka}"));
    c.kafka = format!("127.0.0.1:{kafka}");
    // Exporters first, so the event logs the simulator creates are read from their start.
    std::thread::sleep(Duration::from_millis(300));
    ports.release(&sim_tcp, &sim_udp);
    c.procs
        .push(Proc::spawn(&format!("{name}-sim"), sim, &sim_args, &cdir));
    c.sim_started = Instant::now();
    c
}

/// One sidecar of a cluster: started now, or for a clock master queued in `clock_starts`; its
/// engine's address, StatsD port and log join the simulator's arguments.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn start_sidecar(
    stack: &Stack,
    c: &mut Cluster,
    (tier, job, bin, k): (&str, &str, &str, usize),
    cdir: &Path,
    data_dir: &Path,
    ports: &mut Ports,
    (sim_args, sim_tcp, sim_udp): (&mut Vec<String>, &mut Vec<u16>, &mut Vec<u16>),
    (clock_starts, index): (&mut Vec<ClockStart>, usize),
) {
    let name = c.scenario.clone();
    let sidecar_faults = c.sidecar_faults.clone();
    let (web, statsd, engine) = (ports.tcp(), ports.udp(), ports.tcp());
    sim_tcp.push(engine);
    let log = cdir.join(format!("{tier}-{k}.log"));
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{web}"),
        format!("--ingest.statsd-udp=127.0.0.1:{statsd}"),
        format!("--engine.address=127.0.0.1:{engine}"),
        "--log.level=warn".to_string(),
    ];
    let mut target = format!("statsd=127.0.0.1:{statsd},engine=127.0.0.1:{engine}");
    let tx0 = tier == "tx" && k == 0;
    if tx0 {
        c.tx0_statsd = statsd;
    }
    if tx0 && sidecar_faults.iter().any(|f| f == "bad-reload") {
        // A config file to break at the fault (valid and empty until then).
        std::fs::write(&c.tx0_config, "").unwrap();
        args.push(format!("--config.file={}", c.tx0_config.display()));
    }
    if tx0 && sidecar_faults.iter().any(|f| f == "log-backlog") {
        args.push(format!(
            "--ingest.log-max-read-bytes-per-second={BACKLOG_READ_RATE}"
        ));
    }
    if tx0 && sidecar_faults.iter().any(|f| f == "statsd-port-taken") {
        // The port stays bound by this test: the sidecar's bind fails.
        c.statsd_squatter = ports.udp.remove(&statsd);
        assert!(c.statsd_squatter.is_some());
    }
    if tier != "clock" {
        args.push(format!("--ingest.log-path={}", log.display()));
        target.push_str(&format!(",log={}", log.display()));
    }
    if tier == "olap" {
        let d = data_dir;
        args.push(format!("--olap.data-dir={}", d.display()));
        sim_args.push(format!("--olap.data-dir={}", d.display()));
        sim_args.push("--olap.max-fill=32MiB".into());
    }
    if tier == "tx" && sidecar_faults.iter().any(|f| f == "hang-engine") {
        // The real expiry scaled as the rules are (300 s / 60): the pushed gauges
        // go stale within the run, and their alerts resolve, as in production.
        args.push("--ingest.gauge-stale-seconds=5".into());
    }
    if tier == "clock" {
        // One SNTP server per simulator, asked by every clock exporter.
        if c.ntp_source.is_empty() {
            let ntp = ports.udp();
            sim_udp.push(ntp);
            sim_args.push(format!("--clock.ntp-listen=127.0.0.1:{ntp}"));
            c.ntp_source = format!("ntp:127.0.0.1:{ntp}");
        }
        let ntp = c.ntp_source.trim_start_matches("ntp:").to_owned();
        args.push("--clock.chrony-address=".into());
        args.push(format!("--clock.ntp-server={ntp}"));
        // Clock exporters start after the simulator: their first SNTP query must
        // find the clock master serving (the next one is 15 s later).
        clock_starts.push((index, args, web, statsd));
    } else {
        ports.release(&[web], &[statsd]);
        c.procs.push(Proc::spawn(
            &format!("{name}-{tier}-{k}"),
            &stack.bins[bin],
            &args,
            cdir,
        ));
    }
    sim_args.push(format!("--{tier}={target}"));
    c.targets.push((job.to_owned(), format!("127.0.0.1:{web}")));
}

/// Waits until every sidecar sees its engine (the engine probe refreshes every 5 s; with 1 s
/// `for:` a slow first look would page) and every clock exporter its NTP server.
fn wait_for_engines(
    clusters: &mut [Cluster],
    tier_of_job: &BTreeMap<String, (String, String)>,
    started: Instant,
) {
    let ready = testkit::eventually(Duration::from_secs(40), || {
        for c in clusters.iter_mut() {
            for p in &mut c.procs {
                assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
            }
        }
        clusters
            .iter()
            .all(|c| {
                c.targets.iter().all(|(job, inst)| {
                    let Some(text) = http_get(&format!("http://{inst}/metrics")) else {
                        return false;
                    };
                    let Some((tier, prefix)) = tier_of_job.get(job) else {
                        return false;
                    };
                    let up = metric_value(&text, &format!("{prefix}engine_up")) == Some(1.0);
                    let ntp = tier != "clock"
                        || metric_value(
                            &text,
                            &format!("{prefix}source_up{{source=\"{}\"}}", c.ntp_source),
                        ) == Some(1.0);
                    up && ntp
                })
            })
            .then_some(())
    });
    assert!(ready.is_some(), "exporters never saw their engines up");
    eprintln!(
        "e2e: {} clusters, {} exporters ready after {:.1}s",
        clusters.len(),
        clusters.iter().map(|c| c.targets.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
}

/// Alertmanager, the Prometheus that scrapes every cluster, and a second Prometheus with
/// the exporter rules and no target (for ExporterTargetsAbsent).
pub(crate) struct Monitoring {
    // Held so the processes live as long as the monitoring; killed when it is dropped, in
    // this order.
    _lone_prom: Proc,
    _prom: Proc,
    _am: Proc,
    pub(crate) am_url: String,
    pub(crate) prom_url: String,
    pub(crate) prom_started: Instant,
}

impl Monitoring {
    fn start(
        stack: &Stack,
        clusters: &[Cluster],
        ports: &mut Ports,
        rule_files: &[PathBuf],
        am_config: &Path,
    ) -> Monitoring {
        let dir = &stack.dir;
        let am_port = ports.tcp();
        ports.release(&[am_port], &[]);
        let am = Proc::spawn(
            "alertmanager",
            Path::new("prometheus-alertmanager"),
            &[
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", dir.join("am-data").display()),
                format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ],
            dir,
        );
        let prom_port = ports.tcp();
        let mut scrape = String::new();
        for job in stack.tier_of_job.keys() {
            scrape.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
            for c in clusters {
                let targets: Vec<String> = c
                    .targets
                    .iter()
                    .filter(|(j, _)| j == job)
                    .map(|(_, t)| format!("'{t}'"))
                    .collect();
                scrape.push_str(&format!(
                    "      - targets: [{}]\n        labels: {{cluster: '{}'}}\n",
                    targets.join(", "),
                    c.scenario
                ));
            }
        }
        // Kafka as the shipped scrape configuration names it: the brokers' JMX exporter (job
        // kafka) and kafka_exporter (job kafka-exporter), both played by each cluster's simulator.
        for (job, path) in [
            ("kafka", "/metrics"),
            ("kafka-exporter", "/kafka-exporter/metrics"),
        ] {
            scrape.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: {path}\n    static_configs:\n"
            ));
            for c in clusters {
                scrape.push_str(&format!(
                    "      - targets: ['{}']\n        labels: {{cluster: '{}'}}\n",
                    c.kafka, c.scenario
                ));
            }
        }
        let prom_config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             rule_files:\n{}\nscrape_configs:\n{scrape}",
            rule_files
                .iter()
                .map(|f| format!("  - '{}'\n", f.display()))
                .collect::<String>()
        );
        let prom_config_path = dir.join("prometheus.yml");
        std::fs::write(&prom_config_path, prom_config).unwrap();
        ports.release(&[prom_port], &[]);
        let prom = spawn_prometheus("prometheus", &prom_config_path, prom_port, dir);
        let prom_url = format!("http://127.0.0.1:{prom_port}");
        let am_url = format!("http://127.0.0.1:{am_port}");
        assert!(
            testkit::eventually(Duration::from_secs(30), || {
                http_get(&format!("{prom_url}/-/ready")).and(http_get(&format!("{am_url}/-/ready")))
            })
            .is_some(),
            "Prometheus/Alertmanager not ready:\n{}\n{}",
            prom.tail(),
            am.tail()
        );
        let prom_started = Instant::now();

        // The second Prometheus: the exporter rules, an Alertmanager, and no target.
        let lone_port = ports.tcp();
        let exporter_rules = rule_files
            .iter()
            .find(|f| f.ends_with("exporters.rules.yml"))
            .expect("exporters.rules.yml");
        let lone_config = dir.join("prometheus-no-targets.yml");
        std::fs::write(
            &lone_config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  \
                 external_labels: {{cluster: '{NO_TARGETS}'}}\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
                 rule_files:\n  - '{}'\n",
                exporter_rules.display()
            ),
        )
        .unwrap();
        ports.release(&[lone_port], &[]);
        let lone_prom = spawn_prometheus("prometheus-no-targets", &lone_config, lone_port, dir);
        Monitoring {
            _lone_prom: lone_prom,
            _prom: prom,
            _am: am,
            am_url,
            prom_url,
            prom_started,
        }
    }
}

/// What the watch saw of Alertmanager, Prometheus and the dashboards' queries.
#[derive(Default)]
pub(crate) struct Observed {
    /// (cluster, alert) → (first seen in Alertmanager, state then)
    seen: BTreeMap<(String, String), (Instant, String)>,
    /// (cluster, alert) → the receivers Alertmanager routed it to, while it was active (not
    /// inhibited or silenced).
    routed: BTreeMap<(String, String), BTreeSet<String>>,
    /// Hung clusters: the longest time after the hang with no active critical alert.
    hung_gaps: BTreeMap<String, (Option<Instant>, Duration)>,
    /// Hung clusters: when the alert that paged before the hang left Alertmanager (its gauge
    /// went stale), which proves the hand-over was exercised.
    hung_resolved: BTreeMap<String, Duration>,
    steady_pending: BTreeSet<String>,
    steady_firing: BTreeSet<String>,
    panels: Vec<Panel>,
    panel_ok: BTreeMap<String, bool>,
    dashboards_checked: bool,
    /// The jobs the Prometheus without targets raised ExporterTargetsAbsent for.
    absent_jobs: BTreeSet<String>,
}

/// The judgement of a run: its report and what does not hold.
pub(crate) struct Verdict {
    report: String,
    missing: Vec<String>,
    wrong: Vec<String>,
    steady_in_am: Vec<String>,
    steady_firing: BTreeSet<String>,
    empty: Vec<String>,
}

impl Observed {
    /// Watches until every expected alert reached Alertmanager, or the deadline; plays the
    /// sidecar faults and hangs the engines of `hang-engine` clusters on the way.
    fn watch(
        &mut self,
        clusters: &mut [Cluster],
        mon: &Monitoring,
        tier_of_job: &BTreeMap<String, (String, String)>,
        sims_started: Instant,
    ) {
        let steady_instances: String = clusters
            .iter()
            .find(|c| c.scenario == "steady")
            .unwrap()
            .targets
            .iter()
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>()
            .join("|");
        let onset = sims_started + Duration::from_secs(FAULT_AFTER_S);
        let deadline = onset + FIRE_DEADLINE;
        let (am_url, prom_url, prom_started) = (&mon.am_url, &mon.prom_url, mon.prom_started);
        self.panels = dashboard_panels();
        let Observed {
            seen,
            routed,
            hung_gaps,
            hung_resolved,
            steady_pending,
            steady_firing,
            panels,
            panel_ok,
            dashboards_checked,
            absent_jobs,
        } = self;
        loop {
            let now = Instant::now();
            if let Some(v) = get_json(&format!("{am_url}/api/v2/alerts")) {
                let mut paging: BTreeSet<String> = BTreeSet::new();
                let mut active: BTreeSet<(String, String)> = BTreeSet::new();
                for a in v.as_array().into_iter().flatten() {
                    let cluster = a["labels"]["cluster"].as_str().unwrap_or("").to_string();
                    let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                    let state = a["status"]["state"].as_str().unwrap_or("").to_string();
                    if state == "active" {
                        active.insert((cluster.clone(), name.clone()));
                        let r = routed.entry((cluster.clone(), name.clone())).or_default();
                        for rc in a["receivers"].as_array().into_iter().flatten() {
                            if let Some(n) = rc["name"].as_str() {
                                r.insert(n.to_owned());
                            }
                        }
                        if a["labels"]["severity"] == "critical" {
                            paging.insert(cluster.clone());
                        }
                    }
                    if cluster == NO_TARGETS && name == "ExporterTargetsAbsent" {
                        if let Some(job) = a["labels"]["job"].as_str() {
                            absent_jobs.insert(job.to_owned());
                        }
                    }
                    seen.entry((cluster, name)).or_insert((now, state));
                }
                // A hung engine: from the hang on, some critical alert of the cluster is active at
                // every look (a gap is how long none was).
                for c in clusters.iter() {
                    let Some(hung) = c.hung_at else { continue };
                    if let Some(first) = c.expect.first() {
                        if !active.contains(&(c.scenario.clone(), first.clone())) {
                            hung_resolved
                                .entry(c.scenario.clone())
                                .or_insert_with(|| now.saturating_duration_since(hung));
                        }
                    }
                    let g = hung_gaps
                        .entry(c.scenario.clone())
                        .or_insert((None, Duration::ZERO));
                    if paging.contains(&c.scenario) {
                        g.0 = None;
                    } else {
                        let since = *g.0.get_or_insert(now.max(hung));
                        g.1 = g.1.max(now - since);
                    }
                }
            }
            // hang-engine: the simulator stops once the cluster's first expected alert is in
            // Alertmanager.
            for c in clusters.iter_mut() {
                if c.hung_at.is_none()
                    && c.sidecar_faults.iter().any(|f| f == "hang-engine")
                    && c.expect
                        .first()
                        .is_some_and(|a| seen.contains_key(&(c.scenario.clone(), a.clone())))
                {
                    let sim = format!("{}-sim", c.scenario);
                    let p = c.procs.iter().find(|p| p.name == sim).expect("simulator");
                    signal(p, "STOP");
                    c.hung_at = Some(Instant::now());
                    eprintln!("e2e: {sim} stopped (SIGSTOP): the engines hang");
                }
            }
            if let Some(v) = get_json(&format!("{prom_url}/api/v1/alerts")) {
                for a in v["data"]["alerts"].as_array().into_iter().flatten() {
                    if a["labels"]["cluster"] == "steady" {
                        let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                        if a["state"] == "firing" {
                            steady_firing.insert(name.clone());
                        }
                        steady_pending.insert(name);
                    }
                }
            }
            // Dashboards: once the 10 s rate windows are full, until each query has had data.
            if !*dashboards_checked && prom_started.elapsed() > Duration::from_secs(12) {
                for p in panels.iter() {
                    if panel_ok.get(&p.expr).copied().unwrap_or(false) {
                        continue;
                    }
                    let q = substitute(&p.expr, &steady_instances);
                    let url = format!("{prom_url}/api/v1/query?query={}", urlencode(&q));
                    let has = get_json(&url)
                        .map(|v| {
                            assert_eq!(v["status"], "success", "{}: {q}: {v}", p.title);
                            !v["data"]["result"].as_array().unwrap().is_empty()
                        })
                        .unwrap_or(false);
                    panel_ok.insert(p.expr.clone(), has);
                }
                *dashboards_checked = panel_ok.values().all(|ok| *ok)
                    || prom_started.elapsed() > Duration::from_secs(40);
            }
            let all_seen = clusters.iter().all(|c| {
                c.expect
                    .iter()
                    .all(|a| seen.contains_key(&(c.scenario.clone(), a.clone())))
                    // A hung engine is watched for 20 s: its gauges go stale 5 s after the hang.
                    && c
                        .hung_at
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(20))
            }) && absent_jobs.len() == tier_of_job.len();
            if (all_seen && *dashboards_checked && now > onset + Duration::from_secs(20))
                || now > deadline
            {
                break;
            }
            for c in clusters.iter_mut() {
                play_sidecar_fault(c);
                for p in &mut c.procs {
                    assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The report of the run, and what did not hold.
    fn judge(
        &self,
        clusters: &[Cluster],
        mon: &Monitoring,
        tier_of_job: &BTreeMap<String, (String, String)>,
        started: Instant,
    ) -> Verdict {
        let Observed {
            seen,
            routed,
            hung_gaps,
            hung_resolved,
            steady_pending,
            steady_firing,
            panels,
            panel_ok,
            absent_jobs,
            ..
        } = self;
        let prom_started = mon.prom_started;
        // Report.
        let mut report = String::from("scenario | expected alert | reached Alertmanager after the fault | state | receivers | other alerts of the cluster\n");
        let receivers_of = |c: &Cluster, a: &str| -> String {
            routed
                .get(&(c.scenario.clone(), a.to_owned()))
                .map(|r| r.iter().cloned().collect::<Vec<_>>().join("+"))
                .unwrap_or_else(|| "-".into())
        };
        let mut missing = Vec::new();
        let mut wrong: Vec<String> = Vec::new();
        let jobs: BTreeSet<String> = tier_of_job.keys().cloned().collect();
        match seen.get(&(NO_TARGETS.to_owned(), "ExporterTargetsAbsent".to_owned())) {
            Some((at, state)) => report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | {:.0}s (from Prometheus start) for jobs {absent_jobs:?} | {state} | -\n",
                at.saturating_duration_since(prom_started).as_secs_f64()
            )),
            None => report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | NOT SEEN | - | -\n"
            )),
        }
        if *absent_jobs != jobs {
            missing.push(format!(
                "{NO_TARGETS}: ExporterTargetsAbsent for {jobs:?}, seen for {absent_jobs:?}"
            ));
        }
        for c in clusters {
            let others: Vec<String> = seen
                .keys()
                .filter(|(cl, a)| *cl == c.scenario && !c.expect.contains(a))
                .map(|(_, a)| a.clone())
                .collect();
            let from = if c.fault_after.is_some() {
                "fault"
            } else {
                "Prometheus start (fault from the start)"
            };
            if c.expect.is_empty() {
                report.push_str(&format!(
                    "{} | (none) | - | - | {}\n",
                    c.scenario,
                    others.join(", ")
                ));
            }
            for a in &c.expect {
                match seen.get(&(c.scenario.clone(), a.clone())) {
                    Some((at, state)) => {
                        // From the fault, or for a scenario faulty from the start, from when
                        // Prometheus could first see it.
                        let from_instant = match c.fault_after {
                            Some(f) => c.sim_started + Duration::from_secs(f),
                            None => prom_started,
                        };
                        let t = at.saturating_duration_since(from_instant).as_secs_f64();
                        report.push_str(&format!(
                            "{} | {a} | {t:.0}s (from {from}) | {state} | {} | {}\n",
                            c.scenario,
                            receivers_of(c, a),
                            others.join(", ")
                        ));
                    }
                    None => {
                        report.push_str(&format!(
                            "{} | {a} | NOT SEEN | - | - | {}\n",
                            c.scenario,
                            others.join(", ")
                        ));
                        missing.push(format!("{}: {a}", c.scenario));
                    }
                }
            }
            // The topology matrix' promises: what must stay silent, where each alert goes, and
            // that a hung engine never leaves the cluster without an active page.
            for a in &c.silent {
                if seen.contains_key(&(c.scenario.clone(), a.clone())) {
                    wrong.push(format!(
                        "{}: {a} reached Alertmanager, must stay silent",
                        c.scenario
                    ));
                }
            }
            for (a, want) in &c.receivers {
                let got = routed.get(&(c.scenario.clone(), a.clone()));
                if !got.is_some_and(|r| r.contains(want)) {
                    wrong.push(format!(
                        "{}: {a} must reach {want} while active, reached {got:?}",
                        c.scenario
                    ));
                }
            }
            if c.hung_at.is_some() {
                let gap = hung_gaps.get(&c.scenario).map_or(Duration::ZERO, |g| g.1);
                let resolved = hung_resolved.get(&c.scenario);
                report.push_str(&format!(
                    "{} | (hung engine) {} left Alertmanager {} after the hang; longest time without an active critical alert: {:.1}s\n",
                    c.scenario,
                    c.expect.first().map_or("-", String::as_str),
                    resolved.map_or("never".into(), |d| format!("{:.0}s", d.as_secs_f64())),
                    gap.as_secs_f64()
                ));
                if resolved.is_none() {
                    wrong.push(format!(
                        "{}: the paging alert never resolved after the hang: the hand-over was not exercised",
                        c.scenario
                    ));
                }
                // Polls are 0.5 s apart and a hand-over may fall between two: more than 2 s
                // without any page is silence.
                if gap > Duration::from_secs(2) {
                    wrong.push(format!(
                        "{}: no critical alert active for {:.1}s after the engine hung",
                        c.scenario,
                        gap.as_secs_f64()
                    ));
                }
            } else if c.sidecar_faults.iter().any(|f| f == "hang-engine") {
                wrong.push(format!("{}: the engine was never hung", c.scenario));
            }
        }
        let empty: Vec<String> = panels
            .iter()
            .filter(|p| !panel_ok.get(&p.expr).copied().unwrap_or(false))
            .filter(|p| !EMPTY_BY_DESIGN.iter().any(|(m, _)| p.expr.contains(m)))
            .map(|p| format!("{}: {}", p.title, p.expr))
            .collect();
        let exempt: Vec<String> = panels
            .iter()
            .filter_map(|p| {
                EMPTY_BY_DESIGN
                    .iter()
                    .find(|(m, _)| p.expr.contains(m))
                    .map(|(_, why)| {
                        format!(
                            "{} ({why}; had data: {})",
                            p.title,
                            panel_ok.get(&p.expr).copied().unwrap_or(false)
                        )
                    })
            })
            .collect();
        report.push_str(&format!(
            "\nsteady: pending at some point: {steady_pending:?}; firing: {steady_firing:?}\n\
             dashboards: {} queries, {} with data for the steady cluster, {} exempt:\n  {}\n\
             total e2e time {:.0}s\n",
            panels.len(),
            panel_ok.values().filter(|v| **v).count(),
            exempt.len(),
            exempt.join("\n  "),
            started.elapsed().as_secs_f64()
        ));
        eprintln!("\n{report}");
        let _ = std::fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-sim-e2e-report.txt"),
            &report,
        );
        let steady_in_am: Vec<String> = seen
            .keys()
            .filter(|(c, _)| c == "steady")
            .map(|(_, a)| a.clone())
            .collect();
        Verdict {
            report,
            missing,
            wrong,
            steady_in_am,
            steady_firing: steady_firing.clone(),
            empty,
        }
    }
}

impl Verdict {
    fn assert_holds(&self) {
        assert!(
            self.missing.is_empty(),
            "expected alerts never reached Alertmanager: {:?}\n{}",
            self.missing,
            self.report
        );
        assert!(
            self.wrong.is_empty(),
            "the topology matrix does not hold:\n{}\n{}",
            self.wrong.join("\n"),
            self.report
        );
        assert!(
            self.steady_in_am.is_empty() && self.steady_firing.is_empty(),
            "the steady cluster raised alerts: {:?} {:?}",
            self.steady_in_am,
            self.steady_firing
        );
        assert!(
            self.empty.is_empty(),
            "dashboard queries without data in the steady state:\n{}",
            self.empty.join("\n")
        );
    }
}
