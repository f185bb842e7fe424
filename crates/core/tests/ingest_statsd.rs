//! StatsD/DogStatsD ingest on the real fixture-exporter binary (the fixture tier of crates/core/fixture): real Python clients push, the
//! scrape shows exactly what was sent; malformed input is rejected and counted by reason.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");

fn wait_for(exp: &Exporter, series: &str, want: f64) {
    exp.wait_for_value(series, want, Duration::from_secs(10));
}

fn value(text: &str, series: &str) -> f64 {
    sample_value(text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

fn python(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rejected(text: &str, reason: &str) -> f64 {
    sample_value(
        text,
        &format!("fixture_exporter_ingest_rejected_total{{source=\"statsd\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn python_statsd_client_values_arrive_exactly() {
    if !testkit::require_python(&["statsd"]) {
        return;
    }
    let exp = Exporter::start(BIN, &[]);
    let port = exp.statsd.port().to_string();
    python(
        r#"
import sys, statsd
c = statsd.StatsClient("127.0.0.1", int(sys.argv[1]))
for _ in range(7):
    c.incr("fixture_transactions_committed")      # seed spelling of a counter
c.incr("fixture_transactions_total", 5)           # exposed name
c.incr("fixture_cache_hits", 3)                   # name without _total
c.gauge("fixture_cache_size_bytes", 1048576)
c.gauge("fixture_connections_active", 10)
c.gauge("fixture_connections_active", -4, delta=True)
c.gauge("fixture_connections_active", 1, delta=True)
c.timing("fixture_query_duration_seconds", 250)   # milliseconds -> 0.25 s
c.timing("fixture_query_duration_seconds", 2)     # -> 0.002 s
with c.pipeline() as p:                             # several lines in one datagram
    p.incr("fixture_replication_events_sent", 40)
    p.incr("fixture_replication_events_sent", 2)
    p.gauge("fixture_replication_queue_depth", 17)
"#,
        &[&port],
    );
    wait_for(&exp, "fixture_replication_queue_depth", 17.0);
    wait_for(
        &exp,
        "fixture_exporter_ingest_samples_accepted_total{source=\"statsd\"}",
        18.0,
    );
    let text = exp.scrape_text();
    assert_eq!(value(&text, "fixture_transactions_committed_total"), 7.0);
    assert_eq!(value(&text, "fixture_transactions_total"), 5.0);
    assert_eq!(value(&text, "fixture_cache_hits_total"), 3.0);
    assert_eq!(value(&text, "fixture_cache_size_bytes"), 1048576.0);
    assert_eq!(value(&text, "fixture_connections_active"), 7.0);
    assert_eq!(value(&text, "fixture_replication_events_sent_total"), 42.0);
    assert_eq!(value(&text, "fixture_query_duration_seconds_count"), 2.0);
    assert!((value(&text, "fixture_query_duration_seconds_sum") - 0.252).abs() < 1e-9);
    assert_eq!(
        value(&text, "fixture_query_duration_seconds_bucket{le=\"0.001\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "fixture_query_duration_seconds_bucket{le=\"0.01\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "fixture_query_duration_seconds_bucket{le=\"1.0\"}"),
        2.0
    );
    // 16 datagrams (15 single lines + 1 pipeline of 3), nothing rejected.
    assert_eq!(
        value(
            &text,
            "fixture_exporter_statsd_datagrams_total{listener=\"udp\"}"
        ),
        16.0
    );
    assert_eq!(
        value(
            &text,
            "fixture_exporter_statsd_lines_total{listener=\"udp\"}"
        ),
        18.0
    );
    let rejected = testkit::sum_values(
        &text,
        "fixture_exporter_ingest_rejected_total{source=\"statsd\"",
    );
    assert_eq!(rejected, 0.0, "nothing rejected");
    assert_eq!(
        value(&text, "fixture_exporter_statsd_udp_dropped_total"),
        0.0
    );
}

#[test]
fn datadog_dogstatsd_over_udp_and_unix_socket() {
    if !testkit::require_python(&["datadog"]) {
        return;
    }
    let dir = TempDir::new("dogstatsd");
    let sock = dir.join("statsd.sock");
    let sock_arg = format!("--ingest.statsd-unixgram={}", sock.display());
    let exp = Exporter::start(BIN, &[&sock_arg]);
    let port = exp.statsd.port().to_string();
    python(
        r#"
import sys
from datadog import DogStatsd
udp = DogStatsd(host="127.0.0.1", port=int(sys.argv[1]), disable_telemetry=True,
                origin_detection_enabled=False)
uds = DogStatsd(socket_path=sys.argv[2], disable_telemetry=True, origin_detection_enabled=False)
for client in (udp, uds):
    client.increment("fixture_transactions_rolled_back", 2, tags=["env:prod", "host:a"])
    client.gauge("fixture_replication_lag_seconds", 0.75, tags=["env:prod"])
    client.histogram("fixture_transaction_duration_seconds", 0.02)
    client.distribution("fixture_transaction_duration_seconds", 0.3)
    client.timing("fixture_transaction_duration_seconds", 4000)  # ms -> 4 s
    client.flush()
udp.close_socket(); uds.close_socket()
"#,
        &[&port, &sock.display().to_string()],
    );
    wait_for(
        &exp,
        "fixture_exporter_ingest_samples_accepted_total{source=\"statsd\"}",
        10.0,
    );
    let text = exp.scrape_text();
    assert_eq!(value(&text, "fixture_transactions_rolled_back_total"), 4.0);
    assert_eq!(value(&text, "fixture_replication_lag_seconds"), 0.75);
    assert_eq!(
        value(&text, "fixture_transaction_duration_seconds_count"),
        6.0
    );
    assert!((value(&text, "fixture_transaction_duration_seconds_sum") - 8.64).abs() < 1e-9);
    assert_eq!(
        value(
            &text,
            "fixture_transaction_duration_seconds_bucket{le=\"0.05\"}"
        ),
        2.0
    );
    // the fixture tier declares no labels: every tag (2 + 1 per client) is dropped and counted.
    assert_eq!(
        value(&text, "fixture_exporter_ingest_tags_dropped_total"),
        6.0
    );
    for listener in ["udp", "unixgram"] {
        assert_eq!(
            value(
                &text,
                &format!("fixture_exporter_statsd_lines_total{{listener=\"{listener}\"}}")
            ),
            5.0
        );
    }
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("listening on unixgram"), "{health}");
    assert!(health.contains("listening on udp"), "{health}");
    // The socket file is removed on a clean stop.
    assert!(exp.terminate().success());
    assert!(!sock.exists());
}

#[test]
fn a_unix_datagram_over_64_kib_is_dropped_whole_and_the_next_one_counts() {
    let dir = TempDir::new("bigdatagram");
    let sock = dir.join("statsd.sock");
    let exp = Exporter::start(
        BIN,
        &[&format!("--ingest.statsd-unixgram={}", sock.display())],
    );
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    // Valid lines all through: only its size makes it unacceptable, and none of it counts.
    let big = "fixture_transactions_rolled_back:1|c\n".repeat(70_000 / 37 + 1);
    assert!(big.len() > 65_536);
    let series = "fixture_transactions_rolled_back_total";
    for round in 1..=2 {
        client.send_to(big.as_bytes(), &sock).unwrap();
        client
            .send_to(b"fixture_transactions_rolled_back:5|c", &sock)
            .unwrap();
        wait_for(&exp, series, 5.0 * f64::from(round));
        let counted = eventually(Duration::from_secs(10), || {
            let text = exp.scrape_text();
            (rejected(&text, "datagram_too_large") == f64::from(round)).then_some(())
        });
        assert!(counted.is_some(), "{}", exp.scrape_text());
    }
    // The second big datagram was not applied in part either.
    assert_eq!(value(&exp.scrape_text(), series), 10.0);
}

#[test]
fn malformed_statsd_input_is_rejected_and_counted_by_reason() {
    let exp = Exporter::start(BIN, &[]);
    let cases: &[(&str, &str)] = &[
        ("fixture_nope:1|c", "unknown_metric"),
        ("fixture_cache_size_bytes:1|c", "type_mismatch"),
        ("fixture_transactions_total:5|g", "type_mismatch"),
        ("fixture_transactions_total:1|ms", "type_mismatch"),
        ("fixture_transactions_total:-1|c", "negative_counter"),
        ("fixture_transactions_total:abc|c", "invalid_value"),
        ("fixture_connections_active:NaN|g", "invalid_value"),
        ("fixture_connections_active:+Inf|g", "invalid_value"),
        ("fixture_connections_active:1|s", "set_not_supported"),
        ("fixture_connections_active:1|x", "unknown_type"),
        ("fixture_transactions_total:1|c|@0", "invalid_sample_rate"),
        ("fixture_transactions_total:1|c|@1.5", "invalid_sample_rate"),
        ("fixture_memory_used_bytes:5|g", "read_only_metric"),
        ("fixture_exporter_engine_up:1|g", "read_only_metric"),
        ("just garbage", "malformed_line"),
        ("fixture_transactions_total", "malformed_line"),
        ("fixture_transactions_total:1", "malformed_line"),
        (":1|c", "malformed_line"),
    ];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (line, _) in cases {
        sock.send_to(line.as_bytes(), exp.statsd).unwrap();
    }
    // Binary junk and a good line in one datagram: the good line still counts.
    sock.send_to(
        b"\xff\xfe\x00:1|c\nfixture_transactions_total:3|c\n",
        exp.statsd,
    )
    .unwrap();
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (_, reason) in cases {
        *expected.entry(reason).or_default() += 1.0;
    }
    *expected.entry("unknown_metric").or_default() += 1.0;
    let total: f64 = expected.values().sum();
    let mut last = String::new();
    let done = eventually(Duration::from_secs(10), || {
        last = exp.scrape_text();
        let sum: f64 = expected.keys().map(|r| rejected(&last, r)).sum();
        (sum == total).then_some(())
    });
    assert!(
        done.is_some(),
        "rejections never added up to {total}:\n{last}"
    );
    for (reason, n) in &expected {
        assert_eq!(rejected(&last, reason), *n, "reason {reason}\n{last}");
    }
    assert_eq!(value(&last, "fixture_transactions_total"), 3.0);
    assert_ne!(sample_value(&last, "fixture_memory_used_bytes"), Some(5.0));
    // A bad sample never breaks /metrics: both formats still parse with a real parser.
    if testkit::require_python(&["prometheus_client"]) {
        testkit::parse_with_python(&last, "text");
        testkit::parse_with_python(&exp.scrape_openmetrics(), "openmetrics");
    }
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("last_error"), "{health}");
}

#[test]
fn sample_rates_multi_value_lines_and_counts_per_datagram() {
    let exp = Exporter::start(BIN, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = "fixture_transactions_total:1|c|@0.1\n\
                    fixture_cache_misses:1|c:2|c:3|c\n\
                    fixture_query_duration_seconds:0.5:0.05|h\n\
                    fixture_query_duration_seconds:100|ms|@0.5\n\
                    fixture_connections_idle:5|g\n";
    sock.send_to(datagram.as_bytes(), exp.statsd).unwrap();
    wait_for(&exp, "fixture_connections_idle", 5.0);
    wait_for(
        &exp,
        "fixture_exporter_statsd_lines_total{listener=\"udp\"}",
        5.0,
    );
    let text = exp.scrape_text();
    assert_eq!(value(&text, "fixture_transactions_total"), 10.0);
    assert_eq!(value(&text, "fixture_cache_misses_total"), 6.0);
    // Two values, plus one timer sampled at 0.5 standing for two observations.
    assert_eq!(value(&text, "fixture_query_duration_seconds_count"), 4.0);
    assert!((value(&text, "fixture_query_duration_seconds_sum") - 0.75).abs() < 1e-9);
    assert_eq!(
        value(
            &text,
            "fixture_exporter_statsd_received_bytes_total{listener=\"udp\"}"
        ),
        datagram.len() as f64
    );
    assert_eq!(
        value(
            &text,
            "fixture_exporter_ingest_samples_accepted_total{source=\"statsd\"}"
        ),
        8.0
    );
}

#[test]
fn a_statsd_port_in_use_is_reported_on_health_and_metrics_keep_working() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let exp = Exporter::start(BIN, &[&format!("--ingest.statsd-udp={addr}")]);
    let health = exp.get("/health", &[]);
    let body = health.text();
    assert_eq!(health.status, 503, "{body}");
    assert!(body.contains("\"statsd_udp\""), "{body}");
    assert!(body.contains("cannot listen on udp"), "{body}");
    assert!(exp.scrape_text().contains("fixture_transactions_total"));
}

#[test]
fn every_sent_datagram_is_processed_or_counted_as_a_kernel_drop() {
    let exp = Exporter::start(BIN, &[]);
    let pid = exp.pid().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    // Stopped, the exporter reads nothing: the receive queue fills and the kernel drops
    // the rest, which the exporter reads from the socket (SO_MEMINFO) after SIGCONT.
    signal("-STOP");
    let line = "fixture_transactions_total:1|c\n";
    let datagram = line.repeat(50);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u32;
    for _ in 0..20_000 {
        if sock.send_to(datagram.as_bytes(), exp.statsd).is_ok() {
            sent += 1;
        }
    }
    signal("-CONT");
    // One more after the queue has drained: nothing sent late is lost either.
    std::thread::sleep(Duration::from_millis(500));
    sock.send_to(datagram.as_bytes(), exp.statsd).unwrap();
    sent += 1;
    let mut last = String::new();
    let done = eventually(Duration::from_secs(10), || {
        last = exp.scrape_text();
        let got = sample_value(
            &last,
            "fixture_exporter_statsd_datagrams_total{listener=\"udp\"}",
        )?;
        let dropped = sample_value(&last, "fixture_exporter_statsd_udp_dropped_total")?;
        // One scrape renders one family after another while lines keep being applied, so
        // the counts agree once everything sent has been handled, not at any instant.
        let counted = value(&last, "fixture_transactions_total") == got * 50.0;
        (got + dropped == f64::from(sent) && counted).then_some(dropped)
    });
    let dropped = done.unwrap_or_else(|| panic!("sent {sent}, scrape:\n{last}"));
    assert!(dropped > 0.0, "the queue never overflowed: {last}");
}
