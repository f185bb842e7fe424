//! Load generator behind `scripts/bench-ingest.sh`: pushes StatsD over loopback UDP and
//! appends JSON events to a followed log, then reads the exporter's own counters and its CPU
//! time from /proc to report lines/s and events/s per core of exporter CPU, and its RSS.
//!
//! `ingest_load inproc` measures the parser + mapper alone, without sockets or files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use exporter_core::ingest::events::EventMapper;
use exporter_core::ingest::statsd::StatsdMapper;
use exporter_core::ingest::tally::Tally;
use exporter_core::{Limits, Metrics, Schema};

const SCHEMA: &str = include_str!("../../tx-exporter/schema.toml");

/// Metrics the tx engine feeds by StatsD (transactions and latencies come as events, and a
/// StatsD sample for them is refused as wrong_channel): counters, gauges, deltas and a tag.
const LINES: &[&str] = &[
    "tx_engine_cache_hits:3|c",
    "tx_engine_cache_misses_total:1|c",
    "tx_engine_cache_size_bytes:1048576|g",
    "tx_engine_connections_active:+1|g",
    "tx_engine_connections_idle:4|g",
    "tx_engine_replication_queue_depth:17|g|#env:prod",
    "tx_engine_replication_lag_seconds:0.25|g",
    "tx_engine_clock_offset_seconds:0.0001|g",
];

fn datagram(lines_per: usize) -> Vec<u8> {
    let mut d = Vec::new();
    for i in 0..lines_per {
        d.extend_from_slice(LINES[i % LINES.len()].as_bytes());
        d.push(b'\n');
    }
    d
}

