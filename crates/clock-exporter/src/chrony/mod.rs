//! Client for chronyd's command and monitoring protocol (cmdmon, protocol version 6).
//!
//! Written from chrony's public protocol description (candm.h); no chrony code is used.
//! Only read-only requests are sent: TRACKING, N_SOURCES and SOURCE_DATA. Over UDP chronyd
//! answers those from 127.0.0.1/::1 (and `cmdallow`ed hosts); over its Unix socket from anyone
//! allowed to write to the socket.
//!
//! `codec` turns requests and replies into bytes and back (every reply is checked before any
//! field is read, every read is bounds-checked: a bad packet is an error, never a panic);
//! `client` moves them over a socket with resends and timeouts. This module holds what both
//! share and what the rest of the crate reads: the address, the errors and the reports.

mod client;
mod codec;
mod probe;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

pub use client::{query, Client, Report};
pub use probe::ChronyProbe;

use crate::samples::{error_factor, gauge, SourceMetrics, Value};
pub use codec::{decode_float, encode_float, parse_source_data, parse_tracking};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:323";

/// Where chronyd's command socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Udp(String),
    Unix(PathBuf),
}

impl Address {
    /// Parses `HOST:PORT` or `unix:///path/to/chronyd.sock`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(Error::Config(format!(
                    "chrony unix socket must be an absolute path: {s}"
                )));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if s.is_empty() {
            return Err(Error::Config("empty chrony address".into()));
        }
        // A bare host gets chronyd's default command port.
        if s.parse::<SocketAddr>().is_ok()
            || s.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !p.is_empty() && p.parse::<u16>().is_ok() && !h.ends_with(':')
            })
        {
            Ok(Address::Udp(s.to_string()))
        } else if s.parse::<Ipv6Addr>().is_ok() {
            Ok(Address::Udp(format!("[{s}]:323")))
        } else {
            Ok(Address::Udp(format!("{s}:323")))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Udp(a) => f.write_str(a),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Config(String),
    /// Could not create, bind or connect the client socket, or resolve the address.
    Connect(String),
    /// No (matching) reply within the timeout after all attempts.
    Timeout,
    Io(String),
    /// The reply is malformed: wrong length, type, command, version or sequence.
    BadReply(String),
    /// chronyd answered with a non-success status code.
    Status(u16),
}

impl Error {
    /// Short, bounded-cardinality reason for the error counter's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Connect(_) => "connect",
            Error::Timeout => "timeout",
            Error::Io(_) => "io",
            Error::BadReply(_) => "bad_reply",
            Error::Status(2) | Error::Status(9) => "unauthorized",
            Error::Status(18) => "bad_version",
            Error::Status(_) => "status",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(s) => write!(f, "configuration: {s}"),
            Error::Connect(s) => write!(f, "connect: {s}"),
            Error::Timeout => f.write_str("no reply from chronyd before the timeout"),
            Error::Io(s) => write!(f, "i/o: {s}"),
            Error::BadReply(s) => write!(f, "bad reply: {s}"),
            Error::Status(code) => write!(f, "chronyd status {code} ({})", status_name(*code)),
        }
    }
}

impl std::error::Error for Error {}

fn status_name(code: u16) -> &'static str {
    match code {
        0 => "success",
        1 => "failed",
        2 => "unauthorised",
        3 => "invalid",
        4 => "no such source",
        6 => "not enabled",
        9 => "access denied",
        15 => "inactive",
        18 => "bad packet version",
        19 => "bad packet length",
        _ => "other",
    }
}

/// Leap status as chronyd reports it in TRACKING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeapStatus {
    Normal,
    InsertSecond,
    DeleteSecond,
    Unsynchronised,
    Unknown(u16),
}

impl LeapStatus {
    fn from_wire(v: u16) -> Self {
        match v {
            0 => LeapStatus::Normal,
            1 => LeapStatus::InsertSecond,
            2 => LeapStatus::DeleteSecond,
            3 => LeapStatus::Unsynchronised,
            other => LeapStatus::Unknown(other),
        }
    }
    /// The wire code (0 normal, 1 insert, 2 delete, 3 unsynchronised).
    pub fn code(self) -> u16 {
        match self {
            LeapStatus::Normal => 0,
            LeapStatus::InsertSecond => 1,
            LeapStatus::DeleteSecond => 2,
            LeapStatus::Unsynchronised => 3,
            LeapStatus::Unknown(v) => v,
        }
    }
}

