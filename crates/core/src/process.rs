//! The exporter's own process metrics, read from /proc at scrape time (as linkerd2-proxy does)
//! so they cost nothing between scrapes. Standard client-library names, unprefixed.

use std::fs;
use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// (name, type, help) of every metric this collector writes, for docs/metrics.md.
pub const PROCESS_METRICS: &[(&str, &str, &str)] = &[
    (
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent by the exporter",
    ),
    (
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the exporter",
    ),
    (
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory of the exporter",
    ),
    (
        "process_open_fds",
        "gauge",
        "File descriptors open by the exporter",
    ),
    (
        "process_max_fds",
        "gauge",
        "Limit on the exporter's open file descriptors",
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the exporter since the Unix epoch",
    ),
];

/// Snapshot of /proc/self.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
}

/// Parses /proc/<pid>/stat. Fields after the parenthesised command name are space separated;
/// the name itself may contain spaces and parentheses, so split at the last ')'.
pub fn parse_stat(
    stat: &str,
    ticks_per_second: f64,
    page_size: f64,
    boot_time: f64,
) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, so index 11.
    let num = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some(ProcStat {
        cpu_seconds: (num(11)? + num(12)?) / ticks_per_second,
        start_time_seconds: boot_time + num(19)? / ticks_per_second,
        virtual_bytes: num(20)?,
        resident_bytes: num(21)? * page_size,
    })
}

/// Reads the process stat of `pid` ("self" for this process).
pub fn read_stat(pid: &str) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ticks, page, boot) = system_constants();
    parse_stat(&stat, ticks, page, boot)
}

fn system_constants() -> (f64, f64, f64) {
    static CONSTANTS: OnceLock<(f64, f64, f64)> = OnceLock::new();
    *CONSTANTS.get_or_init(|| {
        // SAFETY: sysconf only reads configuration values.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        (
            if ticks > 0 { ticks as f64 } else { 100.0 },
            if page > 0 { page as f64 } else { 4096.0 },
            boot,
        )
    })
}

fn open_fds() -> Option<f64> {
    Some(fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

fn max_fds() -> Option<f64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = read_stat("self") else {
            return Ok(());
        };
        let counter = ConstCounter::new(stat.cpu_seconds);
        let e = encoder.encode_descriptor(
            "process_cpu",
            PROCESS_METRICS[0].2,
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        counter.encode(e)?;
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, v: f64| {
            let e = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
            ConstGauge::new(v).encode(e)
        };
        gauge(
            "process_resident_memory",
            PROCESS_METRICS[1].2,
            Some(&Unit::Bytes),
            stat.resident_bytes,
        )?;
        gauge(
            "process_virtual_memory",
            PROCESS_METRICS[2].2,
            Some(&Unit::Bytes),
            stat.virtual_bytes,
        )?;
        if let Some(fds) = open_fds() {
            gauge("process_open_fds", PROCESS_METRICS[3].2, None, fds)?;
        }
        if let Some(max) = max_fds() {
            gauge("process_max_fds", PROCESS_METRICS[4].2, None, max)?;
        }
        gauge(
            "process_start_time",
            PROCESS_METRICS[5].2,
            Some(&Unit::Seconds),
            stat.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 \
                    1000 123456789 300 18446744073709551615";
        let s = parse_stat(stat, 100.0, 4096.0, 1_700_000_000.0).expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789.0);
        assert_eq!(s.resident_bytes, 300.0 * 4096.0);
    }

    #[test]
    fn reads_own_process() {
        let s = read_stat("self").expect("/proc/self/stat");
        assert!(s.resident_bytes > 0.0);
        assert!(s.start_time_seconds > 1_600_000_000.0);
    }
}
