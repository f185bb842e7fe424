//! Talking to chronyd: one request at a time over UDP or its Unix socket, with resends,
//! a per-attempt timeout and a reply matched to its request by sequence number. Blocking:
//! the probe runs it on a thread of its own under a budget.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::io::ErrorKind;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use super::codec::*;
use super::{Address, Error, SourceData, Tracking};

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
    pub fn connect(
        addr: &Address,
        timeout: Duration,
        attempts: u16,
        client_dir: Option<&Path>,
    ) -> Result<Self, Error> {
        let sock = match addr {
            Address::Udp(a) => {
                let target = a
                    .to_socket_addrs()
                    .map_err(|e| Error::Connect(format!("resolving {a}: {e}")))?
                    .next()
                    .ok_or_else(|| Error::Connect(format!("{a} resolves to no address")))?;
                let bind: SocketAddr = if target.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(bind).map_err(|e| Error::Connect(format!("bind: {e}")))?;
                s.connect(target)
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

    fn send(&self, pkt: &[u8]) -> std::io::Result<usize> {
        match &self.sock {
            Sock::Udp(s) => s.send(pkt),
            Sock::Unix { sock, .. } => sock.send(pkt),
        }
    }

    /// Waits for a datagram until `deadline`; `Ok(None)` when none came.
    fn recv_until(&self, buf: &mut [u8], deadline: Instant) -> std::io::Result<Option<usize>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let got = match &self.sock {
            Sock::Udp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.recv(buf)),
            Sock::Unix { sock, .. } => sock
                .set_read_timeout(Some(left))
                .and_then(|()| sock.recv(buf)),
        };
        match got {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request and waits for its reply, resending up to `attempts` times.
    fn request(
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
            match self.send(&pkt) {
                Ok(_) => {}
                // Nothing listening on a local port shows up as ECONNREFUSED: no point retrying fast,
                // but keep the attempt budget identical to a silent drop.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    std::thread::sleep(self.timeout);
                    continue;
                }
                Err(e) => return Err(Error::Io(format!("send: {e}"))),
            }
            let deadline = Instant::now() + self.timeout;
            loop {
                let n = match self.recv_until(&mut buf, deadline) {
                    Ok(None) => break, // this attempt timed out
                    Ok(Some(n)) => n,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        // Port closed: wait out this attempt rather than spin.
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(e) => return Err(Error::Io(format!("recv: {e}"))),
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

    pub fn tracking(&mut self) -> Result<Tracking, Error> {
        let data = self.request(REQ_TRACKING, &[], RPY_TRACKING, TRACKING_LEN)?;
        parse_tracking(&data)
    }

    pub fn n_sources(&mut self) -> Result<u32, Error> {
        let data = self.request(REQ_N_SOURCES, &[], RPY_N_SOURCES, N_SOURCES_LEN)?;
        parse_n_sources(&data)
    }

    pub fn source_data(&mut self, index: u32) -> Result<SourceData, Error> {
        let data = self.request(
            REQ_SOURCE_DATA,
            &index.to_be_bytes(),
            RPY_SOURCE_DATA,
            SOURCE_DATA_LEN,
        )?;
        parse_source_data(&data)
    }

    /// All sources, as `chronyc sources` lists them.
    pub fn sources(&mut self) -> Result<Vec<SourceData>, Error> {
        let n = self.n_sources()?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            match self.source_data(i) {
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
pub fn query(
    addr: &Address,
    timeout: Duration,
    attempts: u16,
    client_dir: Option<&Path>,
) -> Result<Report, Error> {
    let mut c = Client::connect(addr, timeout, attempts, client_dir)?;
    let tracking = c.tracking()?;
    let sources = c.sources()?;
    Ok(Report { tracking, sources })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chrony::codec::tests::{reply_header, tracking_data};

    #[test]
    fn silent_server_times_out_within_budget() {
        // A bound socket that never answers.
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let t0 = std::time::Instant::now();
        let r = query(&addr, Duration::from_millis(100), 2, None);
        assert_eq!(r, Err(Error::Timeout));
        let el = t0.elapsed();
        assert!(el < Duration::from_millis(600), "{el:?}");
    }

    #[test]
    fn stray_and_garbage_datagrams_are_skipped() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let (n, peer) = server.recv_from(&mut buf).expect("recv");
            assert_eq!(n, 104);
            let seq = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            // Garbage, a stale reply, then the real one.
            server.send_to(b"\x06\x02garbage", peer).expect("send");
            let mut stale = reply_header(REQ_TRACKING, RPY_TRACKING, 0, seq.wrapping_sub(1));
            stale.extend(tracking_data());
            server.send_to(&stale, peer).expect("send");
            let mut good = reply_header(REQ_TRACKING, RPY_TRACKING, 0, seq);
            good.extend(tracking_data());
            server.send_to(&good, peer).expect("send");
        });
        let mut c = Client::connect(&addr, Duration::from_millis(500), 1, None).expect("connect");
        let t = c.tracking().expect("the matching reply is found");
        assert_eq!(t.stratum, 3);
        fake.join().expect("fake server");
    }

    #[test]
    fn garbage_only_is_reported_as_bad_reply() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = Address::Udp(server.local_addr().expect("addr").to_string());
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let (_, peer) = server.recv_from(&mut buf).expect("recv");
            server.send_to(b"\x06\x02garbage", peer).expect("send");
            // Kept open until the client gave up, so no ECONNREFUSED cuts the attempt short.
            std::thread::sleep(Duration::from_millis(300));
        });
        let mut c = Client::connect(&addr, Duration::from_millis(150), 1, None).expect("connect");
        let r = c.tracking();
        assert!(matches!(r, Err(Error::BadReply(_))), "{r:?}");
        fake.join().expect("fake server");
    }
}
