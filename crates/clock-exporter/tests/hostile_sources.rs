//! Time sources that hang: a PTP device path that is a FIFO (whose blocking open never
//! returns) and a chrony "server" that never answers. /metrics keeps answering within 1 s,
//! each shows as a failed source, and SIGTERM exits within 5 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_clock-exporter");

#[test]
fn a_fifo_ptp_device_and_a_silent_chrony_never_stall_serving_or_shutdown() {
    let dir = TempDir::new("hostile-clock");
    let fifo = dir.join("ptp-fifo");
    testkit::mkfifo(&fifo);
    // A UDP socket that receives chrony's requests and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let exp = Exporter::start(
        BIN,
        &[
            &format!("--clock.ptp-device={}", fifo.display()),
            &format!("--clock.chrony-address={}", silent.local_addr().unwrap()),
        ],
    );
    let ptp = format!(
        "clock_exporter_source_up{{source=\"ptp:{}\"}}",
        fifo.display()
    );
    let chrony = "clock_exporter_source_up{source=\"chronyd\"}";
    let down = eventually(Duration::from_secs(30), || {
        let text = exp.scrape_text();
        (sample_value(&text, &ptp) == Some(0.0) && sample_value(&text, chrony) == Some(0.0))
            .then_some(text)
    });
    assert!(
        down.is_some(),
        "sources not reported down: {}",
        exp.scrape_text()
    );
    let (slowest, _) = exp.scrape_series(10, Duration::from_millis(200));
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    exp.terminate_within(Duration::from_secs(5));
}
