//! Runtime behaviour shared by every tier, exercised through the real fixture-exporter binary (the fixture tier of crates/core/fixture):
//! configuration layering and checking, TLS with basic auth, clean shutdown.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::process::Command;

use testkit::{free_tcp_port, require_tool, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_good_file_and_prints_the_effective_config() {
    let dir = TempDir::new("cfg-good");
    let file = dir.join("tx.yaml");
    std::fs::write(
        &file,
        "web:\n  listen_address: 127.0.0.1:9999\ningest:\n  log_path: [/var/log/db/*.log]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        &["--config.file", file.to_str().unwrap(), "--check-config"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    let effective: toml_lite::Doc = toml_lite::parse(&stdout);
    assert_eq!(
        effective.get("web", "listen_address"),
        Some("\"127.0.0.1:9999\"")
    );
    assert_eq!(
        effective.get("ingest", "statsd_udp"),
        Some("\"127.0.0.1:8190\"")
    );
}

#[test]
fn check_config_rejects_bad_files_with_a_clear_message() {
    let dir = TempDir::new("cfg-bad");
    let cases = [
        ("unknown.toml", "[web]\nlisten_addres = \"127.0.0.1:1\"\n", "unknown field `listen_addres`"),
        ("addr.toml", "[web]\nlisten_address = \"localhost\"\n", "web.listen_address"),
        ("syntax.yaml", "web: [unclosed\n", "tx.yaml"),
        ("section.toml", "[olap]\ndata_dir = \"/x\"\n", "unknown section [olap]"),
        ("rule.toml", "[[events]]\nevent = \"x\"\neffects = [{ op = \"inc\", metric = \"fixture_nope_total\" }]\n", "unknown metric"),
    ];
    for (name, body, expected) in cases {
        let file = dir.join(name);
        std::fs::write(&file, body).unwrap();
        let (code, _, stderr) = run(
            &["--config.file", file.to_str().unwrap(), "--check-config"],
            &[],
        );
        assert_eq!(code, 2, "{name}: {stderr}");
        let expected = if expected == "tx.yaml" {
            name
        } else {
            expected
        };
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr}"
        );
    }
    let (code, _, stderr) = run(
        &["--config.file", "/nonexistent/x.toml", "--check-config"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/x.toml"), "{stderr}");
    let (code, _, stderr) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = TempDir::new("cfg-env");
    let file = dir.join("tx.toml");
    std::fs::write(
        &file,
        "[web]\ntelemetry_path = \"/from-file\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [("FIXTURE_EXPORTER__WEB__TELEMETRY_PATH", "/from-env")];
    let (code, stdout, stderr) = run(&["--config.file", f, "--check-config"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("telemetry_path = \"/from-env\""),
        "{stdout}"
    );
    assert!(stdout.contains("level = \"warn\""), "{stdout}");
    let (_, stdout, _) = run(
        &[
            "--config.file",
            f,
            "--check-config",
            "--web.telemetry-path=/from-flag",
        ],
        &env,
    );
    assert!(
        stdout.contains("telemetry_path = \"/from-flag\""),
        "{stdout}"
    );

    // And the running binary really serves where env says.
    let exporter = Exporter::start_with_env(BIN, &["--config.file", f], &env);
    assert_eq!(exporter.get("/from-env", &[]).status, 200);
    assert_eq!(exporter.get("/metrics", &[]).status, 404);
}

#[test]
fn sigterm_stops_cleanly() {
    let exporter = Exporter::start(BIN, &["--log.format=logfmt"]);
    let logs_before = exporter.logs();
    assert!(logs_before.contains("event=listening"), "{logs_before}");
    let status = exporter.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn json_logs_carry_the_seed_fields() {
    let exporter = Exporter::start(BIN, &[]);
    // The socket accepts connections a moment before the line is written.
    let line = testkit::eventually(std::time::Duration::from_secs(5), || {
        exporter
            .logs()
            .lines()
            .find(|l| l.contains("\"listening\""))
            .map(str::to_owned)
    })
    .expect("listening line");
    let line = line.as_str();
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    for field in ["timestamp", "level", "component", "event", "host"] {
        assert!(v.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(v["event"], "listening");
}

/// Writes a self-signed certificate and a web config with one bcrypt user.
fn tls_web_config(dir: &TempDir) -> std::path::PathBuf {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let hash = bcrypt::hash("s3cret", 5).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n\
             basic_auth_users:\n  Alice: '{hash}'\n"
        ),
    )
    .unwrap();
    web
}

#[test]
fn tls_with_basic_auth_refuses_anonymous_and_serves_users() {
    if !require_tool("curl") {
        return;
    }
    let dir = TempDir::new("tls");
    let web = tls_web_config(&dir);
    let port = free_tcp_port();
    let exporter = Exporter::start(
        BIN,
        &[
            &format!("--web.config.file={}", web.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    assert_eq!(exporter.addr.port(), port);
    let curl = |extra: &[&str]| -> String {
        let url = format!("https://localhost:{port}/metrics");
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(dir.join("cert.pem"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&[]), "401");
    assert_eq!(curl(&["-u", "Alice:wrong"]), "401");
    assert_eq!(
        curl(&["-u", "alice:s3cret"]),
        "401",
        "user names are case sensitive"
    );
    assert_eq!(curl(&["-u", "Alice:s3cret"]), "200");
    // Plain HTTP on the TLS port does not get metrics.
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    drop(exporter);
}

#[test]
fn web_config_errors_stop_start_up() {
    let dir = TempDir::new("tls-bad");
    let web = dir.join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  bob: plaintext\n").unwrap();
    let (code, _, stderr) = run(&[&format!("--web.config.file={}", web.display())], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a valid bcrypt hash"), "{stderr}");
    // A truncated hash would lock its user out for good: refused at load too.
    std::fs::write(&web, "basic_auth_users:\n  bob: $2y$10$tooshort\n").unwrap();
    let (code, _, stderr) = run(&[&format!("--web.config.file={}", web.display())], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a valid bcrypt hash"), "{stderr}");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: k.pem\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&[&format!("--web.config.file={}", web.display())], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// Just enough TOML reading to look up `key` in `[section]` of --check-config output.
mod toml_lite {
    pub struct Doc(Vec<(String, String, String)>);

    pub fn parse(text: &str) -> Doc {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_owned();
            } else if let Some((k, v)) = line.split_once(" = ") {
                entries.push((section.clone(), k.to_owned(), v.to_owned()));
            }
        }
        Doc(entries)
    }

    impl Doc {
        pub fn get(&self, section: &str, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(s, k, _)| s == section && k == key)
                .map(|(_, _, v)| v.as_str())
        }
    }
}

/// A StatsD port another process holds: the exporter still serves, and says in /metrics (not
/// only on /health) that its StatsD source is down.
#[test]
fn a_source_that_failed_shows_in_metrics_from_the_first_scrape() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let exporter = Exporter::start(BIN, &[&format!("--ingest.statsd-udp={addr}")]);
    let text = exporter.scrape_text();
    assert_eq!(
        testkit::sample_value(&text, "fixture_exporter_source_up{source=\"statsd_udp\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(exporter.get("/health", &[]).status, 503);
    // A source that works is 1.
    let ok = Exporter::start(BIN, &[]);
    let text = ok.scrape_text();
    assert_eq!(
        testkit::sample_value(&text, "fixture_exporter_source_up{source=\"statsd_udp\"}"),
        Some(1.0),
        "{text}"
    );
    drop(taken);
}

/// SIGHUP's default action would end the process without saving positions: here it reloads
/// (with no file: the same defaults) and the exporter runs on.
#[test]
fn sighup_reloads_and_does_not_stop_the_exporter() {
    let exporter = Exporter::start(BIN, &[]);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(exporter.pid(), libc::SIGHUP) };
    let reloaded = testkit::eventually(std::time::Duration::from_secs(10), || {
        exporter.logs().contains("config_reloaded").then_some(())
    });
    assert!(exporter
        .scrape_text()
        .contains("fixture_exporter_build_info"));
    assert!(reloaded.is_some(), "{}", exporter.logs());
    assert!(exporter.terminate().success());
}

/// An invalid glob is refused before start-up, by --check-config too.
#[test]
fn an_invalid_glob_is_refused_at_load() {
    for extra in [&[][..], &["--check-config"][..]] {
        let mut args = vec!["--ingest.log-path=/tmp/[oops"];
        args.extend_from_slice(extra);
        let (code, _, stderr) = run(&args, &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("ingest.log_path"), "{stderr}");
    }
}

/// Liveness and readiness probes beside the JSON /health, as Prometheus names them.
#[test]
fn probe_endpoints_answer() {
    let exporter = Exporter::start(BIN, &[]);
    for path in ["/-/healthy", "/-/ready"] {
        let r = exporter.get(path, &[]);
        assert_eq!(r.status, 200, "{path}");
    }
}

/// --version and build_info carry the build facts node_exporter's do.
#[test]
fn version_and_build_info_name_the_build() {
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("fixture-exporter, version "), "{stdout}");
    for part in ["revision: ", "branch: ", "rustc version:", "platform:"] {
        assert!(stdout.contains(part), "{part} missing: {stdout}");
    }
    let exporter = Exporter::start(BIN, &[]);
    let text = exporter.scrape_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("fixture_exporter_build_info{"))
        .expect("build_info");
    for label in [
        "version=",
        "revision=",
        "branch=",
        "rustc_version=\"rustc ",
        "target=",
        "tier=\"fixture\"",
    ] {
        assert!(line.contains(label), "{label} missing: {line}");
    }
}

/// Every exporter-toolkit web config key is honoured (checked with curl as the TLS client) or
/// refused at load with a message naming it.
#[test]
fn web_config_keys_are_honoured_or_refused() {
    if !require_tool("curl") {
        return;
    }
    let dir = TempDir::new("tls-keys");
    let base = std::fs::read_to_string(tls_web_config(&dir)).unwrap();
    let web = dir.join("web.yml");
    let with = |extra_tls: &str, extra: &str| {
        let text = base.replace(
            "  key_file: key.pem\n",
            &format!("  key_file: key.pem\n{extra_tls}"),
        );
        std::fs::write(&web, format!("{text}{extra}")).unwrap();
    };
    // Refused at load, each with its key named.
    for (tls, extra, key) in [
        ("  cipher_suites: [BOGUS]\n", "", "cipher_suites"),
        (
            "  curve_preferences: [CurveP521]\n",
            "",
            "curve_preferences",
        ),
        ("  min_version: TLS10\n", "", "min_version"),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "",
            "max_version",
        ),
        (
            "  client_allowed_sans: [a.example]\n",
            "",
            "client_allowed_sans",
        ),
        ("", "http_server_config:\n  http2: true\n", "http2"),
        (
            "",
            "http_server_config:\n  headers:\n    Content-Type: x\n",
            "Content-Type",
        ),
    ] {
        with(tls, extra);
        let (code, _, stderr) = run(&[&format!("--web.config.file={}", web.display())], &[]);
        assert_eq!(code, 2, "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    // Honoured: TLS 1.2 only, one cipher suite, one curve, and an extra header.
    with(
        "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\n  prefer_server_cipher_suites: true\n",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    );
    let port = free_tcp_port();
    let _exporter = Exporter::start(
        BIN,
        &[
            &format!("--web.config.file={}", web.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    let curl = |extra: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
            ])
            .arg(dir.join("cert.pem"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-u", "Alice:s3cret"])
            .args(extra)
            .arg(format!("https://localhost:{port}/metrics"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.lines().last().unwrap_or_default().trim().to_owned();
        (code, text.to_ascii_lowercase())
    };
    let (code, headers) = curl(&[]);
    assert_eq!(code, "200", "{headers}");
    assert!(headers.contains("x-frame-options: deny"), "{headers}");
    assert_ne!(
        curl(&["--tlsv1.3"]).0,
        "200",
        "TLS 1.3 is above max_version"
    );
    assert_eq!(
        curl(&[
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES128-GCM-SHA256"
        ])
        .0,
        "200"
    );
    assert_ne!(
        curl(&[
            "--tls-max",
            "1.2",
            "--ciphers",
            "ECDHE-ECDSA-AES256-GCM-SHA384"
        ])
        .0,
        "200",
        "a suite not in cipher_suites"
    );
    assert_ne!(
        curl(&["--curves", "P-256"]).0,
        "200",
        "a curve not in curve_preferences"
    );
}

/// A slowloris of half-sent requests neither stalls scrapes nor keeps its connections: each is
/// closed once web.header_read_timeout_seconds has passed without its headers.
#[test]
fn half_open_requests_are_shed_and_scrapes_keep_working() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let exporter = Exporter::start(BIN, &["--web.header-read-timeout-seconds=1"]);
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut s = std::net::TcpStream::connect(exporter.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(s);
    }
    let t = Instant::now();
    assert!(exporter
        .scrape_text()
        .contains("fixture_exporter_build_info"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "scrape took {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        // Closed by the server: EOF, or a 408 response followed by EOF.
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains(" 408 ") => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, idle.len(), "every half-open connection is closed");
}
