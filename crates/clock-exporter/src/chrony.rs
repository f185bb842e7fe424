//! Client for chronyd's command and monitoring protocol (cmdmon, protocol version 6).
//!
//! Written from chrony's public protocol description (candm.h); no chrony code is used.
//! Only read-only requests are sent: TRACKING, N_SOURCES and SOURCE_DATA. Over UDP chronyd
//! answers those from 127.0.0.1/::1 (and `cmdallow`ed hosts); over its Unix socket from anyone
//! allowed to write to the socket.
//!
//! Every reply is checked (version, type, command, sequence, status, length) before any field
//! is read, and every field read is bounds-checked: a bad packet is an error, never a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{UdpSocket, UnixDatagram};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:323";

const PROTO_VERSION: u8 = 6;
const PKT_TYPE_CMD_REQUEST: u8 = 1;
const PKT_TYPE_CMD_REPLY: u8 = 2;

const REQ_N_SOURCES: u16 = 14;
const REQ_SOURCE_DATA: u16 = 15;
const REQ_TRACKING: u16 = 33;

const RPY_N_SOURCES: u16 = 2;
const RPY_SOURCE_DATA: u16 = 3;
const RPY_TRACKING: u16 = 5;

/// Request header: version, type, res1, res2, command(2), attempt(2), sequence(4), pad(8).
const REQ_HEADER_LEN: usize = 20;
/// Reply header: version, type, res1, res2, command, reply, status, pad1-3 (2 each), sequence, pad4-5.
const RPY_HEADER_LEN: usize = 28;

/// Length of each reply's data up to its EOR marker (what chronyd sends).
const TRACKING_LEN: usize = 4 + IPADDR_LEN + 2 + 2 + 12 + 9 * 4;
const N_SOURCES_LEN: usize = 4;
const SOURCE_DATA_LEN: usize = IPADDR_LEN + 2 * 6 + 4 + 3 * 4;
const IPADDR_LEN: usize = 20;

/// chronyd keeps at most a few hundred sources; a larger count means a corrupt reply.
const MAX_SOURCES: u32 = 256;

const IPADDR_UNSPEC: u16 = 0;
const IPADDR_INET4: u16 = 1;
const IPADDR_INET6: u16 = 2;
const IPADDR_ID: u16 = 3;

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

/// Decodes chrony's 32-bit float: 7-bit signed exponent, 25-bit signed coefficient,
/// value = coef * 2^(exp - 25).
pub fn decode_float(x: u32) -> f64 {
    const EXP_BITS: u32 = 7;
    const COEF_BITS: u32 = 25;
    let mut exp = (x >> COEF_BITS) as i32;
    if exp >= 1 << (EXP_BITS - 1) {
        exp -= 1 << EXP_BITS;
    }
    exp -= COEF_BITS as i32;
    let mut coef = (x % (1u32 << COEF_BITS)) as i32;
    if coef >= 1 << (COEF_BITS - 1) {
        coef -= 1 << COEF_BITS;
    }
    f64::from(coef) * 2f64.powi(exp)
}

