//! The real clock-exporter binary pointed at a real chronyd: the chrony and NTP series carry
//! what chronyc reports, and a stopped chronyd turns into up 0 without slowing scrapes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{csv, f, http_get, value, Chronyd};

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_metrics(port: u16, ok: impl Fn(&str) -> bool, what: &str) -> String {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Some(body) = http_get(port, "/metrics") {
            if ok(&body) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} not seen in /metrics after 30 s; last scrape:\n{last}");
}

#[test]
fn binary_exposes_chrony_and_ntp_series() {
    let Some((chronyd, chronyc)) = common::tools() else {
        return;
    };
    let server = Chronyd::server(&chronyd, &chronyc);
    let mut client = Chronyd::client(&chronyd, &chronyc, &server);
    let port = common::free_tcp_port();
    let exporter = Exporter(
        Command::new(env!("CARGO_BIN_EXE_clock-exporter"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--ingest.statsd-udp=")
            .arg(format!("--clock.chrony-address={}", client.udp_address()))
            .arg(format!("--clock.ntp-server={}", server.ntp_address()))
            .arg("--clock.ptp-device=/dev/ptp-clock-exporter-test")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn clock-exporter"),
    );

    let ntp_label = format!("ntp:{}", server.ntp_address());
    wait_for_metrics(
        port,
        |b| value(b, &up("chronyd")) == Some(1.0) && value(b, &up(&ntp_label)) == Some(1.0),
        "chronyd and NTP up",
    );
    let (body, tracking) = in_step_with_chronyc(port, &client);
    tracking_matches_chronyc(&body, &tracking);
    let src = chrony_source_matches_chronyc(&body, &client);
    ntp_and_ptp_are_reported(&body, &ntp_label);
    stopped_chronyd_is_down_not_stale(port, &mut client, &src);
    drop(exporter);
}

fn up(src: &str) -> String {
    format!("clock_exporter_source_up{{source=\"{src}\"}}")
}

/// A scrape and chronyc's tracking that fall between the same two clock updates.
fn in_step_with_chronyc(port: u16, client: &Chronyd) -> (String, Vec<String>) {
    // Tracking and sources as chronyc reports them. Wait until the exporter's cached reading
    // and chronyc's fall between the same two clock updates, then compare closely.
    let t0 = Instant::now();
    loop {
        let body = http_get(port, "/metrics").unwrap_or_default();
        let tracking = csv(&client.chronyc(&["tracking"]).expect("chronyc tracking"));
        let ours = value(&body, "clock_master_chrony_reference_timestamp_seconds");
        if ours.is_some_and(|t| (t - f(&tracking[3])).abs() < 1e-6) {
            return (body, tracking);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "never in step with chronyc"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tracking_matches_chronyc(body: &str, tracking: &[String]) {
    assert_eq!(
        value(body, "clock_master_chrony_stratum"),
        Some(f(&tracking[2]))
    );
    assert_eq!(value(body, "clock_master_chrony_leap_status"), Some(0.0));
    let info = format!(
        "clock_master_chrony_tracking_info{{reference_id=\"{}\",reference_name=\"{}\"}}",
        tracking[0], tracking[1]
    );
    assert_eq!(value(body, &info), Some(1.0), "{body}");
    let close = |metric: &str, theirs: f64, tol: f64| {
        let ours = value(body, metric).unwrap_or(f64::NAN);
        assert!(
            (ours - theirs).abs() <= tol,
            "{metric}: {ours} vs chronyc {theirs}"
        );
    };
    close("clock_master_drift_ppm", f(&tracking[7]), 1e-3);
    close(
        "clock_master_chrony_last_offset_seconds",
        f(&tracking[5]),
        1.5e-9,
    );
    close("clock_master_jitter_seconds", f(&tracking[6]), 1.5e-9);
    close(
        "clock_master_chrony_root_delay_seconds",
        f(&tracking[10]),
        1.5e-9,
    );
    // chronyc's "System time" is positive when the clock is slow; the gauge is host minus NTP.
    close(
        "clock_master_chrony_system_time_offset_seconds",
        -f(&tracking[4]),
        1e-5,
    );
    // Uncertainty is chrony's root distance. Dispersion grows at the skew rate (plus chrony's
    // 1 ppm clock error) between the exporter's cached read, up to one 5 s refresh old, and
    // chronyc's; a freshly started chronyd has a large skew.
    let root_distance = f(&tracking[10]) / 2.0 + f(&tracking[11]);
    let growth = (f(&tracking[9]).abs() + 1.0) * 1e-6 * 5.0;
    close(
        "clock_master_uncertainty_seconds",
        root_distance,
        1e-4 + growth,
    );
}

/// chronyd's one source as chronyc lists it; returns its `source` label.
fn chrony_source_matches_chronyc(body: &str, client: &Chronyd) -> String {
    let sources = csv(&client.chronyc(&["sources"]).expect("chronyc sources"));
    let src = format!("chrony:{}", sources[2]);
    let l = |m: &str| format!("{m}{{source=\"{src}\"}}");
    assert_eq!(
        value(body, &l("clock_master_chrony_source_stratum")),
        Some(f(&sources[3]))
    );
    let offset = value(body, &l("clock_master_source_offset_seconds")).expect("offset");
    assert!(
        (offset - f(&sources[7])).abs() < 1e-6,
        "{offset} vs {}",
        sources[7]
    );
    let state = format!("clock_master_chrony_source_state{{source=\"{src}\",state=\"selected\"}}");
    assert_eq!(value(body, &state), Some(1.0));
    let quality = value(body, &l("clock_master_source_quality")).expect("quality");
    // Selected: weight 1 x share of the last 8 polls answered x error factor (docs/clock.md).
    let reach = value(body, &l("clock_master_chrony_source_reachability")).expect("reach");
    let error = value(body, &l("clock_master_chrony_source_error_seconds")).expect("error");
    let expected = f64::from((reach as u32).count_ones()) / 8.0 / (1.0 + error / 0.010);
    assert!((quality - expected).abs() < 1e-9, "{quality} vs {expected}");
    assert!(quality > 0.0 && quality <= 1.0, "{quality}");
    assert!(value(body, "clock_master_current_timestamp_seconds").is_some_and(|t| t > 1.7e9));
    src
}

fn ntp_and_ptp_are_reported(body: &str, ntp_label: &str) {
    // Direct NTP to the stratum-8 server on the same host.
    let n = |m: &str| format!("{m}{{source=\"{ntp_label}\"}}");
    assert_eq!(value(body, &n("clock_master_ntp_stratum")), Some(8.0));
    let ntp_offset = value(body, &n("clock_master_source_offset_seconds")).expect("ntp offset");
    assert!(ntp_offset.abs() < 0.005, "{ntp_offset}");
    assert!(value(body, &n("clock_master_ntp_rtt_seconds")).is_some_and(|d| d < 0.1));

    // The missing PTP device is reported, not missing.
    let ptp = "ptp:/dev/ptp-clock-exporter-test";
    assert_eq!(value(body, &up(ptp)), Some(0.0));
    let err =
        format!("clock_exporter_source_errors_total{{source=\"{ptp}\",reason=\"not_found\"}}");
    assert!(value(body, &err).is_some_and(|v| v >= 1.0), "{body}");
}

fn stopped_chronyd_is_down_not_stale(port: u16, client: &mut Chronyd, src: &str) {
    let l = |m: &str| format!("{m}{{source=\"{src}\"}}");
    // Stop chronyd: the next refresh marks it down; scrapes stay fast meanwhile.
    client.stop();
    let t0 = Instant::now();
    let body = wait_for_metrics(
        port,
        |b| value(b, &up("chronyd")) == Some(0.0),
        "chronyd down",
    );
    eprintln!("chronyd seen down {:?} after stopping it", t0.elapsed());
    let err = "clock_exporter_source_errors_total{source=\"chronyd\",reason=\"timeout\"}";
    assert!(value(&body, err).is_some_and(|v| v >= 1.0), "{body}");
    assert_eq!(value(&body, &up(src)), Some(0.0));
    // chronyd's last tracking values are not passed off as current.
    assert!(
        value(&body, "clock_master_chrony_stratum").is_some_and(f64::is_nan),
        "{body}"
    );
    assert!(value(&body, &l("clock_master_source_offset_seconds")).is_none());
    // The summary falls back to the kernel.
    assert!(value(&body, "clock_master_uncertainty_seconds").is_some_and(f64::is_finite));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert!(http_get(port, "/metrics").is_some());
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest of 10 scrapes with chronyd stopped: {slowest:?}");
    assert!(slowest < Duration::from_millis(250), "{slowest:?}");
    let health = http_get(port, "/health").expect("health");
    assert!(
        health.contains("clock:chronyd") && health.contains("degraded"),
        "{health}"
    );
}
