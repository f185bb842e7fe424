//! One scenario's cluster: its exporters and simulator, and the faults the harness plays on
//! the sidecars themselves (a hung engine, a lost host, a taken port, a bad reload, a backlog).

use super::*;

pub(crate) struct Cluster {
    pub(crate) scenario: String,
    pub(crate) expect: Vec<String>,
    /// Alerts that must never reach Alertmanager for this cluster (scenario key `silent`).
    pub(crate) silent: Vec<String>,
    /// Alert → the receiver it must reach after routing and inhibition (`receivers`).
    pub(crate) receivers: BTreeMap<String, String>,
    /// The tier whose first host `host-lost` takes away (the scenario's first tier).
    pub(crate) first_tier: String,
    /// When `hang-engine` stopped the simulator.
    pub(crate) hung_at: Option<Instant>,
    pub(crate) fault_after: Option<u64>,
    /// Faults of the first TX sidecar itself (scenario key `sidecar_faults`), played here.
    pub(crate) sidecar_faults: Vec<String>,
    pub(crate) sidecar_faults_played: bool,
    pub(crate) tx0_log: PathBuf,
    pub(crate) tx0_config: PathBuf,
    pub(crate) tx0_statsd: u16,
    /// Holds the first TX sidecar's StatsD port (`statsd-port-taken`).
    pub(crate) statsd_squatter: Option<std::net::UdpSocket>,
    pub(crate) last_burst: Option<Instant>,
    /// (job, instance) of every exporter of this cluster.
    pub(crate) targets: Vec<(String, String)>,
    pub(crate) ntp_source: String,
    /// The simulator's Kafka endpoint (broker on /metrics, kafka_exporter beside it).
    pub(crate) kafka: String,
    pub(crate) procs: Vec<Proc>,
    pub(crate) sim_started: Instant,
}

/// The kernel's drop count of the UDP sockets bound to 127.0.0.1:`port` (/proc/net/udp).
pub(crate) fn udp_drops(port: u16) -> u64 {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// Sends StatsD datagrams to `port` in rounds of 1,000 until the kernel counts a drop for
/// its socket (at most 100 rounds); returns how many were sent.
pub(crate) fn burst_until_dropped(port: u16) -> usize {
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = udp_drops(port);
    let mut sent = 0;
    for _ in 0..100 {
        for _ in 0..1000 {
            if sender
                .send_to(b"tx_engine_cache_hits_total:1|c", ("127.0.0.1", port))
                .is_ok()
            {
                sent += 1;
            }
        }
        if udp_drops(port) > before {
            break;
        }
    }
    sent
}

/// The cluster's first TX sidecar, whose faults the harness plays.
pub(crate) fn tx0_proc(c: &Cluster) -> &Proc {
    let name = format!("{}-tx-0", c.scenario);
    c.procs
        .iter()
        .find(|p| p.name == name)
        .expect("tx-0 sidecar")
}

/// From the fault on, does to the cluster's first TX sidecar what its scenario says: stop it,
/// feed its event log lines that are not JSON (every call, so rejections keep coming), break
/// its config file and send it SIGHUP, or stall it while a burst of StatsD overflows its
/// socket (every 2 s, so drops keep coming).
pub(crate) fn play_sidecar_fault(c: &mut Cluster) {
    if c.sidecar_faults.is_empty() || c.sim_started.elapsed() < Duration::from_secs(FAULT_AFTER_S) {
        return;
    }
    let tx0 = format!("{}-tx-0", c.scenario);
    let first = !c.sidecar_faults_played;
    for fault in c.sidecar_faults.clone() {
        match fault.as_str() {
            "stop" => c.procs.retain(|p| p.name != tx0),
            "host-lost" => {
                let lost = format!("{}-{}-0", c.scenario, c.first_tier);
                c.procs.retain(|p| p.name != lost);
            }
            "garbage-input" => {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&c.tx0_log)
                    .unwrap();
                for i in 0..20 {
                    writeln!(f, "engine panicked here, not JSON {i}").unwrap();
                }
            }
            "bad-reload" if first => {
                std::fs::write(&c.tx0_config, "[web\nlisten_address = ").unwrap();
                let p = tx0_proc(c);
                signal(p, "HUP");
            }
            "log-backlog" if first => {
                // Long lines of an event the TX rules apply, so the backlog is cheap to
                // write and to apply; only its size matters.
                let mut chunk = Vec::with_capacity(1 << 20);
                let pad = "x".repeat(900);
                while chunk.len() < (1 << 20) - 1024 {
                    writeln!(
                        chunk,
                        "{{\"timestamp\":\"2026-11-30T10:00:00Z\",\"level\":\"debug\",\"event\":\"query_executed\",\"duration_ms\":1,\"note\":\"{pad}\"}}"
                    )
                    .unwrap();
                }
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&c.tx0_log)
                    .unwrap();
                let mut written = 0u64;
                while written < BACKLOG_BYTES {
                    f.write_all(&chunk).unwrap();
                    written += chunk.len() as u64;
                }
                eprintln!("e2e: {tx0}: {} MiB of backlog appended", written >> 20);
            }
            "stalled-during-burst"
                if c.last_burst
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) =>
            {
                c.last_burst = Some(Instant::now());
                let p = tx0_proc(c);
                signal(p, "STOP");
                let sent = burst_until_dropped(c.tx0_statsd);
                signal(p, "CONT");
                if first {
                    eprintln!("e2e: {tx0} stalled; {sent} datagrams until the kernel dropped");
                }
            }
            _ => {}
        }
    }
    c.sidecar_faults_played = true;
}