/// Encodes a value in chrony's float format (used by tests and the fake server).
pub fn encode_float(x: f64) -> u32 {
    const EXP_BITS: i32 = 7;
    const COEF_BITS: i32 = 25;
    const MAX_EXP: i32 = (1 << (EXP_BITS - 1)) - 1;
    const MIN_EXP: i32 = -(1 << (EXP_BITS - 1));
    let neg = x < 0.0;
    let x = x.abs();
    let (mut exp, mut coef): (i32, i32);
    if x < 1.0e-100 || !x.is_finite() {
        if x.is_finite() || x.is_nan() {
            exp = 0;
            coef = 0;
        } else {
            exp = MAX_EXP;
            coef = (1 << (COEF_BITS - 1)) - 1;
        }
    } else {
        exp = x.log2() as i32 + 1;
        coef = (x * 2f64.powi(-exp + COEF_BITS) + 0.5) as i32;
        debug_assert!(coef > 0);
        while coef >= 1 << (COEF_BITS - 1) {
            coef >>= 1;
            exp += 1;
        }
        if exp > MAX_EXP {
            exp = MAX_EXP;
            coef = (1 << (COEF_BITS - 1)) - 1;
        } else if exp < MIN_EXP {
            if exp + COEF_BITS >= MIN_EXP {
                coef >>= MIN_EXP - exp;
                exp = MIN_EXP;
            } else {
                exp = 0;
                coef = 0;
            }
        }
    }
    if neg {
        coef = -coef;
    }
    let exp_bits = (exp as u32) << COEF_BITS;
    let coef_bits = (coef as u32) % (1u32 << COEF_BITS);
    exp_bits | coef_bits
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

fn refid_to_string(id: u32) -> String {
    id.to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect()
}

/// Bounds-checked big-endian reader over a reply's data section.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let end = self.pos + N;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Error::BadReply(format!("truncated at byte {}", self.pos)))?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16, Error> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn float(&mut self) -> Result<f64, Error> {
        Ok(decode_float(self.u32()?))
    }
    /// Timespec: tv_sec_high, tv_sec_low, tv_nsec.
    fn timespec(&mut self) -> Result<f64, Error> {
        let high = self.u32()?;
        let low = self.u32()?;
        let nsec = self.u32()?;
        // 0x7fffffff in the high word marks a 32-bit timestamp.
        let high = if high == 0x7fff_ffff { 0 } else { high };
        let secs = (u64::from(high) << 32) | u64::from(low);
        Ok(secs as f64 + f64::from(nsec) / 1e9)
    }
    /// IPAddr: 16-byte union, family, padding. Ok(Err(id)) for a refclock/id address.
    fn ipaddr(&mut self) -> Result<Result<Option<IpAddr>, u32>, Error> {
        let raw: [u8; 16] = self.take()?;
        let family = self.u16()?;
        let _pad = self.u16()?;
        let first4 = [raw[0], raw[1], raw[2], raw[3]];
        Ok(match family {
            IPADDR_INET4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(first4)))),
            IPADDR_INET6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(raw)))),
            IPADDR_ID => Err(u32::from_be_bytes(first4)),
            IPADDR_UNSPEC => Ok(None),
            _ => Ok(None),
        })
    }
}

/// Builds a request padded to the reply's length, as protocol 6 requires against amplification.
fn build_request(
    command: u16,
    sequence: u32,
    attempt: u16,
    data: &[u8],
    reply_data_len: usize,
) -> Vec<u8> {
    let len = (REQ_HEADER_LEN + data.len()).max(RPY_HEADER_LEN + reply_data_len);
    let mut pkt = vec![0u8; len];
    pkt[0] = PROTO_VERSION;
    pkt[1] = PKT_TYPE_CMD_REQUEST;
    pkt[4..6].copy_from_slice(&command.to_be_bytes());
    pkt[6..8].copy_from_slice(&attempt.to_be_bytes());
    pkt[8..12].copy_from_slice(&sequence.to_be_bytes());
    pkt[REQ_HEADER_LEN..REQ_HEADER_LEN + data.len()].copy_from_slice(data);
    pkt
}

/// Outcome of checking one received datagram against the outstanding request.
#[derive(Debug, PartialEq)]
enum Check<'a> {
    /// The reply to our request; the data section.
    Ours(&'a [u8]),
    /// A stale or foreign datagram (other sequence number); keep waiting.
    Stray,
    /// Not a cmdmon reply at all; keep waiting but remember why.
    Garbage(String),
}

/// Validates a reply's header. Returns its data section when it answers (command, sequence).
fn check_reply(
    pkt: &[u8],
    command: u16,
    sequence: u32,
    reply: u16,
    data_len: usize,
) -> Result<Check<'_>, Error> {
    if pkt.len() < RPY_HEADER_LEN {
        return Ok(Check::Garbage(format!(
            "{} bytes, shorter than a header",
            pkt.len()
        )));
    }
    let mut r = Reader::new(pkt);
    let [version, pkt_type, _res1, _res2] = r.take::<4>()?;
    let rcommand = r.u16()?;
    let rreply = r.u16()?;
    let status = r.u16()?;
    let _pads: [u8; 6] = r.take()?;
    let rseq = r.u32()?;
    if pkt_type != PKT_TYPE_CMD_REPLY {
        return Ok(Check::Garbage(format!("packet type {pkt_type}")));
    }
    if rseq != sequence || rcommand != command {
        return Ok(Check::Stray);
    }
    if version != PROTO_VERSION {
        return Err(Error::BadReply(format!("protocol version {version}")));
    }
    if status != 0 {
        return Err(Error::Status(status));
    }
    if rreply != reply {
        return Err(Error::BadReply(format!(
            "reply code {rreply}, expected {reply}"
        )));
    }
    let data = &pkt[RPY_HEADER_LEN..];
    if data.len() < data_len {
        return Err(Error::BadReply(format!(
            "data {} bytes, expected {data_len}",
            data.len()
        )));
    }
    Ok(Check::Ours(&data[..data_len]))
}

