//! Test support shared by the exporters' integration tests: start the real binary on free
//! loopback ports, scrape it over HTTP, and parse what it serves with real parsers
//! (Python prometheus_client, promtool).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod conformance;
pub mod namespace;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set by CI: a missing tool is then a failure, not a skip.
pub const REQUIRE_TOOLS_ENV: &str = "EXPORTER_TEST_REQUIRE_TOOLS";

/// True when `tool` can be run; otherwise skips loudly (or panics under CI).
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    found || skip(&format!("{tool} not found"))
}

/// True when python3 can import every module; otherwise skips loudly (or panics under CI).
pub fn require_python(modules: &[&str]) -> bool {
    let script = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new("python3")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok || skip(&format!(
        "python3 modules {modules:?} not importable (pip install them)"
    ))
}

/// Runs `cmd` to completion; its stdout and stderr together, or a panic naming the command
/// and what it printed when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("run {shown}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown} failed:\n{text}");
    text
}

/// True when every tool can be run; otherwise skips loudly (or panics under CI).
pub fn require_tools(tools: &[&str]) -> bool {
    tools.iter().all(|t| require_tool(t))
}

/// Skips loudly, or panics under CI; returns false so callers can `return`.
pub fn skip(why: &str) -> bool {
    if std::env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| v == "1") {
        panic!("{why}, and {REQUIRE_TOOLS_ENV}=1 forbids skipping");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and a skip must show.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {why} (set {REQUIRE_TOOLS_ENV}=1 to fail instead) ***\n"
    );
    false
}

/// Ports handed out by this process, below Linux's ephemeral range (32768 and up): a port
/// picked there can be taken, between picking and binding, by the local end of some outgoing
/// connection (a scrape, an HTTP client), which happened under load in the e2e stack.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    // Each process starts somewhere else, so test binaries run one after another do not
    // retrace the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
    PORTS.start + n as u16
}

/// A TCP listener on a free loopback port outside the ephemeral range; drop it to hand the
/// port to the process under test.
/// Creates a FIFO at `path`: a file whose open or read blocks until a peer comes, the shape
/// of input that must never hang an exporter.
/// A stand-in engine: a copy of `sleep` named `name` in `dir`, sleeping 300 s.
pub fn spawn_fake_engine(dir: &TempDir, name: &str) -> std::process::Child {
    let exe = dir.join(name);
    if !exe.exists() {
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
    }
    // Another test thread forking while the copy was open for writing leaves the file busy for
    // a moment (ETXTBSY): retry briefly.
    for _ in 0..50 {
        match Command::new(&exe).arg("300").spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("start engine: {e}"),
        }
    }
    panic!("start engine: {} stayed busy", exe.display())
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: mkfifo with a valid C string.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn bind_tcp() -> TcpListener {
    loop {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", next_port())) {
            return l;
        }
    }
}

/// A UDP socket on a free loopback port outside the ephemeral range.
pub fn bind_udp() -> UdpSocket {
    loop {
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", next_port())) {
            return s;
        }
    }
}

