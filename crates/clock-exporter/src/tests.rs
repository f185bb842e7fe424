use exporter_core::exposition::{render, Format};
use exporter_core::probe::Probe;
use exporter_core::Metrics;

use crate::samples::{error_factor, SeriesWriter, SourceMetrics, Value};
use crate::settings::ClockSettings;
use crate::{chrony, kernel, ntp, ptp, summary};

const SCHEMA: &str = include_str!("../schema.toml");

fn registry() -> Metrics {
    let schema = exporter_core::Schema::parse(SCHEMA).expect("schema");
    Metrics::new(&schema, Default::default()).expect("registry")
}

fn text(m: &Metrics) -> String {
    render(m.registry(), Format::Text).expect("render")
}

fn source(state: chrony::SourceState, reach: u16, err: f64) -> chrony::SourceData {
    chrony::SourceData {
        name: "192.0.2.1".into(),
        poll: 6,
        stratum: 2,
        state,
        mode: chrony::SourceMode::Server,
        flags: 0,
        reachability: reach,
        since_sample: 10,
        orig_latest_meas: 1e-4,
        latest_meas: 1e-4,
        latest_meas_err: err,
    }
}

#[test]
fn quality_scoring() {
    use chrony::SourceState as S;
    let q = chrony::source_quality(&source(S::Selected, 0o377, 0.0));
    assert_eq!(q, 1.0);
    let q = chrony::source_quality(&source(S::Selected, 0o377, 0.010));
    assert!((q - 0.5).abs() < 1e-12);
    let q = chrony::source_quality(&source(S::Selected, 0o17, 0.0));
    assert!((q - 0.5).abs() < 1e-12, "half the polls answered");
    assert_eq!(
        chrony::source_quality(&source(S::NonSelectable, 0o377, 0.0)),
        0.0
    );
    assert_eq!(chrony::source_quality(&source(S::Selected, 0, 0.0)), 0.0);
    assert!(chrony::source_quality(&source(S::Falseticker, 0o377, 0.0)) < 0.2);
    assert_eq!(error_factor(f64::NAN), 0.0);
}

#[test]
fn unreachable_targets_are_reported_not_missing() {
    let settings = ClockSettings {
        chrony_address: "127.0.0.1:1".into(),
        ntp_server: vec!["127.0.0.1:9".into()],
        ptp_device: vec!["/dev/ptp-none".into()],
    };
    let m = registry();
    let chrony = chrony::ChronyProbe::bind(&settings, &m).expect("bind");
    let ntp = ntp::NtpProbe::bind(&settings, &m).expect("bind");
    let ptp = ptp::PtpProbe::bind(&settings, &m).expect("bind");
    assert_eq!((chrony.len(), ntp.len(), ptp.len()), (1, 1, 1));
    assert_eq!(ntp[0].source(), "clock:ntp:127.0.0.1:9");
    // Before their first reading, every configured target shows down.
    let t = text(&m);
    for up in [
        "clock_exporter_source_up{source=\"chronyd\"} 0",
        "clock_exporter_source_up{source=\"ntp:127.0.0.1:9\"} 0",
        "clock_exporter_source_up{source=\"ptp:/dev/ptp-none\"} 0",
        "clock_master_source_quality{source=\"ptp:/dev/ptp-none\"} 0",
    ] {
        assert!(t.contains(up), "{up} in {t}");
    }
    let e = ptp[0].refresh().expect_err("no such device");
    assert!(e.contains("/dev/ptp-none"), "{e}");
    let t = text(&m);
    assert!(
        t.contains("clock_exporter_source_errors_total{source=\"ptp:/dev/ptp-none\",reason=\"not_found\"} 1"),
        "{t}"
    );
    assert!(t.contains("clock_master_source_quality{source=\"ptp:/dev/ptp-none\"} 0"));
    // A refresh that overran its budget counts as a timeout.
    ptp[0].unknown();
    assert!(text(&m).contains(
        "clock_exporter_source_errors_total{source=\"ptp:/dev/ptp-none\",reason=\"timeout\"} 1"
    ));
}

#[test]
fn chrony_disabled_binds_no_probe() {
    let settings = ClockSettings {
        chrony_address: " ".into(),
        ..ClockSettings::default()
    };
    let m = registry();
    assert!(chrony::ChronyProbe::bind(&settings, &m)
        .expect("bind")
        .is_empty());
    assert!(ntp::NtpProbe::bind(&settings, &m).expect("bind").is_empty());
}

