//! Minimal SNTP client (RFC 5905 client mode 3 / RFC 4330): one request, one reply, bounded
//! by a timeout. The reply must echo our transmit timestamp (so a spoofed or stale packet is
//! ignored) and come from a synchronised server; kiss-of-death replies are rejected with their
//! code.

use std::fmt;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;

use crate::samples::{error_factor, gauge, SourceMetrics, Target, Value};
use crate::settings::ClockSettings;

const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const VERSION: u8 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Host clock minus server clock (positive: this host is ahead), seconds. This is minus
    /// RFC 5905's theta, so it has the sign of chrony's per-source offsets.
    pub offset_seconds: f64,
    /// Round-trip delay excluding the server's processing time, seconds.
    pub delay_seconds: f64,
    pub stratum: u8,
    /// Leap indicator: 0 none, 1 insert, 2 delete (3 = unsynchronised is rejected).
    pub leap: u8,
    pub version: u8,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    pub reference_id: u32,
}

impl Sample {
    /// Error bound of this measurement against the server's reference: half the round trip plus
    /// the server's own root distance.
    pub fn error_bound_seconds(&self) -> f64 {
        self.delay_seconds / 2.0 + self.root_delay_seconds / 2.0 + self.root_dispersion_seconds
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Resolve(String),
    Io(String),
    Timeout,
    BadReply(String),
    /// Stratum 0 reply: the server tells us to go away (RATE, DENY, RSTR, ...).
    KissOfDeath(String),
    /// Leap indicator 3 or stratum above 15: the server has no usable time.
    Unsynchronised(String),
}

impl Error {
    /// Bounded-cardinality reason for the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Resolve(_) => "resolve",
            Error::Io(_) => "io",
            Error::Timeout => "timeout",
            Error::BadReply(_) => "bad_reply",
            Error::KissOfDeath(_) => "kiss_of_death",
            Error::Unsynchronised(_) => "unsynchronized",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve(s) => write!(f, "resolve: {s}"),
            Error::Io(s) => write!(f, "i/o: {s}"),
            Error::Timeout => f.write_str("no reply before the timeout"),
            Error::BadReply(s) => write!(f, "bad reply: {s}"),
            Error::KissOfDeath(code) => write!(f, "kiss-of-death {code}"),
            Error::Unsynchronised(s) => write!(f, "server unsynchronised: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// Adds the default NTP port to a bare host.
pub fn normalize_server(s: &str) -> String {
    let s = s.trim();
    if s.parse::<SocketAddr>().is_ok() {
        return s.to_string();
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return format!("[{s}]:123");
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => s.to_string(),
        _ => format!("{s}:123"),
    }
}

/// 64-bit NTP timestamp (32.32 fixed point since 1900) of a system time.
fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Difference of two NTP timestamps in seconds, correct across an era rollover as long as
/// they are within 68 years of each other.
fn diff(a: u64, b: u64) -> f64 {
    a.wrapping_sub(b) as i64 as f64 / 4_294_967_296.0
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    (u64::from(be_u32(b, at)) << 32) | u64::from(be_u32(b, at + 4))
}

/// 16.16 fixed-point seconds (root delay / dispersion).
fn short_format(v: u32) -> f64 {
    f64::from(v) / 65536.0
}

fn request(t1: u64) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (VERSION << 3) | MODE_CLIENT;
    p[40..48].copy_from_slice(&t1.to_be_bytes());
    p
}

/// What a datagram turned out to be.
#[derive(Debug, PartialEq)]
enum Parsed {
    Sample(Sample),
    /// Not an answer to our request (wrong origin timestamp, mode, length): ignore it.
    Ignore(String),
}

/// Checks and evaluates a reply. `t1` is what we sent, `t4` when the reply arrived.
fn parse_reply(p: &[u8], t1: u64, t4: u64) -> Result<Parsed, Error> {
    if p.len() < PACKET_LEN {
        return Ok(Parsed::Ignore(format!("{} bytes", p.len())));
    }
    let li = p[0] >> 6;
    let version = (p[0] >> 3) & 7;
    let mode = p[0] & 7;
    let stratum = p[1];
    let origin = be_u64(p, 24);
    if mode != MODE_SERVER {
        return Ok(Parsed::Ignore(format!("mode {mode}")));
    }
    if origin != t1 {
        return Ok(Parsed::Ignore(
            "origin timestamp does not match our request".into(),
        ));
    }
    if !(1..=4).contains(&version) {
        return Err(Error::BadReply(format!("version {version}")));
    }
    let reference_id = be_u32(p, 12);
    if stratum == 0 {
        let code: String = reference_id
            .to_be_bytes()
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(|&b| b as char)
            .collect();
        return Err(Error::KissOfDeath(if code.is_empty() {
            "?".into()
        } else {
            code
        }));
    }
    if li == 3 {
        return Err(Error::Unsynchronised("leap indicator 3".into()));
    }
    if stratum > 15 {
        return Err(Error::Unsynchronised(format!("stratum {stratum}")));
    }
    let t2 = be_u64(p, 32);
    let t3 = be_u64(p, 40);
    if t2 == 0 || t3 == 0 {
        return Err(Error::BadReply("zero receive/transmit timestamp".into()));
    }
    let theta = (diff(t2, t1) + diff(t3, t4)) / 2.0;
    let delay = diff(t4, t1) - diff(t3, t2);
    if !(theta.is_finite() && delay.is_finite()) || delay < -1e-3 {
        return Err(Error::BadReply(format!("implausible delay {delay}")));
    }
    Ok(Parsed::Sample(Sample {
        offset_seconds: -theta,
        delay_seconds: delay.max(0.0),
        stratum,
        leap: li,
        version,
        root_delay_seconds: short_format(be_u32(p, 4)),
        root_dispersion_seconds: short_format(be_u32(p, 8)),
        reference_id,
    }))
}

/// Queries `server` (`HOST:PORT`) once, blocking. The exchange after name resolution is
/// bounded by `timeout`; the probe's budget bounds a resolver that does not answer.
pub fn query(server: &str, timeout: Duration) -> Result<Sample, Error> {
    let server = normalize_server(server);
    let deadline = Instant::now() + timeout;
    let target = server
        .to_socket_addrs()
        .map_err(|e| Error::Resolve(format!("{server}: {e}")))?
        .next()
        .ok_or_else(|| Error::Resolve(format!("{server}: no address")))?;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| Error::Io(format!("bind: {e}")))?;
    sock.connect(target)
        .map_err(|e| Error::Io(format!("connect {target}: {e}")))?;
    let t1 = to_ntp(SystemTime::now());
    sock.send(&request(t1))
        .map_err(|e| Error::Io(format!("send: {e}")))?;
    // Replies that were not a sample (garbage, another packet) make a timeout a bad reply:
    // the server answers, wrongly, which is not the same fault as silence.
    let mut ignored = None;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ignored.map_or(Error::Timeout, Error::BadReply));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| Error::Io(format!("set timeout: {e}")))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(Error::Io("connection refused (nothing listening)".into()))
            }
            Err(e) => return Err(Error::Io(format!("recv: {e}"))),
        };
        let t4 = to_ntp(SystemTime::now());
        match parse_reply(buf.get(..n).unwrap_or(&[]), t1, t4)? {
            Parsed::Sample(s) => return Ok(s),
            Parsed::Ignore(why) => ignored = Some(why.to_string()),
        }
    }
}

