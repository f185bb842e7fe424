//! The scale-out path: Prometheus shards with an HA pair each, remote-writing to
//! VictoriaMetrics, the bundle evaluated by vmalert unchanged.

use super::*;

/// Prometheus's hashmod: the last 8 bytes of md5(address), big-endian, modulo `m`.
pub(crate) fn hashmod(address: &str, m: u64) -> u64 {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys;print(int.from_bytes(hashlib.md5(sys.argv[1].encode()).digest()[8:],'big')%int(sys.argv[2]))",
            address,
            &m.to_string(),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// deploy/scale-out/prometheus-shard.yml rendered for replica `replica` of shard `shard` of 2:
/// only the tx-engines job (its targets from `sd_file`), 1 s intervals, remote_write to
/// `write_url`; everything else as shipped (the replica label dropped on the way out).
pub(crate) fn shard_config(shard: u64, replica: &str, sd_file: &Path, write_url: &str) -> String {
    let text =
        std::fs::read_to_string(root().join("deploy/scale-out/prometheus-shard.yml")).unwrap();
    let mut doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let Yaml::Hash(top) = &mut doc else {
        panic!("not a mapping")
    };
    let Some(Yaml::Hash(global)) = top.get_mut(&key("global")) else {
        panic!("no global")
    };
    global.insert(key("scrape_interval"), key("1s"));
    global.insert(key("evaluation_interval"), key("1s"));
    let Some(Yaml::Hash(ext)) = global.get_mut(&key("external_labels")) else {
        panic!("no external_labels")
    };
    assert!(
        ext.contains_key(&key("replica")),
        "the shard config names no replica"
    );
    ext.insert(
        key("prometheus_shard"),
        key(&format!("production-cluster-{shard}")),
    );
    ext.insert(key("replica"), key(replica));
    let Some(Yaml::Array(jobs)) = top.get_mut(&key("scrape_configs")) else {
        panic!("no jobs")
    };
    jobs.retain(|j| j["job_name"].as_str() == Some("tx-engines"));
    assert_eq!(jobs.len(), 1, "the shard config has no tx-engines job");
    let Yaml::Hash(job) = &mut jobs[0] else {
        panic!("job")
    };
    let mut sd = yaml_rust2::yaml::Hash::new();
    sd.insert(
        key("files"),
        Yaml::Array(vec![key(&sd_file.display().to_string())]),
    );
    job.insert(key("file_sd_configs"), Yaml::Array(vec![Yaml::Hash(sd)]));
    let Some(Yaml::Array(relabel)) = job.get_mut(&key("relabel_configs")) else {
        panic!("no sharding")
    };
    for r in relabel.iter_mut() {
        if let Yaml::Hash(r) = r {
            if r.get(&key("action")) == Some(&key("keep")) {
                r.insert(key("regex"), key(&shard.to_string()));
            }
        }
    }
    let Some(Yaml::Array(writes)) = top.get_mut(&key("remote_write")) else {
        panic!("no remote_write")
    };
    let Yaml::Hash(w) = &mut writes[0] else {
        panic!("remote_write")
    };
    w.insert(key("url"), key(write_url));
    let mut q = yaml_rust2::yaml::Hash::new();
    q.insert(key("batch_send_deadline"), key("1s"));
    w.insert(key("queue_config"), Yaml::Hash(q));
    let mut s = String::new();
    YamlEmitter::new(&mut s).dump(&doc).unwrap();
    s
}

pub(crate) fn vm_query(vm: &str, q: &str) -> Option<serde_json::Value> {
    get_json(&format!("{vm}/api/v1/query?query={}", urlencode(q)))
}

/// The value of a one-series instant query, if it has one.
pub(crate) fn vm_scalar(vm: &str, q: &str) -> Option<f64> {
    let v = vm_query(vm, q)?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

pub(crate) fn vmalert_state(url: &str, alert: &str) -> Option<String> {
    let v = get_json(&format!("{url}/api/v1/alerts"))?;
    v["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == alert)
        .and_then(|a| a["state"].as_str().map(str::to_owned))
}

#[test]
fn shards_victoriametrics_and_vmalert_run_the_bundle_unchanged() {
    if !require_tools(&[
        "prometheus",
        "prometheus-alertmanager",
        "victoria-metrics",
        "vmalert",
        "python3",
    ]) {
        return;
    }
    let _stack = one_stack_at_a_time();
    let started = Instant::now();
    let tmp = TempDir::new("scale-out");
    let dir = tmp.path().to_path_buf();
    let mut tx = TxExporters::start(&dir);
    let mut store = Store::start(&dir, &tx.sd);
    let (_am, am_port) = start_alertmanager(&dir);
    store.holds_each_target_once();
    let shipped: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("alerts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
            .collect();
        v.sort();
        v
    };
    let (mut unchanged, unchanged_url) = store.vmalert("vmalert-shipped", &shipped, am_port, &dir);
    // Two healthy engines in the cluster, one per shard: a shard alone would count 1 and
    // alert; the global ruler counts 2 and does not.
    let healthy_sum = eventually(Duration::from_secs(60), || {
        vm_scalar(
            &store.url,
            r#"cluster:tx_engine_healthy:sum{cluster="production-cluster"}"#,
        )
        .filter(|v| *v == 2.0)
    });
    assert!(
        healthy_sum.is_some(),
        "vmalert never recorded 2 healthy TX engines: {}",
        unchanged.tail()
    );

    store.loses_a_replica(&mut unchanged, &unchanged_url);
    // One healthy engine's exporter goes away: 1 < 2, cluster-wide.
    tx.procs.remove(0);
    let pending = eventually(Duration::from_secs(60), || {
        (vmalert_state(&unchanged_url, "InsufficientTXEngines").as_deref() == Some("pending"))
            .then_some(())
    });
    assert!(
        pending.is_some(),
        "shipped InsufficientTXEngines never went pending: {}",
        unchanged.tail()
    );

    // The same rules time-scaled fire and reach Alertmanager.
    let fast_dir = dir.join("fast-rules");
    std::fs::create_dir_all(&fast_dir).unwrap();
    let fast = write_fast_rules(&fast_dir);
    let (_fast, _) = store.vmalert("vmalert-fast", &fast, am_port, &dir);
    reaches_alertmanager_once(am_port, "InsufficientTXEngines");
    let (answered, with_data) = store.answers_the_dashboards(&tx.targets);
    let _ = writeln!(
        std::io::stderr(),
        "scale-out: {answered} dashboard queries answered by VictoriaMetrics, {with_data} TX ones with data; {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// Three TX exporters: two healthy engines on different shards, one without its engine; and
/// the file_sd file that names them.
struct TxExporters {
    procs: Vec<Proc>,
    targets: Vec<String>,
    sd: PathBuf,
}

impl TxExporters {
    fn start(dir: &Path) -> TxExporters {
        let tx = sibling("tx-exporter");
        let alive = dir.join("alive.pid");
        std::fs::write(&alive, std::process::id().to_string()).unwrap();
        let gone = dir.join("gone.pid");
        let mut done = Command::new("true").spawn().unwrap();
        std::fs::write(&gone, done.id().to_string()).unwrap();
        done.wait().unwrap();
        let mut healthy: Vec<(u16, u64)> = Vec::new();
        while healthy.len() < 2 {
            let port = free_tcp_port();
            let shard = hashmod(&format!("127.0.0.1:{port}"), 2);
            if healthy.iter().all(|(_, s)| *s != shard) {
                healthy.push((port, shard));
            }
        }
        let sick = free_tcp_port();
        let mut exporters = Vec::new();
        for (i, (port, pid_file)) in [
            (healthy[0].0, &alive),
            (healthy[1].0, &alive),
            (sick, &gone),
        ]
        .into_iter()
        .enumerate()
        {
            exporters.push(Proc::spawn(
                &format!("tx-exporter-{i}"),
                &tx,
                &[
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    format!("--ingest.statsd-udp=127.0.0.1:{}", free_udp_port()),
                    format!("--engine.pid-file={}", pid_file.display()),
                ],
                dir,
            ));
        }
        let sd = dir.join("tx-engines.json");
        let targets: Vec<String> = [healthy[0].0, healthy[1].0, sick]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::fs::write(
            &sd,
            serde_json::json!([{ "targets": targets, "labels": { "job": "tx-engines" } }])
                .to_string(),
        )
        .unwrap();
        TxExporters {
            procs: exporters,
            targets,
            sd,
        }
    }
}

/// The global store and an HA pair of Prometheus shards writing to it.
struct Store {
    url: String,
    _vm: Proc,
    shards: Vec<Proc>,
}

impl Store {
    fn start(dir: &Path, sd: &Path) -> Store {
        let vm_port = free_tcp_port();
        let vm = format!("http://127.0.0.1:{vm_port}");
        let _vm = Proc::spawn(
            "victoria-metrics",
            Path::new("victoria-metrics"),
            &[
                format!("-httpListenAddr=127.0.0.1:{vm_port}"),
                format!("-storageDataPath={}", dir.join("vm").display()),
                "-search.latencyOffset=0s".into(),
                "-retentionPeriod=1d".into(),
                // deploy/README.md "HA pairs": equal to the shards' scrape interval.
                "-dedup.minScrapeInterval=1s".into(),
            ],
            dir,
        );
        // An HA pair per shard, as deploy/README.md runs them: replicas a and b.
        let mut shards = Vec::new();
        for shard in 0..2 {
            for replica in ["a", "b"] {
                let config = dir.join(format!("shard-{shard}-{replica}.yml"));
                std::fs::write(
                    &config,
                    shard_config(shard, replica, sd, &format!("{vm}/api/v1/write")),
                )
                .unwrap();
                shards.push(Proc::spawn(
                    &format!("prometheus-shard-{shard}-{replica}"),
                    Path::new("prometheus"),
                    &[
                        format!("--config.file={}", config.display()),
                        format!(
                            "--storage.tsdb.path={}",
                            dir.join(format!("tsdb-{shard}-{replica}")).display()
                        ),
                        format!("--web.listen-address=127.0.0.1:{}", free_tcp_port()),
                    ],
                    dir,
                ));
            }
        }
        Store {
            url: vm,
            _vm,
            shards,
        }
    }

    /// Both shards' data meets in the store: every target once, from its own shard; both
    /// replicas wrote every series and the store holds each once, without a replica label.
    fn holds_each_target_once(&self) {
        let (vm, shards) = (&self.url, &self.shards);
        let per_shard = eventually(Duration::from_secs(60), || {
            let v = vm_query(vm, r#"count by (prometheus_shard) (up{job="tx-engines"})"#)?;
            let r = v["data"]["result"].as_array()?.clone();
            let total: f64 = r
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .sum();
            (r.len() == 2 && total == 3.0).then_some(r)
        });
        assert!(
            per_shard.is_some(),
            "shards never delivered all targets to VictoriaMetrics: {}",
            shards[0].tail()
        );
        // Both replicas wrote every series; the store holds each once, without a replica label.
        assert_eq!(
            vm_scalar(vm, r#"count(up{job="tx-engines"})"#),
            Some(3.0),
            "the HA pairs' series are not merged: {:?}",
            vm_query(vm, r#"up{job="tx-engines"}"#)
        );
        assert_eq!(
            vm_scalar(vm, r#"count(up{replica!=""})"#),
            None,
            "a replica label reached the store"
        );
    }

    /// vmalert with `rules` against the store, notifying the Alertmanager on `am_port`.
    fn vmalert(&self, name: &str, rules: &[PathBuf], am_port: u16, dir: &Path) -> (Proc, String) {
        let vm = &self.url;
        let port = free_tcp_port();
        let mut args: Vec<String> = rules
            .iter()
            .map(|f| format!("-rule={}", f.display()))
            .collect();
        args.extend([
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-datasource.url={vm}"),
            format!("-remoteWrite.url={vm}"),
            "-evaluationInterval=1s".into(),
        ]);
        // Both notify the real Alertmanager; the shipped rules keep their real `for:`, so
        // within this test they are watched pending, not fired.
        args.push(format!("-notifier.url=http://127.0.0.1:{am_port}"));
        (
            Proc::spawn(name, Path::new("vmalert"), &args, dir),
            format!("http://127.0.0.1:{port}"),
        )
    }

    /// One replica of shard 0 dies: its pair carries on, nothing is counted twice or lost,
    /// and the shipped InsufficientTXEngines stays quiet.
    fn loses_a_replica(&mut self, unchanged: &mut Proc, unchanged_url: &str) {
        let vm = &self.url;
        let killed_at = Instant::now();
        self.shards.remove(0);
        let mut healthy_seen = BTreeSet::new();
        while killed_at.elapsed() < Duration::from_secs(8) {
            if let Some(v) = vm_scalar(
                vm,
                r#"cluster:tx_engine_healthy:sum{cluster="production-cluster"}"#,
            ) {
                healthy_seen.insert(v.to_string());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(
            healthy_seen,
            BTreeSet::from(["2".to_string()]),
            "healthy TX engines counted after one replica died"
        );
        // Every target still has a sample a second (dedup interval) in the last 5 s.
        let per_target = vm_query(vm, r#"count_over_time(up{job="tx-engines"}[5s])"#).unwrap();
        let counts: Vec<f64> = per_target["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect();
        assert!(
            counts.len() == 3 && counts.iter().all(|n| *n >= 4.0 && *n <= 6.0),
            "samples per target in 5 s after a replica died (want 4-6 each, one per second): {counts:?}"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(unchanged.alive(), "vmalert exited: {}", unchanged.tail());
        assert_ne!(
            vmalert_state(unchanged_url, "InsufficientTXEngines").as_deref(),
            Some("pending"),
            "InsufficientTXEngines pending with 2 healthy engines"
        );
    }

    /// The dashboards' queries run on VictoriaMetrics' Prometheus API: (answered, TX ones
    /// with data).
    fn answers_the_dashboards(&self, targets: &[String]) -> (usize, usize) {
        let vm = &self.url;
        let instances = targets.join("|").replace('.', "\\\\.");
        let (mut answered, mut with_data) = (0, 0);
        for panel in dashboard_panels() {
            let q = substitute(&panel.expr, &instances)
                .replace("${cluster}", ".+")
                .replace("$cluster", ".+");
            let v = vm_query(vm, &q)
                .unwrap_or_else(|| panic!("{}: VictoriaMetrics refused {q}", panel.title));
            assert_eq!(v["status"], "success", "{}: {q}: {v}", panel.title);
            answered += 1;
            if panel.title.starts_with("tx")
                && v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            {
                with_data += 1;
            }
        }
        assert!(
            with_data >= 5,
            "only {with_data} of the TX dashboard's queries returned data from VictoriaMetrics"
        );
        (answered, with_data)
    }
}

/// Alertmanager with the shipped routing, nothing sent anywhere; and its port.
fn start_alertmanager(dir: &Path) -> (Proc, u16) {
    let am_config = dir.join("alertmanager.yml");
    write_alertmanager_config(&am_config);
    let am_port = free_tcp_port();
    let am = Proc::spawn(
        "alertmanager",
        Path::new("prometheus-alertmanager"),
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            format!("--cluster.listen-address=127.0.0.1:{}", free_tcp_port()),
        ],
        dir,
    );
    (am, am_port)
}

/// `alert` reached the Alertmanager on `am_port`, once.
fn reaches_alertmanager_once(am_port: u16, alert: &str) {
    let notified = eventually(Duration::from_secs(60), || {
        let v = get_json(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"))?;
        v.as_array()?
            .iter()
            .any(|a| {
                a["labels"]["alertname"] == alert && a["labels"]["cluster"] == "production-cluster"
            })
            .then_some(())
    });
    assert!(notified.is_some(), "{alert} never reached Alertmanager");
    let copies = get_json(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"))
        .and_then(|v| {
            Some(
                v.as_array()?
                    .iter()
                    .filter(|a| a["labels"]["alertname"] == alert)
                    .count(),
            )
        })
        .unwrap_or(0);
    assert_eq!(copies, 1, "{alert} arrived {copies} times");
}
