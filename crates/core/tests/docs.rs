//! docs/metrics.md must match the schemas. Regenerate with
//! `UPDATE_DOCS=1 cargo test -p exporter-core --test docs`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::path::{Path, PathBuf};

use exporter_core::config::FLAGS;
use exporter_core::docs::metrics_markdown;
use exporter_core::Schema;

fn root() -> PathBuf {
    exporter_core::workspace_root(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn tier_schemas(root: &Path) -> Vec<Schema> {
    let mut schemas: Vec<Schema> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("schema.toml"))
        .filter(|p| p.exists())
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable schema");
            Schema::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    // Port order: tx, ingestion, olap, clock.
    schemas.sort_by(|a, b| a.tier.web_listen_address.cmp(&b.tier.web_listen_address));
    schemas
}

#[test]
fn metrics_reference_matches_the_schemas() {
    let root = root();
    let schemas = tier_schemas(&root);
    assert_eq!(schemas.len(), 4, "four tiers");
    let expected = metrics_markdown(&schemas);
    let path = root.join("docs/metrics.md");
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &expected).expect("write docs/metrics.md");
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/metrics.md is out of date with the schemas; run \
         UPDATE_DOCS=1 cargo test -p exporter-core --test docs"
    );
}

#[test]
fn configuration_doc_names_every_flag() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).expect("doc");
    for (flag, key, _, _) in FLAGS {
        assert!(
            doc.contains(&format!("--{flag}")),
            "docs/configuration.md lacks --{flag}"
        );
        assert!(doc.contains(key), "docs/configuration.md lacks key {key}");
    }
    for flag in ["--config.file", "--check-config"] {
        assert!(doc.contains(flag), "docs/configuration.md lacks {flag}");
    }
}

/// Reason names listed under a "### ... rejection reasons" heading of docs/ingest.md.
fn documented_reasons(doc: &str, heading: &str) -> Vec<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in docs/ingest.md"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
        .collect()
}

#[test]
fn every_documented_rejection_reason_exists_from_the_start() {
    let doc = std::fs::read_to_string(root().join("docs/ingest.md")).expect("docs/ingest.md");
    let mut documented: Vec<Vec<String>> = Vec::new();
    for (source, heading) in [
        ("statsd", "### StatsD rejection reasons"),
        ("events", "### Event rejection reasons"),
    ] {
        let reasons = documented_reasons(&doc, heading);
        assert!(reasons.len() >= 8, "{heading}: {reasons:?}");
        documented.extend(reasons.into_iter().map(|r| vec![source.to_owned(), r]));
    }
    let tier = std::fs::read_to_string(root().join("crates/tx-exporter/schema.toml")).unwrap();
    let schema = Schema::parse(&tier).expect("schema");
    let rejected = schema
        .metric("tx_exporter_ingest_rejected_total")
        .expect("metric");
    assert_eq!(
        rejected.initial, documented,
        "self_schema.toml initial vs docs/ingest.md"
    );
}
