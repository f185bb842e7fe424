//! The simulation loop: every tick each tier's engine draws its events and gauge moves from
//! the scenario's distributions, appends the events to its log, and flushes StatsD twice a
//! second, as an engine's metrics client would.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::kafka::KafkaBroker;
use crate::ntp::NtpServer;
use crate::out::{Event, EventLog, Statsd};
use crate::rng::Rng;
use crate::scenario::{Latency, Params, Scenario};
use crate::storage::DataDir;
use crate::walk::WalkState;

mod clock;
mod ingestion;
mod olap;
mod tx;

use self::clock::ClockEngine;
use self::ingestion::IngestionEngine;
use self::olap::OlapEngine;
use self::tx::TxEngine;

/// Where one engine's output goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub statsd: Option<SocketAddr>,
    pub log: Option<PathBuf>,
    /// The engine's own port: the simulator listens there while the engine is up, so the
    /// sidecar's `--engine.address` probe finds this process and can connect.
    pub engine: Option<SocketAddr>,
}

pub struct Config {
    pub scenario: Scenario,
    pub duration: Duration,
    pub tick: Duration,
    pub seed: u64,
    pub host: String,
    pub tx: Vec<Target>,
    pub ingestion: Option<Target>,
    pub olap: Option<Target>,
    /// One or more clock masters: the primary (`[clock] primary`, an index) and standbys.
    pub clock: Vec<Target>,
    pub olap_data_dir: Option<PathBuf>,
    pub max_fill: u64,
    pub ntp_listen: Option<SocketAddr>,
    pub kafka_listen: Option<SocketAddr>,
}

const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The I/O every engine has: StatsD, event log, engine port.
struct Io {
    statsd: Option<Statsd>,
    log: Option<EventLog>,
    engine: Option<SocketAddr>,
    listener: Option<TcpListener>,
    component: &'static str,
}

impl Io {
    fn new(t: &Target, component: &'static str) -> std::io::Result<Io> {
        Ok(Io {
            statsd: t.statsd.map(Statsd::new).transpose()?,
            log: t.log.as_deref().map(EventLog::new),
            engine: t.engine,
            listener: None,
            component,
        })
    }

    /// Opens or closes the engine port and accepts (then drops) pending connections.
    fn set_up(&mut self, up: bool) -> Option<String> {
        let mut note = None;
        match (up, &self.listener, self.engine) {
            (true, None, Some(addr)) => match TcpListener::bind(addr) {
                Ok(l) => {
                    let _ = l.set_nonblocking(true);
                    self.listener = Some(l);
                }
                Err(e) => note = Some(format!("{}: cannot listen on {addr}: {e}", self.component)),
            },
            (false, Some(_), _) => self.listener = None,
            _ => {}
        }
        if let Some(l) = &self.listener {
            while let Ok((s, _)) = l.accept() {
                drop(s);
            }
        }
        note
    }

    fn event(&self, name: &str, level: &str, host: &str, server_id: &str) -> Event {
        let mut e = Event::new(name, SystemTime::now(), level, self.component, host);
        e.str_field("server_id", server_id);
        e
    }

    fn push(&mut self, e: Event) {
        if let Some(l) = &mut self.log {
            l.push(e.finish());
        }
    }

    fn flush_log(&mut self) {
        if let Some(l) = &mut self.log {
            l.flush();
        }
    }
}

fn latency(rng: &mut Rng, l: &Latency) -> f64 {
    // Millisecond durations with microsecond resolution, as engines log them.
    (rng.lognormal(l.median_ms, l.sigma) * 1000.0).round() / 1000.0
}

fn traced(e: &mut Event, rng: &mut Rng, ratio: f64) {
    if rng.chance(ratio) {
        let (t, s) = (rng.hex_id(16), rng.hex_id(8));
        e.str_field("trace_id", &t).str_field("span_id", &s);
    }
}

/// What the run did, for the closing summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub datagrams: u64,
    pub send_errors: u64,
    pub ntp_answered: u64,
}

