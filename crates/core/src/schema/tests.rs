use super::*;

const MINI_METRICS: &str = r#"

[[metrics]]
name = "tx_engine_commits_total"
type = "counter"
help = "Commits"
seed = "tx_engine_commits"
"#;

fn mini() -> String {
    test_schema_toml("tx", MINI_METRICS)
}

#[test]
fn parses_and_adds_self_metrics() {
    let schema = Schema::parse(&mini()).expect("valid schema");
    assert!(schema.metric("tx_engine_commits_total").is_some());
    assert!(schema.metric("tx_exporter_engine_up").is_some());
    assert!(schema.metric("tx_exporter_build_info").is_some());
}

#[test]
fn statsd_names_accept_counter_aliases() {
    let schema = Schema::parse(&mini()).expect("valid schema");
    for alias in ["tx_engine_commits_total", "tx_engine_commits"] {
        let def = schema.resolve_statsd_name(alias).expect(alias);
        assert_eq!(def.name, "tx_engine_commits_total");
    }
    assert!(schema.resolve_statsd_name("tx_engine_nope").is_none());
}

#[test]
fn rejects_bad_definitions() {
    let cases = [
        (
            "name = \"tx_engine_x\"\ntype = \"counter\"",
            "end in _total",
        ),
        (
            "name = \"tx_engine_x_total\"\ntype = \"gauge\"",
            "only counters",
        ),
        ("name = \"other_x\"\ntype = \"gauge\"", "must start with"),
        (
            "name = \"tx_engine_x_seconds\"\ntype = \"histogram\"\nbuckets = [2.0, 1.0]",
            "strictly increasing",
        ),
        (
            "name = \"tx_engine_x\"\ntype = \"gauge\"\nunit = \"seconds\"",
            "end in its unit",
        ),
    ];
    for (body, expected) in cases {
        let text = format!("{}\n[[metrics]]\n{body}\nhelp = \"h\"\n", mini());
        let err = Schema::parse(&text).expect_err(body);
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
}

#[test]
fn event_rules_are_checked_against_metrics() {
    let mut schema = Schema::parse(&mini()).expect("valid schema");
    let bad = EventRule {
        event: "e".into(),
        effects: vec![Effect::Observe {
            metric: "tx_engine_commits_total".into(),
            field: "duration_ms".into(),
            optional: false,
            labels: BTreeMap::new(),
        }],
    };
    assert!(schema.add_event_rules(vec![bad]).is_err());
    let good = EventRule {
        event: "e".into(),
        effects: vec![Effect::Inc {
            metric: "tx_engine_commits_total".into(),
            labels: BTreeMap::new(),
        }],
    };
    schema.add_event_rules(vec![good]).expect("valid rule");
    assert!(schema.event("e").is_some());
}

#[test]
fn base_name_strips_total_and_unit() {
    let def = MetricDef {
        name: "olap_read_bytes_total".into(),
        kind: MetricType::Counter,
        help: "h".into(),
        unit: Some("bytes".into()),
        labels: vec![],
        buckets: vec![],
        seed: None,
        source: Source::Engine,
        initial: vec![],
        derived: None,
        goes_stale: true,
        channels: vec![],
    };
    assert_eq!(def.base_name(), "olap_read");
}
