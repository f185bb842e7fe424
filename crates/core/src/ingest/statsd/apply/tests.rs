use super::*;
use crate::ingest::reason::Reason;
use crate::metrics::Limits;

fn by_label(label: &str) -> StatsdReason {
    *StatsdReason::ALL
        .iter()
        .find(|r| r.label() == label)
        .expect("a known reason")
}

fn setup(limit: usize) -> (StatsdMapper, Metrics) {
    let schema = Schema::parse(&crate::schema::test_schema_toml(
        "tx",
        crate::schema::TEST_METRICS,
    ))
    .expect("schema");
    let metrics = Metrics::new(
        &schema,
        Limits {
            series_limit: limit,
            series_ttl: None,
            ..Limits::default()
        },
    )
    .expect("registry");
    (
        StatsdMapper::new(&metrics, &schema).expect("mapper"),
        metrics,
    )
}

fn send(m: &StatsdMapper, _metrics: &Metrics, d: &str) -> Tally<StatsdReason> {
    let mut t = Tally::default();
    m.apply_datagram(d.as_bytes(), &mut t);
    t
}

fn value(metrics: &Metrics, name: &str, labels: &[&str]) -> f64 {
    metrics
        .get(name)
        .and_then(|m| m.value(labels))
        .unwrap_or(f64::NAN)
}

#[test]
fn names_that_share_length_and_ends_are_told_apart() {
    // One hash for all three: same length, same first and last eight bytes.
    let names = [
        "tx_engine_a_cache_hits",
        "tx_engine_b_cache_hits",
        "tx_engine_c_cache_hits",
    ];
    assert_eq!(
        name_hash(names[0].as_bytes()),
        name_hash(names[1].as_bytes())
    );
    let mut table = HashTable::new();
    for (i, n) in names.iter().enumerate() {
        table.insert_unique(name_hash(n.as_bytes()), (n.as_bytes(), i), |(k, _)| {
            name_hash(k)
        });
    }
    for (i, n) in names.iter().enumerate() {
        let found = table.find(name_hash(n.as_bytes()), |(k, _)| *k == n.as_bytes());
        assert_eq!(found.map(|(_, j)| *j), Some(i));
    }
    // Short names hash without the tail word; different ones differ.
    assert_ne!(name_hash(b"ab"), name_hash(b"ac"));
    assert_ne!(name_hash(b""), name_hash(b"\0"));
}

#[test]
fn counters_gauges_and_aliases() {
    let (m, metrics) = setup(10);
    let t = send(
        &m,
        &metrics,
        "tx_engine_commits:2|c\ntx_engine_commits_total:3|c|@0.5\ntx_engine_commits_seed:1|c\n\
         tx_engine_depth:10|g\ntx_engine_depth:-3|g\ntx_engine_depth:+1|g",
    );
    assert_eq!((t.accepted, t.is_empty()), (6, false));
    assert_eq!(value(&metrics, "tx_engine_commits_total", &[]), 9.0);
    assert_eq!(value(&metrics, "tx_engine_depth", &[]), 8.0);
    send(&m, &metrics, "tx_engine_depth:4|g");
    assert_eq!(value(&metrics, "tx_engine_depth", &[]), 4.0);
}

#[test]
fn tags_become_declared_labels_only() {
    let (m, metrics) = setup(10);
    let t = send(
        &m,
        &metrics,
        "tx_engine_lag_seconds:1.5|g|#server_id:s1,env:prod,bare",
    );
    assert_eq!((t.accepted, t.tags_dropped), (1, 2));
    assert_eq!(value(&metrics, "tx_engine_lag_seconds", &["s1"]), 1.5);
}

#[test]
fn every_rejection_has_a_reason() {
    let (m, metrics) = setup(1);
    let cases = [
        ("nope:1|c", "unknown_metric"),
        ("tx_engine_depth:1|c", "type_mismatch"),
        ("tx_engine_commits_total:1|ms", "type_mismatch"),
        ("tx_engine_lag_seconds:1|g", "missing_label"),
        ("tx_engine_lag_seconds:1|g|#server_id:", "invalid_tag"),
        ("tx_engine_commits_total:-1|c", "negative_counter"),
        ("tx_engine_commits_total:x|c", "invalid_value"),
        ("tx_engine_latency_seconds:-5|ms", "invalid_value"),
        ("tx_engine_latency_seconds:-0.5|h", "invalid_value"),
        ("tx_engine_depth:1|s", "set_not_supported"),
        ("tx_engine_memory_bytes:1|g", "read_only_metric"),
        ("tx_exporter_engine_up:1|g", "read_only_metric"),
        (
            "tx_engine_latency_seconds:1|h|@0.0001",
            "invalid_sample_rate",
        ),
        ("garbage", "malformed_line"),
        ("tx_engine_depth:1|zz", "unknown_type"),
    ];
    for (line, reason) in cases {
        let t = send(&m, &metrics, line);
        assert_eq!(t.accepted, 0, "{line}");
        assert_eq!(t.rejected(by_label(reason)), 1, "{line}");
    }
    send(&m, &metrics, "tx_engine_lag_seconds:1|g|#server_id:a");
    let t = send(&m, &metrics, "tx_engine_lag_seconds:1|g|#server_id:b");
    assert_eq!(t.rejected(StatsdReason::SeriesLimit), 1);
}