pub fn parse_tracking(data: &[u8]) -> Result<Tracking, Error> {
    let mut r = Reader::new(data);
    let ref_id = r.u32()?;
    let ref_ip = r.ipaddr()?.unwrap_or(None);
    let stratum = r.u16()?;
    let leap_status = LeapStatus::from_wire(r.u16()?);
    let ref_time = r.timespec()?;
    Ok(Tracking {
        ref_id,
        ref_ip,
        stratum,
        leap_status,
        ref_time,
        current_correction: r.float()?,
        last_offset: r.float()?,
        rms_offset: r.float()?,
        freq_ppm: r.float()?,
        resid_freq_ppm: r.float()?,
        skew_ppm: r.float()?,
        root_delay: r.float()?,
        root_dispersion: r.float()?,
        last_update_interval: r.float()?,
    })
}

pub fn parse_source_data(data: &[u8]) -> Result<SourceData, Error> {
    let mut r = Reader::new(data);
    let name = match r.ipaddr()? {
        Ok(Some(ip)) => ip.to_string(),
        Ok(None) => "unspecified".to_string(),
        Err(id) => refid_to_string(id),
    };
    Ok(SourceData {
        name,
        poll: r.i16()?,
        stratum: r.u16()?,
        state: SourceState::from_wire(r.u16()?),
        mode: SourceMode::from_wire(r.u16()?),
        flags: r.u16()?,
        reachability: r.u16()?,
        since_sample: r.u32()?,
        orig_latest_meas: r.float()?,
        latest_meas: r.float()?,
        latest_meas_err: r.float()?,
    })
}

fn parse_n_sources(data: &[u8]) -> Result<u32, Error> {
    let n = Reader::new(data).u32()?;
    if n > MAX_SOURCES {
        return Err(Error::BadReply(format!("{n} sources")));
    }
    Ok(n)
}

enum Sock {
    Udp(UdpSocket),
    Unix { sock: UnixDatagram, path: PathBuf },
}

