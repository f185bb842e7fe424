//! docs/metrics.md and the generated blocks of docs/ingest.md must match the code. Regenerate with
//! `UPDATE_DOCS=1 cargo test -p exporter-core --test docs`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::path::{Path, PathBuf};

use exporter_core::config::FLAGS;
use exporter_core::docs::{metrics_markdown_keeping_settings, update_docs_requested};
use exporter_core::Schema;

fn root() -> PathBuf {
    exporter_core::workspace_root(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn tier_schemas(root: &Path) -> Vec<Schema> {
    Schema::discover(root).unwrap()
}

#[test]
fn metrics_reference_matches_the_schemas() {
    let root = root();
    let schemas = tier_schemas(&root);
    assert!(!schemas.is_empty(), "no crates/*/schema.toml found");
    let path = root.join("docs/metrics.md");
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    // Each tier's settings block is its crate's to fill (check_settings_reference): kept.
    let expected = metrics_markdown_keeping_settings(&schemas, &actual);
    if update_docs_requested() {
        std::fs::write(&path, &expected).expect("write docs/metrics.md");
        return;
    }
    assert!(
        actual == expected,
        "docs/metrics.md is out of date with the schemas; run \
         UPDATE_DOCS=1 cargo test -p exporter-core --test docs"
    );
}

#[test]
fn configuration_doc_names_every_flag() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).expect("doc");
    let missing = exporter_core::docs::undocumented_flags(&doc, FLAGS);
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
    for flag in ["--config.file", "--check-config"] {
        assert!(doc.contains(flag), "docs/configuration.md lacks {flag}");
    }
}

#[test]
fn ingest_reason_tables_are_generated_from_the_reason_enums() {
    let path = root().join("docs/ingest.md");
    let mut doc = std::fs::read_to_string(&path).expect("docs/ingest.md");
    let before = doc.clone();
    for (name, content) in exporter_core::docs::ingest_blocks(&tier_schemas(&root())) {
        doc = exporter_core::docs::fill_generated(&doc, name, &content)
            .unwrap_or_else(|| panic!("docs/ingest.md lacks the generated block {name}"));
    }
    if update_docs_requested() {
        std::fs::write(&path, &doc).expect("write docs/ingest.md");
        return;
    }
    assert!(
        doc == before,
        "docs/ingest.md reason tables are out of date; run \
         UPDATE_DOCS=1 cargo test -p exporter-core --test docs"
    );
}

/// Every reason the code can emit is a series at 0 from the first scrape, and nothing else.
#[test]
fn every_rejection_reason_exists_from_the_start_and_no_other() {
    use exporter_core::ingest::reason::{EventReason, Reason, StatsdReason};
    fn labels<R: Reason>() -> Vec<Vec<String>> {
        R::ALL
            .iter()
            .map(|r| vec![R::CHANNEL.to_owned(), r.label().to_owned()])
            .collect()
    }
    let mut expected = labels::<StatsdReason>();
    expected.extend(labels::<EventReason>());
    for schema in tier_schemas(&root()) {
        let name = format!("{}ingest_rejected_total", schema.tier.self_prefix);
        let metrics = exporter_core::Metrics::new(&schema, Default::default()).expect("registry");
        let mut served = String::new();
        prometheus_client::encoding::text::encode(&mut served, metrics.registry()).expect("encode");
        let series: Vec<Vec<String>> = served
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}{{")))
            .map(|l| {
                assert!(l.ends_with("} 0.0"), "{l}");
                let source = l
                    .split("source=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let reason = l
                    .split("reason=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                vec![source.to_owned(), reason.to_owned()]
            })
            .collect();
        let mut sorted = expected.clone();
        sorted.sort();
        let mut series = series;
        series.sort();
        assert_eq!(series, sorted, "{}", schema.tier.name);
    }
}

/// Every repository path docs/architecture.md names in backticks exists.
#[test]
fn architecture_doc_names_only_existing_files() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("doc");
    let mut checked = 0;
    for (i, span) in doc.split('`').enumerate() {
        let is_code = i % 2 == 1;
        let looks_like_path = ["crates/", "docs/", "deploy/", "dashboards/", "alerts/"]
            .iter()
            .any(|p| span.starts_with(p))
            && !span.contains(' ');
        if !is_code || !looks_like_path {
            continue;
        }
        let path = span.trim_end_matches('/');
        if path.contains('*') || path.contains('<') {
            // A pattern: at least one match must exist.
            let prefix = path.split(['*', '<']).next().unwrap_or(path);
            assert!(
                root.join(prefix).exists()
                    || root.join(prefix).parent().is_some_and(|p| p.exists()),
                "docs/architecture.md names {span}, which matches nothing"
            );
        } else {
            assert!(
                root.join(path).exists(),
                "docs/architecture.md names {span}, which does not exist"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} paths found in docs/architecture.md"
    );
}
