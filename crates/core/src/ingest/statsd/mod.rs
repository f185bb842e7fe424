//! StatsD listeners: UDP and a Unix datagram socket, both optional, both feeding the same
//! mapper. Each runs on its own thread: a plain `recvmmsg` loop is the cheapest way to read
//! datagrams (it takes up to BATCH queued ones per call). An idle listener sleeps in `poll`
//! until a datagram or the shutdown arrives, so it costs no wake-ups; a UDP listener woken
//! by a datagram waits for the rest of the burst (`coalesce`). The UDP socket's kernel
//! drops are read with SO_MEMINFO once per flush and per wake-up, not attached to every
//! datagram.

pub mod apply;
mod coalesce;
mod names;
pub mod parse;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

pub use apply::StatsdMapper;

use self::coalesce::Coalesce;
use super::reason::StatsdReason;
use super::tally::{Counters, Tally};
use crate::context::{Shutdown, TaskContext, Woken};
use crate::metrics::{BoundCounter, Metrics};

/// Counters are flushed when the socket queue drains, but not more often than this (a flush
/// costs a getsockopt and the label lookups left: last-sample time, rejections)...
const FLUSH_MIN: Duration = Duration::from_millis(10);
/// ...and a count is held at most this long while a flood keeps the queue from draining.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Larger than any UDP payload; longer Unix datagrams are detected as truncated.
const MAX_DATAGRAM: usize = 65_536;
/// Asked of the kernel for the UDP receive queue (capped by net.core.rmem_max).
const RCVBUF_BYTES: libc::c_int = 8 << 20;

/// Starts the configured listeners.
pub fn spawn(ctx: &TaskContext, mapper: Arc<StatsdMapper>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    match ctx.config.statsd_udp_addr() {
        Ok(Some(addr)) => handles.extend(spawn_udp(ctx, mapper.clone(), addr)),
        Ok(None) => {}
        // Validated at start-up; reaching this means the config changed under us.
        Err(e) => ctx
            .health
            .source("statsd_udp")
            .failed("not listening", e.to_string()),
    }
    if let Some(path) = ctx.config.ingest.statsd_unixgram.clone() {
        handles.extend(spawn_unixgram(ctx, mapper, path));
    }
    handles
}

/// The UDP listener on `addr`, on a thread of its own; None (its source failed) when the
/// socket or the thread cannot be had.
fn spawn_udp(
    ctx: &TaskContext,
    mapper: Arc<StatsdMapper>,
    addr: std::net::SocketAddr,
) -> Option<JoinHandle<()>> {
    let health = ctx.health.source("statsd_udp");
    let counters = Counters::new(ctx.metrics.clone(), health.clone());
    match bind_udp(addr) {
        Ok(sock) => {
            let local = sock.local_addr().map_or(addr, |a| a);
            health.ok(format!("listening on udp {local}"));
            tracing::info!(target: "ingest", event = "statsd_listening", listener = "udp", address = %local);
            let listener = Listener {
                name: "udp",
                fd: sock.as_raw_fd(),
                counters,
                mapper,
                udp: Some(UdpQueue {
                    drops_seen: 0,
                    coalesce: Coalesce::new(),
                }),
            };
            let shutdown = ctx.shutdown.clone();
            match crate::context::source_thread("statsd-udp", move || {
                let _keep = sock;
                listener.run(&shutdown);
            }) {
                Ok(handle) => return Some(handle),
                Err(e) => health.failed("not listening", format!("thread: {e}")),
            }
        }
        Err(e) => {
            let msg = format!("cannot listen on udp {addr}: {e}");
            tracing::error!(target: "ingest", event = "statsd_bind_failed", error = %msg);
            health.failed("not listening", msg);
        }
    }
    None
}

