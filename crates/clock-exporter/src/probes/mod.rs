//! Background refresh of every clock source and the scrape-time view of the results.
//!
//! Each target (kernel, chronyd, each NTP server, each PTP device) has its own tokio task, so a
//! slow or dead one delays nobody else; every network exchange is bounded by a timeout. A
//! scrape only copies the cached results ([`ClockProbes::samples`]) and reads the system
//! clock for `clock_master_current_timestamp_seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use crate::samples::{gauge, total, Sample, SourceMetrics, CHRONYD, KERNEL};
use crate::{chrony, kernel, ntp, ptp};

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// chronyd command address (`HOST:PORT` or `unix:///path`); None disables chrony.
    pub chrony_address: Option<String>,
    /// Directory for the client socket when talking to chronyd over its Unix socket.
    pub chrony_client_dir: Option<PathBuf>,
    pub ntp_servers: Vec<String>,
    pub ptp_devices: Vec<String>,
    /// Refresh period of kernel, chronyd and PTP readings (cheap, local).
    pub interval: Duration,
    /// Refresh period of direct NTP queries; RFC 4330 forbids polling a server faster than 15 s.
    pub ntp_interval: Duration,
    /// Per-request timeout (chrony: per attempt).
    pub timeout: Duration,
    /// chrony request attempts (first send + resends).
    pub chrony_attempts: u16,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            chrony_address: Some(chrony::DEFAULT_ADDRESS.to_string()),
            chrony_client_dir: None,
            ntp_servers: Vec::new(),
            ptp_devices: Vec::new(),
            interval: Duration::from_secs(5),
            ntp_interval: Duration::from_secs(64),
            timeout: Duration::from_millis(500),
            chrony_attempts: 2,
        }
    }
}

impl ProbeConfig {
    /// From the core config's clock section: an empty chrony address disables chrony.
    pub fn from_parts(
        chrony_address: &str,
        ntp_servers: &[String],
        ptp_devices: &[String],
    ) -> Self {
        let chrony_address = chrony_address.trim();
        ProbeConfig {
            chrony_address: (!chrony_address.is_empty()).then(|| chrony_address.to_string()),
            ntp_servers: ntp_servers
                .iter()
                .map(|s| ntp::normalize_server(s))
                .collect(),
            ptp_devices: ptp_devices.to_vec(),
            ..ProbeConfig::default()
        }
    }

    /// Bounded time one chrony refresh can take: tracking + n_sources + each source.
    pub fn chrony_budget(&self, n_sources: usize) -> Duration {
        self.timeout * u32::from(self.chrony_attempts.max(1)) * (2 + n_sources as u32)
    }
}

/// Every handle the clock probes write, bound once at start-up.
#[derive(Clone)]
pub struct ClockMetrics {
    pub kernel: kernel::KernelMetrics,
    pub chrony: chrony::ChronyMetrics,
    pub ntp: ntp::NtpMetrics,
    pub ptp: ptp::PtpMetrics,
    pub source: SourceMetrics,
}

impl ClockMetrics {
    pub fn bind(
        metrics: &exporter_core::Metrics,
    ) -> Result<Self, exporter_core::schema::SchemaError> {
        Ok(ClockMetrics {
            kernel: kernel::KernelMetrics::bind(metrics)?,
            chrony: chrony::ChronyMetrics::bind(metrics)?,
            ntp: ntp::NtpMetrics::bind(metrics)?,
            ptp: ptp::PtpMetrics::bind(metrics)?,
            source: SourceMetrics::bind(metrics)?,
        })
    }

    /// Handles on a registry of their own, built from this tier's schema: the probes without
    /// the exporter runtime (tests, one-shot use).
    pub fn standalone() -> Result<Self, exporter_core::schema::SchemaError> {
        let schema = exporter_core::Schema::parse(include_str!("../../schema.toml"))?;
        let metrics = exporter_core::Metrics::new(&schema, Default::default())?;
        ClockMetrics::bind(&metrics)
    }

    /// Every handle, untyped.
    pub fn all(&self) -> Vec<exporter_core::Metric> {
        let mut all = self.kernel.all();
        all.extend(self.chrony.all());
        all.extend(self.ntp.all());
        all.extend(self.ptp.all());
        all.extend(self.source.all());
        all
    }

    /// Every metric name the probes write.
    pub fn names() -> impl Iterator<Item = &'static str> {
        [
            kernel::KernelMetrics::NAMES,
            chrony::ChronyMetrics::NAMES,
            ntp::NtpMetrics::NAMES,
            ptp::PtpMetrics::NAMES,
            SourceMetrics::NAMES,
        ]
        .into_iter()
        .flatten()
        .copied()
    }
}

/// Health of one probe target, for `/health`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    pub up: bool,
    pub detail: String,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct TargetState {
    /// None until the first attempt finished.
    up: Option<bool>,
    last_error: Option<String>,
    last_success_unix: Option<f64>,
    detail: String,
}

