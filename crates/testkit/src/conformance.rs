//! The checks every tier must pass: its real binary serves its whole schema, in both formats,
//! parseable by the official parsers and clean under `promtool check metrics`; its settings are
//! in docs/metrics.md as its code declares them.

use serde_json::Value;

use exporter_core::schema::{Channel, MetricType, Schema, Source};

use crate::{
    gunzip, parse_with_python, promtool_check_metrics, require_python, require_tool, Exporter,
};

/// Family name as parsers report it: counters without `_total`.
fn family_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

fn check_families(schema: &Schema, parsed: &Value, format: &str) {
    let families = parsed.as_object().expect("families object");
    for def in &schema.metrics {
        let fam_name = family_name(&def.name, def.kind);
        // A labelled family has no series until its first label values arrive, and
        // prometheus-client writes no HELP/TYPE for an empty family.
        // Labelled families, measured totals and engine gauges have no series before their
        // data, and prometheus-client writes no HELP/TYPE for an empty family.
        let Some(fam) = families.get(fam_name) else {
            assert!(
                !def.served_from_first_scrape(),
                "{format}: family {fam_name} missing"
            );
            continue;
        };
        assert_eq!(
            fam["type"],
            def.kind.as_str(),
            "{format}: type of {fam_name}"
        );
        let samples = fam["samples"].as_array().expect("samples");
        if !def.labels.is_empty() {
            let total = def.name.as_str();
            let present = samples.iter().filter(|s| s[0] == total).count();
            assert!(
                present >= def.initial.len(),
                "{format}: initial series of {total}"
            );
            continue;
        }
        match def.kind {
            MetricType::Counter => {
                let s = samples
                    .iter()
                    .find(|s| s[0] == def.name.as_str())
                    .unwrap_or_else(|| panic!("{format}: no sample {}", def.name));
                if def.source == Source::Engine {
                    assert_eq!(s[2], 0.0, "{format}: {} starts at 0", def.name);
                }
            }
            MetricType::Gauge => {
                assert!(
                    samples.iter().any(|s| s[0] == def.name.as_str()),
                    "{format}: no sample {}",
                    def.name
                );
            }
            MetricType::Histogram => {
                let bucket = format!("{}_bucket", def.name);
                let buckets = samples.iter().filter(|s| s[0] == bucket.as_str()).count();
                assert_eq!(
                    buckets,
                    def.buckets.len() + 1,
                    "{format}: buckets of {}",
                    def.name
                );
                let count = format!("{}_count", def.name);
                assert!(
                    samples.iter().any(|s| s[0] == count.as_str()),
                    "{format}: {count}"
                );
            }
        }
    }
}

/// Engine metrics fed by StatsD that the first scrape does not serve: labelled ones and
/// gauges.
fn needs_data(schema: &Schema, def: &exporter_core::schema::MetricDef) -> bool {
    def.source == Source::Engine
        && !def.served_from_first_scrape()
        && schema.channels(def).contains(&Channel::Statsd)
}

/// Sends one DogStatsD sample, with every declared label as a tag, per engine metric that
/// needs data to appear.
fn feed_engine_metrics(schema: &Schema, exporter: &Exporter) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let labelled = schema.metrics.iter().filter(|d| needs_data(schema, d));
    let mut expected = 0;
    for def in labelled {
        let kind = match def.kind {
            MetricType::Counter => "c",
            MetricType::Gauge => "g",
            MetricType::Histogram => "h",
        };
        let tags: Vec<String> = def
            .labels
            .iter()
            .map(|l| format!("{l}:conformance"))
            .collect();
        let line = if tags.is_empty() {
            format!("{}:1|{kind}", def.name)
        } else {
            format!("{}:1|{kind}|#{}", def.name, tags.join(","))
        };
        socket
            .send_to(line.as_bytes(), exporter.statsd)
            .expect("send");
        expected += 1;
    }
    if expected == 0 {
        return;
    }
    let accepted = format!(
        "{}ingest_samples_accepted_total{{source=\"statsd\"}}",
        schema.tier.self_prefix
    );
    let got = crate::eventually(std::time::Duration::from_secs(5), || {
        crate::sample_value(&exporter.scrape_text(), &accepted).filter(|v| *v >= expected as f64)
    });
    assert!(
        got.is_some(),
        "the {expected} samples were not all accepted"
    );
}

/// Starts `bin` with no configuration and checks it serves every metric of its schema.
pub fn check_tier(bin: &str, schema_toml: &str) {
    let schema = Schema::parse(schema_toml).expect("schema");
    let exporter = Exporter::start(bin, &[]);

    let health = exporter.get("/health", &[]);
    assert_eq!(health.status, 200, "{}", health.text());
    let health: Value = serde_json::from_slice(&health.body).expect("/health is JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tier"], schema.tier.name.as_str());
    let landing = exporter.get("/", &[]).text();
    assert!(landing.contains("href=\"/metrics\"") && landing.contains("href=\"/health\""));

    let om = exporter.get(
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = om.text();
    assert!(om.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");

    let text = exporter.get("/metrics", &[("Accept", "text/plain")]);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = text.text();
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));

    let gz = exporter.get("/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let unzipped = gunzip(&gz.body);
    assert!(unzipped.contains(&format!(
        "# TYPE {}build_info gauge",
        schema.tier.self_prefix
    )));

    if require_python(&["prometheus_client"]) {
        check_families(
            &schema,
            &parse_with_python(&om, "openmetrics"),
            "openmetrics",
        );
        check_families(&schema, &parse_with_python(&text, "text"), "text");
        // Labelled engine metrics and engine gauges appear with their first sample: push one
        // each.
        feed_engine_metrics(&schema, &exporter);
        let fed = parse_with_python(&exporter.scrape_openmetrics(), "openmetrics");
        for def in &schema.metrics {
            if needs_data(&schema, def) {
                let fam = family_name(&def.name, def.kind);
                assert!(
                    fed.get(fam).is_some(),
                    "{fam} missing after a StatsD sample"
                );
            }
        }
        let parsed = parse_with_python(&text, "text");
        for name in [
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(parsed.get(name).is_some(), "{name} missing");
        }
    }
    if require_tool("promtool") {
        let (ok, output) = promtool_check_metrics(&text);
        assert!(
            ok && output.trim().is_empty(),
            "promtool check metrics: {output}"
        );
    }
}

/// The test of every tier crate: docs/metrics.md holds the settings `tier` registered (its own
/// and its probes'), as its code declares them; `UPDATE_DOCS=1` writes them there.
/// `manifest_dir` is the calling crate's.
pub fn settings_reference_is_current(manifest_dir: &str, tier: &exporter_core::Tier) {
    let schema = tier.schema().expect("the tier's schema parses");
    exporter_core::docs::check_settings_reference(manifest_dir, &schema.tier, tier.sections());
}