/// The Unix datagram listener at `path`, on a thread of its own; it removes only the socket
/// it created when it stops.
fn spawn_unixgram(
    ctx: &TaskContext,
    mapper: Arc<StatsdMapper>,
    path: PathBuf,
) -> Option<JoinHandle<()>> {
    let health = ctx.health.source("statsd_unixgram");
    let counters = Counters::new(ctx.metrics.clone(), health.clone());
    match bind_unixgram(&path) {
        Ok((sock, ours)) => {
            health.ok(format!("listening on unixgram {}", path.display()));
            tracing::info!(target: "ingest", event = "statsd_listening", listener = "unixgram", path = %path.display());
            let listener = Listener {
                name: "unixgram",
                fd: sock.as_raw_fd(),
                counters,
                mapper,
                // A Unix datagram queue holds `net.unix.max_dgram_qlen` datagrams (10 by
                // default) and a full one blocks or fails the sender, so there are no
                // drops to count and no waiting for a burst.
                udp: None,
            };
            let shutdown = ctx.shutdown.clone();
            match crate::context::source_thread("statsd-unixgram", move || {
                listener.run(&shutdown);
                drop(sock);
                // Only the socket this exporter created: another may have taken the path.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == ours) {
                    let _ = std::fs::remove_file(&path);
                }
            }) {
                Ok(handle) => return Some(handle),
                Err(e) => health.failed("not listening", format!("thread: {e}")),
            }
        }
        Err(e) => {
            let msg = format!("cannot listen on unixgram {}: {e}", path.display());
            tracing::error!(target: "ingest", event = "statsd_bind_failed", error = %msg);
            health.failed("not listening", msg);
        }
    }
    None
}

fn bind_udp(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let fd = sock.as_raw_fd();
    // Best effort: a small buffer only means earlier (and counted) drops.
    let _ = setsockopt(fd, libc::SO_RCVBUF, RCVBUF_BYTES);
    Ok(sock)
}

/// Binds the Unix datagram socket; returns it with the (device, inode) of the path it
/// created, so that only that socket is removed at exit.
fn bind_unixgram(path: &PathBuf) -> io::Result<(UnixDatagram, (u64, u64))> {
    // A socket left behind by a previous run would make bind fail: removed, but only when
    // nothing listens on it (a connect is refused). A live one belongs to another process
    // (another exporter): taking it over would leave that one receiving nothing.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let probe = UnixDatagram::unbound()?;
            if probe.connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a live socket is already listening there (another exporter?)",
                ));
            }
            std::fs::remove_file(path)?;
        }
    }
    let sock = UnixDatagram::bind(path)?;
    let _ = setsockopt(sock.as_raw_fd(), libc::SO_RCVBUF, RCVBUF_BYTES);
    let meta = std::fs::symlink_metadata(path)?;
    Ok((sock, (meta.dev(), meta.ino())))
}

fn setsockopt(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is an open socket; the option value is a c_int of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams taken from the kernel per `recvmmsg` call when the queue has them.
const BATCH: usize = 32;

/// One datagram as received.
#[derive(Clone, Copy, Default)]
struct Received {
    len: usize,
    truncated: bool,
}

/// Buffers for one `recvmmsg` call: a datagram buffer per slot, and the message headers
/// that point at them, built once (the kernel only writes back lengths and flags, and the
/// headers' zeroing and filling cost more than a short burst's parsing).
struct RecvBatch {
    bufs: Vec<u8>,
    /// Point into `bufs`; heap-allocated so the pointers stay valid when the batch moves.
    iovs: Box<[libc::iovec; BATCH]>,
    /// Point into `iovs`.
    msgs: Box<[libc::mmsghdr; BATCH]>,
    got: [Received; BATCH],
}

/// What SO_MEMINFO reports of a socket's receive side.
struct SocketMemory {
    /// Bytes queued, as the kernel charges them (a datagram's buffer, not its payload).
    queued: u32,
    /// What `queued` may reach before the kernel drops.
    capacity: u32,
    /// Datagrams dropped since the socket was opened.
    drops: u32,
}

/// None where it cannot be read.
fn socket_memory(fd: RawFd) -> Option<SocketMemory> {
    const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
    let mut info = [0u32; DROPS + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize >= std::mem::size_of_val(&info)).then(|| SocketMemory {
        queued: info[libc::SK_MEMINFO_RMEM_ALLOC as usize],
        capacity: info[libc::SK_MEMINFO_RCVBUF as usize],
        drops: info[DROPS],
    })
}

impl RecvBatch {
    fn new() -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * MAX_DATAGRAM];
        // SAFETY: iovec and mmsghdr are plain data; zeroed values are valid empty headers.
        let mut iovs: Box<[libc::iovec; BATCH]> = Box::new(unsafe { std::mem::zeroed() });
        let mut msgs: Box<[libc::mmsghdr; BATCH]> = Box::new(unsafe { std::mem::zeroed() });
        for (iov, chunk) in iovs.iter_mut().zip(bufs.chunks_exact_mut(MAX_DATAGRAM)) {
            *iov = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
        }
        for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            bufs,
            iovs,
            msgs,
            got: [Received::default(); BATCH],
        }
    }

    fn datagram(&self, i: usize) -> &[u8] {
        let start = i * MAX_DATAGRAM;
        &self.bufs[start..start + self.got[i].len]
    }

    /// Takes the datagrams already queued, up to BATCH, without waiting; returns how many
    /// slots were filled (WouldBlock when none).
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        debug_assert!(std::ptr::eq(
            self.msgs[0].msg_hdr.msg_iov,
            self.iovs.as_ptr()
        ));
        // SAFETY: every header points at a live iovec of `iovs`, and each iovec at its own
        // MAX_DATAGRAM bytes of `bufs`; both live as long as `self` and never move (boxed,
        // and `bufs` is never resized). The kernel writes only the buffers, `msg_len`,
        // `msg_flags` and the zero name and control lengths back.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (got, msg) in self.got.iter_mut().zip(self.msgs.iter()).take(n) {
            *got = Received {
                len: (msg.msg_len as usize).min(MAX_DATAGRAM),
                truncated: msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(n)
    }
}