#[derive(Debug, Default)]
struct State {
    kernel: Option<kernel::Timex>,
    chrony: Option<chrony::Report>,
    /// chrony sources seen before: reported down (not dropped) while chronyd is unreachable.
    chrony_known: BTreeSet<String>,
    ntp: BTreeMap<String, ntp::Sample>,
    ptp: BTreeMap<String, ptp::Sample>,
    targets: BTreeMap<String, TargetState>,
    errors: BTreeMap<(String, &'static str), u64>,
}

impl State {
    fn success(&mut self, target: &str, detail: String) {
        let t = self.targets.entry(target.to_string()).or_default();
        t.up = Some(true);
        t.detail = detail;
        t.last_success_unix = Some(unix_now());
    }
    fn failure(&mut self, target: &str, reason: &'static str, error: String) {
        let t = self.targets.entry(target.to_string()).or_default();
        t.up = Some(false);
        t.detail = format!("unreachable: {error}");
        t.last_error = Some(error);
        *self.errors.entry((target.to_string(), reason)).or_default() += 1;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Handle on the running probes; clone freely.
#[derive(Clone)]
pub struct ClockProbes {
    state: Arc<Mutex<State>>,
    config: Arc<ProbeConfig>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking probe task must not take the scrape down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClockProbes {
    /// Probes with no tasks running; [`ClockProbes::refresh_once`] drives them (tests).
    pub fn new(config: ProbeConfig) -> Self {
        let mut state = State::default();
        let mut register = |t: String| {
            state.targets.insert(
                t,
                TargetState {
                    up: None,
                    detail: "starting".into(),
                    ..TargetState::default()
                },
            );
        };
        register(KERNEL.to_string());
        if config.chrony_address.is_some() {
            register(CHRONYD.to_string());
        }
        for s in &config.ntp_servers {
            register(ntp::source_label(s));
        }
        for d in &config.ptp_devices {
            register(ptp::source_label(d));
        }
        ClockProbes {
            state: Arc::new(Mutex::new(state)),
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Starts the background refresh tasks on the current tokio runtime.
    pub fn start(&self) {
        let me = self.clone();
        let interval = self.config.interval;
        // adjtimex and the PHC ioctls are system calls: they run on a blocking thread, so a
        // device that hangs shows as a failed source, and never stalls serving or shutdown.
        tokio::spawn(async move {
            let mut reads = exporter_core::probe::Budgeted::new(
                interval.max(std::time::Duration::from_secs(1)),
            );
            loop {
                let m = me.clone();
                let done = reads
                    .run(move || {
                        m.refresh_kernel();
                        m.refresh_ptp();
                    })
                    .await;
                if let Err(e) = done {
                    me.ptp_hung(&e);
                }
                tokio::time::sleep(interval).await;
            }
        });
        if self.config.chrony_address.is_some() {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    me.refresh_chrony().await;
                    tokio::time::sleep(interval).await;
                }
            });
        }
        for server in self.config.ntp_servers.clone() {
            let me = self.clone();
            let interval = self.config.ntp_interval;
            tokio::spawn(async move {
                loop {
                    me.refresh_ntp(&server).await;
                    tokio::time::sleep(interval).await;
                }
            });
        }
    }

    /// Refreshes every target once, concurrently (tests and one-shot use).
    pub async fn refresh_once(&self) {
        self.refresh_kernel();
        self.refresh_ptp();
        let ntp = async {
            for s in &self.config.ntp_servers {
                self.refresh_ntp(s).await;
            }
        };
        tokio::join!(self.refresh_chrony(), ntp);
    }

    fn refresh_kernel(&self) {
        let r = kernel::read();
        let mut st = lock(&self.state);
        match r {
            Ok(t) => {
                let detail = format!(
                    "adjtimex: {}, maxerror {:.6} s",
                    if t.synchronised() {
                        "synchronised"
                    } else {
                        "unsynchronised"
                    },
                    t.maxerror_seconds
                );
                st.kernel = Some(t);
                st.success(KERNEL, detail);
            }
            Err(e) => {
                st.kernel = None;
                st.failure(KERNEL, "syscall", format!("adjtimex: {e}"));
            }
        }
    }

    fn refresh_ptp(&self) {
        for dev in &self.config.ptp_devices {
            let r = ptp::measure(std::path::Path::new(dev));
            let label = ptp::source_label(dev);
            let mut st = lock(&self.state);
            match r {
                Ok(s) => {
                    let detail = format!("offset {:.9} s", s.offset_seconds);
                    st.ptp.insert(dev.clone(), s);
                    st.success(&label, detail);
                }
                Err(e) => {
                    st.ptp.remove(dev);
                    st.failure(&label, e.reason(), e.to_string());
                }
            }
        }
    }

    /// The PHC reads have not come back within `budget`: every PTP source is down until they
    /// do.
    fn ptp_hung(&self, why: &str) {
        let mut st = lock(&self.state);
        for dev in &self.config.ptp_devices {
            st.ptp.remove(dev);
            st.failure(
                &ptp::source_label(dev),
                "timeout",
                format!("reading {dev} {why}"),
            );
        }
    }

    pub async fn refresh_chrony(&self) {
        let Some(addr) = &self.config.chrony_address else {
            return;
        };
        let span = tracing::info_span!(target: "probe", "clock.chrony", address = %addr, ok = tracing::field::Empty);
        let result = match chrony::Address::parse(addr) {
            Ok(a) => {
                // Hard cap on the whole exchange in case a server trickles stray packets.
                let cap = self.config.chrony_budget(32);
                tokio::time::timeout(
                    cap,
                    chrony::query(
                        &a,
                        self.config.timeout,
                        self.config.chrony_attempts,
                        self.config.chrony_client_dir.as_deref(),
                    ),
                )
                .instrument(span.clone())
                .await
                .unwrap_or(Err(chrony::Error::Timeout))
            }
            Err(e) => Err(e),
        };
        span.record("ok", result.is_ok());
        let mut st = lock(&self.state);
        match result {
            Ok(report) => {
                let detail = format!(
                    "reference {} stratum {}, {} sources",
                    report.tracking.ref_name(),
                    report.tracking.stratum,
                    report.sources.len()
                );
                st.chrony_known = report
                    .sources
                    .iter()
                    .map(|s| chrony::source_label(&s.name))
                    .collect();
                st.chrony = Some(report);
                st.success(CHRONYD, detail);
            }
            Err(e) => {
                st.chrony = None;
                st.failure(CHRONYD, e.reason(), format!("chronyd at {addr}: {e}"));
            }
        }
    }

    pub async fn refresh_ntp(&self, server: &str) {
        let span =
            tracing::info_span!(target: "probe", "clock.ntp", server, ok = tracing::field::Empty);
        let r = ntp::query(server, self.config.timeout)
            .instrument(span.clone())
            .await;
        span.record("ok", r.is_ok());
        let label = ntp::source_label(server);
        let mut st = lock(&self.state);
        match r {
            Ok(s) => {
                let detail = format!(
                    "stratum {}, offset {:.9} s, delay {:.6} s",
                    s.stratum, s.offset_seconds, s.delay_seconds
                );
                st.ntp.insert(server.to_string(), s);
                st.success(&label, detail);
            }
            Err(e) => {
                st.ntp.remove(server);
                st.failure(&label, e.reason(), e.to_string());
            }
        }
    }

    /// Per-target status for `/health`: every configured target, up or not.
    pub fn status(&self) -> BTreeMap<String, TargetStatus> {
        let st = lock(&self.state);
        st.targets
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    TargetStatus {
                        up: t.up == Some(true),
                        detail: t.detail.clone(),
                        last_error: t.last_error.clone(),
                    },
                )
            })
            .collect()
    }

