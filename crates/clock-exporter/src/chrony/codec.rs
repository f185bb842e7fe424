//! cmdmon packets: requests built and replies checked and parsed, over plain byte slices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{refid_to_string, Error, LeapStatus, SourceData, SourceMode, SourceState, Tracking};

pub(super) const PROTO_VERSION: u8 = 6;
pub(super) const PKT_TYPE_CMD_REQUEST: u8 = 1;
pub(super) const PKT_TYPE_CMD_REPLY: u8 = 2;

pub(super) const REQ_N_SOURCES: u16 = 14;
pub(super) const REQ_SOURCE_DATA: u16 = 15;
pub(super) const REQ_TRACKING: u16 = 33;

pub(super) const RPY_N_SOURCES: u16 = 2;
pub(super) const RPY_SOURCE_DATA: u16 = 3;
pub(super) const RPY_TRACKING: u16 = 5;

/// Request header: version, type, res1, res2, command(2), attempt(2), sequence(4), pad(8).
pub(super) const REQ_HEADER_LEN: usize = 20;
/// Reply header: version, type, res1, res2, command, reply, status, pad1-3 (2 each), sequence, pad4-5.
pub(super) const RPY_HEADER_LEN: usize = 28;

/// Length of each reply's data up to its EOR marker (what chronyd sends).
pub(super) const TRACKING_LEN: usize = 4 + IPADDR_LEN + 2 + 2 + 12 + 9 * 4;
pub(super) const N_SOURCES_LEN: usize = 4;
pub(super) const SOURCE_DATA_LEN: usize = IPADDR_LEN + 2 * 6 + 4 + 3 * 4;
pub(super) const IPADDR_LEN: usize = 20;

/// chronyd keeps at most a few hundred sources; a larger count means a corrupt reply.
pub(super) const MAX_SOURCES: u32 = 256;

pub(super) const IPADDR_UNSPEC: u16 = 0;
pub(super) const IPADDR_INET4: u16 = 1;
pub(super) const IPADDR_INET6: u16 = 2;
pub(super) const IPADDR_ID: u16 = 3;

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
pub(super) fn build_request(
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
pub(super) enum Check<'a> {
    /// The reply to our request; the data section.
    Ours(&'a [u8]),
    /// A stale or foreign datagram (other sequence number); keep waiting.
    Stray,
    /// Not a cmdmon reply at all; keep waiting but remember why.
    Garbage(String),
}

/// Validates a reply's header. Returns its data section when it answers (command, sequence).
pub(super) fn check_reply(
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

pub(super) fn parse_n_sources(data: &[u8]) -> Result<u32, Error> {
    let n = Reader::new(data).u32()?;
    if n > MAX_SOURCES {
        return Err(Error::BadReply(format!("{n} sources")));
    }
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chrony::Address;
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

    pub(crate) fn tracking_data() -> Vec<u8> {
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
}