impl Drop for Sock {
    fn drop(&mut self) {
        if let Sock::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

static CLIENT_SOCKET_SEQ: AtomicU32 = AtomicU32::new(0);

/// A connected cmdmon client. Cheap to create; one per refresh keeps no stale state around.
pub struct Client {
    sock: Sock,
    /// Per-attempt reply timeout.
    timeout: Duration,
    /// Sends of one request (first try + resends).
    attempts: u16,
    sequence: u32,
}

impl Client {
    /// Opens a client socket for `addr`. For a Unix socket the client socket is bound in
    /// `client_dir` (chronyd replies to the client's address, so it must have one), or next to
    /// chronyd's socket, or in the temporary directory.
    pub async fn connect(
        addr: &Address,
        timeout: Duration,
        attempts: u16,
        client_dir: Option<&Path>,
    ) -> Result<Self, Error> {
        let sock = match addr {
            Address::Udp(a) => {
                let target = tokio::time::timeout(timeout, tokio::net::lookup_host(a.as_str()))
                    .await
                    .map_err(|_| Error::Connect(format!("resolving {a} timed out")))?
                    .map_err(|e| Error::Connect(format!("resolving {a}: {e}")))?
                    .next()
                    .ok_or_else(|| Error::Connect(format!("{a} resolves to no address")))?;
                let bind: SocketAddr = if target.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| Error::Connect(format!("bind: {e}")))?;
                s.connect(target)
                    .await
                    .map_err(|e| Error::Connect(format!("connect {target}: {e}")))?;
                Sock::Udp(s)
            }
            Address::Unix(server) => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                if let Some(d) = client_dir {
                    dirs.push(d.to_path_buf());
                }
                if let Some(d) = server.parent() {
                    dirs.push(d.to_path_buf());
                }
                dirs.push(std::env::temp_dir());
                let mut last_err = String::from("no directory to bind in");
                let mut bound = None;
                for dir in dirs {
                    let path = dir.join(format!(
                        "clock-exporter.{}.{}.sock",
                        std::process::id(),
                        CLIENT_SOCKET_SEQ.fetch_add(1, Ordering::Relaxed)
                    ));
                    let _ = std::fs::remove_file(&path);
                    match UnixDatagram::bind(&path) {
                        Ok(s) => {
                            // chronyd usually runs unprivileged: let it write its reply.
                            use std::os::unix::fs::PermissionsExt;
                            let _ = std::fs::set_permissions(
                                &path,
                                std::fs::Permissions::from_mode(0o666),
                            );
                            bound = Some((s, path));
                            break;
                        }
                        Err(e) => last_err = format!("bind {}: {e}", path.display()),
                    }
                }
                let (s, path) = bound.ok_or(Error::Connect(last_err))?;
                let sock = Sock::Unix { sock: s, path };
                if let Sock::Unix { sock: s, .. } = &sock {
                    s.connect(server).map_err(|e| {
                        Error::Connect(format!("connect {}: {e}", server.display()))
                    })?;
                }
                sock
            }
        };
        Ok(Client {
            sock,
            timeout,
            attempts: attempts.max(1),
            sequence: rand_u32(),
        })
    }

