//! Configuration reload on the real fixture-exporter binary: SIGHUP and `POST /-/reload`
//! apply new users, log globs, limits and event rules without losing counters or positions;
//! a bad or restart-only change is refused and the old configuration keeps running.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use testkit::{eventually, free_tcp_port, request, require_tool, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const SELF: &str = "fixture_exporter_";

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn append(path: &Path, lines: usize, event: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in 0..lines {
        writeln!(
            f,
            "{{\"timestamp\":\"2026-11-30T10:00:00.{:03}Z\",\"event\":\"{event}\",\"duration_ms\":3}}",
            i % 1000
        )
        .unwrap();
    }
}

fn write_config(path: &Path, globs: &[&Path], web: &Path, series_limit: usize, extra: &str) {
    let globs: Vec<String> = globs
        .iter()
        .map(|g| format!("{:?}", g.display().to_string()))
        .collect();
    std::fs::write(
        path,
        format!(
            "[web]\nconfig_file = {:?}\n\n[ingest]\nlog_path = [{}]\nseries_limit = {series_limit}\n{extra}",
            web.display().to_string(),
            globs.join(", ")
        ),
    )
    .unwrap();
}

fn users(path: &Path, user: &str, password: &str) {
    let hash = bcrypt::hash(password, 4).unwrap();
    std::fs::write(path, format!("basic_auth_users:\n  {user}: '{hash}'\n")).unwrap();
}