pub struct Sim {
    cfg: Config,
    rng: Rng,
    tx: Vec<TxEngine>,
    ingestion: Option<IngestionEngine>,
    olap: Option<OlapEngine>,
    clock: Vec<ClockEngine>,
    ntp: Option<NtpServer>,
    kafka: Option<KafkaBroker>,
}

fn say(msg: &str) {
    eprintln!("engine-sim: {msg}");
}

impl Sim {
    pub fn new(cfg: Config) -> std::io::Result<Sim> {
        // The fixed SNTP port first, before the StatsD senders bind ephemeral ports.
        let ntp = cfg.ntp_listen.map(NtpServer::start).transpose()?;
        if let Some(n) = &ntp {
            say(&format!("serving SNTP on {}", n.addr));
        }
        let p = &cfg.scenario.before;
        let kafka = cfg
            .kafka_listen
            .map(|a| KafkaBroker::start(a, &p.kafka))
            .transpose()?;
        if let Some(k) = &kafka {
            say(&format!("serving Kafka's metrics on {}", k.addr));
        }
        let tx = cfg
            .tx
            .iter()
            .enumerate()
            .map(|(i, t)| TxEngine::new(i, t, p))
            .collect::<std::io::Result<Vec<_>>>()?;
        let sources = cfg.tx.len().max(1);
        let ingestion = cfg
            .ingestion
            .as_ref()
            .map(|t| IngestionEngine::new(t, p, sources))
            .transpose()?;
        let olap = cfg
            .olap
            .as_ref()
            .map(|t| OlapEngine::new(t, p, cfg.olap_data_dir.as_deref(), cfg.max_fill))
            .transpose()?;
        let clock = cfg
            .clock
            .iter()
            .map(|t| ClockEngine::new(t, p))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            tx,
            ingestion,
            olap,
            clock,
            ntp,
            kafka,
        })
    }

    pub fn run(&mut self) -> Summary {
        let start = Instant::now();
        let mut last_flush = Instant::now();
        let mut fault_on = false;
        say(&format!(
            "scenario {} ({}) for {:?}{}",
            self.cfg.scenario.name,
            self.cfg.scenario.description,
            self.cfg.duration,
            match self.cfg.scenario.fault_after_s {
                Some(s) => format!(", fault after {s}s"),
                None => String::new(),
            }
        ));
        let mut next = Instant::now();
        while start.elapsed() < self.cfg.duration {
            let t = start.elapsed().as_secs_f64();
            let fault = self.cfg.scenario.fault_after_s.is_some_and(|a| t >= a);
            if fault && !fault_on {
                fault_on = true;
                say(&format!("fault started at {t:.1}s"));
            }
            let params = if fault {
                self.cfg.scenario.after.clone()
            } else {
                self.cfg.scenario.before.clone()
            };
            let dt = self.cfg.tick.as_secs_f64();
            let flush = last_flush.elapsed() >= FLUSH_EVERY;
            self.tick_tx(&params, dt, flush);
            self.tick_ingestion(&params, dt, flush);
            self.tick_olap(&params, dt, flush);
            self.tick_clock(&params, dt, flush);
            if let Some(k) = &mut self.kafka {
                k.tick(&params.kafka, dt, &mut self.rng);
            }
            if flush {
                last_flush = Instant::now();
            }
            next += self.cfg.tick;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        let mut s = Summary::default();
        let ios = self
            .tx
            .iter_mut()
            .map(|e| &mut e.io)
            .chain(self.ingestion.as_mut().map(|e| &mut e.io))
            .chain(self.olap.as_mut().map(|e| &mut e.io))
            .chain(self.clock.iter_mut().map(|e| &mut e.io));
        for io in ios {
            io.flush_log();
            if let Some(st) = &mut io.statsd {
                st.flush();
                s.datagrams += st.sent_datagrams;
                s.send_errors += st.send_errors;
            }
            s.events += io.log.as_ref().map_or(0, |l| l.lines);
        }
        s.ntp_answered = self
            .ntp
            .as_ref()
            .map_or(0, |n| n.answered.load(Ordering::Relaxed));
        s
    }
}
