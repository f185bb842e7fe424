use super::*;
use crate::samples::{error_factor, render_text};

fn handles() -> ClockMetrics {
    ClockMetrics::standalone().expect("bind")
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
    let cfg = ProbeConfig {
        chrony_address: Some("127.0.0.1:1".into()),
        ntp_servers: vec!["127.0.0.1:9".into()],
        ptp_devices: vec!["/dev/ptp-none".into()],
        ..ProbeConfig::default()
    };
    let p = ClockProbes::new(cfg);
    let m = handles();
    let samples = p.samples(&m);
    let up: Vec<_> = samples
        .iter()
        .filter(|s| s.name() == "clock_exporter_source_up")
        .map(|s| (s.labels[0].1.clone(), s.value))
        .collect();
    assert!(up.contains(&("chronyd".into(), 0.0)), "{up:?}");
    assert!(up.contains(&("ntp:127.0.0.1:9".into(), 0.0)));
    assert!(up.contains(&("ptp:/dev/ptp-none".into(), 0.0)));
    p.refresh_ptp();
    let text = render_text(&p.samples(&m));
    assert!(
        text.contains("clock_exporter_source_errors_total{source=\"ptp:/dev/ptp-none\",reason=\"not_found\"} 1"),
        "{text}"
    );
    assert!(text.contains("clock_master_source_quality{source=\"ptp:/dev/ptp-none\"} 0"));
}

#[test]
fn kernel_is_the_fallback_for_summary_gauges() {
    let p = ClockProbes::new(ProbeConfig {
        chrony_address: None,
        ..ProbeConfig::default()
    });
    p.refresh_kernel();
    let s = p.samples(&handles());
    let get = |n: &str| s.iter().find(|x| x.name() == n).map(|x| x.value);
    let k = kernel::read().expect("adjtimex");
    let u = get("clock_master_uncertainty_seconds").expect("uncertainty");
    assert!(
        (u - k.maxerror_seconds).abs() < 0.01,
        "{u} vs {}",
        k.maxerror_seconds
    );
    assert!(get("clock_master_kernel_sync_status").is_some());
    assert!(get("clock_master_current_timestamp_seconds").is_some_and(|t| t > 1.7e9));
}

/// Every series a fully populated state emits is declared in schema.toml, same labels.
#[test]
fn all_samples_are_in_the_schema() {
    let schema = exporter_core::Schema::parse(include_str!("../../schema.toml")).expect("schema");
    let mut st = State {
        kernel: kernel::read().ok(),
        ..State::default()
    };
    st.chrony = Some(chrony::Report {
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
    });
    st.ntp.insert(
        "127.0.0.1:123".into(),
        ntp::Sample {
            offset_seconds: 0.0,
            delay_seconds: 1e-4,
            stratum: 2,
            leap: 0,
            version: 4,
            root_delay_seconds: 0.0,
            root_dispersion_seconds: 0.0,
            reference_id: 0,
        },
    );
    st.ptp.insert(
        "/dev/ptp0".into(),
        ptp::Sample {
            offset_seconds: -37.0,
            delay_seconds: 1e-6,
        },
    );
    st.success("ntp:127.0.0.1:123", String::new());
    st.failure("chronyd", "timeout", "x".into());
    let samples = build_samples(&st, 1.8e9, &handles());
    let mut names = BTreeSet::new();
    for s in &samples {
        let def = schema
            .metric(s.name())
            .unwrap_or_else(|| panic!("{} not in schema.toml", s.name()));
        let labels: Vec<&str> = s.labels.iter().map(|(k, _)| *k).collect();
        assert_eq!(labels, def.labels, "{}", s.name());
        names.insert(s.name().to_owned());
    }
    // Everything the schema says the probes measure is produced, except the engine
    // process metrics, which core's engine probe measures for every tier.
    let engine_probe = exporter_core::schema::engine_metric_names("clock_master_");
    for def in &schema.metrics {
        let probe = (def.source == exporter_core::schema::Source::Probe
            && !engine_probe.contains(&def.name))
            || def.name.starts_with("clock_exporter_source");
        if probe {
            assert!(
                names.contains(def.name.as_str()),
                "{} never produced",
                def.name
            );
        }
    }
}