fn scrape(exp: &Exporter, auth: &str) -> String {
    let r = exp.get("/metrics", &[("Authorization", auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

fn value(text: &str, series: &str) -> f64 {
    sample_value(text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

fn wait_value(exp: &Exporter, auth: &str, series: &str, want: f64) -> String {
    eventually(Duration::from_secs(15), || {
        let text = scrape(exp, auth);
        (sample_value(&text, series) == Some(want)).then_some(text)
    })
    .unwrap_or_else(|| panic!("{series} never reached {want}:\n{}", scrape(exp, auth)))
}

#[test]
fn sighup_and_post_reload_apply_users_globs_limits_and_rules_keeping_counters() {
    let dir = TempDir::new("reload");
    let (a, b) = (dir.join("a.log"), dir.join("b.log"));
    append(&a, 0, "transaction_committed");
    let (config, web) = (dir.join("exporter.toml"), dir.join("web.yml"));
    users(&web, "alice", "one");
    write_config(&config, &[&a], &web, 50, "");
    let exp = Exporter::start(
        BIN,
        &[
            &format!("--config.file={}", config.display()),
            "--ingest.read-from-start",
            "--web.enable-lifecycle",
        ],
    );
    let alice = basic("alice", "one");
    let text = scrape(&exp, &alice);
    assert_eq!(
        value(&text, &format!("{SELF}config_last_reload_successful")),
        1.0
    );
    let loaded_at = value(
        &text,
        &format!("{SELF}config_last_reload_success_timestamp_seconds"),
    );
    append(&a, 5, "transaction_committed");
    wait_value(&exp, &alice, "fixture_transactions_total", 5.0);

    // New user, a second glob, a new rule, a new limit; SIGHUP.
    users(&web, "bob", "two");
    append(&b, 3, "transaction_committed");
    write_config(
        &config,
        &[&a, &b],
        &web,
        7,
        "\n[[events]]\nevent = \"bulk_commit\"\neffects = [{ op = \"inc\", metric = \"fixture_transactions_total\" }]\n",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let hup = Command::new("kill")
        .args(["-HUP", &exp.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let bob = basic("bob", "two");
    let refused = eventually(Duration::from_secs(10), || {
        (exp.get("/metrics", &[("Authorization", &alice)]).status == 401).then_some(())
    });
    assert!(
        refused.is_some(),
        "alice still served after reload: {}",
        exp.logs()
    );
    // The counter kept its 5 and gained b.log's 3 lines (read from its start: the glob is new).
    let text = wait_value(&exp, &bob, "fixture_transactions_total", 8.0);
    assert!(
        value(
            &text,
            &format!("{SELF}config_last_reload_success_timestamp_seconds")
        ) > loaded_at
    );
    assert_eq!(
        value(&text, &format!("{SELF}config_last_reload_successful")),
        1.0
    );
    assert!(
        text.contains(&format!("source=\"log:{}\"", b.display())),
        "{text}"
    );
    append(&b, 2, "bulk_commit");
    wait_value(&exp, &bob, "fixture_transactions_total", 10.0);

    // Drop glob a: its health goes away, b keeps being followed.
    write_config(&config, &[&b], &web, 7, "");
    let reload = request("POST", &exp.url("/-/reload"), &[("Authorization", &bob)]);
    assert_eq!(reload.status, 200, "{}", reload.text());
    let gone = eventually(Duration::from_secs(10), || {
        (!scrape(&exp, &bob).contains(&format!("source=\"log:{}\"", a.display()))).then_some(())
    });
    assert!(gone.is_some(), "glob a still reported");
    append(&b, 1, "transaction_committed");
    wait_value(&exp, &bob, "fixture_transactions_total", 11.0);

    // A broken file, then a restart-only change: refused, the old configuration runs on.
    std::fs::write(&config, "[ingest\nlog_path = 3\n").unwrap();
    let reload = request("POST", &exp.url("/-/reload"), &[("Authorization", &bob)]);
    assert_eq!(reload.status, 500, "{}", reload.text());
    let text = scrape(&exp, &bob);
    assert_eq!(
        value(&text, &format!("{SELF}config_last_reload_successful")),
        0.0
    );
    write_config(
        &config,
        &[&b],
        &web,
        7,
        "\n[engine]\nprocess_name = \"other\"\n",
    );
    let reload = request("POST", &exp.url("/-/reload"), &[("Authorization", &bob)]);
    assert_eq!(reload.status, 500);
    assert!(
        reload.text().contains("engine.process_name"),
        "{}",
        reload.text()
    );
    append(&b, 1, "transaction_committed");
    let text = wait_value(&exp, &bob, "fixture_transactions_total", 12.0);
    assert_eq!(
        value(&text, &format!("{SELF}config_last_reload_successful")),
        0.0
    );
    assert!(
        exp.logs().contains("config_reload_failed"),
        "{}",
        exp.logs()
    );

    // A good file again: successful.
    write_config(&config, &[&b], &web, 7, "");
    let reload = request("POST", &exp.url("/-/reload"), &[("Authorization", &bob)]);
    assert_eq!(reload.status, 200, "{}", reload.text());
    let text = scrape(&exp, &bob);
    assert_eq!(
        value(&text, &format!("{SELF}config_last_reload_successful")),
        1.0
    );
}

#[test]
fn post_reload_is_refused_without_the_lifecycle_flag() {
    // Connection resets right after start-up were seen in some full-suite runs here (every
    // request to one exporter's port, its stderr empty; cause not found): a fresh exporter
    // on another port is tried before giving up. The answer is what is checked.
    let mut tried = Vec::new();
    let (exp, r) = (0..3)
        .find_map(|_| {
            let exp = Exporter::start(BIN, &[]);
            match testkit::try_request("POST", &exp.url("/-/reload"), &[]) {
                Ok(r) => Some((exp, r)),
                Err(e) => {
                    tried.push(format!("{}: {e}; logs: {}", exp.addr, exp.logs()));
                    None
                }
            }
        })
        .unwrap_or_else(|| panic!("no answer: {tried:#?}"));
    if !tried.is_empty() {
        eprintln!("reload test: connection trouble before an answer: {tried:#?}");
    }
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request("GET", &exp.url("/-/reload"), &[]);
    assert_eq!(r.status, 405);
}

#[test]
fn reload_rotates_the_tls_certificate_seen_by_curl() {
    if !require_tool("curl") {
        return;
    }
    let dir = TempDir::new("reload-tls");
    let cert = |tag: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join(&format!("{tag}.pem")), c.cert.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
    };
    cert("old");
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    )
    .unwrap();
    let port = free_tcp_port();
    let exp = Exporter::start(
        BIN,
        &[
            &format!("--web.config.file={}", web.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    let curl = |ca: &str| -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(dir.join(ca))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .arg(format!("https://localhost:{port}/-/healthy"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("old.pem"), "200");
    cert("new");
    let hup = Command::new("kill")
        .args(["-HUP", &exp.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let rotated = eventually(Duration::from_secs(10), || {
        (curl("new.pem") == "200").then_some(())
    });
    assert!(
        rotated.is_some(),
        "new certificate never served: {}",
        exp.logs()
    );
    // The old certificate is no longer trusted for this server.
    assert_ne!(curl("old.pem"), "200");
}

/// A reload never drops authentication: an emptied web config file, a config.toml without
/// its [web] table, or one emptied altogether are refused, and unauthenticated scrapes stay
/// refused.
#[test]
fn a_reload_cannot_turn_basic_auth_off() {
    let dir = TempDir::new("reload-auth");
    let log = dir.join("a.log");
    append(&log, 0, "transaction_committed");
    let (config, web) = (dir.join("exporter.toml"), dir.join("web.yml"));
    users(&web, "alice", "one");
    write_config(&config, &[&log], &web, 50, "");
    let exp = Exporter::start(BIN, &[&format!("--config.file={}", config.display())]);
    let alice = basic("alice", "one");
    let reload_refused = |what: &str| {
        let hup = Command::new("kill")
            .args(["-HUP", &exp.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let refused = eventually(Duration::from_secs(10), || {
            let text = scrape(&exp, &alice);
            (sample_value(&text, &format!("{SELF}config_last_reload_successful")) == Some(0.0))
                .then_some(())
        });
        assert!(
            refused.is_some(),
            "{what}: reload not refused: {}",
            exp.logs()
        );
        assert_eq!(
            exp.get("/metrics", &[]).status,
            401,
            "{what}: served without credentials"
        );
    };
    let mut logs_before = exp.logs().matches("authentication off").count();
    for (what, apply) in [
        ("web.yml emptied", 0),
        ("config.toml without [web]", 1),
        ("config.toml emptied", 2),
    ] {
        match apply {
            0 => std::fs::write(&web, "").unwrap(),
            1 => {
                users(&web, "alice", "one");
                std::fs::write(&config, "[ingest]\nseries_limit = 50\n").unwrap();
            }
            _ => std::fs::write(&config, "").unwrap(),
        }
        reload_refused(what);
        let logged = exp.logs().matches("authentication off").count();
        assert!(logged > logs_before, "{what}: not logged: {}", exp.logs());
        logs_before = logged;
        // Back to the good configuration: the reload succeeds again.
        users(&web, "alice", "one");
        write_config(&config, &[&log], &web, 50, "");
        let hup = Command::new("kill")
            .args(["-HUP", &exp.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        wait_value(
            &exp,
            &alice,
            &format!("{SELF}config_last_reload_successful"),
            1.0,
        );
    }
}