/// A listener's own counts of what it received, resolved once (they start at 0): a flush,
/// once per burst, then costs three atomic adds instead of three label lookups.
struct ReceivedCounters(Option<[BoundCounter; 3]>);

impl ReceivedCounters {
    fn bind(metrics: &Metrics, listener: &str) -> ReceivedCounters {
        let own = metrics.own();
        let bound = [
            &own.statsd_datagrams,
            &own.statsd_lines,
            &own.statsd_received_bytes,
        ]
        .map(|c| c.bind(&[listener]));
        match bound {
            [Ok(d), Ok(l), Ok(b)] => ReceivedCounters(Some([d, l, b])),
            // The self-metric tests hold these labels; a mismatch is a bug, not an input.
            _ => {
                tracing::error!(target: "metrics", listener, "statsd self-metrics do not take a listener label");
                ReceivedCounters(None)
            }
        }
    }

    fn add(&self, batch: &Batch) {
        if let Some([datagrams, lines, bytes]) = &self.0 {
            datagrams.add(batch.datagrams);
            lines.add(batch.lines);
            bytes.add(batch.bytes);
        }
    }
}

struct Listener {
    name: &'static str,
    fd: RawFd,
    counters: Counters<StatsdReason>,
    mapper: Arc<StatsdMapper>,
    /// What only a UDP listener keeps; None: receive at once, nothing to count.
    udp: Option<UdpQueue>,
}

/// A UDP listener's view of its socket queue.
struct UdpQueue {
    /// The kernel's cumulative drop count at the last look.
    drops_seen: u32,
    /// How long to wait for the rest of a burst.
    coalesce: Coalesce,
}

/// Per-listener counts between flushes.
#[derive(Default)]
struct Batch {
    datagrams: u64,
    lines: u64,
    bytes: u64,
    tally: Tally<StatsdReason>,
    /// One span per flush window that saw datagrams: cheap even under a flood.
    span: Option<tracing::Span>,
    /// When the first datagram since the last flush was received.
    started: Option<Instant>,
}