/// chronyd's TRACKING report. Offsets follow chrony's signs (see field docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracking {
    pub ref_id: u32,
    /// Address of the reference; None for a reference clock or the local reference.
    pub ref_ip: Option<IpAddr>,
    pub stratum: u16,
    pub leap_status: LeapStatus,
    /// Time of the last clock update, Unix seconds.
    pub ref_time: f64,
    /// chronyc's "System time": positive means the system clock is *behind* (slow of) NTP time.
    pub current_correction: f64,
    /// Offset estimated on the last update; positive means the local clock was ahead.
    pub last_offset: f64,
    pub rms_offset: f64,
    /// Frequency error of the system clock; positive means it runs fast (gains time).
    pub freq_ppm: f64,
    pub resid_freq_ppm: f64,
    pub skew_ppm: f64,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub last_update_interval: f64,
}

impl Tracking {
    /// chronyc's "Reference ID" name: the IP address, else the refid as ASCII.
    pub fn ref_name(&self) -> String {
        match self.ref_ip {
            Some(ip) => ip.to_string(),
            None => refid_to_string(self.ref_id),
        }
    }
    /// Maximum error of the system clock against true time (root delay/2 + root dispersion).
    pub fn root_distance(&self) -> f64 {
        self.root_delay / 2.0 + self.root_dispersion
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    Selected,
    NonSelectable,
    Falseticker,
    Jittery,
    Unselected,
    Selectable,
    Unknown(u16),
}

impl SourceState {
    fn from_wire(v: u16) -> Self {
        match v {
            0 => SourceState::Selected,
            1 => SourceState::NonSelectable,
            2 => SourceState::Falseticker,
            3 => SourceState::Jittery,
            4 => SourceState::Unselected,
            5 => SourceState::Selectable,
            other => SourceState::Unknown(other),
        }
    }
    /// Label value (what chronyc's state column means).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Selected => "selected",
            SourceState::NonSelectable => "unusable",
            SourceState::Falseticker => "falseticker",
            SourceState::Jittery => "jittery",
            SourceState::Unselected => "unselected",
            SourceState::Selectable => "candidate",
            SourceState::Unknown(_) => "unknown",
        }
    }
    /// chronyc's one-character state symbol.
    pub fn symbol(self) -> char {
        match self {
            SourceState::Selected => '*',
            SourceState::NonSelectable => '?',
            SourceState::Falseticker => 'x',
            SourceState::Jittery => '~',
            SourceState::Unselected => '-',
            SourceState::Selectable => '+',
            SourceState::Unknown(_) => ' ',
        }
    }
    pub const ALL: [SourceState; 6] = [
        SourceState::Selected,
        SourceState::Selectable,
        SourceState::Unselected,
        SourceState::Jittery,
        SourceState::Falseticker,
        SourceState::NonSelectable,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMode {
    Server,
    Peer,
    RefClock,
    Unknown(u16),
}

impl SourceMode {
    fn from_wire(v: u16) -> Self {
        match v {
            0 => SourceMode::Server,
            1 => SourceMode::Peer,
            2 => SourceMode::RefClock,
            other => SourceMode::Unknown(other),
        }
    }
}

/// One entry of chronyc's `sources`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceData {
    /// IP address, or the reference clock's refid (e.g. "PPS0"), as chronyc -n prints it.
    pub name: String,
    pub poll: i16,
    pub stratum: u16,
    pub state: SourceState,
    pub mode: SourceMode,
    pub flags: u16,
    /// 8-bit reachability register (377 octal = last 8 polls answered).
    pub reachability: u16,
    /// Seconds since the last sample; u32::MAX when there never was one.
    pub since_sample: u32,
    /// Measured offset of the last sample; positive means the local clock is ahead of the source.
    pub orig_latest_meas: f64,
    /// The same offset adjusted for clock corrections applied since.
    pub latest_meas: f64,
    /// Error bound of the last sample.
    pub latest_meas_err: f64,
}

pub(super) fn refid_to_string(id: u32) -> String {
    id.to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect()
}

/// The `source` label of a chrony source.
pub fn source_label(name: &str) -> String {
    format!("chrony:{name}")
}

/// The quality score of a chrony source, 0..1 (see docs/clock.md):
/// state weight x fraction of the last 8 polls answered x error factor.
pub fn source_quality(s: &SourceData) -> f64 {
    use SourceState as S;
    let state = match s.state {
        S::Selected => 1.0,
        S::Selectable => 0.9,
        S::Unselected => 0.6,
        S::Jittery => 0.4,
        S::Falseticker => 0.1,
        S::NonSelectable | S::Unknown(_) => 0.0,
    };
    let reach = f64::from((s.reachability & 0xff).count_ones()) / 8.0;
    state * reach * error_factor(s.latest_meas_err.abs())
}

