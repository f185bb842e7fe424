//! Labelled ingest on the real ingestion-exporter: DogStatsD tags become the declared
//! `server_id` label, other tags are dropped and counted, and a missing label is rejected;
//! `event_received` lines feed the per-source counter.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use testkit::{eventually, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_ingestion-exporter");

fn wait_for(exp: &Exporter, series: &str, want: f64) -> String {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        last = exp.scrape_text();
        (sample_value(&last, series) == Some(want)).then_some(())
    });
    assert!(ok.is_some(), "{series}: want {want}\n{last}");
    last
}

#[test]
fn dogstatsd_tags_become_declared_labels() {
    if !testkit::require_python(&["datadog"]) {
        return;
    }
    let exp = Exporter::start(BIN, &[]);
    let script = r#"
import sys
from datadog import DogStatsd
c = DogStatsd(host="127.0.0.1", port=int(sys.argv[1]), disable_telemetry=True,
              origin_detection_enabled=False)
c.gauge("ingestion_lag_by_source_seconds", 1.5, tags=["server_id:tx-1", "env:prod"])
c.gauge("ingestion_lag_by_source_seconds", 0.25, tags=["server_id:tx-2"])
c.increment("ingestion_events_by_source", 3, tags=["server_id:tx-1"])  # event-fed: refused
c.gauge("ingestion_lag_by_source_seconds", 9, tags=["env:prod"])   # no server_id
c.flush()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &exp.statsd.port().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = wait_for(
        &exp,
        "ingestion_exporter_ingest_rejected_total{source=\"statsd\",reason=\"missing_label\"}",
        1.0,
    );
    let text = if sample_value(
        &text,
        "ingestion_exporter_ingest_samples_accepted_total{source=\"statsd\"}",
    ) == Some(2.0)
    {
        text
    } else {
        wait_for(
            &exp,
            "ingestion_exporter_ingest_samples_accepted_total{source=\"statsd\"}",
            2.0,
        )
    };
    let v = |s: &str| sample_value(&text, s).unwrap_or_else(|| panic!("{s}\n{text}"));
    assert_eq!(
        v("ingestion_lag_by_source_seconds{server_id=\"tx-1\"}"),
        1.5
    );
    assert_eq!(
        v("ingestion_lag_by_source_seconds{server_id=\"tx-2\"}"),
        0.25
    );
    // event_received lines feed the per-source counter; the same count by StatsD would be
    // counted twice, so it is refused.
    assert_eq!(
        sample_value(
            &text,
            "ingestion_events_by_source_total{server_id=\"tx-1\"}"
        ),
        None
    );
    assert_eq!(
        v("ingestion_exporter_ingest_rejected_total{source=\"statsd\",reason=\"wrong_channel\"}"),
        1.0
    );
    // env:prod on the first and the last sample: tags are sorted out before the missing
    // label is noticed, so both count as dropped.
    assert_eq!(v("ingestion_exporter_ingest_tags_dropped_total"), 2.0);
}

#[test]
fn event_fields_fill_labels() {
    let dir = TempDir::new("ingestion-events");
    let log = dir.join("engine.log");
    let exp = Exporter::start(BIN, &[&format!("--ingest.log-path={}", log.display())]);
    // Files found by the first scan are read from their end: create ours after it.
    exp.wait_for_follower();
    let mut f = std::fs::File::create(&log).unwrap();
    for (i, sid) in ["tx-1", "tx-2", "tx-1"].iter().enumerate() {
        writeln!(
            f,
            "{{\"event\":\"event_received\",\"server_id\":\"{sid}\",\"seq\":{i}}}"
        )
        .unwrap();
    }
    writeln!(f, "{{\"event\":\"event_received\"}}").unwrap();
    writeln!(f, "{{\"event\":\"event_processed\",\"duration_ms\":12}}").unwrap();
    let text = wait_for(&exp, "ingestion_events_received_total", 3.0);
    let text =
        if sample_value(&text, "ingestion_event_processing_duration_seconds_count") == Some(1.0) {
            text
        } else {
            wait_for(
                &exp,
                "ingestion_event_processing_duration_seconds_count",
                1.0,
            )
        };
    let v = |s: &str| sample_value(&text, s).unwrap_or_else(|| panic!("{s}\n{text}"));
    assert_eq!(
        v("ingestion_events_by_source_total{server_id=\"tx-1\"}"),
        2.0
    );
    assert_eq!(
        v("ingestion_events_by_source_total{server_id=\"tx-2\"}"),
        1.0
    );
    assert_eq!(
        v("ingestion_exporter_ingest_rejected_total{source=\"events\",reason=\"missing_label\"}"),
        1.0
    );
}
