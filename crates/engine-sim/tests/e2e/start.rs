//! Starting the scenarios' clusters: sidecars, simulators, clock exporters last, and the
//! wait until every sidecar sees its engine.

use super::*;

/// Starts every scenario's cluster (the storage scenario only with a tmpfs for its data
/// directory), clock exporters last, once their simulator serves NTP; returns the clusters,
/// the ports still held, and when the simulators started.
pub(crate) fn start_clusters(
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
pub(crate) type ClockStart = (usize, Vec<String>, u16, u16);

/// One scenario's cluster: its sidecars (two TX engines, clock masters as the scenario says,
/// one of every other tier) and its simulator.
pub(crate) fn start_cluster(
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
pub(crate) fn start_sidecar(
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
pub(crate) fn wait_for_engines(
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
