//! The cmdmon and SNTP clients against a real chronyd, checked against chronyc's own output.

mod common;

use std::time::{Duration, Instant};

use clock_exporter::settings::ClockSettings;
use clock_exporter::{chrony, ntp};
use common::{csv, f, Chronyd};
use exporter_core::exposition::{render, Format};
use exporter_core::probe::Probe;

const TIMEOUT: Duration = Duration::from_millis(500);

/// chronyc prints offsets with 9 decimals.
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn compare_tracking(d: &Chronyd, addr: &chrony::Address) {
    // Retry until both reads fall between the same two clock updates.
    for _ in 0..20 {
        let mut c = chrony::Client::connect(addr, TIMEOUT, 2, Some(&d.dir)).expect("connect");
        let ours = c.tracking().expect("tracking over cmdmon");
        let theirs = csv(&d.chronyc(&["tracking"]).expect("chronyc tracking"));
        assert_eq!(theirs.len(), 14, "{theirs:?}");
        if !close(ours.ref_time, f(&theirs[3]), 1e-6) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(format!("{:08X}", ours.ref_id), theirs[0]);
        assert_eq!(ours.ref_name(), theirs[1]);
        assert_eq!(ours.stratum.to_string(), theirs[2]);
        assert_eq!(theirs[13], "Normal");
        assert_eq!(ours.leap_status, chrony::LeapStatus::Normal);
        let pairs = [
            ("system time", ours.current_correction, &theirs[4], 1e-6),
            ("last offset", ours.last_offset, &theirs[5], 1.5e-9),
            ("rms offset", ours.rms_offset, &theirs[6], 1.5e-9),
            ("frequency", ours.freq_ppm, &theirs[7], 1e-3),
            ("residual freq", ours.resid_freq_ppm, &theirs[8], 1e-3),
            ("skew", ours.skew_ppm, &theirs[9], 1e-3),
            ("root delay", ours.root_delay, &theirs[10], 1.5e-9),
            // Dispersion grows between the two reads, fast while the skew is still large.
            (
                "root dispersion",
                ours.root_dispersion,
                &theirs[11],
                (0.05 * ours.root_dispersion).max(1e-5),
            ),
            (
                "update interval",
                ours.last_update_interval,
                &theirs[12],
                0.1,
            ),
        ];
        for (what, a, b, tol) in pairs {
            assert!(close(a, f(b), tol), "{what}: ours {a} chronyc {b}");
        }
        eprintln!(
            "tracking matches chronyc: ref {} stratum {} offset {:e} s freq {} ppm root delay {:e} s",
            ours.ref_name(),
            ours.stratum,
            ours.current_correction,
            ours.freq_ppm,
            ours.root_delay
        );
        return;
    }
    panic!("tracking never matched chronyc between two updates");
}

