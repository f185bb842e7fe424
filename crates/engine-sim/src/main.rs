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

fn parse_args(args: &[String]) -> Result<Action, String> {
    let mut scenario = scenario::BASE.to_string();
    let mut dir: Option<PathBuf> = None;
    let mut list = false;
    let mut duration = Duration::from_secs(600);
    let mut fault_after: Option<Duration> = None;
    let mut tick = Duration::from_millis(100);
    let mut seed: Option<u64> = None;
    let mut host: Option<String> = None;
    let (mut tx, mut ingestion, mut olap, mut clock) = (Vec::new(), None, None, Vec::new());
    let mut data_dir = None;
    let mut max_fill = 256u64 << 20;
    let mut ntp = None;
    let mut kafka = None;
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
            list = true;
            continue;
        }
        let mut value = || -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            let v = args
                .get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            i += 1;
            Ok(v)
        };
        match flag.as_str() {
            "--scenario" => scenario = value()?,
            "--scenarios-dir" => dir = Some(PathBuf::from(value()?)),
            "--duration" => duration = parse_duration(&value()?)?,
            "--fault-after" => fault_after = Some(parse_duration(&value()?)?),
            "--tick" => {
                tick = parse_duration(&value()?)?;
                if tick < Duration::from_millis(10) || tick > Duration::from_secs(5) {
                    return Err("--tick must be between 10ms and 5s".into());
                }
            }
            "--seed" => {
                let v = value()?;
                seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: {v:?} is not a number"))?,
                )
            }
            "--host" => host = Some(value()?),
            "--tx" => tx.push(parse_target(&value()?, "tx")?),
            "--ingestion" => ingestion = Some(parse_target(&value()?, "ingestion")?),
            "--olap" => olap = Some(parse_target(&value()?, "olap")?),
            "--clock" => clock.push(parse_target(&value()?, "clock")?),
            "--olap.data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--olap.max-fill" => max_fill = parse_size(&value()?)?,
            "--clock.ntp-listen" => ntp = Some(loopback(&value()?, "--clock.ntp-listen")?),
            "--kafka.listen" => kafka = Some(loopback(&value()?, "--kafka.listen")?),
            _ => return Err(format!("unknown argument {arg:?} (see --help)")),
        }
    }
    if list {
        return Ok(Action::List(dir));
    }
    if tx.is_empty() && ingestion.is_none() && olap.is_none() && clock.is_empty() && kafka.is_none()
    {
        return Err(
            "give at least one of --tx, --ingestion, --olap, --clock, --kafka.listen (see --help)"
                .into(),
        );
    }
    let mut scenario = scenario::load(&scenario, dir.as_deref())?;
    if let (Some(f), Some(_)) = (fault_after, scenario.fault_after_s) {
        scenario.fault_after_s = Some(f.as_secs_f64());
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let host = host.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sim-node".into())
    });
    Ok(Action::Run(Box::new(Config {
        scenario,
        duration,
        tick,
        seed,
        host,
        tx,
        ingestion,
        olap,
        clock,
        olap_data_dir: data_dir,
        max_fill,
        ntp_listen: ntp,
        kafka_listen: kafka,
    })))
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
}