/// Mounts a small tmpfs per directory inside an unprivileged user+mount namespace and keeps
/// it alive; other processes reach it through /proc/<pid>/root/<dir>. That gives the OLAP
/// sidecar a real filesystem the simulator can fill, without root and without faking the
/// probe. None when user namespaces are not available.
pub(crate) fn tmpfs_holder(dirs: &[PathBuf], log_dir: &Path) -> Option<(Proc, u32)> {
    // Unprivileged user namespace first; as root a plain mount namespace is enough (and works
    // where unprivileged user namespaces are switched off).
    [
        &["--user", "--map-root-user", "--mount"][..],
        &["--mount"][..],
    ]
    .iter()
    .find_map(|ns| holder_with(ns, dirs, log_dir))
}

pub(crate) fn holder_with(ns: &[&str], dirs: &[PathBuf], log_dir: &Path) -> Option<(Proc, u32)> {
    let script = "for d in \"$@\"; do mount -t tmpfs -o size=16m tmpfs \"$d\" || exit 1; done; \
                  echo ready; exec sleep 100000";
    let mut child = Command::new("unshare")
        .args(ns)
        .args(["sh", "-c", script, "sh"])
        .args(dirs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let ok = BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .is_ok()
        && line.trim() == "ready";
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let pid = child.id();
    Some((
        Proc {
            name: "tmpfs-holder".into(),
            child,
            log: log_dir.join("none"),
        },
        pid,
    ))
}

/// Loopback ports held open by the test until just before the process that uses them starts:
/// a released port can be handed out again by the kernel to any bind(0) (the simulators'
/// StatsD senders bind dozens), so a port picked early and used late would be stolen.
#[derive(Default)]
pub(crate) struct Ports {
    pub(crate) tcp: BTreeMap<u16, std::net::TcpListener>,
    pub(crate) udp: BTreeMap<u16, std::net::UdpSocket>,
}

impl Ports {
    pub(crate) fn tcp(&mut self) -> u16 {
        let l = testkit::bind_tcp();
        let p = l.local_addr().unwrap().port();
        self.tcp.insert(p, l);
        p
    }

    pub(crate) fn udp(&mut self) -> u16 {
        let s = testkit::bind_udp();
        let p = s.local_addr().unwrap().port();
        self.udp.insert(p, s);
        p
    }

    pub(crate) fn release(&mut self, tcp: &[u16], udp: &[u16]) {
        for p in tcp {
            self.tcp.remove(p);
        }
        for p in udp {
            self.udp.remove(p);
        }
    }
}
