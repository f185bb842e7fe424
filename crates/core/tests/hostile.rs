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

/// A machine limit, not a missing tool: a loud skip even under EXPORTER_TEST_REQUIRE_TOOLS (as
/// the e2e test does where mount namespaces are refused).
fn no_room(sockets: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: this process cannot open {sockets} sockets (its hard fd limit is too low) ***\n"
    );
}

/// The attacks whose latency or memory is measured run one at a time: on a 2-core machine the
/// bcrypt guesses or the profiler of one test would otherwise be measured as another's scrape
/// latency.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ONE_ATTACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_ATTACK.lock().unwrap_or_else(|e| e.into_inner())
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
    let _alone = alone();
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
    let _alone = alone();
    const FLOOD: usize = 1100;
    if !room_for(FLOOD as u64) {
        no_room("1,100");
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
    let _alone = alone();
    const CONNS: usize = 700;
    if !room_for(CONNS as u64) {
        no_room("700");
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

/// A connection to `to` from the loopback address `from` (any of 127.0.0.0/8), as a client
/// on another host would come.
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values; its fd is
    // handed to TcpStream (which closes it) or closed here on error.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let local = sockaddr(from, 0);
        let remote = sockaddr(*to.ip(), to.port());
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// One GET with an Authorization header over a fresh connection from `from`; the status.
fn get_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr, auth: &str) -> Option<u16> {
    let mut s = connect_from(from, to).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// 100 clients (from 100 loopback addresses) guessing passwords, each guess new, while the
/// exporter reloads: a valid login that is not remembered yet is answered within a scrape
/// budget, and reloads (which used to hash a bcrypt on the serving thread) never stall
/// /-/healthy.
#[test]
fn password_guessing_and_reloads_do_not_stall_a_valid_login() {
    let _alone = alone();
    let dir = testkit::TempDir::new("hostile-auth");
    let web = dir.join("web.yml");
    // Cost 10, the usual one (about 60 ms a check here); one user per round, each logging in
    // for the first time in its round.
    let mut users = String::from("basic_auth_users:\n");
    for round in 0..5 {
        let hash = bcrypt::hash(format!("right-{round}"), 10).unwrap();
        users.push_str(&format!("  scraper{round}: '{hash}'\n"));
    }
    std::fs::write(&web, users).unwrap();
    let exp = Exporter::start(BIN, &[&format!("--web.config.file={}", web.display())]);
    let url = exp.url("/metrics");
    let addr = exp.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guesses = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attackers: Vec<_> = (0..100)
        .map(|i| {
            let (stop, guesses) = (stop.clone(), guesses.clone());
            let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let h = basic("scraper0", &format!("guess-{i}-{n}"));
                    if let Some(status) = get_from(from, addr, &h) {
                        assert_eq!(status, 401);
                    }
                    guesses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    // The first wave (every source new, none known to guess yet) costs one bcrypt each;
    // from then on each guessing source gets one check at a time and one slot in all.
    let wave = Instant::now();
    while guesses.load(std::sync::atomic::Ordering::Relaxed) < 100
        && wave.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("first wave of 100 new sources: {:?}", wave.elapsed());
    let mut first_logins = Vec::new();
    let mut healthy = Vec::new();
    for round in 0..5 {
        // A reload, then a user logging in for the first time (not remembered yet).
        let valid = basic(&format!("scraper{round}"), &format!("right-{round}"));
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &exp.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let t = Instant::now();
        let r = testkit::try_request(
            "GET",
            &exp.url("/-/healthy"),
            &[("Authorization", &basic("scraper0", "right-0"))],
        )
        .unwrap_or_else(|e| panic!("healthy failed: {e}"));
        assert_eq!(r.status, 200);
        healthy.push(t.elapsed());
        let t = Instant::now();
        let r = testkit::try_request("GET", &url, &[("Authorization", &valid)])
            .unwrap_or_else(|e| panic!("valid scrape failed: {e}"));
        first_logins.push(t.elapsed());
        assert_eq!(r.status, 200, "a valid login was refused under guessing");
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    first_logins.sort();
    healthy.sort();
    eprintln!(
        "{} guesses from 100 clients: first valid logins max {:?}, /-/healthy after SIGHUP max {:?}",
        guesses.load(std::sync::atomic::Ordering::Relaxed),
        first_logins[first_logins.len() - 1],
        healthy[healthy.len() - 1]
    );
    assert!(
        first_logins[first_logins.len() - 1] < Duration::from_secs(1),
        "{first_logins:?}"
    );
    assert!(
        healthy[healthy.len() - 1] < Duration::from_secs(1),
        "{healthy:?}"
    );
}

/// One datagram with a tiny sample rate or a huge increment cannot poison a counter: it is
/// rejected and counted, and later increments count.
#[test]
fn a_poisonous_statsd_sample_is_rejected_and_later_ones_count() {
    let exp = Exporter::start(BIN, &[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for line in [
        "fixture_cache_hits_total:1|c|@1e-300",
        "fixture_cache_hits_total:1e300|c",
        "fixture_cache_hits_total:1|c",
        "fixture_cache_hits_total:2|c|@0.5",
    ] {
        sock.send_to(line.as_bytes(), exp.statsd).unwrap();
    }
    exp.wait_for_value("fixture_cache_hits_total", 5.0, Duration::from_secs(10));
    // Rejections are tallied per batch: wait for both, then check the counter stayed at 5.
    let series = |reason: &str| {
        format!("fixture_exporter_ingest_rejected_total{{source=\"statsd\",reason=\"{reason}\"}}")
    };
    let text = testkit::eventually(Duration::from_secs(10), || {
        let text = exp.scrape_text();
        (testkit::sample_value(&text, &series("invalid_sample_rate")) == Some(1.0)
            && testkit::sample_value(&text, &series("invalid_value")) == Some(1.0))
        .then_some(text)
    })
    .unwrap_or_else(|| panic!("rejections not counted: {}", exp.scrape_text()));
    assert_eq!(
        testkit::sample_value(&text, "fixture_cache_hits_total"),
        Some(5.0)
    );
}

/// A second exporter pointed at a live exporter's Unix StatsD socket refuses it (source down,
/// saying why) instead of taking it over, and leaves it in place when it stops: the first keeps
/// receiving.
#[test]
fn a_live_unix_statsd_socket_is_not_taken_over() {
    let dir = testkit::TempDir::new("unixgram-hostile");
    let path = dir.join("statsd.sock");
    let flag = format!("--ingest.statsd-unixgram={}", path.display());
    let first = Exporter::start(BIN, &[&flag]);
    let second = Exporter::start(BIN, &[&flag]);
    let down = testkit::eventually(Duration::from_secs(10), || {
        let text = second.scrape_text();
        (testkit::sample_value(
            &text,
            "fixture_exporter_source_up{source=\"statsd_unixgram\"}",
        ) == Some(0.0))
        .then_some(())
    });
    assert!(
        down.is_some(),
        "second exporter took the socket: {}",
        second.logs()
    );
    assert!(
        second.logs().contains("already listening"),
        "{}",
        second.logs()
    );
    second.terminate();
    assert!(
        path.exists(),
        "the second exporter removed the first one's socket"
    );
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender
        .send_to(b"fixture_cache_hits_total:3|c", &path)
        .expect("the first exporter's socket is gone");
    first.wait_for_value("fixture_cache_hits_total", 3.0, Duration::from_secs(10));
    first.terminate();
    assert!(!path.exists(), "the first exporter left its socket behind");
}

/// A CPU profile's memory is bounded: the profiler keeps one sample table (pprof-rs holds it in
/// a static, so it is not returned), profiles after the first add nothing, and the symbol
/// cache symbolizing fills is cleared (docs/security.md gives the cost).
#[test]
fn cpu_profiles_cost_a_bounded_amount_of_memory() {
    let _alone = alone();
    let exp = Exporter::start(BIN, &["--web.enable-profiling"]);
    let before = rss_bytes(exp.pid());
    let mut after = Vec::new();
    for _ in 0..3 {
        let r = testkit::try_request("GET", &exp.url("/debug/pprof/profile?seconds=1"), &[])
            .expect("profile");
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(300));
        after.push(rss_bytes(exp.pid()));
    }
    eprintln!(
        "profiling: RSS {} MiB before, after each of three profiles {:?} MiB",
        before >> 20,
        after.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );
    assert!(
        after[0] < 160 << 20,
        "first profile: {} MiB",
        after[0] >> 20
    );
    assert!(
        after[2] <= after[0] + (8 << 20),
        "profiles keep adding memory: {after:?}"
    );
}
