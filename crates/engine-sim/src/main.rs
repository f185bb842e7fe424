//! engine-sim: plays the database engines of one node against the sidecar exporters.
//! See `engine-sim --help` and the README's "See it live" section.

mod kafka;
mod ntp;
mod out;
mod rng;
mod scenario;
mod sim;
mod storage;
mod walk;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sim::{Config, Target};

const HELP: &str = "\
engine-sim: plays the engines of one node for the sidecar exporters

Usage: engine-sim [--scenario NAME] [--duration DUR] TIER-TARGETS...
       engine-sim --list [--scenarios-dir DIR]

Per tier (repeat --tx for several TX engines, server_id tx-1, tx-2, ...; repeat --clock for a
primary clock master and standbys, see [clock] primary):
  --tx=statsd=ADDR,log=PATH,engine=ADDR
  --ingestion=statsd=ADDR,log=PATH,engine=ADDR
  --olap=statsd=ADDR,log=PATH,engine=ADDR
  --clock=statsd=ADDR,engine=ADDR
    statsd  the exporter's --ingest.statsd-udp (loopback)
    log     the JSON event log to append to (the exporter's --ingest.log-path)
    engine  a loopback port to listen on while the engine is up (the exporter's --engine.address)
Options:
  --scenario NAME         scenario to play (default steady); --list shows them
  --scenarios-dir DIR     also read DIR/*.toml (same name replaces a built-in one)
  --duration DUR          stop after this long (default 10m); 90, 90s, 500ms, 5m, 1h
  --fault-after DUR       start the scenario's fault then instead of its after_s
  --tick DUR              simulation step (default 100ms)
  --seed N                PRNG seed (default from the clock)
  --host NAME             host field of the events (default: this host's name)
  --olap.data-dir DIR     write real segment files there (the olap-exporter's --olap.data-dir)
  --olap.max-fill SIZE    never add more than this to fill a filesystem (default 256MiB)
  --clock.ntp-listen ADDR serve SNTP there (point clock-exporter's --clock.ntp-server at it)
  --kafka.listen ADDR     serve the node's Kafka broker metrics there, named as the shipped JMX
                          exporter rules name them (/metrics), and the ingestion consumer
                          group's lag as kafka_exporter reports it (/kafka-exporter/metrics)

Writes only to loopback addresses and to the files and directory it is given.";

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 90s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<u64>()
        .map(|n| n.saturating_mul(mult))
        .map_err(|_| format!("bad size {s:?} (e.g. 64MiB)"))
}

fn loopback(s: &str, what: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{what}: {s:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{what}: {addr} is not a loopback address; engine-sim only talks to this host"
        ));
    }
    Ok(addr)
}

fn parse_target(spec: &str, tier: &str) -> Result<Target, String> {
    let mut t = Target::default();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--{tier}: {part:?} is not key=value"))?;
        match k {
            "statsd" => t.statsd = Some(loopback(v, &format!("--{tier} statsd"))?),
            "engine" => t.engine = Some(loopback(v, &format!("--{tier} engine"))?),
            "log" if tier == "clock" => {
                return Err("--clock: the clock tier has no event log in the contract".into())
            }
            "log" => t.log = Some(PathBuf::from(v)),
            _ => return Err(format!("--{tier}: unknown key {k:?} (statsd, log, engine)")),
        }
    }
    Ok(t)
}

enum Action {
    Help,
    List(Option<PathBuf>),
    Run(Box<Config>),
}

/// The command line's values, defaults first.
struct Flags {
    scenario: String,
    dir: Option<PathBuf>,
    list: bool,
    duration: Duration,
    fault_after: Option<Duration>,
    tick: Duration,
    seed: Option<u64>,
    host: Option<String>,
    tx: Vec<Target>,
    ingestion: Option<Target>,
    olap: Option<Target>,
    clock: Vec<Target>,
    data_dir: Option<PathBuf>,
    max_fill: u64,
    ntp: Option<SocketAddr>,
    kafka: Option<SocketAddr>,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            scenario: scenario::BASE.to_string(),
            dir: None,
            list: false,
            duration: Duration::from_secs(600),
            fault_after: None,
            tick: Duration::from_millis(100),
            seed: None,
            host: None,
            tx: Vec::new(),
            ingestion: None,
            olap: None,
            clock: Vec::new(),
            data_dir: None,
            max_fill: 256 << 20,
            ntp: None,
            kafka: None,
        }
    }
}

impl Flags {
    /// Sets `flag` (one that takes a value) to `value`.
    fn set(&mut self, flag: &str, value: String) -> Result<(), String> {
        match flag {
            "--scenario" => self.scenario = value,
            "--scenarios-dir" => self.dir = Some(PathBuf::from(value)),
            "--duration" => self.duration = parse_duration(&value)?,
            "--fault-after" => self.fault_after = Some(parse_duration(&value)?),
            "--tick" => {
                self.tick = parse_duration(&value)?;
                if self.tick < Duration::from_millis(10) || self.tick > Duration::from_secs(5) {
                    return Err("--tick must be between 10ms and 5s".into());
                }
            }
            "--seed" => {
                self.seed = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--seed: {value:?} is not a number"))?,
                )
            }
            "--host" => self.host = Some(value),
            "--tx" => self.tx.push(parse_target(&value, "tx")?),
            "--ingestion" => self.ingestion = Some(parse_target(&value, "ingestion")?),
            "--olap" => self.olap = Some(parse_target(&value, "olap")?),
            "--clock" => self.clock.push(parse_target(&value, "clock")?),
            "--olap.data-dir" => self.data_dir = Some(PathBuf::from(value)),
            "--olap.max-fill" => self.max_fill = parse_size(&value)?,
            "--clock.ntp-listen" => self.ntp = Some(loopback(&value, "--clock.ntp-listen")?),
            "--kafka.listen" => self.kafka = Some(loopback(&value, "--kafka.listen")?),
            _ => return Err(format!("unknown argument {flag:?} (see --help)")),
        }
        Ok(())
    }

    /// The run the flags describe: the scenario loaded, the seed and host defaulted.
    fn into_config(self) -> Result<Config, String> {
        let no_engine = self.tx.is_empty()
            && self.ingestion.is_none()
            && self.olap.is_none()
            && self.clock.is_empty()
            && self.kafka.is_none();
        if no_engine {
            return Err(
                "give at least one of --tx, --ingestion, --olap, --clock, --kafka.listen (see --help)"
                    .into(),
            );
        }
        let mut scenario = scenario::load(&self.scenario, self.dir.as_deref())?;
        if let (Some(f), Some(_)) = (self.fault_after, scenario.fault_after_s) {
            scenario.fault_after_s = Some(f.as_secs_f64());
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let host = self.host.unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "sim-node".into())
        });
        Ok(Config {
            scenario,
            duration: self.duration,
            tick: self.tick,
            seed,
            host,
            tx: self.tx,
            ingestion: self.ingestion,
            olap: self.olap,
            clock: self.clock,
            olap_data_dir: self.data_dir,
            max_fill: self.max_fill,
            ntp_listen: self.ntp,
            kafka_listen: self.kafka,
        })
    }
}

/// The flags that take a value.
const TAKES_VALUE: &[&str] = &[
    "--scenario",
    "--scenarios-dir",
    "--duration",
    "--fault-after",
    "--tick",
    "--seed",
    "--host",
    "--tx",
    "--ingestion",
    "--olap",
    "--clock",
    "--olap.data-dir",
    "--olap.max-fill",
    "--clock.ntp-listen",
    "--kafka.listen",
];

fn parse_args(args: &[String]) -> Result<Action, String> {
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(Action::Help);
        }
        if flag == "--list" {
            flags.list = true;
            continue;
        }
        if !TAKES_VALUE.contains(&flag.as_str()) {
            return Err(format!("unknown argument {arg:?} (see --help)"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))?;
                i += 1;
                v
            }
        };
        flags.set(&flag, value)?;
    }
    if flags.list {
        return Ok(Action::List(flags.dir));
    }
    Ok(Action::Run(Box::new(flags.into_config()?)))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("engine-sim: {e}");
            std::process::exit(2);
        }
    };
    match action {
        Action::Help => println!("{HELP}"),
        Action::List(dir) => match scenario::sources(dir.as_deref()) {
            Ok(all) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for (name, _) in all {
                    let line = match scenario::load(&name, dir.as_deref()) {
                        Ok(s) => format!(
                            "{name:<22} {}\n{:<22} expects: {}{}{}",
                            s.description,
                            "",
                            if s.expect.is_empty() {
                                "no alert".to_string()
                            } else {
                                s.expect.join(", ")
                            },
                            if s.sidecar_faults.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " (the harness plays sidecar faults {:?})",
                                    s.sidecar_faults
                                )
                            },
                            match &s.tiers {
                                Some(t) if t.is_empty() => "; engines: none (Kafka only)".into(),
                                Some(t) => format!("; engines: {}", t.join(", ")),
                                None => String::new(),
                            }
                        ),
                        Err(e) => format!("{name:<22} INVALID: {e}"),
                    };
                    // A closed pipe (`| head`) ends the listing quietly.
                    if writeln!(out, "{line}").is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                eprintln!("engine-sim: {e}");
                std::process::exit(2);
            }
        },
        Action::Run(cfg) => {
            let mut sim = match sim::Sim::new(*cfg) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("engine-sim: {e}");
                    std::process::exit(1);
                }
            };
            let s = sim.run();
            eprintln!(
                "engine-sim: done: {} events, {} StatsD datagrams ({} not delivered), {} SNTP answers",
                s.events, s.datagrams, s.send_errors, s.ntp_answered
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90").expect("d"), Duration::from_secs(90));
        assert_eq!(
            parse_duration("500ms").expect("d"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("5m").expect("d"), Duration::from_secs(300));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("64MiB").expect("s"), 64 << 20);
        assert_eq!(parse_size("100").expect("s"), 100);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn targets_must_be_loopback() {
        let t = parse_target(
            "statsd=127.0.0.1:8125,log=/tmp/x.log,engine=[::1]:7000",
            "tx",
        )
        .expect("target");
        assert_eq!(t.statsd, Some("127.0.0.1:8125".parse().expect("addr")));
        assert_eq!(t.log, Some(PathBuf::from("/tmp/x.log")));
        let err = parse_target("statsd=10.0.0.1:8125", "tx").expect_err("remote accepted");
        assert!(err.contains("loopback"), "{err}");
        assert!(parse_target("statsd=localhost:8125", "tx").is_err());
        assert!(parse_target("log=/tmp/c.log", "clock").is_err());
        assert!(parse_target("port=1", "tx").is_err());
    }

    #[test]
    fn run_needs_a_target_and_fault_after_overrides() {
        assert!(parse_args(&args(&["--scenario", "steady"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["--tx=statsd=127.0.0.1:1", "--scenario=nope"])).is_err());
        let Ok(Action::Run(cfg)) = parse_args(&args(&[
            "--tx=statsd=127.0.0.1:1",
            "--tx",
            "statsd=127.0.0.1:2",
            "--scenario=conflict-storm",
            "--fault-after=3s",
            "--duration=10s",
        ])) else {
            panic!("not a run");
        };
        assert_eq!(cfg.tx.len(), 2);
        assert_eq!(cfg.scenario.fault_after_s, Some(3.0));
        assert_eq!(cfg.duration, Duration::from_secs(10));
        // A scenario without a fault phase stays without one.
        let Ok(Action::Run(cfg)) = parse_args(&args(&[
            "--olap=statsd=127.0.0.1:1",
            "--scenario=compaction-stalled",
            "--fault-after=3s",
        ])) else {
            panic!("not a run");
        };
        assert_eq!(cfg.scenario.fault_after_s, None);
    }

    /// Every flag said to take a value is one `Flags::set` knows: a bad value gets that
    /// flag's own complaint, never "unknown argument".
    #[test]
    fn every_flag_that_takes_a_value_is_set() {
        for flag in TAKES_VALUE {
            let mut flags = Flags::default();
            let said = flags.set(flag, "\u{1}bad".into());
            assert!(
                said.as_ref()
                    .err()
                    .is_none_or(|e| !e.contains("unknown argument")),
                "{flag}: {said:?}"
            );
        }
    }
}
