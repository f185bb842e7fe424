//! Hostile clients against the real binary on loopback (docs/security.md): nobody who can reach
//! the port can keep scrapes out, exhaust memory or file descriptors, or hold a connection
//! past the read timeout. Every attack is bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::Exporter;

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");

/// Raises this process's soft fd limit so the attack itself can open its connections.
fn room_for(fds: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur < fds + 100 && lim.rlim_max >= fds + 100 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        lim.rlim_cur >= fds + 100
    }
}

fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Scrapes once a `period` for `count` times; returns each scrape's latency, panicking on a
/// failed one.
fn scrape_series(exp: &Exporter, count: usize, period: Duration) -> Vec<Duration> {
    let mut took = Vec::new();
    for _ in 0..count {
        let t = Instant::now();
        let r = testkit::try_request("GET", &exp.url("/metrics"), &[])
            .unwrap_or_else(|e| panic!("scrape failed under attack: {e}; {}", exp.logs()));
        assert_eq!(r.status, 200);
        assert!(r.text().contains("fixture_exporter_build_info"));
        took.push(t.elapsed());
        std::thread::sleep(period.saturating_sub(t.elapsed()));
    }
    took.sort();
    took
}

/// Closed by the server: EOF, a reset, or an error response followed by EOF.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Every state a connection can wait in is bounded by the read timeout: one that sends
/// nothing, one idle after a keep-alive request, an HTTP/2 preface (HTTP/2 is not served).
#[test]
fn idle_keepalive_and_http2_connections_are_closed_after_the_read_timeout() {
    let exp = Exporter::start(BIN, &["--web.header-read-timeout-seconds=1"]);
    let silent = TcpStream::connect(exp.addr).unwrap();
    let mut kept = TcpStream::connect(exp.addr).unwrap();
    kept.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut h2 = TcpStream::connect(exp.addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut half_h2 = TcpStream::connect(exp.addr).unwrap();
    half_h2.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let start = Instant::now();
    for (name, mut s) in [
        ("silent", silent),
        ("keep-alive after a request", kept),
        ("HTTP/2 preface", h2),
        ("half an HTTP/2 preface", half_h2),
    ] {
        assert!(
            closed_by_server(&mut s, Duration::from_secs(4)),
            "{name}: still open after {:?}",
            start.elapsed()
        );
    }
    assert!(start.elapsed() < Duration::from_secs(4));
    // curl's HTTP/2 with prior knowledge gets no HTTP/2 answer.
    if testkit::require_tool("curl") {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_version}", "-m", "5"])
            .arg("--http2-prior-knowledge")
            .arg(exp.url("/metrics"))
            .output()
            .unwrap();
        assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    }
}

/// 1,100 connections that say nothing, against an exporter limited to 1,024 fds (systemd's
/// default soft limit): scrapes once a second keep succeeding, fast; the exporter keeps its
/// connections under web.max_connections, its fds under the limit, its memory small.
#[test]
fn a_flood_of_silent_connections_cannot_keep_scrapes_out() {
    const FLOOD: usize = 1100;
    if !room_for(FLOOD as u64) {
        testkit::skip("this process cannot open 1,100 sockets (fd limit)");
        return;
    }
    let exp = Exporter::start_limited(BIN, &[], &[], Some(1024));
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < FLOOD && Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect_timeout(&exp.addr, Duration::from_secs(1)) {
            held.push(s);
        }
    }
    assert_eq!(held.len(), FLOOD, "the flood could not connect");
    let took = scrape_series(&exp, 8, Duration::from_millis(500));
    let (rss, fds) = (rss_bytes(exp.pid()), open_fds(exp.pid()));
    eprintln!(
        "{FLOOD} silent connections: scrape p50 {:?} max {:?}; exporter RSS {} MiB, {fds} fds",
        took[took.len() / 2],
        took[took.len() - 1],
        rss >> 20
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");
    assert!(rss < 64 << 20, "RSS {rss}");
    assert!(fds < 1024, "{fds} fds");
    drop(held);
}

/// 700 connections each buffering 12 KiB of headers that never end: memory stays bounded
/// (16 KiB of head per connection, web.max_connections of them), scrapes keep working.
#[test]
fn partial_headers_cannot_exhaust_memory() {
    const CONNS: usize = 700;
    if !room_for(CONNS as u64) {
        testkit::skip("this process cannot open 700 sockets (fd limit)");
        return;
    }
    let exp = Exporter::start(BIN, &[]);
    let before = rss_bytes(exp.pid());
    let mut header = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    while header.len() < 12 * 1024 {
        header.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut held = Vec::new();
    for _ in 0..CONNS {
        if let Ok(mut s) = TcpStream::connect_timeout(&exp.addr, Duration::from_secs(1)) {
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = s.write_all(&header);
            held.push(s);
        }
    }
    let took = scrape_series(&exp, 6, Duration::from_millis(500));
    let rss = rss_bytes(exp.pid());
    eprintln!(
        "{CONNS} connections x 12 KiB of headers: RSS {} -> {} MiB; scrape max {:?}",
        before >> 20,
        rss >> 20,
        took[took.len() - 1]
    );
    assert!(rss < 64 << 20, "RSS {rss}");
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");
    drop(held);
}
