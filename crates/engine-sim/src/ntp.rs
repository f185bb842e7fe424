//! The clock master serves time: a minimal SNTP (RFC 4330) server on a loopback UDP port that
//! answers with this host's clock, so clock-exporter's `--clock.ntp-server` has a real peer.
//! It runs on its own thread so receive and transmit timestamps are taken when the packet
//! arrives, not at the next tick of the simulation loop.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP era (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

pub struct NtpServer {
    pub addr: SocketAddr,
    /// While false, requests are read and dropped: the server looks unreachable.
    pub serving: Arc<AtomicBool>,
    pub answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NtpServer {
    pub fn start(addr: SocketAddr) -> std::io::Result<NtpServer> {
        let socket = UdpSocket::bind(addr)?;
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let serving = Arc::new(AtomicBool::new(true));
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, a, st) = (serving.clone(), answered.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let received = SystemTime::now();
                if !s.load(Ordering::Relaxed) {
                    continue;
                }
                if let Some(reply) = answer(&buf[..n], received, SystemTime::now()) {
                    if socket.send_to(&reply, from).is_ok() {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(NtpServer {
            addr,
            serving,
            answered,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ntp_timestamp(t: SystemTime) -> [u8; 8] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) as u32;
    let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}

/// The reply to a client (mode 3) request; None for anything else.
pub fn answer(req: &[u8], received: SystemTime, transmit: SystemTime) -> Option<[u8; 48]> {
    if req.len() < 48 || req[0] & 0x07 != 3 {
        return None;
    }
    let version = (req[0] >> 3) & 0x07;
    let mut r = [0u8; 48];
    r[0] = (version << 3) | 4; // LI 0 (no warning), server mode
    r[1] = 1; // stratum 1: the clock master is the cluster's reference
    r[2] = req[2]; // poll, echoed
    r[3] = (-20i8) as u8; // precision ~1 µs
    r[4..8].copy_from_slice(&(1u32 << 16 >> 10).to_be_bytes()); // root delay ~1 ms
    r[8..12].copy_from_slice(&(1u32 << 16 >> 10).to_be_bytes()); // root dispersion ~1 ms
    r[12..16].copy_from_slice(b"SIM\0");
    r[16..24].copy_from_slice(&ntp_timestamp(received - Duration::from_secs(16)));
    r[24..32].copy_from_slice(&req[40..48]); // originate = client's transmit
    r[32..40].copy_from_slice(&ntp_timestamp(received));
    r[40..48].copy_from_slice(&ntp_timestamp(transmit));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_client_request_over_loopback() {
        let server = NtpServer::start("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let port = server.addr.port();
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = (4 << 3) | 3;
        req[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        client.send_to(&req, ("127.0.0.1", port)).expect("send");
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(n, 48);
        assert_eq!(buf[0], (4 << 3) | 4);
        assert_eq!(buf[1], 1);
        assert_eq!(&buf[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let secs = u32::from_be_bytes([buf[40], buf[41], buf[42], buf[43]]) as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!((secs - NTP_UNIX_OFFSET).abs_diff(now) <= 2);

        // Not serving: the request goes unanswered.
        server.serving.store(false, Ordering::Relaxed);
        client.send_to(&req, ("127.0.0.1", port)).expect("send");
        assert!(client.recv(&mut buf).is_err());
    }

    #[test]
    fn ignores_non_client_packets() {
        let now = SystemTime::now();
        assert!(answer(&[0u8; 10], now, now).is_none());
        let mut server_mode = [0u8; 48];
        server_mode[0] = (4 << 3) | 4;
        assert!(answer(&server_mode, now, now).is_none());
    }
}
