//! Real chronyd instances on loopback for the integration tests.
//!
//! `server` is a stratum-8 local reference serving NTP; `client` polls it every second and
//! has the sources list and tracking data the exporter reads. Neither touches the system
//! clock (`-x`). Both are killed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// chronyd and chronyc, or None after a loud skip message (a panic when tools are required).
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    match (find_tool("chronyd"), find_tool("chronyc")) {
        (Some(d), Some(c)) => Some((d, c)),
        (d, _) => {
            let what = if d.is_none() { "chronyd" } else { "chronyc" };
            if std::env::var("EXPORTER_TEST_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{what} not found and EXPORTER_TEST_REQUIRE_TOOLS=1");
            }
            eprintln!("SKIPPED: {what} not found (install Debian's chrony package)");
            None
        }
    }
}

pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local addr").port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "clock-exporter-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    // chronyd refuses a command socket in a directory others can write to.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

pub struct Chronyd {
    child: Option<Child>,
    pub dir: PathBuf,
    pub ntp_port: u16,
    pub cmd_port: u16,
    pub socket: PathBuf,
    chronyc: PathBuf,
}

impl Chronyd {
    fn start(chronyd: &Path, chronyc: &Path, tag: &str, extra: &str) -> Chronyd {
        let dir = temp_dir(tag);
        let ntp_port = free_udp_port();
        let mut cmd_port = free_udp_port();
        while cmd_port == ntp_port {
            cmd_port = free_udp_port();
        }
        let socket = dir.join("chronyd.sock");
        let conf = format!(
            "port {ntp_port}\n\
             cmdport {cmd_port}\n\
             bindaddress 127.0.0.1\n\
             bindcmdaddress 127.0.0.1\n\
             bindcmdaddress {sock}\n\
             cmdallow 127.0.0.1\n\
             allow 127.0.0.1\n\
             pidfile {d}/chronyd.pid\n\
             driftfile {d}/chronyd.drift\n\
             user root\n\
             {extra}\n",
            sock = socket.display(),
            d = dir.display(),
        );
        let conf_path = dir.join("chrony.conf");
        std::fs::write(&conf_path, conf).expect("write chrony.conf");
        let log = std::fs::File::create(dir.join("chronyd.log")).expect("log file");
        let child = Command::new(chronyd)
            .arg("-x") // never touch the system clock
            .arg("-d")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chronyd");
        Chronyd {
            child: Some(child),
            dir,
            ntp_port,
            cmd_port,
            socket,
            chronyc: chronyc.to_path_buf(),
        }
    }

    /// A stratum-8 local reference serving NTP on loopback.
    pub fn server(chronyd: &Path, chronyc: &Path) -> Chronyd {
        let d = Self::start(chronyd, chronyc, "server", "local stratum 8");
        d.wait_for(
            |c| c.chronyc(&["tracking"]).is_some_and(|o| o.contains(",8,")),
            "local reference",
        );
        d
    }

    /// A chronyd that polls `upstream` (a quick initial burst, then every 16 s so its tracking
    /// data stays put long enough to compare two readers) until it selects it.
    pub fn client(chronyd: &Path, chronyc: &Path, upstream: &Chronyd) -> Chronyd {
        let extra = format!(
            "server 127.0.0.1 port {} iburst minpoll 4 maxpoll 4",
            upstream.ntp_port
        );
        let d = Self::start(chronyd, chronyc, "client", &extra);
        d.wait_for(
            |c| {
                c.chronyc(&["sources"])
                    .is_some_and(|o| o.starts_with("^,*,"))
            },
            "upstream selected",
        );
        d
    }

    fn wait_for(&self, ok: impl Fn(&Chronyd) -> bool, what: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.join("chronyd.log")).unwrap_or_default();
        panic!("chronyd not ready ({what}) after 30 s; log:\n{log}");
    }

    pub fn udp_address(&self) -> String {
        format!("127.0.0.1:{}", self.cmd_port)
    }

    pub fn ntp_address(&self) -> String {
        format!("127.0.0.1:{}", self.ntp_port)
    }

    /// `chronyc -c -n <args>` against this daemon's command port.
    pub fn chronyc(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(&self.chronyc)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.cmd_port.to_string(),
                "-c",
                "-n",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses chronyc's CSV `tracking` line.
pub fn csv(line: &str) -> Vec<String> {
    line.trim().split(',').map(str::to_string).collect()
}

pub fn f(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// GET `path` from 127.0.0.1:`port`; the body, or None when not answering yet.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the exposition line that starts with `series` (name plus exact labels).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