impl Listener {
    fn run(mut self, shutdown: &Shutdown) {
        let mut rb = RecvBatch::new();
        let mut batch = Batch::default();
        let mut last_flush = Instant::now();
        let received = ReceivedCounters::bind(self.counters.metrics(), self.name);
        while !shutdown.is_set() {
            match rb.recv(self.fd) {
                Ok(n) => self.apply(&rb, n, &mut batch),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The queue is empty: flush, then sleep in the kernel until a datagram,
                    // the shutdown, or (with counts held back) the earliest next flush.
                    let pending = batch.datagrams > 0 || !batch.tally.is_empty();
                    if pending && last_flush.elapsed() >= FLUSH_MIN {
                        self.count_kernel_drops();
                        self.flush(&received, &mut batch);
                        last_flush = Instant::now();
                    }
                    let pending = batch.datagrams > 0 || !batch.tally.is_empty();
                    let flush_in = pending.then(|| FLUSH_MIN.saturating_sub(last_flush.elapsed()));
                    match shutdown.wait_blocking(Some(self.fd), flush_in) {
                        Woken::Shutdown => break,
                        Woken::Readable => self.await_burst(),
                        Woken::Timeout => {}
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Transient socket errors (ECONNREFUSED from ICMP, ENOMEM) must not stop
                    // the listener; pause briefly so a persistent one cannot spin.
                    self.counters
                        .health()
                        .error(format!("{} receive: {e}", self.name));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // A flood never drains the queue. Timed from the batch's first datagram, not the
            // last flush: a burst after a quiet spell would otherwise flush on its first
            // receive and again, on a timer wake-up of its own, once the queue drained.
            if batch.started.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
                self.count_kernel_drops();
                self.flush(&received, &mut batch);
                last_flush = Instant::now();
            }
        }
        self.count_kernel_drops();
        self.flush(&received, &mut batch);
    }

    /// Parses and applies the `n` datagrams just received.
    fn apply(&self, rb: &RecvBatch, n: usize, batch: &mut Batch) {
        batch.started.get_or_insert_with(Instant::now);
        // Taken out and put back rather than cloned: a span clone is a registry round trip.
        let span = batch.span.take().unwrap_or_else(|| {
            tracing::info_span!(
                target: "ingest",
                "statsd.batch",
                listener = self.name,
                datagrams = tracing::field::Empty,
                lines = tracing::field::Empty,
                bytes = tracing::field::Empty,
            )
        });
        let in_span = span.enter();
        for i in 0..n {
            let r = rb.got[i];
            batch.datagrams += 1;
            batch.bytes += r.len as u64;
            if r.truncated {
                batch.tally.reject_with(StatsdReason::DatagramTooLarge, || {
                    format!("more than {MAX_DATAGRAM} bytes")
                });
            } else {
                batch.lines += self.mapper.apply_datagram(rb.datagram(i), &mut batch.tally);
            }
        }
        drop(in_span);
        batch.span = Some(span);
    }

    /// Woken by a datagram: waits for the rest of its burst, then adjusts the next wait to
    /// how full this one let the queue get.
    fn await_burst(&mut self) {
        let Some(wait) = self.udp.as_ref().map(|udp| udp.coalesce.wait()) else {
            return;
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if let Some((memory, dropped)) = self.look_at_queue() {
            if let Some(udp) = &mut self.udp {
                udp.coalesce.adjust(memory.queued, memory.capacity, dropped);
            }
        }
    }

    /// Adds what the kernel dropped since the last look to `statsd_udp_dropped_total`.
    fn count_kernel_drops(&mut self) {
        self.look_at_queue();
    }

    /// Reads the UDP socket's queue (SO_MEMINFO) and counts the drops since the last look;
    /// with whether there were any. None for a Unix socket or where it cannot be read.
    fn look_at_queue(&mut self) -> Option<(SocketMemory, bool)> {
        let udp = self.udp.as_mut()?;
        let memory = socket_memory(self.fd)?;
        // The kernel's count is a wrapping 32-bit counter.
        let dropped = memory.drops.wrapping_sub(udp.drops_seen);
        if dropped > 0 {
            let own = self.counters.metrics().own();
            own.statsd_udp_dropped.add(&[], u64::from(dropped));
            udp.drops_seen = memory.drops;
        }
        Some((memory, dropped > 0))
    }

    fn flush(&self, received: &ReceivedCounters, batch: &mut Batch) {
        if batch.datagrams > 0 {
            received.add(batch);
        }
        self.counters.flush(&mut batch.tally);
        if let Some(span) = batch.span.take() {
            span.record("datagrams", batch.datagrams);
            span.record("lines", batch.lines);
            span.record("bytes", batch.bytes);
        }
        batch.datagrams = 0;
        batch.lines = 0;
        batch.bytes = 0;
        batch.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_memory_reports_what_the_udp_queue_holds() {
        let receiver = bind_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = receiver.local_addr().expect("addr");
        let fd = receiver.as_raw_fd();
        let empty = socket_memory(fd).expect("SO_MEMINFO");
        assert_eq!((empty.queued, empty.drops), (0, 0));
        assert!(empty.capacity > 0);
        for _ in 0..3 {
            sender.send_to(b"x:1|c", to).expect("send");
        }
        // Loopback delivers within sendto: the datagrams are queued now.
        let after = socket_memory(fd).expect("SO_MEMINFO");
        assert!(after.queued > empty.queued, "{}", after.queued);
        assert_eq!(after.capacity, empty.capacity);
        let mut rb = RecvBatch::new();
        assert_eq!(rb.recv(fd).expect("recv"), 3);
        assert_eq!(socket_memory(fd).expect("SO_MEMINFO").queued, 0);
    }
}