/// The `source` label of an NTP server.
pub fn source_label(server: &str) -> String {
    format!("ntp:{server}")
}

exporter_core::metric_handles! {
    /// What the NTP probe writes per server, beside the shared source metrics.
    pub struct NtpMetrics {
        rtt: Gauge = "clock_master_ntp_rtt_seconds",
        stratum: Gauge = "clock_master_ntp_stratum",
        leap: Gauge = "clock_master_ntp_leap",
        root_distance: Gauge = "clock_master_ntp_root_distance_seconds",
    }
}

/// Samples of a server that answered.
pub(crate) fn collect(
    label: &str,
    s: &Sample,
    m: &NtpMetrics,
    src: &SourceMetrics,
    o: &mut Vec<Value>,
) {
    let l: &[(&'static str, &str)] = &[("source", label)];
    gauge(o, &src.offset, l, s.offset_seconds);
    gauge(o, &src.quality, l, error_factor(s.error_bound_seconds()));
    gauge(o, &m.rtt, l, s.delay_seconds);
    gauge(o, &m.stratum, l, f64::from(s.stratum));
    gauge(o, &m.leap, l, f64::from(s.leap));
    gauge(
        o,
        &m.root_distance,
        l,
        s.root_delay_seconds / 2.0 + s.root_dispersion_seconds,
    );
}

/// One NTP server queried directly.
#[derive(Clone)]
pub struct NtpProbe {
    server: String,
    m: NtpMetrics,
    src: SourceMetrics,
    target: Arc<Target>,
}

/// How long the server has to answer.
pub const TIMEOUT: Duration = Duration::from_millis(500);

impl Probe for NtpProbe {
    type Settings = ClockSettings;
    const SOURCE: &'static str = "clock:ntp";
    const EXPOSED: bool = false;
    /// RFC 4330 forbids polling a server faster than every 15 s.
    const INTERVAL: Duration = Duration::from_secs(64);
    /// The query's own timeout, and time for the resolver.
    const BUDGET: Duration = Duration::from_secs(2);

    fn bind(settings: &ClockSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let m = NtpMetrics::bind(metrics)?;
        let src = SourceMetrics::bind(metrics)?;
        Ok(settings
            .ntp_server
            .iter()
            .map(|server| {
                let server = normalize_server(server);
                NtpProbe {
                    m: m.clone(),
                    target: Arc::new(Target::new(
                        source_label(&server),
                        src.clone(),
                        true,
                        Vec::new(),
                    )),
                    src: src.clone(),
                    server,
                }
            })
            .collect())
    }

    fn source(&self) -> String {
        format!("clock:{}", self.target.label)
    }

    fn refresh(&self) -> Result<String, String> {
        match query(&self.server, TIMEOUT) {
            Ok(s) => {
                let mut values = Vec::new();
                collect(&self.target.label, &s, &self.m, &self.src, &mut values);
                self.target.read(&values);
                Ok(format!(
                    "stratum {}, offset {:.9} s, delay {:.6} s",
                    s.stratum, s.offset_seconds, s.delay_seconds
                ))
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

    fn reply(t1: u64, t2: u64, t3: u64, li: u8, stratum: u8, refid: &[u8; 4]) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = (li << 6) | (4 << 3) | MODE_SERVER;
        p[1] = stratum;
        p[4..8].copy_from_slice(&(65536u32 / 100).to_be_bytes()); // 10 ms root delay
        p[8..12].copy_from_slice(&(65536u32 / 1000).to_be_bytes());
        p[12..16].copy_from_slice(refid);
        p[24..32].copy_from_slice(&t1.to_be_bytes());
        p[32..40].copy_from_slice(&t2.to_be_bytes());
        p[40..48].copy_from_slice(&t3.to_be_bytes());
        p
    }

    const SEC: u64 = 1 << 32;

    #[test]
    fn offset_and_delay() {
        // Server 0.5 s ahead of us, 100 ms each way, 10 ms processing.
        let t1 = 3_900_000_000 * SEC;
        let t2 = t1 + SEC / 2 + SEC / 10;
        let t3 = t2 + SEC / 100;
        let t4 = t3 - SEC / 2 + SEC / 10;
        let Ok(Parsed::Sample(s)) = parse_reply(&reply(t1, t2, t3, 0, 2, b"GPS\0"), t1, t4) else {
            panic!("rejected");
        };
        assert!(
            (s.offset_seconds + 0.5).abs() < 1e-6,
            "host is behind: {}",
            s.offset_seconds
        );
        assert!((s.delay_seconds - 0.2).abs() < 1e-6, "{}", s.delay_seconds);
        assert_eq!(s.stratum, 2);
        assert!((s.root_delay_seconds - 0.01).abs() < 1e-4);
    }

    #[test]
    fn era_rollover() {
        // t1 just before the 2036 rollover, the server's stamps just after.
        let t1 = u64::MAX - SEC / 4;
        let t2 = t1.wrapping_add(SEC / 2);
        let t3 = t2;
        let t4 = t1.wrapping_add(SEC / 10);
        let Ok(Parsed::Sample(s)) = parse_reply(&reply(t1, t2, t3, 0, 1, b"PPS\0"), t1, t4) else {
            panic!("rejected");
        };
        assert!(
            (s.offset_seconds + 0.45).abs() < 1e-6,
            "{}",
            s.offset_seconds
        );
    }

    #[test]
    fn rejections() {
        let t1 = 3_900_000_000 * SEC;
        let ok = reply(t1, t1 + 1, t1 + 2, 0, 3, b"abcd");
        assert_eq!(
            parse_reply(&reply(t1, t1, t1, 0, 0, b"RATE"), t1, t1 + 3),
            Err(Error::KissOfDeath("RATE".into()))
        );
        assert!(matches!(
            parse_reply(&reply(t1, t1 + 1, t1 + 2, 3, 3, b"abcd"), t1, t1 + 3),
            Err(Error::Unsynchronised(_))
        ));
        assert!(matches!(
            parse_reply(&reply(t1, t1 + 1, t1 + 2, 0, 16, b"abcd"), t1, t1 + 3),
            Err(Error::Unsynchronised(_))
        ));
        // Not our request: ignored, not fatal.
        assert!(matches!(
            parse_reply(&ok, t1 + 1, t1 + 3),
            Ok(Parsed::Ignore(_))
        ));
        for n in 0..48 {
            assert!(matches!(
                parse_reply(&ok[..n], t1, t1 + 3),
                Ok(Parsed::Ignore(_))
            ));
        }
        let mut client = ok;
        client[0] = (4 << 3) | MODE_CLIENT;
        assert!(matches!(
            parse_reply(&client, t1, t1 + 3),
            Ok(Parsed::Ignore(_))
        ));
        assert!(matches!(
            parse_reply(&ok, t1, t1 + 3),
            Ok(Parsed::Sample(_))
        ));
    }

    #[test]
    fn server_names() {
        assert_eq!(normalize_server("127.0.0.1"), "127.0.0.1:123");
        assert_eq!(normalize_server("127.0.0.1:1123"), "127.0.0.1:1123");
        assert_eq!(normalize_server("::1"), "[::1]:123");
        assert_eq!(normalize_server("time.example"), "time.example:123");
    }

    #[test]
    fn silent_server_times_out() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr").to_string();
        let t0 = std::time::Instant::now();
        assert_eq!(
            query(&addr, Duration::from_millis(150)),
            Err(Error::Timeout)
        );
        assert!(t0.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn a_server_that_answers_garbage_is_a_bad_reply_not_a_timeout() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Answers the one request, then the socket closes with the thread.
            if let Ok((_, peer)) = server.recv_from(&mut buf) {
                let _ = server.send_to(b"not an NTP packet", peer);
            }
        });
        let r = query(&addr, Duration::from_millis(200));
        assert!(matches!(r, Err(Error::BadReply(_))), "{r:?}");
        assert_eq!(r.map(|_| ()).unwrap_err().reason(), "bad_reply");
    }
}