exporter_core::metric_handles! {
    /// What the chrony probe writes, beside the shared source metrics.
    pub struct ChronyMetrics {
        system_time_offset: Gauge = "clock_master_chrony_system_time_offset_seconds",
        last_offset: Gauge = "clock_master_chrony_last_offset_seconds",
        rms_offset: Gauge = "clock_master_chrony_rms_offset_seconds",
        frequency: Gauge = "clock_master_chrony_frequency_ppm",
        residual_frequency: Gauge = "clock_master_chrony_residual_frequency_ppm",
        skew: Gauge = "clock_master_chrony_skew_ppm",
        root_delay: Gauge = "clock_master_chrony_root_delay_seconds",
        root_dispersion: Gauge = "clock_master_chrony_root_dispersion_seconds",
        stratum: Gauge = "clock_master_chrony_stratum",
        leap_status: Gauge = "clock_master_chrony_leap_status",
        update_interval: Gauge = "clock_master_chrony_update_interval_seconds",
        reference_timestamp: Gauge = "clock_master_chrony_reference_timestamp_seconds",
        tracking_info: Gauge = "clock_master_chrony_tracking_info",
        source_error: Gauge = "clock_master_chrony_source_error_seconds",
        source_stratum: Gauge = "clock_master_chrony_source_stratum",
        source_reachability: Gauge = "clock_master_chrony_source_reachability",
        source_poll_interval: Gauge = "clock_master_chrony_source_poll_interval_seconds",
        source_last_sample_age: Gauge = "clock_master_chrony_source_last_sample_age_seconds",
        source_state: Gauge = "clock_master_chrony_source_state",
    }
}

/// Samples of chronyd's tracking and sources; while it is unreachable, its known sources are
/// reported down.
pub fn collect(
    report: Option<&Report>,
    known: &BTreeSet<String>,
    m: &ChronyMetrics,
    src: &SourceMetrics,
    o: &mut Vec<Value>,
) {
    // chronyd: tracking, then each of its sources.
    if let Some(r) = report {
        collect_tracking(&r.tracking, m, o);
        for s in &r.sources {
            collect_source(s, m, src, o);
        }
    } else {
        // chronyd unreachable: its known sources are down, not missing.
        for label in known {
            gauge(o, &src.up, &[("source", label)], 0.0);
            gauge(o, &src.quality, &[("source", label)], 0.0);
        }
    }
}

/// chronyd's tracking report.
fn collect_tracking(t: &Tracking, m: &ChronyMetrics, o: &mut Vec<Value>) {
    // chrony's "System time" correction is positive when the clock is slow: negate it so
    // every offset here reads "this host minus the reference".
    gauge(o, &m.system_time_offset, &[], -t.current_correction);
    gauge(o, &m.last_offset, &[], t.last_offset);
    gauge(o, &m.rms_offset, &[], t.rms_offset);
    gauge(o, &m.frequency, &[], t.freq_ppm);
    gauge(o, &m.residual_frequency, &[], t.resid_freq_ppm);
    gauge(o, &m.skew, &[], t.skew_ppm);
    gauge(o, &m.root_delay, &[], t.root_delay);
    gauge(o, &m.root_dispersion, &[], t.root_dispersion);
    gauge(o, &m.stratum, &[], f64::from(t.stratum));
    gauge(o, &m.leap_status, &[], f64::from(t.leap_status.code()));
    gauge(o, &m.update_interval, &[], t.last_update_interval);
    gauge(o, &m.reference_timestamp, &[], t.ref_time);
    let ref_id = format!("{:08X}", t.ref_id);
    let ref_name = t.ref_name();
    gauge(
        o,
        &m.tracking_info,
        &[("reference_id", &ref_id), ("reference_name", &ref_name)],
        1.0,
    );
}

/// One of chronyd's sources.
fn collect_source(s: &SourceData, m: &ChronyMetrics, src: &SourceMetrics, o: &mut Vec<Value>) {
    let label = source_label(&s.name);
    let l: &[(&'static str, &str)] = &[("source", &label)];
    gauge(o, &src.offset, l, s.latest_meas);
    gauge(o, &src.quality, l, source_quality(s));
    gauge(o, &m.source_error, l, s.latest_meas_err);
    gauge(o, &m.source_stratum, l, f64::from(s.stratum));
    gauge(o, &m.source_reachability, l, f64::from(s.reachability));
    gauge(o, &m.source_poll_interval, l, 2f64.powi(i32::from(s.poll)));
    if s.since_sample != u32::MAX {
        gauge(o, &m.source_last_sample_age, l, f64::from(s.since_sample));
    }
    for state in SourceState::ALL {
        let v = if state == s.state { 1.0 } else { 0.0 };
        gauge(
            o,
            &m.source_state,
            &[("source", &label), ("state", state.as_str())],
            v,
        );
    }
    // A chrony source is up when its last poll was answered (lowest reach bit).
    gauge(o, &src.up, l, f64::from(s.reachability & 1));
}
