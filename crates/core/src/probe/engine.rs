//! The engine process beside the sidecar: found by pid file, process name or the address it
//! listens on, re-found when it restarts. Memory and CPU are read through sysinfo at scrape
//! time; finding the process and the TCP check run in the background so a scrape never waits
//! on them. Only the port → pid lookup reads /proc by hand (sysinfo has no socket table).

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::{ProcStat, ProcessReader};
use crate::budget::Worker;
use crate::config::{parse_listen_addr, EngineConfig};
use crate::metrics::{Gauge, Metrics, Total};
use crate::schema::SchemaError;

/// How often the process is looked up again and the address checked.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long a scrape waits for the engine's /proc entry (well under a millisecond when the
/// kernel answers).
pub const SCRAPE_READ_BUDGET: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
struct Found {
    pid: u32,
    /// Start time guards against a recycled pid.
    start_time: f64,
}

/// The CPU percentage is taken over this window, from readings taken every [`REFRESH`] by the
/// background loop, so any number of scrapers see the same value.
pub const CPU_WINDOW: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    found: Option<Found>,
    address_ok: bool,
    /// CPU-seconds readings of the found process, oldest first, spanning [`CPU_WINDOW`].
    cpu_readings: VecDeque<(Instant, f64)>,
}

impl State {
    /// Records a CPU reading and returns the percentage of one core over the window (None
    /// until two readings exist).
    fn cpu_percent(&mut self, now: Instant, cpu_seconds: f64) -> Option<f64> {
        self.cpu_readings.push_back((now, cpu_seconds));
        // Keep one reading at or before the window's start as the baseline.
        while self.cpu_readings.len() > 2
            && now.duration_since(self.cpu_readings[1].0) >= CPU_WINDOW
        {
            self.cpu_readings.pop_front();
        }
        let (then, before) = *self.cpu_readings.front()?;
        let elapsed = now.duration_since(then).as_secs_f64();
        (elapsed > 0.0).then(|| 100.0 * (cpu_seconds - before).max(0.0) / elapsed)
    }
}

/// Shared between the background finder and the scrape hook.
#[derive(Clone)]
pub struct EngineProbe {
    config: EngineConfig,
    address: Option<SocketAddr>,
    state: Arc<Mutex<State>>,
    /// The background look-up's reader.
    reader: Arc<ProcessReader>,
    /// The scrape's own, on a thread of its own with [`SCRAPE_READ_BUDGET`]: neither a
    /// background read nor its own read stuck in the kernel can make a scrape wait longer.
    scrape_reader: Arc<Worker<u32, Option<ProcStat>>>,
    memory: Gauge,
    cpu: Gauge,
    cpu_total: Total,
    up: Gauge,
}

impl EngineProbe {
    /// Resolves the engine-process metrics (`crates/core/engine_schema.toml`) and `engine_up`.
    pub fn new(config: &EngineConfig, metrics: &Metrics) -> Result<EngineProbe, SchemaError> {
        let prefix = &metrics.tier().metric_prefix;
        Ok(EngineProbe {
            address: config
                .address
                .as_deref()
                .and_then(|a| parse_listen_addr(a).ok()),
            config: config.clone(),
            state: Arc::default(),
            reader: Arc::default(),
            scrape_reader: Arc::new({
                let reader = ProcessReader::new();
                Worker::new("engine-scrape-read", SCRAPE_READ_BUDGET, move |pid| {
                    reader.read(pid)
                })
            }),
            memory: metrics.gauge(&format!("{prefix}memory_used_bytes"))?,
            cpu: metrics.gauge(&format!("{prefix}cpu_usage_percent"))?,
            cpu_total: metrics.total(&format!("{prefix}cpu_seconds_total"))?,
            up: metrics.own().engine_up.clone(),
        })
    }

    fn configured(&self) -> bool {
        self.config.pid_file.is_some()
            || self.config.process_name.is_some()
            || self.address.is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks the engine up and checks its address; blocking, run off the async workers.
    fn look(&self) -> Result<String, String> {
        let found = self.find();
        let address_ok = self
            .address
            .map(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).is_ok())
            .unwrap_or(true);
        let mut state = self.state();
        if state.found != found {
            state.cpu_readings.clear();
        }
        state.found = found;
        state.address_ok = address_ok;
        match (found, address_ok) {
            (Some(f), true) => Ok(format!("engine pid {}", f.pid)),
            (Some(f), false) => Err(format!(
                "engine pid {} does not accept connections on {}",
                f.pid,
                self.address.map(|a| a.to_string()).unwrap_or_default()
            )),
            (None, _) if !self.configured() => Err(
                "no engine configured (--engine.pid-file, --engine.process-name or --engine.address)"
                    .into(),
            ),
            (None, _) => Err("engine process not found".into()),
        }
    }

