//! The kernel's clock discipline state, read with adjtimex(2) in read-only mode (modes = 0,
//! which needs no privilege and changes nothing). Unit conversions follow node_exporter's
//! timex collector so dashboards built on either agree.

use std::sync::Arc;
use std::time::Duration;

use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;

use crate::samples::{gauge, unlabelled_gauges, SourceMetrics, Target, Value};
use crate::settings::ClockSettings;

/// STA_UNSYNC: the clock is not synchronised (set by the kernel after maxerror reaches 16 s,
/// or by a daemon that lost its sources).
pub const STA_UNSYNC: i32 = 0x0040;
/// STA_NANO: `offset` and `jitter` are in nanoseconds instead of microseconds.
pub const STA_NANO: i32 = 0x2000;
/// adjtimex's return value for an unsynchronised clock.
pub const TIME_ERROR: i32 = 5;

/// 2^16: `freq`, `ppsfreq` and `stabil` are ppm in 16.16 fixed point.
const PPM_SCALE: f64 = 65536.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Timex {
    /// Remaining time offset the kernel PLL/FLL is correcting, seconds.
    pub offset_seconds: f64,
    /// Frequency adjustment, ppm (positive speeds the clock up).
    pub frequency_ppm: f64,
    pub maxerror_seconds: f64,
    pub esterror_seconds: f64,
    pub status: i32,
    /// adjtimex's return value (clock state: TIME_OK .. TIME_ERROR).
    pub state: i32,
    /// PLL time constant.
    pub constant: i64,
    /// Clock precision, seconds.
    pub precision_seconds: f64,
    pub tolerance_ppm: f64,
    /// Length of a clock tick, seconds.
    pub tick_seconds: f64,
    pub pps_frequency_ppm: f64,
    pub pps_jitter_seconds: f64,
    pub tai_offset_seconds: i64,
    /// Time the kernel returned with the state, Unix seconds.
    pub time_seconds: f64,
}

impl Timex {
    /// 1 when the kernel considers the clock synchronised (STA_UNSYNC clear), as node_exporter.
    pub fn synchronised(&self) -> bool {
        self.status & STA_UNSYNC == 0
    }
}

/// Reads the kernel's clock state. Read-only: `modes` is 0.
pub fn read() -> std::io::Result<Timex> {
    // SAFETY: timex is a plain C struct of integers, so all-zero is a valid value.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: tx is a valid, writable timex; with modes == 0 adjtimex only fills it in.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(from_raw(&tx, state))
}

// c_long is i32 on 32-bit targets, so the conversions are not useless there.
#[allow(clippy::useless_conversion)]
fn from_raw(tx: &libc::timex, state: i32) -> Timex {
    let status = tx.status;
    let nano = status & STA_NANO != 0;
    let sub_unit = if nano { 1e-9 } else { 1e-6 };
    // With STA_NANO the timeval's tv_usec carries nanoseconds.
    let time_frac = tx.time.tv_usec as f64 * sub_unit;
    Timex {
        offset_seconds: tx.offset as f64 * sub_unit,
        frequency_ppm: tx.freq as f64 / PPM_SCALE,
        maxerror_seconds: tx.maxerror as f64 * 1e-6,
        esterror_seconds: tx.esterror as f64 * 1e-6,
        status,
        state,
        constant: i64::from(tx.constant),
        precision_seconds: tx.precision as f64 * 1e-6,
        tolerance_ppm: tx.tolerance as f64 / PPM_SCALE,
        tick_seconds: tx.tick as f64 * 1e-6,
        pps_frequency_ppm: tx.ppsfreq as f64 / PPM_SCALE,
        pps_jitter_seconds: tx.jitter as f64 * sub_unit,
        tai_offset_seconds: i64::from(tx.tai),
        time_seconds: tx.time.tv_sec as f64 + time_frac,
    }
}

exporter_core::metric_handles! {
    /// What the kernel clock probe writes.
    pub struct KernelMetrics {
        offset: Gauge = "clock_master_kernel_offset_seconds",
        frequency: Gauge = "clock_master_kernel_frequency_ppm",
        max_error: Gauge = "clock_master_kernel_max_error_seconds",
        estimated_error: Gauge = "clock_master_kernel_estimated_error_seconds",
        sync_status: Gauge = "clock_master_kernel_sync_status",
        status_flags: Gauge = "clock_master_kernel_status_flags",
        tai_offset: Gauge = "clock_master_kernel_tai_offset_seconds",
        tick: Gauge = "clock_master_kernel_tick_seconds",
        time_constant: Gauge = "clock_master_kernel_time_constant",
    }
}