pub fn free_tcp_port() -> u16 {
    bind_tcp().local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    bind_udp().local_addr().unwrap().port()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("exporter-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running exporter binary, killed on drop.
pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    pub statsd: SocketAddr,
    stderr_path: PathBuf,
    _dir: TempDir,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

impl Exporter {
    /// Starts `bin` on free loopback ports (HTTP and StatsD UDP) with extra `args`.
    pub fn start(bin: &str, args: &[&str]) -> Exporter {
        Self::start_with_env(bin, args, &[])
    }

    /// An explicit `--web.listen-address=` or `--ingest.statsd-udp=` in `args` is used
    /// instead of a free port.
    pub fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Exporter {
        Self::start_limited(bin, args, env, None)
    }

    /// As [`Exporter::start_with_env`], with the open-file limit (`RLIMIT_NOFILE`, soft and
    /// hard) set to `nofile` in the exporter's process, as systemd's `LimitNOFILE` does.
    pub fn start_limited(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Exporter {
        Self::start_customized(bin, args, env, |cmd| {
            let Some(n) = nofile else { return };
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
    }

    /// As [`Exporter::start_with_env`], with `customize` applied to the command before it is
    /// spawned (a `pre_exec`, for example).
    pub fn start_customized(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> Exporter {
        let given = |flag: &str| {
            args.iter()
                .rev()
                .find_map(|a| a.strip_prefix(flag))
                .and_then(|v| v.parse::<SocketAddr>().ok())
        };
        let addr = given("--web.listen-address=")
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_tcp_port())));
        let statsd = given("--ingest.statsd-udp=")
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_udp_port())));
        let dir = TempDir::new("run");
        let stderr_path = dir.join("stderr.log");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address={addr}"))
            .arg(format!("--ingest.statsd-udp={statsd}"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        customize(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut exporter = Exporter {
            child,
            addr,
            statsd,
            stderr_path,
            _dir: dir,
        };
        exporter.wait_ready();
        exporter
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exporter exited early ({status}): {}", self.logs());
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "exporter not listening on {} after 15 s: {}",
            self.addr,
            self.logs()
        );
    }

    /// What the exporter wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(&self.url(path), headers)
    }

    /// Scrapes /metrics in the 0.0.4 text format.
    pub fn scrape_text(&self) -> String {
        let r = self.get("/metrics", &[("Accept", "text/plain")]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// Scrapes /metrics in OpenMetrics.
    pub fn scrape_openmetrics(&self) -> String {
        let r = self.get(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// Scrapes until `series` shows `want` and returns that scrape; panics with the last
    /// scrape and the exporter's logs when `timeout` passes first.
    pub fn wait_for_value(&self, series: &str, want: f64, timeout: Duration) -> String {
        let mut last = String::new();
        let ok = eventually(timeout, || {
            last = self.scrape_text();
            (sample_value(&last, series) == Some(want)).then_some(())
        });
        if ok.is_none() {
            let got = sample_value(&last, series);
            panic!(
                "{series}: want {want}, got {got:?}\n{last}\n--- logs ---\n{}",
                self.logs()
            );
        }
        last
    }

    /// Waits for the event-log follower's first scan (its source reports "following N
    /// files"): it decides which files count as present at start-up (read from their end),
    /// so a test's own writes come after it even on a loaded machine.
    pub fn wait_for_follower(&self) {
        let ready = eventually(Duration::from_secs(15), || {
            self.get("/health", &[])
                .text()
                .contains("\"following ")
                .then_some(())
        });
        assert!(ready.is_some(), "follower never started: {}", self.logs());
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for a clean exit.
    /// `count` scrapes of /metrics (text format), `gap` apart: the slowest, and the last body.
    /// A scrape that fails panics with the exporter's log.
    pub fn scrape_series(&self, count: usize, gap: Duration) -> (Duration, String) {
        let mut slowest = Duration::ZERO;
        let mut body = String::new();
        for _ in 0..count {
            let t = Instant::now();
            let r = try_request("GET", &self.url("/metrics"), &[("Accept", "text/plain")])
                .unwrap_or_else(|e| panic!("scrape failed: {e}; {}", self.logs()));
            assert_eq!(r.status, 200);
            slowest = slowest.max(t.elapsed());
            body = r.text();
            std::thread::sleep(gap);
        }
        (slowest, body)
    }

    /// SIGTERM: the exit must be clean and come within `limit` (a source stuck in the kernel
    /// must not hold it up).
    pub fn terminate_within(self, limit: Duration) {
        let t = Instant::now();
        let status = self.terminate();
        assert!(status.success(), "{status}");
        assert!(t.elapsed() < limit, "exit took {:?}", t.elapsed());
    }

    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "exporter ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain HTTP GET; any status is returned, not turned into an error.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    request("GET", url, headers)
}

/// An HTTP request without a body; any status is returned, not turned into an error.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    try_request(method, url, headers).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// As [`request`], with a transport error (refused, reset) returned instead of a panic.
pub fn try_request(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|k| {
            let v = resp.header(&k).unwrap_or("").to_owned();
            (k, v)
        })
        .collect();
    let mut body = Vec::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_end(&mut body)
        .unwrap();
    Ok(Response {
        status,
        headers,
        body,
    })
}

pub fn gunzip(data: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut out)
        .expect("valid gzip");
    out
}

/// Parses an exposition with Python prometheus_client ("openmetrics" or "text").
/// Returns family name → {type, unit, samples: [[name, labels, value, exemplar]]}.
pub fn parse_with_python(exposition: &str, format: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/parse_exposition.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {format} parser rejected the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `promtool check metrics`; returns (success, combined output).
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), all)
}

/// Finds a sample value in 0.0.4/OpenMetrics text by exact series (`name{labels}` as printed).
pub fn sample_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?.split(' ').next()?;
        value.parse().ok()
    })
}

/// Sums the values of every series whose printed form starts with `prefix`
/// (e.g. `name{source="statsd"`), for checks over a whole label subset.
pub fn sum_values(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `f` returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