    fn find(&self) -> Option<Found> {
        // A name search walks the whole process table, a port search reads the kernel's TCP
        // tables too (with 63 processes: 0.05% and 0.12% of a core at one search per
        // REFRESH), so the engine found last time is kept while it lives; whether it still
        // listens is the connect in `refresh`. A pid file is cheap and read every time, so
        // a restart it records is seen at once.
        if self.config.pid_file.is_none() {
            let last = self.state().found;
            if let Some(f) = last.filter(|f| self.alive(f)) {
                return Some(f);
            }
        }
        let pid = if let Some(path) = &self.config.pid_file {
            // With a name too, the pid must be that process: a stale pid file may point at
            // whatever reused the number.
            pid_from_file(path).filter(|pid| {
                self.config
                    .process_name
                    .as_deref()
                    .is_none_or(|name| super::process::is_named(*pid, name))
            })
        } else if let Some(name) = &self.config.process_name {
            self.reader.find_by_name(name)
        } else if let Some(addr) = self.address {
            pid_by_listen_port(addr.port())
        } else {
            None
        }?;
        let stat = self.reader.read(pid)?;
        Some(Found {
            pid,
            start_time: stat.start_time_seconds,
        })
    }

    /// The process found last time still runs: the same start time, so the pid was not
    /// reused.
    fn alive(&self, found: &Found) -> bool {
        self.reader
            .read(found.pid)
            .is_some_and(|s| s.start_time_seconds == found.start_time)
    }

    /// Scrape-time update: fresh memory and CPU time, and engine_up.
    pub fn on_scrape(&self) {
        let found = self.state().found;
        // Read without the state lock: the background loop takes it too.
        let stat = found.and_then(|f| match self.scrape_reader.call(f.pid) {
            Ok(stat) => stat.filter(|s| s.start_time_seconds == f.start_time),
            Err(e) => {
                tracing::warn!(target: "probe", event = "engine_read_hung", pid = f.pid, "the engine's /proc entry {e}");
                None
            }
        });
        let mut state = self.state();
        if stat.is_none() && state.found.is_some() {
            // Gone, the pid recycled, or its /proc entry not answering: the background
            // refresh will look again.
            state.found = None;
            state.cpu_readings.clear();
            let _ = self.cpu.set_unknown(&[]);
        }
        let up = stat.is_some() && state.address_ok;
        let _ = self.up.set(&[], if up { 1.0 } else { 0.0 });
        match stat {
            Some(s) => {
                let _ = self.memory.set(&[], s.resident_bytes);
                let _ = self.cpu_total.set(s.cpu_seconds);
            }
            None => {
                let _ = self.memory.set_unknown(&[]);
                self.cpu_total.clear();
            }
        }
    }

    /// Background CPU reading: the percentage moves only here, every [`REFRESH`].
    fn sample_cpu(&self) {
        // The /proc read happens without the state lock, which scrapes take.
        let found = self.state().found;
        let stat = found.and_then(|f| {
            self.reader
                .read(f.pid)
                .filter(|s| s.start_time_seconds == f.start_time)
        });
        let mut state = self.state();
        match stat.and_then(|s| state.cpu_percent(Instant::now(), s.cpu_seconds)) {
            Some(pct) => {
                let _ = self.cpu.set(&[], pct);
            }
            None => {
                let _ = self.cpu.set_unknown(&[]);
            }
        }
    }
}

/// The background look-up: re-finds the engine and checks its address every [`REFRESH`], and
/// takes the CPU reading. A look that hangs (a /proc read of a process stuck in the kernel)
/// shows the source down after [`REFRESH`] and is waited for, never started twice.
impl super::Probe for EngineProbe {
    type Settings = EngineConfig;
    const SOURCE: &'static str = "engine";
    const INTERVAL: Duration = REFRESH;
    const BUDGET: Duration = REFRESH;

    /// Core's own `[engine]` section.
    fn settings(config: &crate::config::Config) -> EngineConfig {
        config.engine.clone()
    }

    fn bind(settings: &EngineConfig, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        Ok(vec![EngineProbe::new(settings, metrics)?])
    }

    fn refresh(&self) -> Result<String, String> {
        let span = tracing::info_span!(target: "probe", "engine.probe", configured = self.configured(), ok = tracing::field::Empty);
        let _in_span = span.enter();
        let r = self.look();
        self.sample_cpu();
        span.record("ok", r.is_ok());
        r
    }

    /// The CPU reading could not be taken; what a scrape reads stays its own.
    fn unknown(&self) {
        let _ = self.cpu.set_unknown(&[]);
    }
}

/// The pid a pid file holds. Only a regular file is read: a FIFO would block the read for
/// ever (a probe "starting" for good).
fn pid_from_file(path: &Path) -> Option<u32> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// The process holding a listening TCP socket on `port` (IPv4 or IPv6).
fn pid_by_listen_port(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    proc_pids().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
    })
}

/// Socket inodes in LISTEN state (0A) on `port` from a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            let listening = *f.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| f.get(9).map(|s| s.to_string()))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_sockets_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0\n";
        assert_eq!(listening_inodes(table, 8080), vec!["12345"]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn finds_own_listener_by_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(pid_by_listen_port(port), Some(std::process::id()));
    }
}
