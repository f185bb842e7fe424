//! End to end: engine-sim → the four real exporters → real Prometheus (the shipped rules with
//! every `for:` and range window divided by 60, generated here from alerts/*.rules.yml) →
//! real Alertmanager (the shipped routing and inhibition, notifications stripped).
//!
//! Every scenario runs at once in one stack as its own `cluster` (2 TX exporters, one of each
//! other tier, one simulator), so the run takes as long as the slowest alert. Asserted through
//! the HTTP APIs: each scenario's expected alerts reach Alertmanager with its cluster label;
//! the steady cluster raises none; every dashboard query returns data for the steady cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;
use testkit::{eventually, free_tcp_port, free_udp_port, require_tool, require_tools, TempDir};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Rule durations are divided by this: one minute of the real rules is one second here.
const TIME_SCALE: u64 = 60;
/// When the faults start, after the simulators start (Prometheus gets a steady warm-up first).
const FAULT_AFTER_S: u64 = 25;
/// How long after the fault an expected alert may take to reach Alertmanager.
const FIRE_DEADLINE: Duration = Duration::from_secs(150);
/// The `cluster` external label of a second Prometheus whose service discovery finds no
/// target at all: it must raise ExporterTargetsAbsent for every tier's job.
const NO_TARGETS: &str = "no-targets";
/// The `log-backlog` sidecar fault: the first TX sidecar reads its event log at this many
/// bytes a second, and this much arrives at once, so it stays over the alert's 64 MiB for
/// about half a minute.
const BACKLOG_READ_RATE: u64 = 512 * 1024;
const BACKLOG_BYTES: u64 = 80 << 20;
/// Grafana's $__rate_interval for a 1 s scrape interval (4 x scrape interval, with margin).
const RATE_INTERVAL: &str = "10s";