#[test]
fn a_metric_the_event_log_feeds_refuses_statsd() {
    let toml = format!(
        "{}\n[[events]]\nevent = \"commit\"\neffects = [{{ op = \"inc\", metric = \"tx_engine_commits_total\" }}]\n",
        crate::schema::TEST_METRICS
    );
    let schema = Schema::parse(&crate::schema::test_schema_toml("tx", &toml)).expect("schema");
    let metrics = Metrics::new(&schema, Limits::default()).expect("registry");
    let m = StatsdMapper::new(&metrics, &schema).expect("mapper");
    for line in [
        "tx_engine_commits:1|c",
        "tx_engine_commits_total:1|c",
        "tx_engine_commits_seed:1|c",
    ] {
        let mut t = Tally::default();
        m.apply_datagram(line.as_bytes(), &mut t);
        assert_eq!(
            (t.accepted, t.rejected(StatsdReason::WrongChannel)),
            (0, 1),
            "{line}"
        );
    }
    assert_eq!(
        metrics
            .get("tx_engine_commits_total")
            .and_then(|c| c.value(&[])),
        Some(0.0)
    );
}

#[test]
fn timers_are_seconds_and_rates_repeat() {
    let (m, metrics) = setup(10);
    let t = send(
        &m,
        &metrics,
        "tx_engine_latency_seconds:500|ms|@0.5\ntx_engine_latency_seconds:0.05:2|h",
    );
    assert_eq!(t.accepted, 3);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, metrics.registry()).expect("encode");
    assert!(out.contains("tx_engine_latency_seconds_count 4"), "{out}");
    assert!(out.contains("tx_engine_latency_seconds_sum 3.05"), "{out}");
    assert!(
        out.contains("tx_engine_latency_seconds_bucket{le=\"1.0\"} 3"),
        "{out}"
    );
}

/// What happens to one line: samples accepted, tags dropped, or the one rejection reason.
#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted { samples: u64, tags_dropped: u64 },
    Rejected(&'static str),
}

fn outcome(m: &StatsdMapper, line: &[u8]) -> Outcome {
    let mut t = Tally::default();
    m.apply_datagram(line, &mut t);
    let rejected: Vec<&'static str> = StatsdReason::ALL
        .iter()
        .filter(|r| t.rejected(**r) > 0)
        .map(|r| r.label())
        .collect();
    match (t.accepted, rejected.as_slice()) {
        (samples, []) => Outcome::Accepted {
            samples,
            tags_dropped: t.tags_dropped,
        },
        (0, [reason]) => Outcome::Rejected(reason),
        (n, r) => panic!(
            "{}: mixed outcome: {n} accepted, {r:?}",
            String::from_utf8_lossy(line)
        ),
    }
}

/// An accepted line: its samples and dropped tags.
const fn ok(samples: u64, tags_dropped: u64) -> Outcome {
    Outcome::Accepted {
        samples,
        tags_dropped,
    }
}

