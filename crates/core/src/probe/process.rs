//! Process measurements through sysinfo: the exporter's own process metrics, read at scrape
//! time so they cost nothing between scrapes (standard client-library names, unprefixed), and
//! the reader the engine probe uses for the engine's process.

use std::path::Path;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

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

/// What is measured of one process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    /// Whole seconds since the Unix epoch: also what tells a recycled pid apart.
    pub start_time_seconds: f64,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

/// Reads processes through sysinfo, keeping one `System` so repeated reads of the same pid
/// reuse its open /proc handles.
pub struct ProcessReader(Mutex<Option<System>>);

impl ProcessReader {
    pub const fn new() -> ProcessReader {
        ProcessReader(Mutex::new(None))
    }

    /// Memory, CPU time and start time of `pid`; None when it does not exist.
    pub fn read(&self, pid: u32) -> Option<ProcStat> {
        self.read_with(pid, false)
    }

    /// Like [`ProcessReader::read`], plus open files and their limit (a directory listing
    /// and a file read more).
    pub fn read_with_files(&self, pid: u32) -> Option<ProcStat> {
        self.read_with(pid, true)
    }

    fn read_with(&self, pid: u32, files: bool) -> Option<ProcStat> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = System::new().ok();
        }
        let system = guard.as_mut()?;
        let pid = Pid::from_u32(pid);
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_memory()
                .with_cpu(),
        );
        let p = system.process(pid)?;
        // An engine that exited but was not reaped still has its /proc entry; it is not
        // running, and must not count as up.
        if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
            return None;
        }
        Some(ProcStat {
            cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
            resident_bytes: p.memory() as f64,
            virtual_bytes: p.virtual_memory() as f64,
            start_time_seconds: p.start_time() as f64,
            open_fds: files.then(|| p.open_files()).flatten().map(|n| n as f64),
            max_fds: files
                .then(|| p.open_files_limit())
                .flatten()
                .map(|n| n as f64),
        })
    }
}

impl ProcessReader {
    /// The first process other than this one whose name (the kernel's 15-character command
    /// name) or argv[0]'s file name is `name`.
    /// The process table is read into a `System` of its own, dropped afterwards, so the
    /// reader keeps only the few processes it measures.
    pub fn find_by_name(&self, name: &str) -> Option<u32> {
        let mut system = System::new().ok()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_cmd(UpdateKind::OnlyIfNotSet),
        );
        let own = Pid::from_u32(std::process::id());
        let found = system
            .processes()
            .values()
            .filter(|p| p.pid() != own)
            .filter(|p| !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead))
            .find(|p| {
                p.name() == name
                    || p.cmd()
                        .first()
                        .and_then(|argv0| Path::new(argv0).file_name())
                        .is_some_and(|f| f == name)
            })
            .map(|p| p.pid().as_u32());
        found
    }
}

/// Whether process `pid` is called `name`: its kernel name (`comm`, cut at 15 bytes) or the
/// file name of its argv[0], as [`ProcessReader::find_by_name`] matches.
pub fn is_named(pid: u32, name: &str) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.trim_end_matches('\n');
    if !comm.is_empty() && (comm == name || (comm.len() == 15 && name.starts_with(comm))) {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|c| {
            let argv0 = c.split(|&b| b == 0).next()?.to_vec();
            let argv0 = String::from_utf8(argv0).ok()?;
            Path::new(&argv0)
                .file_name()
                .map(|f| f.to_string_lossy() == name)
        })
        .unwrap_or(false)
}

impl Default for ProcessReader {
    fn default() -> Self {
        ProcessReader::new()
    }
}

/// The exporter's own process.
fn own() -> Option<ProcStat> {
    static READER: ProcessReader = ProcessReader::new();
    READER.read_with_files(std::process::id())
}

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = own() else {
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
        if let Some(fds) = stat.open_fds {
            gauge("process_open_fds", PROCESS_METRICS[3].2, None, fds)?;
        }
        if let Some(max) = stat.max_fds {
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
    fn reads_own_process() {
        let s = own().expect("own process");
        assert!(s.resident_bytes > 0.0);
        assert!(s.virtual_bytes >= s.resident_bytes);
        assert!(s.start_time_seconds > 1_600_000_000.0);
        assert!(s.open_fds.is_some_and(|n| n >= 3.0), "{s:?}");
        assert!(
            s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap_or(0.0)),
            "{s:?}"
        );
    }

    #[test]
    fn cpu_time_grows_with_work_and_a_missing_pid_is_none() {
        let reader = ProcessReader::new();
        let before = reader.read(std::process::id()).expect("self").cpu_seconds;
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = reader.read(std::process::id()).expect("self").cpu_seconds;
        assert!(after - before >= 0.1, "{before} -> {after}");
        // Above any pid_max the kernel allows (4194304).
        assert!(reader.read(99_999_999).is_none());
    }

    #[test]
    fn an_exited_process_not_yet_reaped_is_none() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // `state` is the field after the parenthesised command name.
        while !std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ProcessReader::new().read(child.id()).is_none());
        child.wait().expect("reap");
    }
}