/// The stack tests pick free loopback ports and start dozens of processes: run one at a time,
/// so one test's port cannot be taken by the other's between picking and binding.
static ONE_STACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_stack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_STACK_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A sibling binary of engine-sim in target/<profile>/. `cargo test --workspace` builds every
/// package's binaries before running any test; `cargo test -p engine-sim` builds only ours,
/// so a missing one is built here with the same cargo and profile.
fn sibling(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_engine-sim"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join(name);
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", name]).current_dir(root());
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "cargo build -p {name} failed");
    }
    assert!(
        bin.exists(),
        "{} is missing after cargo build",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// The test-only rules variant, generated from the real rules.

/// Seconds of a PromQL duration such as `5m`, `1h30m`, `90s`.
fn duration_secs(d: &str) -> Option<u64> {
    let mut total = 0;
    let mut num = String::new();
    let mut chars = d.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match unit.as_str() {
            "ms" => n / 1000,
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            "w" => n * 604_800,
            "y" => n * 31_536_000,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

fn scaled(d: &str) -> String {
    let secs = duration_secs(d).unwrap_or_else(|| panic!("not a duration: {d:?}"));
    format!("{}s", (secs / TIME_SCALE).max(1))
}

/// A scaled range window holds at least this many seconds (scrapes): with a 2 s window one
/// late scrape on a loaded machine would empty `last_over_time` and reset a long `for:`.
const MIN_RANGE_S: u64 = 4;

/// Scales the durations inside every `[...]` of a PromQL expression (range and subquery):
/// the range to at least MIN_RANGE_S, a subquery step as any duration.
fn scale_expr(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        let close = rest[open..].find(']').expect("closing ]") + open;
        let inner = &rest[open + 1..close];
        let parts: Vec<String> = inner
            .split(':')
            .enumerate()
            .map(|(i, p)| match (i, p.trim()) {
                (_, "") => p.to_string(),
                (0, range) => {
                    let secs =
                        duration_secs(range).unwrap_or_else(|| panic!("not a duration: {range:?}"));
                    format!("{}s", (secs / TIME_SCALE).max(MIN_RANGE_S))
                }
                (_, step) => scaled(step),
            })
            .collect();
        out.push_str(&parts.join(":"));
        out.push(']');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// Rewrites one rules document in place; returns how many `for:` and ranges it changed.
fn scale_rules(doc: &mut Yaml) -> (usize, usize) {
    let (mut fors, mut ranges) = (0, 0);
    let Yaml::Hash(top) = doc else {
        panic!("rules file is not a mapping")
    };
    let Some(Yaml::Array(groups)) = top.get_mut(&key("groups")) else {
        panic!("no groups")
    };
    for g in groups {
        let Yaml::Hash(g) = g else { continue };
        let Some(Yaml::Array(rules)) = g.get_mut(&key("rules")) else {
            continue;
        };
        for r in rules {
            let Yaml::Hash(r) = r else { continue };
            if let Some(Yaml::String(f)) = r.get_mut(&key("for")) {
                *f = scaled(f);
                fors += 1;
            }
            if let Some(Yaml::String(e)) = r.get_mut(&key("expr")) {
                let new = scale_expr(e);
                ranges += e.matches('[').count();
                *e = new;
            }
        }
    }
    (fors, ranges)
}

/// Writes the fast variant of every alerts/*.rules.yml into `dir`.
fn write_fast_rules(dir: &Path) -> Vec<PathBuf> {
    write_fast_rules_of(&root().join("alerts"), dir)
}

/// Writes the fast variant of every `*.rules.yml` of `src` into `dir`.
fn write_fast_rules_of(src: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
        scale_rules(&mut doc);
        let mut s = String::new();
        YamlEmitter::new(&mut s).dump(&doc).unwrap();
        let dest = dir.join(f.file_name().unwrap());
        std::fs::write(&dest, s).unwrap();
        out.push(dest);
    }
    out
}

/// The shipped Alertmanager config with its receivers' integrations removed: routing, grouping
/// and inhibition stay as shipped, nothing is sent anywhere.
fn write_alertmanager_config(path: &Path) {
    let text =
        std::fs::read_to_string(root().join("deploy/alertmanager/alertmanager.yml")).unwrap();
    let mut doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let Yaml::Hash(top) = &mut doc else {
        panic!("not a mapping")
    };
    let Some(Yaml::Array(receivers)) = top.get_mut(&key("receivers")) else {
        panic!("no receivers")
    };
    for r in receivers.iter_mut() {
        let Yaml::Hash(h) = r else { continue };
        h.retain(|k, _| *k == key("name"));
    }
    let mut s = String::new();
    YamlEmitter::new(&mut s).dump(&doc).unwrap();
    std::fs::write(path, s).unwrap();
}

fn check_rules(files: &[PathBuf]) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the generated rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn duration_scaling() {
    assert_eq!(duration_secs("5m"), Some(300));
    assert_eq!(duration_secs("1h30m"), Some(5400));
    assert_eq!(duration_secs("500ms"), Some(0));
    assert_eq!(duration_secs("5x"), None);
    assert_eq!(scaled("1h"), "60s");
    assert_eq!(scaled("30s"), "1s");
    assert_eq!(
        scale_expr("increase(x[5m]) > 10 and rate(y[1h:1m]) and z[30m]"),
        "increase(x[5s]) > 10 and rate(y[60s:1s]) and z[30s]"
    );
    assert_eq!(scale_expr("last_over_time(x[2m])"), "last_over_time(x[4s])");
    assert_eq!(scale_expr("a > 7200"), "a > 7200");
}

#[test]
fn fast_rules_are_generated_scaled_and_valid() {
    let tmp = TempDir::new("fast-rules");
    let files = write_fast_rules(tmp.path());
    let mut fors = 0;
    for f in &files {
        let doc = YamlLoader::load_from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap()
            .remove(0);
        for g in doc["groups"].as_vec().unwrap() {
            for r in g["rules"].as_vec().unwrap() {
                if let Some(d) = r["for"].as_str() {
                    fors += 1;
                    let secs = duration_secs(d).unwrap();
                    assert!((1..=60).contains(&secs), "{d}");
                }
                let e = r["expr"].as_str().unwrap();
                assert!(
                    !e.contains("m]") && !e.contains("h]"),
                    "unscaled range in {e}"
                );
            }
        }
    }
    // Same number of alerts with `for:` as the real rules.
    let real: usize = std::fs::read_dir(root().join("alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("for:"))
                .count()
        })
        .sum();
    assert_eq!(fors, real);
    if require_tool("promtool") {
        check_rules(&files);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and HTTP.

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus on 127.0.0.1:`port` with `config`, its data and log under `dir`.
fn spawn_prometheus(name: &str, config: &Path, port: u16, dir: &Path) -> Proc {
    Proc::spawn(
        name,
        Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ],
        dir,
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(url)?).ok()
}

/// GET returning None on any error (a server that is not up yet is expected while waiting).
fn http_get(url: &str) -> Option<String> {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .get(url)
        .call()
        .ok()?
        .into_string()
        .ok()
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    testkit::sample_value(text, series)
}

// ---------------------------------------------------------------------------------------------
// The stack.

struct Cluster {
    scenario: String,
    expect: Vec<String>,
    /// Alerts that must never reach Alertmanager for this cluster (scenario key `silent`).
    silent: Vec<String>,
    /// Alert → the receiver it must reach after routing and inhibition (`receivers`).
    receivers: BTreeMap<String, String>,
    /// The tier whose first host `host-lost` takes away (the scenario's first tier).
    first_tier: String,
    /// When `hang-engine` stopped the simulator.
    hung_at: Option<Instant>,
    fault_after: Option<u64>,
    /// Faults of the first TX sidecar itself (scenario key `sidecar_faults`), played here.
    sidecar_faults: Vec<String>,
    sidecar_faults_played: bool,
    tx0_log: PathBuf,
    tx0_config: PathBuf,
    tx0_statsd: u16,
    /// Holds the first TX sidecar's StatsD port (`statsd-port-taken`).
    statsd_squatter: Option<std::net::UdpSocket>,
    last_burst: Option<Instant>,
    /// (job, instance) of every exporter of this cluster.
    targets: Vec<(String, String)>,
    ntp_source: String,
    /// The simulator's Kafka endpoint (broker on /metrics, kafka_exporter beside it).
    kafka: String,
    procs: Vec<Proc>,
    sim_started: Instant,
}

/// The kernel's drop count of the UDP sockets bound to 127.0.0.1:`port` (/proc/net/udp).
fn udp_drops(port: u16) -> u64 {
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
fn burst_until_dropped(port: u16) -> usize {
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

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {}", p.name);
}

/// The cluster's first TX sidecar, whose faults the harness plays.
fn tx0_proc(c: &Cluster) -> &Proc {
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
fn play_sidecar_fault(c: &mut Cluster) {
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
fn tmpfs_holder(dirs: &[PathBuf], log_dir: &Path) -> Option<(Proc, u32)> {
    // Unprivileged user namespace first; as root a plain mount namespace is enough (and works
    // where unprivileged user namespaces are switched off).
    [
        &["--user", "--map-root-user", "--mount"][..],
        &["--mount"][..],
    ]
    .iter()
    .find_map(|ns| holder_with(ns, dirs, log_dir))
}

fn holder_with(ns: &[&str], dirs: &[PathBuf], log_dir: &Path) -> Option<(Proc, u32)> {
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
struct Ports {
    tcp: BTreeMap<u16, std::net::TcpListener>,
    udp: BTreeMap<u16, std::net::UdpSocket>,
}

impl Ports {
    fn tcp(&mut self) -> u16 {
        let l = testkit::bind_tcp();
        let p = l.local_addr().unwrap().port();
        self.tcp.insert(p, l);
        p
    }

    fn udp(&mut self) -> u16 {
        let s = testkit::bind_udp();
        let p = s.local_addr().unwrap().port();
        self.udp.insert(p, s);
        p
    }

    fn release(&mut self, tcp: &[u16], udp: &[u16]) {
        for p in tcp {
            self.tcp.remove(p);
        }
        for p in udp {
            self.udp.remove(p);
        }
    }
}

/// What the harness needs of a scenario file.
struct ScenarioSpec {
    name: String,
    expect: Vec<String>,
    fault_after: Option<u64>,
    sidecar_faults: Vec<String>,
    /// The tiers whose engines (and sidecars) the cluster runs; None: all.
    tiers: Option<Vec<String>>,
    silent: Vec<String>,
    receivers: BTreeMap<String, String>,
    clock_masters: usize,
}

fn strings(v: Option<&toml::Value>) -> Option<Vec<String>> {
    v.and_then(|x| x.as_array()).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    })
}

fn load_scenarios() -> Vec<ScenarioSpec> {
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
const EMPTY_BY_DESIGN: &[(&str, &str)] = &[
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

struct Panel {
    title: String,
    expr: String,
}

fn dashboard_panels() -> Vec<Panel> {
    dashboard_panels_of(&root().join("dashboards"))
}

fn dashboard_panels_of(dir: &Path) -> Vec<Panel> {
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
fn substitute(expr: &str, instances: &str) -> String {
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
    let dir = tmp.path().to_path_buf();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_engine-sim"));
    // The tiers are those of the checkout's schemas; only how many engines each cluster runs
    // of a tier is this test's choice.
    let schemas =
        exporter_core::Schema::discover(exporter_core::workspace_root(env!("CARGO_MANIFEST_DIR")))
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
    let holder = tmpfs_holder(&mounts, &dir);
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

    let mut clusters: Vec<Cluster> = Vec::new();
    let mut ports = Ports::default();
    let mut clock_starts: Vec<(usize, Vec<String>, u16, u16)> = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let (name, expect, fault_after, sidecar_faults) =
            (&sc.name, &sc.expect, &sc.fault_after, &sc.sidecar_faults);
        if holder.is_none() && name == "storage-nearly-full" {
            continue;
        }
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
        for schema in &schemas {
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
                    let d = data_dir(i);
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
                    clock_starts.push((clusters.len(), args, web, statsd));
                } else {
                    ports.release(&[web], &[statsd]);
                    c.procs.push(Proc::spawn(
                        &format!("{name}-{tier}-{k}"),
                        &bins[bin],
                        &args,
                        &cdir,
                    ));
                }
                sim_args.push(format!("--{tier}={target}"));
                c.targets.push((job.to_owned(), format!("127.0.0.1:{web}")));
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
            .push(Proc::spawn(&format!("{name}-sim"), &sim, &sim_args, &cdir));
        c.sim_started = Instant::now();
        clusters.push(c);
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
            &bins["clock-exporter"],
            &args,
            &cdir,
        );
        c.procs.push(p);
    }

    // Alertmanager and Prometheus start once every sidecar sees its engine (the engine probe
    // refreshes every 5 s; with 1 s `for:` a slow first look would page).
    let ready = testkit::eventually(Duration::from_secs(40), || {
        for c in &mut clusters {
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
        &dir,
    );
    let prom_port = ports.tcp();
    let mut scrape = String::new();
    for job in tier_of_job.keys() {
        scrape.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
        for c in &clusters {
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
        for c in &clusters {
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
    let prom = spawn_prometheus("prometheus", &prom_config_path, prom_port, &dir);
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
    let lone_prom = spawn_prometheus("prometheus-no-targets", &lone_config, lone_port, &dir);
    let mut absent_jobs: BTreeSet<String> = BTreeSet::new();

    // Watch until every expected alert reached Alertmanager, or the deadline.
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
    // (cluster, alert) → (first seen in Alertmanager, state then)
    let mut seen: BTreeMap<(String, String), (Instant, String)> = BTreeMap::new();
    // (cluster, alert) → the receivers Alertmanager routed it to, while it was active (not
    // inhibited or silenced).
    let mut routed: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    // Hung clusters: the longest time after the hang with no active critical alert.
    let mut hung_gaps: BTreeMap<String, (Option<Instant>, Duration)> = BTreeMap::new();
    // Hung clusters: when the alert that paged before the hang left Alertmanager (its gauge
    // went stale), which proves the hand-over was exercised.
    let mut hung_resolved: BTreeMap<String, Duration> = BTreeMap::new();
    let mut steady_pending: BTreeSet<String> = BTreeSet::new();
    let mut steady_firing: BTreeSet<String> = BTreeSet::new();
    let panels = dashboard_panels();
    let mut panel_ok: BTreeMap<String, bool> = BTreeMap::new();
    let mut dashboards_checked = false;
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
            for c in &clusters {
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
        for c in &mut clusters {
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
        if !dashboards_checked && prom_started.elapsed() > Duration::from_secs(12) {
            for p in &panels {
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
            dashboards_checked =
                panel_ok.values().all(|ok| *ok) || prom_started.elapsed() > Duration::from_secs(40);
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
        if (all_seen && dashboards_checked && now > onset + Duration::from_secs(20))
            || now > deadline
        {
            break;
        }
        for c in &mut clusters {
            play_sidecar_fault(c);
            for p in &mut c.procs {
                assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }

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
    if absent_jobs != jobs {
        missing.push(format!(
            "{NO_TARGETS}: ExporterTargetsAbsent for {jobs:?}, seen for {absent_jobs:?}"
        ));
    }
    for c in &clusters {
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
    drop(lone_prom);
    drop(prom);
    drop(am);

    assert!(
        missing.is_empty(),
        "expected alerts never reached Alertmanager: {missing:?}\n{report}"
    );
    assert!(
        wrong.is_empty(),
        "the topology matrix does not hold:\n{}\n{report}",
        wrong.join("\n")
    );
    let steady_in_am: Vec<&String> = seen
        .keys()
        .filter(|(c, _)| c == "steady")
        .map(|(_, a)| a)
        .collect();
    assert!(
        steady_in_am.is_empty() && steady_firing.is_empty(),
        "the steady cluster raised alerts: {steady_in_am:?} {steady_firing:?}"
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without data in the steady state:\n{}",
        empty.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Scale-out: two Prometheus shards → VictoriaMetrics → vmalert → Alertmanager.

// ---------------------------------------------------------------------------------------------
// The mixin with another config.

/// The Kubernetes-style names of mixin/tests/nondefault.libsonnet, as its jobs are scraped.
const NONDEFAULT_TX_JOB: &str = "db/tx-engine-metrics";
const NONDEFAULT_INGESTION_JOB: &str = "db/ingestion-engine-metrics";

/// The scrape config of a Prometheus whose names are the non-default config's: each job under
/// its own name, the target named by `pod`, the cluster by `dc`.
fn nondefault_scrape_config(jobs: &[(&str, Vec<String>)], rules: &[PathBuf]) -> String {
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
fn prometheus_alerts(url: &str) -> Vec<(String, serde_json::Value)> {
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

    let mut ports = Ports::default();
    let mut procs = Vec::new();
    let mut sim_args = vec![
        "--scenario=replication-lag".to_string(),
        "--duration=300s".into(),
        format!("--fault-after={FAULT_AFTER_S}s"),
        "--seed=7".into(),
        "--host=node-mixin".into(),
    ];
    let mut jobs: Vec<(&str, Vec<String>)> = Vec::new();
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
                &dir,
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
    procs.push(Proc::spawn("mixin-sim", &sim, &sim_args, &dir));
    let fault_at = Instant::now() + Duration::from_secs(FAULT_AFTER_S);

    let prom_port = ports.tcp();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, nondefault_scrape_config(&jobs, &rules)).unwrap();
    ports.release(&[prom_port], &[]);
    let _prom = spawn_prometheus("mixin-prometheus", &config, prom_port, &dir);
    let url = format!("http://127.0.0.1:{prom_port}");
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
        _prom.tail()
    );
    std::thread::sleep(Duration::from_secs(2));

    // The tiers run here are found under their names; those not run are missed under theirs.
    let mut fired: BTreeMap<String, (Duration, serde_json::Value)> = BTreeMap::new();
    let mut absent = BTreeSet::new();
    let deadline = fault_at + FIRE_DEADLINE;
    while Instant::now() < deadline && fired.len() < 2 {
        for p in &mut procs {
            assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
        }
        for (name, labels) in prometheus_alerts(&url) {
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
    // The rendered TX and ingestion dashboards (dc, pod, the db/ jobs) show this stack.
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

/// Prometheus's hashmod: the last 8 bytes of md5(address), big-endian, modulo `m`.
fn hashmod(address: &str, m: u64) -> u64 {
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
fn shard_config(shard: u64, replica: &str, sd_file: &Path, write_url: &str) -> String {
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

fn vm_query(vm: &str, q: &str) -> Option<serde_json::Value> {
    get_json(&format!("{vm}/api/v1/query?query={}", urlencode(q)))
}

/// The value of a one-series instant query, if it has one.
fn vm_scalar(vm: &str, q: &str) -> Option<f64> {
    let v = vm_query(vm, q)?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn vmalert_state(url: &str, alert: &str) -> Option<String> {
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
    let tx = sibling("tx-exporter");

    // Three TX exporters: two healthy engines on different shards, one without its engine.
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
            &dir,
        ));
    }
    let sd = dir.join("tx-engines.json");
    let targets: Vec<String> = [healthy[0].0, healthy[1].0, sick]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(
        &sd,
        serde_json::json!([{ "targets": targets, "labels": { "job": "tx-engines" } }]).to_string(),
    )
    .unwrap();

    // The global store and the shards writing to it.
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
        &dir,
    );
    // An HA pair per shard, as deploy/README.md runs them: replicas a and b.
    let mut shards = Vec::new();
    for shard in 0..2 {
        for replica in ["a", "b"] {
            let config = dir.join(format!("shard-{shard}-{replica}.yml"));
            std::fs::write(
                &config,
                shard_config(shard, replica, &sd, &format!("{vm}/api/v1/write")),
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
                &dir,
            ));
        }
    }

    // Alertmanager with the shipped routing, nothing sent anywhere.
    let am_config = dir.join("alertmanager.yml");
    write_alertmanager_config(&am_config);
    let am_port = free_tcp_port();
    let _am = Proc::spawn(
        "alertmanager",
        Path::new("prometheus-alertmanager"),
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            format!("--cluster.listen-address=127.0.0.1:{}", free_tcp_port()),
        ],
        &dir,
    );

    // Both shards' data meets in the store: every target once, from its own shard.
    let per_shard = eventually(Duration::from_secs(60), || {
        let v = vm_query(&vm, r#"count by (prometheus_shard) (up{job="tx-engines"})"#)?;
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
        vm_scalar(&vm, r#"count(up{job="tx-engines"})"#),
        Some(3.0),
        "the HA pairs' series are not merged: {:?}",
        vm_query(&vm, r#"up{job="tx-engines"}"#)
    );
    assert_eq!(
        vm_scalar(&vm, r#"count(up{replica!=""})"#),
        None,
        "a replica label reached the store"
    );

    // The rule files of alerts/ unchanged, in vmalert against the store.
    let rule_args = |rules: &[PathBuf]| -> Vec<String> {
        rules
            .iter()
            .map(|f| format!("-rule={}", f.display()))
            .collect()
    };
    let shipped: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("alerts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
            .collect();
        v.sort();
        v
    };
    let vmalert = |name: &str, rules: &[PathBuf]| -> (Proc, String) {
        let port = free_tcp_port();
        let mut args = rule_args(rules);
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
            Proc::spawn(name, Path::new("vmalert"), &args, &dir),
            format!("http://127.0.0.1:{port}"),
        )
    };
    let (mut unchanged, unchanged_url) = vmalert("vmalert-shipped", &shipped);

    // Two healthy engines in the cluster, one per shard: a shard alone would count 1 and
    // alert; the global ruler counts 2 and does not.
    let healthy_sum = eventually(Duration::from_secs(60), || {
        vm_scalar(
            &vm,
            r#"cluster:tx_engine_healthy:sum{cluster="production-cluster"}"#,
        )
        .filter(|v| *v == 2.0)
    });
    assert!(
        healthy_sum.is_some(),
        "vmalert never recorded 2 healthy TX engines: {}",
        unchanged.tail()
    );

    // One replica of shard 0 dies: its pair carries on, nothing is counted twice or lost.
    let killed_at = Instant::now();
    shards.remove(0);
    let mut healthy_seen = BTreeSet::new();
    while killed_at.elapsed() < Duration::from_secs(8) {
        if let Some(v) = vm_scalar(
            &vm,
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
    let per_target = vm_query(&vm, r#"count_over_time(up{job="tx-engines"}[5s])"#).unwrap();
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
        vmalert_state(&unchanged_url, "InsufficientTXEngines").as_deref(),
        Some("pending"),
        "InsufficientTXEngines pending with 2 healthy engines"
    );

    // One healthy engine's exporter goes away: 1 < 2, cluster-wide.
    exporters.remove(0);
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
    let (_fast, _) = vmalert("vmalert-fast", &fast);
    let notified = eventually(Duration::from_secs(60), || {
        let v = get_json(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"))?;
        v.as_array()?
            .iter()
            .any(|a| {
                a["labels"]["alertname"] == "InsufficientTXEngines"
                    && a["labels"]["cluster"] == "production-cluster"
            })
            .then_some(())
    });
    assert!(
        notified.is_some(),
        "InsufficientTXEngines never reached Alertmanager"
    );
    let copies = get_json(&format!("http://127.0.0.1:{am_port}/api/v2/alerts"))
        .and_then(|v| {
            Some(
                v.as_array()?
                    .iter()
                    .filter(|a| a["labels"]["alertname"] == "InsufficientTXEngines")
                    .count(),
            )
        })
        .unwrap_or(0);
    assert_eq!(copies, 1, "InsufficientTXEngines arrived {copies} times");

    // The dashboards' queries run on VictoriaMetrics' Prometheus API.
    let instances = targets.join("|").replace('.', "\\\\.");
    let (mut answered, mut with_data) = (0, 0);
    for panel in dashboard_panels() {
        let q = substitute(&panel.expr, &instances)
            .replace("${cluster}", ".+")
            .replace("$cluster", ".+");
        let v = vm_query(&vm, &q)
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
    let _ = writeln!(
        std::io::stderr(),
        "scale-out: {answered} dashboard queries answered by VictoriaMetrics, {with_data} TX ones with data; {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