/// statsd_exporter's own parser test table (pkg/line, TestLineToEvents), with `foo` mapped
/// onto a schema metric of the right type.
const PARSER_CASES: &[(&str, &[u8], Outcome)] = &[
    ("simple counter", b"tx_engine_commits:2|c", ok(1, 0)),
    ("simple gauge", b"tx_engine_depth:3|g", ok(1, 0)),
    (
        "gauge with sampling (rate ignored)",
        b"tx_engine_depth:3|g|@0.2",
        ok(1, 0),
    ),
    ("gauge decrement", b"tx_engine_depth:-10|g", ok(1, 0)),
    (
        "simple timer",
        b"tx_engine_latency_seconds:200|ms",
        ok(1, 0),
    ),
    (
        "simple histogram",
        b"tx_engine_latency_seconds:200|h",
        ok(1, 0),
    ),
    (
        "simple distribution",
        b"tx_engine_latency_seconds:200|d",
        ok(1, 0),
    ),
    (
        "distribution with sampling and #-prefixed keys",
        b"tx_engine_latency_seconds:0.01|d|@0.2|#tag1:bar,#tag2:baz",
        ok(1, 2),
    ),
    (
        "librato tags: not parsed, the name is unknown",
        b"tx_engine_commits#tag1=bar:100|c",
        Outcome::Rejected("unknown_metric"),
    ),
    (
        "influxdb tags: not parsed, the name is unknown",
        b"tx_engine_commits,tag1=bar:100|c",
        Outcome::Rejected("unknown_metric"),
    ),
    (
        "signalfx tags: not parsed, the name is unknown",
        b"tx_engine_[tag1=bar]commits:100|c",
        Outcome::Rejected("unknown_metric"),
    ),
    (
        "datadog tags",
        b"tx_engine_commits:100|c|#tag1:bar,tag2:baz",
        ok(1, 2),
    ),
    (
        "datadog tag on a declared label",
        b"tx_engine_lag_seconds:1|g|#server_id:s1",
        ok(1, 0),
    ),
    (
        "datadog #-prefixed declared label",
        b"tx_engine_lag_seconds:1|g|#tag:x,#server_id:s1",
        ok(1, 1),
    ),
    (
        "valueless tag: dropped",
        b"tx_engine_commits:100|c|#tag_without_a_value",
        ok(1, 1),
    ),
    (
        "valueless tag on a declared label",
        b"tx_engine_lag_seconds:1|g|#server_id",
        Outcome::Rejected("invalid_tag"),
    ),
    (
        "empty tags: skipped",
        b"tx_engine_commits:100|c|#tag:value,,",
        ok(1, 1),
    ),
    (
        "tag value with colons",
        b"tx_engine_lag_seconds:1|g|#server_id:foo:bar",
        ok(1, 0),
    ),
    (
        "undeclared tag with invalid UTF-8: dropped",
        b"tx_engine_commits:100|c|@0.1|#tag:\xc3\x28invalid",
        ok(1, 1),
    ),
    (
        "declared tag with invalid UTF-8",
        b"tx_engine_lag_seconds:1|g|#server_id:\xc3\x28",
        Outcome::Rejected("invalid_tag"),
    ),
    (
        "extended aggregation on a timer",
        b"tx_engine_latency_seconds:0.5:120:3000|ms|#tag1:bar",
        ok(3, 3),
    ),
    (
        "extended aggregation on a counter",
        b"tx_engine_commits:0.5:120:3000|c",
        ok(3, 0),
    ),
    (
        "extended aggregation on a gauge",
        b"tx_engine_depth:0.5:120|g",
        ok(2, 0),
    ),
    ("bad line", b"foo", Outcome::Rejected("malformed_line")),
    (
        "bad component",
        b"foo:1",
        Outcome::Rejected("malformed_line"),
    ),
    (
        "bad value",
        b"tx_engine_commits:1o|c",
        Outcome::Rejected("invalid_value"),
    ),
    (
        "illegal sampling factor",
        b"tx_engine_commits:1|c|@bar",
        Outcome::Rejected("invalid_sample_rate"),
    ),
    (
        "zero sampling factor",
        b"tx_engine_commits:2|c|@0",
        Outcome::Rejected("invalid_sample_rate"),
    ),
    (
        "illegal stat type",
        b"tx_engine_commits:2|t",
        Outcome::Rejected("unknown_type"),
    ),
    (
        "empty metric name",
        b":100|ms",
        Outcome::Rejected("malformed_line"),
    ),
    (
        "empty component: ignored",
        b"tx_engine_commits:1|c|",
        ok(1, 0),
    ),
    (
        "unknown components: ignored",
        b"tx_engine_commits:1|c|zz|T1700000000",
        ok(1, 0),
    ),
    (
        "container id without tags",
        b"tx_engine_commits:1|c|c:ci-4f2a|T1700000000",
        ok(1, 0),
    ),
    (
        "invalid UTF-8 name",
        b"invalid\xc3\x28utf8:1|c",
        Outcome::Rejected("unknown_metric"),
    ),
    (
        "event split over lines, part 1",
        b"karafka.cpu_idle_second:  0.111090  -0.055903 (  2.419002)",
        Outcome::Rejected("malformed_line"),
    ),
    (
        "container id: ignored",
        b"tx_engine_commits:100|c|#tag1:value|c:container123",
        ok(1, 1),
    ),
    (
        "container id without a value: ignored",
        b"tx_engine_commits:100|c|#tag1:value|c",
        ok(1, 1),
    ),
    (
        "set",
        b"tx_engine_depth:1|s",
        Outcome::Rejected("set_not_supported"),
    ),
];

/// statsd_exporter's own parser test table (pkg/line, TestLineToEvents), replayed with
/// `foo` mapped onto a schema metric of the right type. docs/ingest.md lists where the
/// outcomes differ and why.
#[test]
fn statsd_exporter_parser_cases() {
    let (m, _metrics) = setup(10);
    for (name, line, expected) in PARSER_CASES {
        assert_eq!(
            &outcome(&m, line),
            expected,
            "{name}: {}",
            String::from_utf8_lossy(line)
        );
    }
    // A line cut before its type (the second half of a split event) is not a sample.
    let part2 = outcome(&m, b"|h|#consumer:Kafka::Consumer,topic:shared");
    assert!(matches!(part2, Outcome::Rejected(_)), "{part2:?}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_and_every_line_is_accounted(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)
    ) {
        let (m, metrics) = setup(5);
        let _ = &metrics;
        let mut t = Tally::<StatsdReason>::default();
        let lines = m.apply_datagram(&bytes, &mut t);
        let rejected = t.rejected_total();
        // Each line yields at least one outcome (multi-value lines can yield more).
        proptest::prop_assert!(t.accepted + rejected >= lines);
    }
}
