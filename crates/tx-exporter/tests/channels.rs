//! One engine action, one count: a committed transaction arrives as a `transaction_committed`
//! event, so a StatsD sample for the same counter is refused rather than counted again.

use std::time::Duration;

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_tx-exporter");

#[test]
fn a_commit_is_counted_once_whatever_channels_the_engine_uses() {
    let dir = TempDir::new("tx-channels");
    let log = dir.join("engine.log");
    std::fs::write(&log, "").expect("log");
    let exporter = Exporter::start(
        BIN,
        &[
            &format!("--ingest.log-path={}", log.display()),
            "--engine.process-name=no-such-engine",
        ],
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .send_to(b"tx_engine_transactions_committed:1|c", exporter.statsd)
        .expect("send");
    // Wait until the follower has opened the file, then log the same commit.
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(
        &log,
        "{\"event\":\"transaction_committed\",\"duration_ms\":3}\n",
    )
    .expect("append");
    let wrong = "tx_exporter_ingest_rejected_total{source=\"statsd\",reason=\"wrong_channel\"}";
    let text = eventually(Duration::from_secs(10), || {
        let t = exporter.scrape_text();
        (sample_value(&t, "tx_engine_transactions_committed_total") == Some(1.0)
            && sample_value(&t, wrong) == Some(1.0))
        .then_some(t)
    });
    let text = text.unwrap_or_else(|| exporter.scrape_text());
    assert_eq!(
        sample_value(&text, "tx_engine_transactions_committed_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(&text, "tx_engine_transactions_total"),
        Some(1.0)
    );
    assert_eq!(sample_value(&text, wrong), Some(1.0), "{text}");
}
