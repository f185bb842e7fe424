//! Offset of a PTP hardware clock (/dev/ptpN) against the system clock.
//!
//! Uses the PTP_SYS_OFFSET ioctl (the driver interleaves system and PHC readings, we keep the
//! tightest pair), and falls back to clock_gettime on the device's dynamic clock id when the
//! ioctl is not supported. The device is opened read-only; nothing is adjusted.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;

use crate::samples::{error_factor, gauge, SourceMetrics, Target, Value};
use crate::settings::ClockSettings;

const PTP_MAX_SAMPLES: usize = 25;
const SAMPLES: u32 = 9;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PtpClockTime {
    sec: i64,
    nsec: u32,
    reserved: u32,
}

#[repr(C)]
struct PtpSysOffset {
    n_samples: u32,
    rsv: [u32; 3],
    ts: [PtpClockTime; 2 * PTP_MAX_SAMPLES + 1],
}

/// _IOW('=', 5, struct ptp_sys_offset), from linux/ptp_clock.h.
const PTP_SYS_OFFSET: libc::c_ulong = (1 << 30)
    | ((std::mem::size_of::<PtpSysOffset>() as libc::c_ulong) << 16)
    | ((b'=' as libc::c_ulong) << 8)
    | 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// System clock (CLOCK_REALTIME) minus the PHC, seconds. A PHC running on TAI while the
    /// system clock is UTC shows the TAI-UTC difference (37 s in 2026) here.
    pub offset_seconds: f64,
    /// Width of the system-clock window around the PHC read: the measurement's error bound.
    pub delay_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    NotFound(String),
    Open(String),
    Read(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Open(_) => "open",
            Error::Read(_) => "read",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(p) => write!(f, "PTP device {p} does not exist"),
            Error::Open(s) => write!(f, "open: {s}"),
            Error::Read(s) => write!(f, "read: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// Picks the tightest (system, PHC, system) triple.
fn best_of(ts: &[PtpClockTime], n: usize) -> Option<Sample> {
    (0..n)
        .filter_map(|i| {
            let (s1, p, s2) = (ts.get(2 * i)?, ts.get(2 * i + 1)?, ts.get(2 * i + 2)?);
            // Work in nanosecond integers relative to the PHC read to keep precision.
            let sys1 = s1.sec.checked_mul(1_000_000_000)? + i64::from(s1.nsec);
            let sys2 = s2.sec.checked_mul(1_000_000_000)? + i64::from(s2.nsec);
            let phc = p.sec.checked_mul(1_000_000_000)? + i64::from(p.nsec);
            let width = sys2.checked_sub(sys1)?;
            if width < 0 {
                return None;
            }
            let mid = sys1 + width / 2;
            Some(Sample {
                offset_seconds: mid.checked_sub(phc)? as f64 * 1e-9,
                delay_seconds: width as f64 * 1e-9,
            })
        })
        .min_by(|a, b| a.delay_seconds.total_cmp(&b.delay_seconds))
}

fn sys_offset_ioctl(f: &File) -> std::io::Result<Sample> {
    let mut req = PtpSysOffset {
        n_samples: SAMPLES,
        rsv: [0; 3],
        ts: [PtpClockTime::default(); 2 * PTP_MAX_SAMPLES + 1],
    };
    // SAFETY: req is a valid, writable ptp_sys_offset that outlives the call; the request
    // number encodes its exact size.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), PTP_SYS_OFFSET as _, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    best_of(&req.ts, SAMPLES as usize)
        .ok_or_else(|| std::io::Error::other("no usable PTP_SYS_OFFSET sample"))
}

// time_t and c_long are i32 on 32-bit targets, so the conversions are not useless there.
#[allow(clippy::useless_conversion)]
fn clock_secs(id: libc::clockid_t) -> std::io::Result<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(id, &mut ts) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((i64::from(ts.tv_sec), i64::from(ts.tv_nsec)))
}

fn dynamic_clock(f: &File) -> std::io::Result<Sample> {
    // FD_TO_CLOCKID from the kernel's posix-timers: ((~fd) << 3) | CLOCKFD.
    let id = ((!f.as_raw_fd()) << 3) | 3;
    let mut ts = [PtpClockTime::default(); 3];
    for (i, clk) in [libc::CLOCK_REALTIME, id, libc::CLOCK_REALTIME]
        .iter()
        .enumerate()
    {
        let (s, n) = clock_secs(*clk)?;
        ts[i] = PtpClockTime {
            sec: s,
            nsec: n as u32,
            reserved: 0,
        };
    }
    best_of(&ts, 1).ok_or_else(|| std::io::Error::other("clock went backwards"))
}

/// Measures `device` once.
pub fn measure(device: &Path) -> Result<Sample, Error> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let Ok(meta) = std::fs::metadata(device) else {
        return Err(Error::NotFound(device.display().to_string()));
    };
    // A PHC is a character device; anything else (a FIFO, whose open would block the probe
    // for ever) is refused before opening, and the open never waits.
    if !meta.file_type().is_char_device() {
        return Err(Error::Open(format!(
            "{}: not a character device",
            device.display()
        )));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(device)
        .map_err(|e| Error::Open(format!("{}: {e}", device.display())))?;
    match sys_offset_ioctl(&f) {
        Ok(s) => Ok(s),
        Err(ioctl_err) => dynamic_clock(&f).map_err(|e| {
            Error::Read(format!(
                "{}: PTP_SYS_OFFSET: {ioctl_err}; clock_gettime: {e}",
                device.display()
            ))
        }),
    }
}

/// The `source` label of a PTP device.
pub fn source_label(device: &str) -> String {
    format!("ptp:{device}")
}

exporter_core::metric_handles! {
    /// What the PTP probe writes per device, beside the shared source metrics.
    pub struct PtpMetrics {
        read_delay: Gauge = "clock_master_ptp_read_delay_seconds",
    }
}

/// Samples of a PTP clock that could be read.
pub(crate) fn collect(
    label: &str,
    s: &Sample,
    m: &PtpMetrics,
    src: &SourceMetrics,
    o: &mut Vec<Value>,
) {
    let l: &[(&'static str, &str)] = &[("source", label)];
    gauge(o, &src.offset, l, s.offset_seconds);
    gauge(o, &src.quality, l, error_factor(s.delay_seconds));
    gauge(o, &m.read_delay, l, s.delay_seconds);
}

/// One PTP hardware clock compared with the system clock every few seconds.
#[derive(Clone)]
pub struct PtpProbe {
    device: String,
    m: PtpMetrics,
    src: SourceMetrics,
    target: Arc<Target>,
}

impl Probe for PtpProbe {
    type Settings = ClockSettings;
    const SOURCE: &'static str = "clock:ptp";
    const EXPOSED: bool = false;
    const INTERVAL: Duration = Duration::from_secs(5);
    /// The ioctl answers in microseconds; a device whose driver hangs shows down after this.
    const BUDGET: Duration = Duration::from_secs(5);

    fn bind(settings: &ClockSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let m = PtpMetrics::bind(metrics)?;
        let src = SourceMetrics::bind(metrics)?;
        Ok(settings
            .ptp_device
            .iter()
            .map(|device| PtpProbe {
                device: device.clone(),
                m: m.clone(),
                target: Arc::new(Target::new(
                    source_label(device),
                    src.clone(),
                    true,
                    Vec::new(),
                )),
                src: src.clone(),
            })
            .collect())
    }

    fn source(&self) -> String {
        format!("clock:{}", self.target.label)
    }

    fn refresh(&self) -> Result<String, String> {
        match measure(Path::new(&self.device)) {
            Ok(s) => {
                let mut values = Vec::new();
                collect(&self.target.label, &s, &self.m, &self.src, &mut values);
                self.target.read(&values);
                Ok(format!("offset {:.9} s", s.offset_seconds))
            }
            Err(e) => {
                self.target.failed(e.reason(), &[]);
                Err(e.to_string())
            }
        }
    }

    fn unknown(&self) {
        self.target.failed("timeout", &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64, nsec: u32) -> PtpClockTime {
        PtpClockTime {
            sec,
            nsec,
            reserved: 0,
        }
    }

    #[test]
    fn ioctl_struct_layout() {
        assert_eq!(std::mem::size_of::<PtpClockTime>(), 16);
        assert_eq!(std::mem::size_of::<PtpSysOffset>(), 832);
        assert_eq!(PTP_SYS_OFFSET, 0x4340_3d05);
    }

    #[test]
    fn picks_tightest_sample() {
        // PHC 37 s ahead (TAI); second triple is tighter.
        // Layout: sys, phc, sys, phc, sys (neighbouring samples share a system reading).
        let ts = [
            t(100, 0),
            t(137, 500),
            t(100, 2_000),
            t(137, 2_300),
            t(100, 2_400),
        ];
        let s = best_of(&ts, 2).expect("sample");
        assert!((s.delay_seconds - 400e-9).abs() < 1e-12);
        assert!(
            (s.offset_seconds - (-37.0 - 100e-9)).abs() < 1e-9,
            "{}",
            s.offset_seconds
        );
        // Backwards system clock and short arrays are skipped, not panics.
        assert!(best_of(&[t(5, 0), t(5, 0), t(4, 0)], 1).is_none());
        assert!(best_of(&ts[..2], 1).is_none());
        assert!(best_of(&ts, 3).is_some(), "missing third triple is skipped");
    }

    #[test]
    fn missing_device_is_a_clean_error() {
        let e = measure(Path::new("/dev/ptp-does-not-exist")).expect_err("no such device");
        assert_eq!(e.reason(), "not_found");
        assert!(e.to_string().contains("/dev/ptp-does-not-exist"));
        // A file that is not a PHC fails to read, with a reason.
        let e = measure(Path::new("/dev/null")).expect_err("not a PHC");
        assert_eq!(e.reason(), "read");
    }
}