fn compare_sources(d: &Chronyd, addr: &chrony::Address) {
    for _ in 0..20 {
        let mut c = chrony::Client::connect(addr, TIMEOUT, 2, Some(&d.dir)).expect("connect");
        let ours = c.sources().expect("sources over cmdmon");
        let out = d.chronyc(&["sources"]).expect("chronyc sources");
        let theirs: Vec<Vec<String>> = out.lines().map(csv).collect();
        assert_eq!(ours.len(), theirs.len(), "{ours:?} vs {out}");
        assert_eq!(ours.len(), 1);
        let (s, t) = (&ours[0], &theirs[0]);
        if s.since_sample.to_string() != t[6] {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(t[0], "^");
        assert_eq!(s.mode, chrony::SourceMode::Server);
        assert_eq!(s.state.symbol().to_string(), t[1]);
        assert_eq!(s.state, chrony::SourceState::Selected);
        assert_eq!(s.name, t[2]);
        assert_eq!(s.stratum.to_string(), t[3]);
        assert_eq!(s.poll.to_string(), t[4]);
        assert_eq!(format!("{:o}", s.reachability), t[5]);
        assert!(
            close(s.latest_meas, f(&t[7]), 1.5e-9),
            "{} vs {}",
            s.latest_meas,
            t[7]
        );
        assert!(close(s.orig_latest_meas, f(&t[8]), 1.5e-9));
        assert!(close(s.latest_meas_err, f(&t[9]), 1.5e-9));
        eprintln!(
            "source {} matches chronyc: offset {:e} s err {:e} s reach {:o}",
            s.name, s.latest_meas, s.latest_meas_err, s.reachability
        );
        return;
    }
    panic!("sources never matched chronyc between two samples");
}

#[test]
fn cmdmon_matches_chronyc_over_udp_and_unix_socket() {
    let Some((chronyd, chronyc)) = common::tools() else {
        return;
    };
    let server = Chronyd::server(&chronyd, &chronyc);
    let client = Chronyd::client(&chronyd, &chronyc, &server);

    let udp = chrony::Address::parse(&client.udp_address()).expect("address");
    compare_tracking(&client, &udp);
    compare_sources(&client, &udp);

    let unix =
        chrony::Address::parse(&format!("unix://{}", client.socket.display())).expect("address");
    compare_tracking(&client, &unix);
    compare_sources(&client, &unix);

    // The local reference itself: no sources, stratum 8.
    let addr = chrony::Address::parse(&server.udp_address()).expect("address");
    let report = chrony::query(&addr, TIMEOUT, 2, None).expect("query");
    assert_eq!(report.tracking.stratum, 8);
    assert!(report.sources.is_empty());
}

#[test]
fn sntp_queries_real_chronyd() {
    let Some((chronyd, chronyc)) = common::tools() else {
        return;
    };
    let server = Chronyd::server(&chronyd, &chronyc);
    let s = ntp::query(&server.ntp_address(), TIMEOUT).expect("sntp");
    // Same host, same clock: the offset is tiny, the round trip short.
    assert_eq!(s.stratum, 8);
    assert_eq!(s.leap, 0);
    assert!(s.offset_seconds.abs() < 0.005, "{s:?}");
    assert!(s.delay_seconds < 0.1, "{s:?}");
    eprintln!(
        "sntp to chronyd: offset {:e} s, delay {:e} s",
        s.offset_seconds, s.delay_seconds
    );

    let client = Chronyd::client(&chronyd, &chronyc, &server);
    let s = ntp::query(&client.ntp_address(), TIMEOUT).expect("sntp");
    assert_eq!(s.stratum, 9, "one below its upstream");
}

#[test]
fn stopped_server_is_reported_down_quickly() {
    let Some((chronyd, chronyc)) = common::tools() else {
        return;
    };
    let server = Chronyd::server(&chronyd, &chronyc);
    let mut client = Chronyd::client(&chronyd, &chronyc, &server);
    let settings = ClockSettings {
        chrony_address: client.udp_address(),
        ntp_server: vec![client.ntp_address()],
        ptp_device: Vec::new(),
    };
    let schema = exporter_core::Schema::parse(include_str!("../schema.toml")).expect("schema");
    let metrics = exporter_core::Metrics::new(&schema, Default::default()).expect("registry");
    let chrony = chrony::ChronyProbe::bind(&settings, &metrics).expect("bind");
    let ntp = ntp::NtpProbe::bind(&settings, &metrics).expect("bind");
    // Both refreshed at once, as the exporter runs them.
    let refresh_all = || {
        std::thread::scope(|s| {
            s.spawn(|| chrony[0].refresh());
            s.spawn(|| ntp[0].refresh());
        })
    };
    refresh_all();
    let text = render(metrics.registry(), Format::Text).expect("render");
    assert!(
        text.contains("clock_exporter_source_up{source=\"chronyd\"} 1"),
        "{text}"
    );
    let ntp_up = format!(
        "clock_exporter_source_up{{source=\"ntp:{}\"}} 1",
        client.ntp_address()
    );
    assert!(text.contains(&ntp_up), "{text}");
    assert!(text.contains("clock_master_source_offset_seconds{source=\"chrony:127.0.0.1\"}"));
    assert!(text.contains("clock_master_chrony_stratum 9"), "{text}");

    client.stop();
    let t0 = Instant::now();
    refresh_all();
    let refresh = t0.elapsed();
    clock_exporter::summary::Summary::bind(&metrics)
        .expect("bind")
        .write();
    let text = render(metrics.registry(), Format::Text).expect("render");
    eprintln!("refresh with chronyd stopped: {refresh:?}");
    // Budget: chrony's first request, 2 attempts x 500 ms, beside NTP's refused query.
    assert!(refresh < Duration::from_millis(2000), "{refresh:?}");
    assert!(
        text.contains("clock_exporter_source_up{source=\"chronyd\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("clock_exporter_source_up{source=\"chrony:127.0.0.1\"} 0"),
        "{text}"
    );
    let ntp_down = format!(
        "clock_exporter_source_up{{source=\"ntp:{}\"}} 0",
        client.ntp_address()
    );
    assert!(text.contains(&ntp_down), "{text}");
    assert!(
        text.contains(
            "clock_exporter_source_errors_total{source=\"chronyd\",reason=\"timeout\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("clock_exporter_source_errors_total{source=\"ntp:"),
        "{text}"
    );
    // The summary gauges fall back to the kernel; chronyd's tracking is unknown.
    assert!(text.contains("clock_master_uncertainty_seconds"));
    assert!(text.contains("clock_master_chrony_stratum NaN"), "{text}");
}
