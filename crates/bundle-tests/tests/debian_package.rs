//! The Debian packages as an operator gets them: built with cargo-deb from a release build,
//! installed with dpkg on this machine, the installed binary checked and served under its
//! system user, then purged. Needs root and cargo-deb (`.ci/run` installs it); elsewhere it
//! skips loudly. A package already installed here is never touched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{eventually, free_tcp_port, free_udp_port, require_tools, skip};

const BINARIES: [&str; 4] = [
    "tx-exporter",
    "ingestion-exporter",
    "olap-exporter",
    "clock-exporter",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use testkit::run_ok as run;

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// `program` as root: directly when we are root, else through password-less sudo.
fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", program]);
        cmd
    }
}

fn ready_to_run() -> bool {
    if !require_tools(&["dpkg", "cargo-deb", "setpriv", "readelf"]) {
        return false;
    }
    if !is_root() && !succeeds(Command::new("sudo").args(["-n", "true"])) {
        // A property of the machine, not a missing tool: skipped loudly even under
        // EXPORTER_TEST_REQUIRE_TOOLS (as the e2e does without mount namespaces).
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: installing packages needs root or password-less sudo ***\n"
        );
        return false;
    }
    for bin in BINARIES {
        if succeeds(Command::new("dpkg").args(["-s", bin])) {
            return skip(&format!(
                "{bin} is installed on this machine; not touching it"
            ));
        }
    }
    true
}

#[test]
fn debian_packages_install_serve_reload_and_purge() {
    if !ready_to_run() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Its own target directory: the outer `cargo test` holds the lock of the usual one.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("deb");
    let out = target.join("packages");
    let _ = fs::remove_dir_all(&out);
    let mut build = Command::new(&cargo);
    build
        .current_dir(root())
        .args(["build", "--release", "--target-dir"]);
    build.arg(&target);
    for bin in BINARIES {
        build.args(["-p", bin]);
    }
    run(&mut build);
    for bin in BINARIES {
        let deb = package(&cargo, &target, &out, bin);
        install_serve_purge(bin, &deb);
    }
}

/// Builds the package and checks what it holds.
fn package(cargo: &str, target: &Path, out: &Path, bin: &str) -> PathBuf {
    run(Command::new(cargo)
        .current_dir(root())
        // As the README builds it: cargo-deb would otherwise strip the symbol table the
        // release profile keeps, and CPU profiles would name no function.
        .args(["deb", "--no-build", "--no-strip", "-p", bin])
        .env("CARGO_TARGET_DIR", target)
        .arg("--output")
        .arg(out));
    let deb = fs::read_dir(out)
        .expect("packages dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{bin}_")))
        })
        .unwrap_or_else(|| panic!("no {bin} package in {}", out.display()));
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        format!("./usr/bin/{bin}"),
        format!("./etc/{bin}/config.toml"),
        format!("/systemd/system/{bin}.service"),
    ] {
        assert!(
            contents.contains(&path),
            "{bin}: {path} missing:\n{contents}"
        );
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert!(
        conffiles.contains(&format!("/etc/{bin}/config.toml")),
        "{bin}: config.toml is not a conffile: {conffiles}"
    );
    deb
}

/// Purges the package even when an assertion fails, so the machine is left as it was.
struct Installed<'a>(&'a str);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = as_root("dpkg").args(["--purge", self.0]).output();
        }
    }
}

fn install_serve_purge(bin: &str, deb: &Path) {
    run(as_root("dpkg").arg("-i").arg(deb));
    let _installed = Installed(bin);
    let installed = PathBuf::from(format!("/usr/bin/{bin}"));
    let size = fs::metadata(&installed).expect("installed binary").len();
    let sections = run(Command::new("readelf").arg("-S").arg(&installed));
    assert!(
        !sections.contains(".debug_info"),
        "{bin} is shipped with debug info:\n{sections}"
    );
    assert!(
        sections.contains(".symtab"),
        "{bin} is shipped without the symbol table CPU profiles name functions from:\n{sections}"
    );
    // Straight to stderr, so the figure shows in the test log.
    eprintln!(
        "{bin}: installed binary {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );

    let passwd = run(Command::new("getent").args(["passwd", bin]));
    assert!(passwd.contains(&format!("/var/lib/{bin}")), "{passwd}");
    let uid: u32 = passwd
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    let state = fs::metadata(format!("/var/lib/{bin}")).expect("state directory");
    assert_eq!(state.uid(), uid, "/var/lib/{bin} not owned by {bin}");

    let version = run(Command::new(&installed).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let config = format!("/etc/{bin}/config.toml");
    run(Command::new(&installed).args(["--config.file", &config, "--check-config"]));

    // Served as the package's unit runs it: its user, its config file, loopback ports here.
    let port = free_tcp_port();
    // setpriv execs the exporter itself, so signals below reach it, not a wrapper.
    let mut child = as_root("setpriv")
        .args(["--reuid", bin, "--regid", bin, "--init-groups"])
        .arg(&installed)
        .arg(format!("--config.file={config}"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--ingest.statsd-udp=127.0.0.1:{}", free_udp_port()))
        .arg(format!(
            "--ingest.positions-file=/var/lib/{bin}/positions.json"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start installed exporter");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let served = eventually(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let r = testkit::get(&url, &[]);
        (r.status == 200).then(|| r.text())
    });
    let prefix = bin.replace('-', "_");
    let text = served.unwrap_or_else(|| panic!("installed {bin} never served /metrics"));
    assert!(text.contains(&format!("{prefix}_build_info{{")), "{text}");
    // What `systemctl reload` sends.
    run(as_root("kill").args(["-HUP", &child.id().to_string()]));
    let reloaded = eventually(Duration::from_secs(10), || {
        let text = testkit::get(&url, &[]).text();
        let stamp = testkit::sample_value(
            &text,
            &format!("{prefix}_config_last_reload_success_timestamp_seconds"),
        )?;
        (testkit::sample_value(&text, &format!("{prefix}_config_last_reload_successful"))
            == Some(1.0))
        .then_some(stamp)
    });
    assert!(reloaded.is_some(), "{bin}: reload not reported");
    run(as_root("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().expect("wait");
    assert!(status.success(), "{bin} exited with {status} on SIGTERM");

    run(as_root("dpkg").args(["--purge", bin]));
    for gone in [
        installed,
        PathBuf::from(format!("/etc/{bin}")),
        PathBuf::from(format!("/var/lib/{bin}")),
    ] {
        assert!(!gone.exists(), "{} left after purge", gone.display());
    }
    assert!(
        !succeeds(Command::new("getent").args(["passwd", bin])),
        "user {bin} left after purge"
    );
}