    async fn send(&self, pkt: &[u8]) -> std::io::Result<usize> {
        match &self.sock {
            Sock::Udp(s) => s.send(pkt).await,
            Sock::Unix { sock, .. } => sock.send(pkt).await,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &self.sock {
            Sock::Udp(s) => s.recv(buf).await,
            Sock::Unix { sock, .. } => sock.recv(buf).await,
        }
    }

    /// Sends one request and waits for its reply, resending up to `attempts` times.
    async fn request(
        &mut self,
        command: u16,
        data: &[u8],
        reply: u16,
        reply_len: usize,
    ) -> Result<Vec<u8>, Error> {
        self.sequence = self.sequence.wrapping_add(1);
        let seq = self.sequence;
        let mut buf = vec![0u8; 1024];
        let mut garbage = None;
        for attempt in 0..self.attempts {
            let pkt = build_request(command, seq, attempt, data, reply_len);
            match self.send(&pkt).await {
                Ok(_) => {}
                // Nothing listening on a local port shows up as ECONNREFUSED: no point retrying fast,
                // but keep the attempt budget identical to a silent drop.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(self.timeout).await;
                    continue;
                }
                Err(e) => return Err(Error::Io(format!("send: {e}"))),
            }
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let got = tokio::time::timeout_at(deadline, self.recv(&mut buf)).await;
                let n = match got {
                    Err(_) => break, // this attempt timed out
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // Port closed: wait out this attempt rather than spin.
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Err(e)) => return Err(Error::Io(format!("recv: {e}"))),
                };
                let pkt = buf.get(..n).unwrap_or(&[]);
                match check_reply(pkt, command, seq, reply, reply_len)? {
                    Check::Ours(d) => return Ok(d.to_vec()),
                    Check::Stray => continue,
                    Check::Garbage(why) => garbage = Some(why),
                }
            }
        }
        Err(garbage.map_or(Error::Timeout, Error::BadReply))
    }

    pub async fn tracking(&mut self) -> Result<Tracking, Error> {
        let data = self
            .request(REQ_TRACKING, &[], RPY_TRACKING, TRACKING_LEN)
            .await?;
        parse_tracking(&data)
    }

    pub async fn n_sources(&mut self) -> Result<u32, Error> {
        let data = self
            .request(REQ_N_SOURCES, &[], RPY_N_SOURCES, N_SOURCES_LEN)
            .await?;
        parse_n_sources(&data)
    }

    pub async fn source_data(&mut self, index: u32) -> Result<SourceData, Error> {
        let data = self
            .request(
                REQ_SOURCE_DATA,
                &index.to_be_bytes(),
                RPY_SOURCE_DATA,
                SOURCE_DATA_LEN,
            )
            .await?;
        parse_source_data(&data)
    }

    /// All sources, as `chronyc sources` lists them.
    pub async fn sources(&mut self) -> Result<Vec<SourceData>, Error> {
        let n = self.n_sources().await?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            match self.source_data(i).await {
                Ok(s) => out.push(s),
                // The list shrank between the two requests.
                Err(Error::Status(4)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// A random-enough starting sequence number so replies to an earlier client are not taken.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Everything one refresh learns from chronyd.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub tracking: Tracking,
    pub sources: Vec<SourceData>,
}

/// One full query: tracking and sources, each request bounded by `timeout` x `attempts`.
pub async fn query(
    addr: &Address,
    timeout: Duration,
    attempts: u16,
    client_dir: Option<&Path>,
) -> Result<Report, Error> {
    let mut c = Client::connect(addr, timeout, attempts, client_dir).await?;
    let tracking = c.tracking().await?;
    let sources = c.sources().await?;
    Ok(Report { tracking, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_decoding_matches_format() {
        // exp = 0, coef = 1 -> 2^-25
        assert_eq!(decode_float(1), 2f64.powi(-25));
        // exp = 25 (value coef * 1), coef = 3
        assert_eq!(decode_float((25 << 25) | 3), 3.0);
        // negative coefficient: coef = -1 (all ones in 25 bits), exp 25 -> -1.0
        assert_eq!(decode_float((25 << 25) | 0x01ff_ffff), -1.0);
        // negative exponent: exp = -1 (0x7f), coef = 1 -> 2^-26
        assert_eq!(decode_float((0x7f << 25) | 1), 2f64.powi(-26));
        assert_eq!(decode_float(0), 0.0);
        // Extremes decode to finite values.
        assert!(decode_float(u32::MAX).is_finite());
        assert!(decode_float(0x7fff_ffff).is_finite());
    }

    #[test]
    fn float_roundtrip_within_precision() {
        for &x in &[
            0.0, 1.0, -1.0, 1e-9, -3.5e-7, 0.000123, 12.5, -500.25, 1e6, 3.14159e-3, 2.0e-12,
        ] {
            let y = decode_float(encode_float(x));
            let tol = (x.abs() * 2f64.powi(-23)).max(1e-15);
            assert!((x - y).abs() <= tol, "{x} -> {y}");
        }
    }

    #[test]
    fn address_parsing() {
        assert_eq!(
            Address::parse("127.0.0.1:323").ok(),
            Some(Address::Udp("127.0.0.1:323".into()))
        );
        assert_eq!(
            Address::parse("localhost").ok(),
            Some(Address::Udp("localhost:323".into()))
        );
        assert_eq!(
            Address::parse("::1").ok(),
            Some(Address::Udp("[::1]:323".into()))
        );
        assert_eq!(
            Address::parse("[::1]:3230").ok(),
            Some(Address::Udp("[::1]:3230".into()))
        );
        assert_eq!(
            Address::parse("unix:///run/chrony/chronyd.sock").ok(),
            Some(Address::Unix("/run/chrony/chronyd.sock".into()))
        );
        assert!(Address::parse("unix://relative.sock").is_err());
        assert!(Address::parse("").is_err());
    }

    #[test]
    fn request_is_padded_to_reply_length() {
        let p = build_request(REQ_TRACKING, 7, 0, &[], TRACKING_LEN);
        assert_eq!(p.len(), RPY_HEADER_LEN + TRACKING_LEN);
        assert_eq!(p.len(), 104);
        assert_eq!(&p[..12], &[6, 1, 0, 0, 0, 33, 0, 0, 0, 0, 0, 7]);
        let p = build_request(REQ_SOURCE_DATA, 1, 2, &5u32.to_be_bytes(), SOURCE_DATA_LEN);
        assert_eq!(p.len(), 76);
        assert_eq!(&p[20..24], &[0, 0, 0, 5]);
        assert_eq!(
            build_request(REQ_N_SOURCES, 1, 0, &[], N_SOURCES_LEN).len(),
            32
        );
    }

    pub(crate) fn reply_header(command: u16, reply: u16, status: u16, seq: u32) -> Vec<u8> {
        let mut h = vec![0u8; RPY_HEADER_LEN];
        h[0] = PROTO_VERSION;
        h[1] = PKT_TYPE_CMD_REPLY;
        h[4..6].copy_from_slice(&command.to_be_bytes());
        h[6..8].copy_from_slice(&reply.to_be_bytes());
        h[8..10].copy_from_slice(&status.to_be_bytes());
        h[16..20].copy_from_slice(&seq.to_be_bytes());
        h
    }

    fn tracking_data() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&0xC000_0201u32.to_be_bytes());
        let mut ip = [0u8; 16];
        ip[..4].copy_from_slice(&[192, 0, 2, 1]);
        d.extend_from_slice(&ip);
        d.extend_from_slice(&IPADDR_INET4.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&3u16.to_be_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(&1_795_246_878u32.to_be_bytes());
        d.extend_from_slice(&500_000_000u32.to_be_bytes());
        for v in [
            -1.5e-6, 2e-7, 4e-7, -12.25, 0.001, 0.05, 0.002, 0.0005, 64.0,
        ] {
            d.extend_from_slice(&encode_float(v).to_be_bytes());
        }
        assert_eq!(d.len(), TRACKING_LEN);
        d
    }

    #[test]
    fn tracking_reply_parses() {
        let mut pkt = reply_header(REQ_TRACKING, RPY_TRACKING, 0, 42);
        pkt.extend(tracking_data());
        let Ok(Check::Ours(data)) = check_reply(&pkt, REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN)
        else {
            panic!("reply rejected");
        };
        let t = parse_tracking(data).expect("parses");
        assert_eq!(t.ref_name(), "192.0.2.1");
        assert_eq!(t.stratum, 3);
        assert_eq!(t.leap_status, LeapStatus::Normal);
        assert!((t.ref_time - 1_795_246_878.5).abs() < 1e-6);
        assert!((t.current_correction + 1.5e-6).abs() < 1e-12);
        assert!((t.freq_ppm + 12.25).abs() < 1e-6);
        assert!((t.root_distance() - (0.001 + 0.0005)).abs() < 1e-9);
        assert!((t.last_update_interval - 64.0).abs() < 1e-6);
    }

    #[test]
    fn reply_checks() {
        let mut pkt = reply_header(REQ_TRACKING, RPY_TRACKING, 0, 42);
        pkt.extend(tracking_data());
        // Other sequence: stray, keep waiting.
        assert_eq!(
            check_reply(&pkt, REQ_TRACKING, 43, RPY_TRACKING, TRACKING_LEN),
            Ok(Check::Stray)
        );
        // Error status.
        let bad = reply_header(REQ_TRACKING, RPY_NULL_FOR_TEST, 2, 42);
        assert_eq!(
            check_reply(&bad, REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN),
            Err(Error::Status(2))
        );
        // Wrong packet type (e.g. our own request reflected).
        let mut req = pkt.clone();
        req[1] = PKT_TYPE_CMD_REQUEST;
        assert!(matches!(
            check_reply(&req, REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN),
            Ok(Check::Garbage(_))
        ));
        // Wrong reply code.
        let mut wrong = pkt.clone();
        wrong[7] = RPY_SOURCE_DATA as u8;
        assert!(matches!(
            check_reply(&wrong, REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN),
            Err(Error::BadReply(_))
        ));
    }

    const RPY_NULL_FOR_TEST: u16 = 1;

    #[test]
    fn truncated_and_garbage_replies_never_panic() {
        let mut pkt = reply_header(REQ_TRACKING, RPY_TRACKING, 0, 42);
        pkt.extend(tracking_data());
        for n in 0..pkt.len() {
            let r = check_reply(&pkt[..n], REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN);
            assert!(
                !matches!(r, Ok(Check::Ours(_))),
                "truncated to {n} accepted"
            );
        }
        for n in 0..TRACKING_LEN {
            assert!(parse_tracking(&tracking_data()[..n]).is_err());
        }
        for n in 0..SOURCE_DATA_LEN {
            assert!(parse_source_data(&vec![0xffu8; n]).is_err());
        }
        // Pseudo-random garbage, all lengths: only Ok/Err, never a panic.
        let mut x: u32 = 0x1234_5678;
        for len in 0..300usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = check_reply(&buf, REQ_TRACKING, 42, RPY_TRACKING, TRACKING_LEN);
            let _ = parse_tracking(&buf);
            let _ = parse_source_data(&buf);
            let _ = parse_n_sources(&buf);
            // Same garbage behind a valid header.
            let mut p = reply_header(REQ_SOURCE_DATA, RPY_SOURCE_DATA, 0, 9);
            p.extend_from_slice(&buf);
            if let Ok(Check::Ours(d)) =
                check_reply(&p, REQ_SOURCE_DATA, 9, RPY_SOURCE_DATA, SOURCE_DATA_LEN)
            {
                let s = parse_source_data(d).expect("length was checked");
                assert!(s.name.len() <= 39);
            }
        }
        assert!(parse_n_sources(&100_000u32.to_be_bytes()).is_err());
    }

    #[test]
    fn source_data_parses_refclock_and_ipv6() {
        let mut d = Vec::new();
        d.extend_from_slice(b"PPS0");
        d.extend_from_slice(&[0u8; 12]);
        d.extend_from_slice(&IPADDR_ID.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&(-4i16).to_be_bytes());
        for v in [0u16, 0, 2, 0, 0o377] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&3u32.to_be_bytes());
        for v in [1e-6, 1.1e-6, 5e-8] {
            d.extend_from_slice(&encode_float(v).to_be_bytes());
        }
        let s = parse_source_data(&d).expect("parses");
        assert_eq!(s.name, "PPS0");
        assert_eq!(s.mode, SourceMode::RefClock);
        assert_eq!(s.poll, -4);
        assert_eq!(s.reachability, 0o377);
        assert_eq!(s.state, SourceState::Selected);

        d[..16].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        d[16..18].copy_from_slice(&IPADDR_INET6.to_be_bytes());
        assert_eq!(parse_source_data(&d).expect("parses").name, "::1");
    }

    #[tokio::test]
    async fn silent_server_times_out_within_budget() {
        // A bound socket that never answers.
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let t0 = std::time::Instant::now();
        let r = query(&addr, Duration::from_millis(100), 2, None).await;
        assert_eq!(r, Err(Error::Timeout));
        let el = t0.elapsed();
        assert!(el < Duration::from_millis(600), "{el:?}");
    }

    #[tokio::test]
    async fn stray_and_garbage_datagrams_are_skipped() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let fake = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let (n, peer) = server.recv_from(&mut buf).await.expect("recv");
            assert_eq!(n, 104);
            let seq = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            // Garbage, a stale reply, then the real one.
            server
                .send_to(b"\x06\x02garbage", peer)
                .await
                .expect("send");
            let mut stale = reply_header(REQ_TRACKING, RPY_TRACKING, 0, seq.wrapping_sub(1));
            stale.extend(tracking_data());
            server.send_to(&stale, peer).await.expect("send");
            let mut good = reply_header(REQ_TRACKING, RPY_TRACKING, 0, seq);
            good.extend(tracking_data());
            server.send_to(&good, peer).await.expect("send");
        });
        let mut c = Client::connect(&addr, Duration::from_millis(500), 1, None)
            .await
            .expect("connect");
        let t = c.tracking().await.expect("the matching reply is found");
        assert_eq!(t.stratum, 3);
        fake.await.expect("fake server");
    }

    #[tokio::test]
    async fn garbage_only_is_reported_as_bad_reply() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let fake = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let (_, peer) = server.recv_from(&mut buf).await.expect("recv");
            server
                .send_to(b"\x06\x02garbage", peer)
                .await
                .expect("send");
        });
        let mut c = Client::connect(&addr, Duration::from_millis(150), 1, None)
            .await
            .expect("connect");
        let r = c.tracking().await;
        assert!(matches!(r, Err(Error::BadReply(_))), "{r:?}");
        fake.await.expect("fake server");
    }
}