fn event(i: u64) -> String {
    match i % 4 {
        0 | 1 => format!("{{\"timestamp\":\"2026-11-21T10:00:00Z\",\"level\":\"info\",\"component\":\"txn\",\"event\":\"transaction_committed\",\"duration_ms\":{},\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}}\n", i % 50),
        2 => format!("{{\"timestamp\":\"2026-11-21T10:00:00Z\",\"level\":\"info\",\"event\":\"query_executed\",\"duration_ms\":{}}}\n", i % 7),
        _ => "{\"timestamp\":\"2026-11-21T10:00:00Z\",\"event\":\"replication_events_sent\",\"count\":3}\n".to_owned(),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("count") {
        // `count statsd|statsd-plain|events N`: exactly N lines, for an instruction counter
        // (callgrind).
        let n = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        return count(args.get(2).map_or("events", String::as_str), n);
    }
    if args.get(1).map(String::as_str) == Some("inproc") {
        // `inproc statsd` or `inproc events` runs one path alone (for a profiler).
        return inproc(args.get(2).map(String::as_str));
    }
    let statsd: SocketAddr = arg(&args, "statsd")
        .expect("--statsd=ADDR")
        .parse()
        .unwrap();
    let web: SocketAddr = arg(&args, "web").expect("--web=ADDR").parse().unwrap();
    let log = arg(&args, "log").expect("--log=PATH");
    let pid: u32 = arg(&args, "pid").expect("--pid=PID").parse().unwrap();
    let seconds: f64 = arg(&args, "seconds").map_or(5.0, |s| s.parse().unwrap());
    let events: u64 = arg(&args, "events").map_or(1_000_000, |s| s.parse().unwrap());
    let lines_per: usize = arg(&args, "lines-per-datagram").map_or(20, |s| s.parse().unwrap());
    statsd_flood(statsd, web, pid, seconds, lines_per);
    events_backlog(web, &log, pid, events);
    println!("exporter RSS at end: {:.1} MiB", rss_kib(pid) / 1024.0);
}

/// StatsD: one sender thread at full speed for `seconds`.
fn statsd_flood(statsd: SocketAddr, web: SocketAddr, pid: u32, seconds: f64, lines_per: usize) {
    let metric = |name: &str| scrape(web, name);
    let lines0 = metric("tx_exporter_statsd_lines_total{listener=\"udp\"}");
    let cpu0 = cpu_seconds(pid);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = datagram(lines_per);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            // ENOBUFS under pressure is expected; the kernel-drop counter tells the rest.
            if sock.send_to(&d, statsd).is_ok() {
                sent += lines_per as u64;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(400));
    let wall = start.elapsed().as_secs_f64() - 0.4;
    let cpu = cpu_seconds(pid) - cpu0;
    let lines = metric("tx_exporter_statsd_lines_total{listener=\"udp\"}") - lines0;
    let dropped = metric("tx_exporter_statsd_udp_dropped_total") * lines_per as f64;
    println!("statsd: sent {sent} lines in {wall:.1} s, exporter processed {lines:.0} ({:.0} lines/s wall), kernel dropped ~{dropped:.0} lines",
        lines / wall);
    println!(
        "statsd: exporter CPU {cpu:.2} s -> {:.0} lines/s per core",
        lines / cpu
    );
}

/// Events: append `events` lines, time until the follower has read them all.
fn events_backlog(web: SocketAddr, log: &str, pid: u32, events: u64) {
    let metric = |name: &str| scrape(web, name);
    let read_series = format!("tx_exporter_log_lines_read_total{{path=\"{log}\"}}");
    let read0 = metric(&read_series);
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut buf = String::with_capacity(1 << 20);
        for i in 0..events {
            buf.push_str(&event(i));
            if buf.len() > (1 << 20) - 512 {
                f.write_all(buf.as_bytes()).unwrap();
                buf.clear();
            }
        }
        f.write_all(buf.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(&read_series) - read0 < events as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let read = metric(&read_series) - read0;
    let rejected =
        metric("tx_exporter_ingest_rejected_total{source=\"events\",reason=\"malformed_json\"}");
    println!("events: {read:.0} of {events} read in {wall:.1} s ({:.0} events/s wall), {rejected:.0} rejected",
        read / wall);
    println!(
        "events: exporter CPU {cpu:.2} s -> {:.0} events/s per core",
        read / cpu
    );
}

/// Parser + mapper alone, single thread.
fn inproc(only: Option<&str>) {
    let schema = Schema::parse(SCHEMA).unwrap();
    let metrics = Metrics::new(&schema, Limits::default()).unwrap();
    if only != Some("events") {
        inproc_statsd(&schema, &metrics);
    }
    if only != Some("statsd") {
        inproc_events(&schema, &metrics);
    }
}

fn count(path: &str, n: u64) {
    let schema = Schema::parse(SCHEMA).unwrap();
    let metrics = Metrics::new(&schema, Limits::default()).unwrap();
    if path == "statsd" || path == "statsd-plain" {
        let mapper = StatsdMapper::new(&metrics, &schema).unwrap();
        // statsd-plain: the benchmark's datagram, ten `tx_engine_cache_hits:1|c` lines.
        let d = if path == "statsd" {
            datagram(20)
        } else {
            "tx_engine_cache_hits:1|c\n".repeat(10).into_bytes()
        };
        let mut tally = Tally::default();
        let mut lines = 0;
        while lines < n {
            lines += mapper.apply_datagram(&d, &mut tally);
        }
        println!("{lines} statsd lines");
    } else {
        let events = EventMapper::new(&metrics, &schema).unwrap();
        let mut tally = Tally::default();
        let lines: Vec<String> = (0..1000).map(event).collect();
        for i in 0..n {
            events.apply_line(lines[(i % 1000) as usize].trim_end().as_bytes(), &mut tally);
        }
        println!("{n} events");
    }
}

fn inproc_statsd(schema: &Schema, metrics: &Metrics) {
    let mapper = StatsdMapper::new(metrics, schema).unwrap();
    let d = datagram(20);
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut lines = 0;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..1000 {
            lines += mapper.apply_datagram(&d, &mut tally);
        }
    }
    println!(
        "in-process statsd parse+apply: {:.0} lines/s on one core",
        lines as f64 / start.elapsed().as_secs_f64()
    );
}

fn inproc_events(schema: &Schema, metrics: &Metrics) {
    let events = EventMapper::new(metrics, schema).unwrap();
    let mut event_tally = Tally::default();
    let lines_ev: Vec<String> = (0..1000).map(event).collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for l in &lines_ev {
            events.apply_line(l.trim_end().as_bytes(), &mut event_tally);
            n += 1;
        }
    }
    println!(
        "in-process event parse+apply: {:.0} events/s on one core",
        n as f64 / start.elapsed().as_secs_f64()
    );
}

/// A sample's value from the exporter's text exposition (0 when absent).
fn scrape(web: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect(web).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {web}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
