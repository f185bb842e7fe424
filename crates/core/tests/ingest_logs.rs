//! JSON event-log following on the real fixture-exporter binary (the fixture tier of crates/core/fixture): rotation by rename,
//! copytruncate, delete and re-create, restart from the positions file, bad lines, and
//! exemplars in the OpenMetrics output.
#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use testkit::{sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const TOTAL: &str = "fixture_transactions_total";

fn wait_for(exp: &Exporter, series: &str, want: f64) -> String {
    exp.wait_for_value(series, want, Duration::from_secs(15))
}

fn value(text: &str, series: &str) -> f64 {
    sample_value(text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

fn commit_line(i: usize) -> String {
    format!(
        "{{\"timestamp\":\"2026-11-21T10:00:00.{:03}Z\",\"level\":\"info\",\"component\":\"txn\",\"event\":\"transaction_committed\",\"duration_ms\":{}}}\n",
        i % 1000,
        1 + i % 40
    )
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
}

fn start(dir: &TempDir, extra: &[&str]) -> Exporter {
    let glob = format!("--ingest.log-path={}", dir.join("events*.log").display());
    let positions = format!(
        "--ingest.positions-file={}",
        dir.join("positions.json").display()
    );
    let mut args = vec![glob.as_str(), positions.as_str()];
    args.extend_from_slice(extra);
    let exp = Exporter::start(BIN, &args);
    exp.wait_for_follower();
    exp
}

fn path_series(metric: &str, path: &Path) -> String {
    format!("fixture_exporter_{metric}{{path=\"{}\"}}", path.display())
}

#[test]
fn rename_rotation_then_copytruncate_loses_and_repeats_nothing() {
    let dir = TempDir::new("logs-rotate");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    // Created after start-up: read from its beginning.
    let (n, m, k) = (120, 75, 33);
    append(&log, (0..n).map(commit_line));
    wait_for(&exp, TOTAL, n as f64);

    // Rotation by rename; the rotated name does not match the glob.
    std::fs::rename(&log, dir.join("rotated.1")).unwrap();
    // Lines the writer still puts into the old file before reopening are not lost...
    append(&dir.join("rotated.1"), (0..5).map(commit_line));
    // ...and the new file is read from its beginning.
    append(&log, (0..m).map(commit_line));
    wait_for(&exp, TOTAL, (n + 5 + m) as f64);
    wait_for(&exp, &path_series("log_rotations_total", &log), 1.0);

    // copytruncate: copy (to a name outside the glob), then truncate in place.
    std::fs::copy(&log, dir.join("copied.2")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_for(&exp, &path_series("log_truncations_total", &log), 1.0);
    append(&log, (0..k).map(commit_line));
    let text = wait_for(&exp, TOTAL, (n + 5 + m + k) as f64);
    assert_eq!(
        value(&text, "fixture_transactions_committed_total"),
        (n + 5 + m + k) as f64
    );
    assert_eq!(
        value(&text, "fixture_transaction_duration_seconds_count"),
        (n + 5 + m + k) as f64
    );
    assert_eq!(value(&text, "fixture_exporter_log_files_followed"), 1.0);
    assert_eq!(value(&text, &path_series("log_behind_bytes", &log)), 0.0);
    let rejected = testkit::sum_values(
        &text,
        "fixture_exporter_ingest_rejected_total{source=\"events\"",
    );
    assert_eq!(rejected, 0.0, "nothing rejected");
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("following 1 files"), "{health}");
    // The glob is a source of its own in /metrics.
    let glob = dir.join("events*.log");
    assert_eq!(
        value(
            &text,
            &format!(
                "fixture_exporter_source_up{{source=\"log:{}\"}}",
                glob.display()
            )
        ),
        1.0
    );
}

#[test]
fn rotated_name_matching_the_glob_is_not_read_twice_and_delete_recreate_works() {
    let dir = TempDir::new("logs-recreate");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    append(&log, (0..40).map(commit_line));
    wait_for(&exp, TOTAL, 40.0);
    // events.1.log still matches events*.log: the same inode must not be read again.
    std::fs::rename(&log, dir.join("events.1.log")).unwrap();
    append(&log, (0..10).map(commit_line));
    wait_for(&exp, TOTAL, 50.0);
    // Delete and re-create.
    std::fs::remove_file(&log).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    append(&log, (0..7).map(commit_line));
    let text = wait_for(&exp, TOTAL, 57.0);
    std::thread::sleep(Duration::from_millis(800));
    let text2 = exp.scrape_text();
    assert_eq!(value(&text2, TOTAL), 57.0, "{text}");
    assert_eq!(
        value(&text2, &path_series("log_rotations_total", &log)),
        2.0
    );
}

#[test]
fn restart_resumes_from_positions_without_loss_or_double_count() {
    let dir = TempDir::new("logs-restart");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    append(&log, (0..100).map(commit_line));
    wait_for(&exp, TOTAL, 100.0);
    // Half a line is on disk when the exporter stops.
    let line = commit_line(100);
    let (head, tail) = line.split_at(30);
    append(&log, [head.to_owned()]);
    std::thread::sleep(Duration::from_millis(400));
    assert!(exp.terminate().success());
    let positions = std::fs::read_to_string(dir.join("positions.json")).unwrap();
    assert!(positions.contains("events.log"), "{positions}");

    // Written while the exporter is down: the rest of the line and 49 more.
    append(&log, [tail.to_owned()]);
    append(&log, (101..150).map(commit_line));
    let exp = start(&dir, &[]);
    let text = wait_for(&exp, TOTAL, 50.0);
    std::thread::sleep(Duration::from_millis(800));
    let text2 = exp.scrape_text();
    assert_eq!(value(&text2, TOTAL), 50.0, "{text}");
    let malformed = testkit::sum_values(
        &text2,
        "fixture_exporter_ingest_rejected_total{source=\"events\",reason=\"malformed_json\"}",
    );
    assert_eq!(malformed, 0.0, "{text2}");

    // Files present at start-up without a stored position are read from their end.
    let other = dir.join("events-other.log");
    append(&other, (0..9).map(commit_line));
    assert!(exp.terminate().success());
    std::fs::write(dir.join("positions.json"), "{\"version\":1,\"files\":[]}").unwrap();
    let exp = start(&dir, &[]);
    std::thread::sleep(Duration::from_millis(800));
    append(&other, (0..3).map(commit_line));
    wait_for(&exp, TOTAL, 3.0);
}

#[test]
fn garbage_and_huge_lines_are_skipped_and_counted() {
    let dir = TempDir::new("logs-garbage");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    let huge = format!(
        "{{\"event\":\"transaction_committed\",\"pad\":\"{}\",\"duration_ms\":1}}\n",
        "x".repeat(1 << 20)
    );
    let mut lines = vec![commit_line(0)];
    let bad: &[(&str, &str)] = &[
        ("this is not json\n", "malformed_json"),
        ("[1,2,3]\n", "malformed_json"),
        ("{\"event\":\"transaction_committed\"\n", "malformed_json"),
        ("{\"level\":\"info\",\"duration_ms\":3}\n", "missing_event"),
        ("{\"event\":42}\n", "wrong_field_type"),
        ("{\"event\":\"no_such_event\"}\n", "unknown_event"),
        ("{\"event\":\"transaction_committed\"}\n", "missing_field"),
        (
            "{\"event\":\"transaction_committed\",\"duration_ms\":\"12\"}\n",
            "wrong_field_type",
        ),
        (
            "{\"event\":\"transaction_committed\",\"duration_ms\":-3}\n",
            "invalid_value",
        ),
        (
            "{\"event\":\"replication_events_sent\",\"count\":-3}\n",
            "negative_counter",
        ),
    ];
    for (l, _) in bad {
        lines.push((*l).to_owned());
    }
    lines.push(huge.clone());
    lines.push("\u{0}\u{1}\u{2}\u{ff}binary\n".to_owned());
    lines.push(commit_line(1));
    lines.push(huge);
    lines.push("{\"event\":\"replication_events_sent\",\"count\":12}\n".to_owned());
    append(&log, lines);
    let text = wait_for(
        &exp,
        "fixture_exporter_ingest_rejected_total{source=\"events\",reason=\"line_too_long\"}",
        2.0,
    );
    // Lines are applied a slice at a time (a scrape may come between two slices): the last
    // line's effect says every line before it was applied.
    let text = if value(&text, "fixture_replication_events_sent_total") == 12.0 {
        text
    } else {
        wait_for(&exp, "fixture_replication_events_sent_total", 12.0)
    };
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (_, reason) in bad {
        *expected.entry(reason).or_default() += 1.0;
    }
    *expected.entry("malformed_json").or_default() += 1.0;
    for (reason, n) in expected {
        let series = format!(
            "fixture_exporter_ingest_rejected_total{{source=\"events\",reason=\"{reason}\"}}"
        );
        assert_eq!(value(&text, &series), n, "{reason}\n{text}");
    }
    assert_eq!(value(&text, "fixture_replication_events_sent_total"), 12.0);
    assert_eq!(value(&text, "fixture_transactions_committed_total"), 2.0);
    // Lines read counts every line, good or bad.
    assert_eq!(
        value(&text, &path_series("log_lines_read_total", &log)),
        (1 + bad.len() + 5) as f64
    );
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("\"event_log\""), "{health}");
    assert!(health.contains("last_error"), "{health}");
    // The follower kept going.
    append(&log, (2..5).map(commit_line));
    wait_for(&exp, TOTAL, 5.0);
}

#[test]
fn trace_ids_become_exemplars_in_openmetrics() {
    let dir = TempDir::new("logs-exemplar");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    append(
        &log,
        [
            "{\"event\":\"query_executed\",\"duration_ms\":0.5,\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\"}\n".to_owned(),
        ],
    );
    wait_for(&exp, "fixture_query_duration_seconds_count", 1.0);
    let om = exp.scrape_openmetrics();
    let bucket = om
        .lines()
        .find(|l| l.starts_with("fixture_query_duration_seconds_bucket{le=\"0.001\"}"))
        .unwrap_or_else(|| panic!("{om}"));
    assert!(
        bucket.contains(
            "# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.0005"
        ),
        "{bucket}"
    );
    if testkit::require_python(&["prometheus_client"]) {
        let parsed = testkit::parse_with_python(&om, "openmetrics");
        let fam = &parsed["fixture_query_duration_seconds"];
        let with_exemplar = fam["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s[3].is_null())
            .count();
        assert_eq!(with_exemplar, 1, "{fam}");
    }
    // The 0.0.4 text format carries no exemplars.
    assert!(!exp.scrape_text().contains("trace_id"));
}

#[test]
fn a_last_line_without_newline_waits_for_it() {
    let dir = TempDir::new("logs-partial");
    let log = dir.join("events.log");
    let exp = start(&dir, &[]);
    let line = commit_line(0);
    let (head, tail) = line.split_at(20);
    File::create(&log).unwrap();
    append(&log, [commit_line(1), head.to_owned()]);
    wait_for(&exp, TOTAL, 1.0);
    std::thread::sleep(Duration::from_millis(600));
    append(&log, [tail.to_owned()]);
    let text = wait_for(&exp, TOTAL, 2.0);
    let malformed = testkit::sum_values(
        &text,
        "fixture_exporter_ingest_rejected_total{source=\"events\",reason=\"malformed_json\"}",
    );
    assert_eq!(malformed, 0.0, "{text}");
}