    /// Everything to expose right now. Cheap: copies cached values under a short lock.
    pub fn samples(&self, m: &ClockMetrics) -> Vec<Sample> {
        let st = lock(&self.state);
        build_samples(&st, unix_now(), m)
    }
}

fn build_samples(st: &State, now: f64, m: &ClockMetrics) -> Vec<Sample> {
    let mut out = Vec::with_capacity(64);
    let o = &mut out;
    let src = &m.source;
    gauge(o, &src.now, &[], now);

    kernel::collect(st.kernel.as_ref(), &m.kernel, o);
    chrony::collect(st.chrony.as_ref(), &st.chrony_known, &m.chrony, src, o);
    ntp::collect(&st.ntp, &m.ntp, src, o);
    ptp::collect(&st.ptp, &m.ptp, src, o);

    // Configured targets that are down get quality 0 (their offset is unknown, so absent).
    for (target, t) in &st.targets {
        let l: &[(&'static str, &str)] = &[("source", target)];
        let up = t.up == Some(true);
        gauge(o, &src.up, l, if up { 1.0 } else { 0.0 });
        if let Some(ts) = t.last_success_unix {
            gauge(o, &src.last_success, l, ts);
        }
        let is_source = target.starts_with("ntp:") || target.starts_with("ptp:");
        if is_source && !up {
            gauge(o, &src.quality, l, 0.0);
        }
    }

    // Summary gauges: chrony when reachable, else the kernel.
    let (uncertainty, jitter, drift) = match (&st.chrony, &st.kernel) {
        (Some(r), _) => (
            Some(r.tracking.root_distance()),
            Some(r.tracking.rms_offset),
            Some(r.tracking.freq_ppm),
        ),
        // The kernel's freq is the correction applied, so the oscillator's own error is minus it.
        (None, Some(k)) => (
            Some(k.maxerror_seconds),
            Some(k.esterror_seconds),
            Some(-k.frequency_ppm),
        ),
        (None, None) => (None, None, None),
    };
    if let Some(v) = uncertainty {
        gauge(o, &src.uncertainty, &[], v);
    }
    if let Some(v) = jitter {
        gauge(o, &src.jitter, &[], v);
    }
    if let Some(v) = drift {
        gauge(o, &src.drift, &[], v);
    }

    for ((target, reason), n) in &st.errors {
        total(
            o,
            &src.errors,
            &[("source", target), ("reason", reason)],
            *n as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests;