#[test]
fn kernel_is_the_fallback_for_summary_gauges() {
    let m = registry();
    let summary = summary::Summary::bind(&m).expect("bind");
    summary.write();
    let value = |n: &str| testkit::sample_value(&text(&m), n);
    assert!(
        value("clock_master_uncertainty_seconds").is_some_and(f64::is_nan),
        "unknown before any reading"
    );
    let probe = kernel::KernelProbe::bind(&ClockSettings::default(), &m).expect("bind");
    probe[0].refresh().expect("adjtimex");
    summary.write();
    let k = kernel::read().expect("adjtimex");
    let u = value("clock_master_uncertainty_seconds").expect("uncertainty");
    assert!(
        (u - k.maxerror_seconds).abs() < 0.01,
        "{u} vs {}",
        k.maxerror_seconds
    );
    assert!(value("clock_master_kernel_sync_status").is_some());
    assert!(value("clock_master_current_timestamp_seconds").is_some_and(|t| t > 1.7e9));
}

/// Every value a full set of readings yields fits the schema (no label refused), and every
/// metric the schema says the clock probes measure has a handle in one of them.
#[test]
fn all_values_are_in_the_schema() {
    let schema = exporter_core::Schema::parse(SCHEMA).expect("schema");
    let m = registry();
    let src = SourceMetrics::bind(&m).expect("bind");
    let mut values: Vec<Value> = Vec::new();
    if let Ok(k) = kernel::read() {
        kernel::collect(
            Some(&k),
            &kernel::KernelMetrics::bind(&m).expect("bind"),
            &mut values,
        );
    }
    let report = chrony::Report {
        tracking: chrony::Tracking {
            ref_id: 0x7f00_0001,
            ref_ip: None,
            stratum: 3,
            leap_status: chrony::LeapStatus::Normal,
            ref_time: 1.8e9,
            current_correction: 1e-6,
            last_offset: 1e-6,
            rms_offset: 1e-6,
            freq_ppm: 1.0,
            resid_freq_ppm: 0.1,
            skew_ppm: 0.1,
            root_delay: 1e-3,
            root_dispersion: 1e-3,
            last_update_interval: 64.0,
        },
        sources: vec![source(chrony::SourceState::Selected, 0o377, 1e-6)],
    };
    let chrony_m = chrony::ChronyMetrics::bind(&m).expect("bind");
    chrony::collect(
        Some(&report),
        &Default::default(),
        &chrony_m,
        &src,
        &mut values,
    );
    let known = ["chrony:gone".to_owned()].into_iter().collect();
    chrony::collect(None, &known, &chrony_m, &src, &mut values);
    let server = ntp::Sample {
        offset_seconds: 0.0,
        delay_seconds: 1e-4,
        stratum: 2,
        leap: 0,
        version: 4,
        root_delay_seconds: 0.0,
        root_dispersion_seconds: 0.0,
        reference_id: 0,
    };
    let ntp_m = ntp::NtpMetrics::bind(&m).expect("bind");
    ntp::collect("ntp:127.0.0.1:123", &server, &ntp_m, &src, &mut values);
    let phc = ptp::Sample {
        offset_seconds: -37.0,
        delay_seconds: 1e-6,
    };
    let ptp_m = ptp::PtpMetrics::bind(&m).expect("bind");
    ptp::collect("ptp:/dev/ptp0", &phc, &ptp_m, &src, &mut values);
    assert!(values.len() > 30, "{}", values.len());
    assert_eq!(
        SeriesWriter::new(Vec::new()).apply(&values),
        0,
        "labels refused"
    );

    let handles: Vec<&str> = [
        kernel::KernelMetrics::NAMES,
        chrony::ChronyMetrics::NAMES,
        ntp::NtpMetrics::NAMES,
        ptp::PtpMetrics::NAMES,
        SourceMetrics::NAMES,
    ]
    .concat();
    // Core's engine probe measures the engine process metrics for every tier.
    let engine_probe = exporter_core::schema::engine_metric_names("clock_master_");
    for def in &schema.metrics {
        let probe = (def.source == exporter_core::schema::Source::Probe
            && !engine_probe.contains(&def.name))
            || def.name.starts_with("clock_exporter_source");
        if probe {
            assert!(
                handles.contains(&def.name.as_str()),
                "{} never written",
                def.name
            );
        }
    }
}

#[test]
fn settings_reference_is_current() {
    let tier = crate::register(exporter_core::Tier::new(SCHEMA));
    testkit::conformance::settings_reference_is_current(env!("CARGO_MANIFEST_DIR"), &tier);
}
