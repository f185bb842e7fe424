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

struct TxEngine {
    io: Io,
    server_id: String,
    cache_size: WalkState,
    active: WalkState,
    idle: WalkState,
    queue: WalkState,
    lag: WalkState,
    uncertainty: WalkState,
    offset: WalkState,
    hits: u64,
    misses: u64,
}

struct IngestionEngine {
    io: Io,
    merge_queue: WalkState,
    push_queue: WalkState,
    push_lag: WalkState,
    lag_by_source: Vec<WalkState>,
}

struct OlapEngine {
    io: Io,
    running: WalkState,
    cache_size: WalkState,
    rows: WalkState,
    compression: WalkState,
    partitions: WalkState,
    hits: u64,
    misses: u64,
    bytes_written: u64,
    pending_write: f64,
    data: Option<DataDir>,
    started: bool,
}

struct ClockEngine {
    io: Io,
    clients: WalkState,
    heartbeats: u64,
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
            .map(|(i, t)| {
                Ok(TxEngine {
                    io: Io::new(t, "tx-engine")?,
                    server_id: format!("tx-{}", i + 1),
                    cache_size: WalkState::new(&p.tx.cache_size_bytes),
                    active: WalkState::new(&p.tx.connections_active),
                    idle: WalkState::new(&p.tx.connections_idle),
                    queue: WalkState::new(&p.tx.replication_queue_depth),
                    lag: WalkState::new(&p.tx.replication_lag_s),
                    uncertainty: WalkState::new(&p.tx.clock_uncertainty_s),
                    offset: WalkState::new(&p.tx.clock_offset_s),
                    hits: 0,
                    misses: 0,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let sources = cfg.tx.len().max(1);
        let ingestion = cfg
            .ingestion
            .as_ref()
            .map(|t| {
                Ok::<_, std::io::Error>(IngestionEngine {
                    io: Io::new(t, "ingestion")?,
                    merge_queue: WalkState::new(&p.ingestion.merge_queue_depth),
                    push_queue: WalkState::new(&p.ingestion.olap_push_queue_depth),
                    push_lag: WalkState::new(&p.ingestion.olap_push_lag_s),
                    lag_by_source: (0..sources)
                        .map(|_| WalkState::new(&p.ingestion.lag_by_source_s))
                        .collect(),
                })
            })
            .transpose()?;
        let olap = cfg
            .olap
            .as_ref()
            .map(|t| {
                Ok::<_, std::io::Error>(OlapEngine {
                    io: Io::new(t, "olap")?,
                    running: WalkState::new(&p.olap.compactions_running),
                    cache_size: WalkState::new(&p.olap.cache_size_bytes),
                    rows: WalkState::new(&p.olap.total_rows),
                    compression: WalkState::new(&p.olap.compression_ratio),
                    partitions: WalkState::new(&p.olap.partitions),
                    hits: 0,
                    misses: 0,
                    bytes_written: 0,
                    pending_write: 0.0,
                    data: cfg
                        .olap_data_dir
                        .as_deref()
                        .map(|d| DataDir::new(d, cfg.max_fill))
                        .transpose()?,
                    started: false,
                })
            })
            .transpose()?;
        let clock = cfg
            .clock
            .iter()
            .map(|t| {
                Ok::<_, std::io::Error>(ClockEngine {
                    io: Io::new(t, "clock-master")?,
                    clients: WalkState::new(&p.clock.clients_connected),
                    heartbeats: 0,
                })
            })
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

    fn tick_tx(&mut self, p: &Params, dt: f64, flush: bool) {
        let c = &p.tx;
        let host = self.cfg.host.clone();
        let rng = &mut self.rng;
        for e in &mut self.tx {
            if let Some(n) = e.io.set_up(c.up) {
                say(&n);
            }
            // Walks move whether or not the engine is up, so a restart resumes plausibly.
            let cache_size = e.cache_size.step(&c.cache_size_bytes, dt, rng);
            let active = e.active.step(&c.connections_active, dt, rng);
            let idle = e.idle.step(&c.connections_idle, dt, rng);
            let queue = e.queue.step(&c.replication_queue_depth, dt, rng);
            let lag = e.lag.step(&c.replication_lag_s, dt, rng);
            let unc = e.uncertainty.step(&c.clock_uncertainty_s, dt, rng);
            let offset = e.offset.step(&c.clock_offset_s, dt, rng);
            if !c.up || !c.pushes {
                continue;
            }
            for _ in 0..rng.poisson(c.transactions_per_s * dt) {
                let rolled_back = rng.chance(c.rollback_ratio);
                let (name, level) = if rolled_back {
                    ("transaction_rolled_back", "warn")
                } else {
                    ("transaction_committed", "info")
                };
                let mut ev = e.io.event(name, level, &host, &e.server_id);
                ev.num_field("duration_ms", latency(rng, &c.transaction_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.queries_per_s * dt) {
                let mut ev = e.io.event("query_executed", "debug", &host, &e.server_id);
                ev.num_field("duration_ms", latency(rng, &c.query_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.heartbeats_missed_per_s * dt) {
                let ev =
                    e.io.event("clock_heartbeat_missed", "warn", &host, &e.server_id);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.replication_batches_per_s * dt) {
                let per_batch = c.transactions_per_s * 3.0 / c.replication_batches_per_s.max(0.1);
                let count = rng.poisson(per_batch).max(1);
                let mut ev =
                    e.io.event("replication_events_sent", "debug", &host, &e.server_id);
                ev.num_field("count", count as f64);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.cache_lookups_per_s * dt) {
                if rng.chance(c.cache_hit_ratio) {
                    e.hits += 1;
                } else {
                    e.misses += 1;
                }
            }
            e.io.flush_log();
            if let (true, Some(st)) = (flush, &mut e.io.statsd) {
                st.counter("tx_engine_cache_hits_total", std::mem::take(&mut e.hits));
                st.counter(
                    "tx_engine_cache_misses_total",
                    std::mem::take(&mut e.misses),
                );
                st.gauge("tx_engine_cache_size_bytes", cache_size.round(), "");
                st.gauge("tx_engine_connections_active", active.round(), "");
                st.gauge("tx_engine_connections_idle", idle.round(), "");
                st.gauge("tx_engine_replication_queue_depth", queue.round(), "");
                st.gauge("tx_engine_replication_lag_seconds", lag, "");
                st.gauge("tx_engine_clock_uncertainty_seconds", unc, "");
                st.gauge("tx_engine_clock_offset_seconds", offset, "");
                st.flush();
            }
        }
    }

    fn tick_ingestion(&mut self, p: &Params, dt: f64, flush: bool) {
        let Some(e) = &mut self.ingestion else { return };
        let c = &p.ingestion;
        let rng = &mut self.rng;
        let host = &self.cfg.host;
        if let Some(n) = e.io.set_up(c.up) {
            say(&n);
        }
        let merge_queue = e.merge_queue.step(&c.merge_queue_depth, dt, rng);
        let push_queue = e.push_queue.step(&c.olap_push_queue_depth, dt, rng);
        let push_lag = e.push_lag.step(&c.olap_push_lag_s, dt, rng);
        let lags: Vec<f64> = e
            .lag_by_source
            .iter_mut()
            .map(|w| w.step(&c.lag_by_source_s, dt, rng))
            .collect();
        if !c.up {
            return;
        }
        // Change events come from the TX engines: none arrive from an engine that is down.
        let sources = if self.cfg.tx.is_empty() || p.tx.up {
            self.cfg.tx.len().max(1)
        } else {
            0
        };
        let rate = if sources == 0 { 0.0 } else { c.events_per_s };
        let self_id = "ingestion-1";
        for _ in 0..rng.poisson(rate * dt) {
            let source = format!("tx-{}", rng.below(sources) + 1);
            // The contract reads the change's origin from server_id on this event.
            let ev = e.io.event("event_received", "debug", host, &source);
            e.io.push(ev);
            if rng.chance(c.validation_failure_ratio) {
                let ev = e.io.event("validation_failed", "warn", host, self_id);
                e.io.push(ev);
                continue;
            }
            if rng.chance(c.duplicate_ratio) {
                let ev = e.io.event("duplicate_skipped", "debug", host, self_id);
                e.io.push(ev);
                continue;
            }
            if rng.chance(c.conflict_ratio) {
                let ev = e.io.event("conflict_detected", "warn", host, self_id);
                e.io.push(ev);
                if rng.chance(c.conflict_resolved_ratio) {
                    let ev = e.io.event("conflict_resolved", "info", host, self_id);
                    e.io.push(ev);
                }
            }
            if rng.chance(c.failure_ratio) {
                let ev = e.io.event("event_failed", "error", host, self_id);
                e.io.push(ev);
            } else {
                let mut ev = e.io.event("event_processed", "debug", host, self_id);
                ev.num_field("duration_ms", latency(rng, &c.processing_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
        }
        for _ in 0..rng.poisson(c.olap_batches_per_s * dt) {
            let mut ev = e.io.event("olap_batch_pushed", "info", host, self_id);
            ev.num_field("duration_ms", latency(rng, &c.olap_push_ms));
            traced(&mut ev, rng, p.trace_ratio);
            e.io.push(ev);
        }
        e.io.flush_log();
        if let (true, Some(st)) = (flush, &mut e.io.statsd) {
            st.gauge("ingestion_merge_queue_depth", merge_queue.round(), "");
            st.gauge("ingestion_olap_push_queue_depth", push_queue.round(), "");
            st.gauge("ingestion_olap_push_lag_seconds", push_lag, "");
            for (i, lag) in lags.iter().enumerate() {
                let tags = format!("server_id:tx-{}", i + 1);
                st.gauge("ingestion_lag_by_source_seconds", *lag, &tags);
            }
            st.flush();
        }
    }

    fn tick_olap(&mut self, p: &Params, dt: f64, flush: bool) {
        let Some(e) = &mut self.olap else { return };
        let c = &p.olap;
        let rng = &mut self.rng;
        let host = &self.cfg.host;
        let self_id = "olap-1";
        if let Some(n) = e.io.set_up(c.up) {
            say(&n);
        }
        let running = e.running.step(&c.compactions_running, dt, rng).round();
        let cache_size = e.cache_size.step(&c.cache_size_bytes, dt, rng);
        let rows = e.rows.step(&c.total_rows, dt, rng).round();
        let compression = e.compression.step(&c.compression_ratio, dt, rng);
        let partitions = e.partitions.step(&c.partitions, dt, rng).round();
        if let Some(d) = &mut e.data {
            if let Some(msg) = d.maintain_fill(c.fill_ratio) {
                say(&msg);
            }
        }
        if !c.up {
            return;
        }
        if !e.started {
            // The engine's log starts with its most recent compaction.
            e.started = true;
            let at = SystemTime::now() - Duration::from_secs_f64(c.last_compaction_age_s.max(0.0));
            let mut ev = Event::new("compaction_completed", at, "info", "olap", host);
            ev.str_field("server_id", self_id)
                .num_field("duration_ms", latency(rng, &c.compaction_ms))
                .num_field(
                    "bytes",
                    rng.lognormal(c.compaction_bytes.median, c.compaction_bytes.sigma)
                        .round(),
                );
            e.io.push(ev);
        }
        for _ in 0..rng.poisson(c.queries_per_s * dt) {
            let duration = latency(rng, &c.query_ms);
            if rng.chance(c.query_failure_ratio) {
                let mut ev = e.io.event("query_failed", "error", host, self_id);
                ev.num_field("duration_ms", duration);
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
                continue;
            }
            let mut ev = e.io.event("query_completed", "info", host, self_id);
            // Slower queries read more: about 200 MB/s of scan.
            ev.num_field("duration_ms", duration)
                .num_field("bytes_read", (duration * 2.0e5).round())
                .num_field("partitions_pruned", rng.poisson(partitions * 0.8) as f64)
                .num_field("columns_pruned", rng.poisson(12.0) as f64);
            traced(&mut ev, rng, p.trace_ratio);
            e.io.push(ev);
        }
        for _ in 0..rng.poisson(c.compactions_per_s * dt) {
            let mut ev = e.io.event("compaction_completed", "info", host, self_id);
            ev.num_field("duration_ms", latency(rng, &c.compaction_ms))
                .num_field(
                    "bytes",
                    rng.lognormal(c.compaction_bytes.median, c.compaction_bytes.sigma)
                        .round(),
                );
            e.io.push(ev);
        }
        for _ in 0..rng.poisson(c.cache_lookups_per_s * dt) {
            if rng.chance(c.cache_hit_ratio) {
                e.hits += 1;
            } else {
                e.misses += 1;
            }
        }
        e.pending_write += c.write_bytes_per_s * dt;
        if flush {
            let bytes = e.pending_write as u64;
            e.pending_write -= bytes as f64;
            e.bytes_written += match &mut e.data {
                Some(d) => d.write(bytes),
                None => bytes,
            };
        }
        e.io.flush_log();
        if let (true, Some(st)) = (flush, &mut e.io.statsd) {
            let uncompressed = (rows * c.bytes_per_row).round();
            st.gauge("olap_total_rows", rows, "");
            st.gauge("olap_total_bytes_uncompressed", uncompressed, "");
            st.gauge(
                "olap_total_bytes_compressed",
                (uncompressed / compression.max(1.0)).round(),
                "",
            );
            st.gauge("olap_partitions", partitions, "");
            st.gauge(
                "olap_partitions_active",
                (partitions * c.partitions_active_share).round(),
                "",
            );
            st.gauge(
                "olap_partitions_cold",
                (partitions * c.partitions_cold_share).round(),
                "",
            );
            st.gauge("olap_compactions_running", running, "");
            st.gauge("olap_cache_size_bytes", cache_size.round(), "");
            st.counter("olap_cache_hits_total", std::mem::take(&mut e.hits));
            st.counter("olap_cache_misses_total", std::mem::take(&mut e.misses));
            st.counter(
                "olap_bytes_written_total",
                std::mem::take(&mut e.bytes_written),
            );
            st.flush();
        }
    }

    fn tick_clock(&mut self, p: &Params, dt: f64, flush: bool) {
        let c = &p.clock;
        if let Some(n) = &self.ntp {
            n.serving.store(c.up && c.serve_ntp, Ordering::Relaxed);
        }
        let rng = &mut self.rng;
        for (i, e) in self.clock.iter_mut().enumerate() {
            if let Some(n) = e.io.set_up(c.up) {
                say(&n);
            }
            let clients = e.clients.step(&c.clients_connected, dt, rng).round();
            if !c.up {
                continue;
            }
            // A standby serves no clients and sends no heartbeats until it is made primary.
            let primary = i == c.primary;
            if primary {
                e.heartbeats += rng.poisson(c.heartbeats_per_s * dt);
            }
            if let (true, Some(st)) = (flush, &mut e.io.statsd) {
                st.counter(
                    "clock_master_heartbeats_sent_total",
                    std::mem::take(&mut e.heartbeats),
                );
                st.gauge("clock_master_primary", if primary { 1.0 } else { 0.0 }, "");
                st.gauge(
                    "clock_master_clients_connected",
                    if primary { clients } else { 0.0 },
                    "",
                );
                st.flush();
            }
        }
    }
}