/// Samples of the kernel's clock discipline (none when adjtimex failed).
pub fn collect(kernel: Option<&Timex>, m: &KernelMetrics, o: &mut Vec<Value>) {
    // Kernel clock discipline.
    if let Some(k) = kernel {
        gauge(o, &m.offset, &[], k.offset_seconds);
        gauge(o, &m.frequency, &[], k.frequency_ppm);
        gauge(o, &m.max_error, &[], k.maxerror_seconds);
        gauge(o, &m.estimated_error, &[], k.esterror_seconds);
        gauge(
            o,
            &m.sync_status,
            &[],
            if k.synchronised() { 1.0 } else { 0.0 },
        );
        gauge(o, &m.status_flags, &[], f64::from(k.status));
        gauge(o, &m.tai_offset, &[], k.tai_offset_seconds as f64);
        gauge(o, &m.tick, &[], k.tick_seconds);
        gauge(o, &m.time_constant, &[], k.constant as f64);
    }
}

/// The kernel's clock discipline, read with adjtimex every few seconds.
#[derive(Clone)]
pub struct KernelProbe {
    m: KernelMetrics,
    target: Arc<Target>,
}

impl Probe for KernelProbe {
    type Settings = ClockSettings;
    const SOURCE: &'static str = "clock:kernel";
    const EXPOSED: bool = false;
    const INTERVAL: Duration = Duration::from_secs(5);
    /// adjtimex is a system call that answers at once; this only bounds a kernel gone wrong.
    const BUDGET: Duration = Duration::from_secs(1);

    fn bind(_: &ClockSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let m = KernelMetrics::bind(metrics)?;
        let source = SourceMetrics::bind(metrics)?;
        let unlabelled = unlabelled_gauges(m.all());
        let target = Target::new(crate::samples::KERNEL.into(), source, false, unlabelled);
        Ok(vec![KernelProbe {
            target: Arc::new(target),
            m,
        }])
    }

    fn refresh(&self) -> Result<String, String> {
        match read() {
            Ok(t) => {
                let mut values = Vec::new();
                collect(Some(&t), &self.m, &mut values);
                self.target.read(&values);
                let sync = if t.synchronised() {
                    "synchronised"
                } else {
                    "unsynchronised"
                };
                Ok(format!(
                    "adjtimex: {sync}, maxerror {:.6} s",
                    t.maxerror_seconds
                ))
            }
            Err(e) => {
                self.target.failed("syscall", &[]);
                Err(format!("adjtimex: {e}"))
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

    fn raw() -> libc::timex {
        // SAFETY: plain integer struct.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn conversions_follow_node_exporter() {
        let mut tx = raw();
        tx.offset = 1500;
        tx.freq = -12 * 65536 - 32768; // -12.5 ppm
        tx.maxerror = 16_000;
        tx.esterror = 250;
        tx.tick = 10_000;
        tx.tai = 37;
        tx.status = 0;
        let t = from_raw(&tx, 0);
        assert!(
            (t.offset_seconds - 1.5e-3).abs() < 1e-15,
            "microseconds without STA_NANO"
        );
        assert!((t.frequency_ppm + 12.5).abs() < 1e-12);
        assert!((t.maxerror_seconds - 0.016).abs() < 1e-12);
        assert!((t.esterror_seconds - 0.00025).abs() < 1e-12);
        assert!((t.tick_seconds - 0.01).abs() < 1e-12);
        assert_eq!(t.tai_offset_seconds, 37);
        assert!(t.synchronised());

        tx.status = STA_NANO | STA_UNSYNC;
        let t = from_raw(&tx, TIME_ERROR);
        assert!(
            (t.offset_seconds - 1.5e-6).abs() < 1e-15,
            "nanoseconds with STA_NANO"
        );
        assert!(!t.synchronised());
    }

    #[test]
    fn reads_this_host() {
        let t = read().expect("adjtimex(modes=0) works unprivileged");
        assert!(t.tick_seconds > 0.0 && t.tick_seconds < 1.0, "{t:?}");
        assert!(t.maxerror_seconds >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(
            (t.time_seconds - now).abs() < 5.0,
            "{} vs {now}",
            t.time_seconds
        );
    }
}
