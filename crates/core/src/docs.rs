//! docs/metrics.md, generated from the schemas so the reference cannot drift from the code.

use std::fmt::Write;

use crate::probe::process::PROCESS_METRICS;
use crate::schema::{duration_scale, Effect, MetricType, Schema, Source};

/// Renders the metric reference for all tiers.
pub fn metrics_markdown(schemas: &[Schema]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Metric reference\n\n\
         Generated from `crates/*-exporter/schema.toml` and `crates/core/self_schema.toml` by\n\
         `UPDATE_DOCS=1 cargo test -p exporter-core --test docs`; a test fails when this file\n\
         drifts from the schemas. Do not edit by hand.\n\n\
         Source: **engine** = pushed by the engine (StatsD or JSON event log), **probe** =\n\
         measured by the sidecar, **derived** = computed by the sidecar from its own counters,\n\
         **self** = the exporter's own health. Every unlabelled series is present from the\n\
         first scrape, except an engine gauge, which appears with the engine's first sample\n\
         and goes stale after `ingest.gauge_stale_seconds` without one, and a probe counter (a\n\
         total the sidecar reads, such as the engine's CPU time), which appears once measured;\n\
         labelled ones appear with their first label values.\n",
    );
    for schema in schemas {
        let t = &schema.tier;
        let _ = write!(
            out,
            "\n## {} (`{}`, port {})\n\n\
             Metric prefix `{}`, self-metric prefix `{}`, StatsD on `{}` by default.\n\n\
             | name | type | unit | labels | source | help | seed name |\n\
             |---|---|---|---|---|---|---|\n",
            t.name,
            t.binary,
            t.web_listen_address.rsplit(':').next().unwrap_or(""),
            t.metric_prefix,
            t.self_prefix,
            t.statsd_udp,
        );
        for m in &schema.metrics {
            metric_row(&mut out, m);
        }
        // The tier's own settings come from its code, not its schema: its crate's test fills
        // the block (check_settings_reference).
        let _ = write!(
            out,
            "\n<!-- generated: {} by UPDATE_DOCS=1 cargo test -p {} -->\n<!-- end generated -->\n",
            settings_block(&t.name),
            t.binary,
        );
        if !schema.events.is_empty() {
            out.push_str("\nEvent rules (JSON event log):\n\n| event | effects |\n|---|---|\n");
            for rule in &schema.events {
                let effects: Vec<String> = rule.effects.iter().map(describe_effect).collect();
                let _ = writeln!(out, "| `{}` | {} |", rule.event, effects.join("; "));
            }
        }
        let engine_fed = schema
            .metrics
            .iter()
            .filter(|m| m.source == Source::Engine)
            .count();
        let _ = writeln!(
            out,
            "\n{} metrics in all, {} of them fed by the engine.",
            schema.metrics.len(),
            engine_fed
        );
    }
    out.push_str(
        "\n## Process metrics (every exporter)\n\n\
         Read from /proc at scrape time; standard client-library names, unprefixed.\n\n\
         | name | type | help |\n|---|---|---|\n",
    );
    for (name, kind, help) in PROCESS_METRICS {
        let _ = writeln!(out, "| `{name}` | {kind} | {help} |");
    }
    out
}

/// One metric's row of docs/metrics.md.
fn metric_row(out: &mut String, m: &crate::schema::MetricDef) {
    let mut help = m.help.clone();
    if !m.initial.is_empty() {
        let series: Vec<String> = m.initial.iter().map(|v| v.join("/")).collect();
        let _ = write!(help, " (at 0 from the start: {})", series.join(", "));
    }
    if m.kind == MetricType::Histogram {
        let buckets: Vec<String> = m.buckets.iter().map(|b| b.to_string()).collect();
        let _ = write!(help, " (buckets: {})", buckets.join(", "));
    }
    let _ = writeln!(
        out,
        "| `{}` | {} | {} | {} | {} | {} | {} |",
        m.name,
        m.kind.as_str(),
        m.unit.as_deref().unwrap_or(""),
        m.labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", "),
        m.source.as_str(),
        help,
        m.seed
            .as_deref()
            .map(|s| format!("`{s}`"))
            .unwrap_or_default(),
    );
}

fn describe_effect(effect: &Effect) -> String {
    let labels = effect.labels();
    let labels = if labels.is_empty() {
        String::new()
    } else {
        let pairs: Vec<String> = labels.iter().map(|(l, f)| format!("{l}←{f}")).collect();
        format!("{{{}}}", pairs.join(","))
    };
    let optional = |o: bool| if o { " (if present)" } else { "" };
    match effect {
        Effect::Inc { metric, .. } => format!("`{metric}`{labels} +1"),
        Effect::Add {
            metric,
            field,
            optional: o,
            ..
        } => format!("`{metric}`{labels} += `{field}`{}", optional(*o)),
        Effect::Set {
            metric,
            field,
            optional: o,
            ..
        } => format!("`{metric}`{labels} = `{field}`{}", optional(*o)),
        Effect::SetTimestamp { metric, .. } => format!("`{metric}`{labels} = event `timestamp`"),
        Effect::Observe {
            metric,
            field,
            optional: o,
            ..
        } => {
            let scale = duration_scale(field);
            let conv = if scale == 1.0 {
                String::new()
            } else {
                format!(" / {}", (1.0 / scale).round())
            };
            format!(
                "observe `{field}`{conv} into `{metric}`{labels}{}",
                optional(*o)
            )
        }
    }
}

/// The name of a tier's settings block in docs/metrics.md.
pub fn settings_block(tier: &str) -> String {
    format!("{tier}-settings")
}

/// A tier's own settings as markdown: every flag of its sections, its file key, its default
/// (from the section's `Default`) and its help; empty for a tier without settings.
pub fn settings_markdown(sections: &[crate::config::SectionSpec]) -> String {
    let mut out = String::new();
    for spec in sections {
        let defaults = spec.defaults();
        for f in spec.flags {
            if out.is_empty() {
                out.push_str(
                    "\nSettings of this tier (flags, `[section]` keys in the file, environment \
                     variables as in [configuration.md](configuration.md)):\n\n\
                     | flag | file key | default | meaning |\n|---|---|---|---|\n",
                );
            }
            let field = f.key.rsplit('.').next().unwrap_or(f.key);
            let default = match defaults.get(field) {
                None | Some(serde_json::Value::Null) => "none".to_owned(),
                Some(serde_json::Value::String(v)) if v.is_empty() => "empty".to_owned(),
                Some(serde_json::Value::String(v)) => format!("`{v}`"),
                Some(serde_json::Value::Array(v)) if v.is_empty() => "none".to_owned(),
                Some(v) => format!("`{v}`"),
            };
            let _ = writeln!(
                out,
                "| `--{}` | `{}` | {default} | {}. |",
                f.name,
                f.key,
                f.help.trim_end_matches('.')
            );
        }
    }
    out
}

/// The test of every tier: docs/metrics.md holds the settings the tier registered
/// (`Tier::sections`) as its code declares them (with `UPDATE_DOCS=1`, writes them there).
/// `manifest_dir` is the calling crate's.
pub fn check_settings_reference(
    manifest_dir: &str,
    tier: &crate::schema::TierInfo,
    sections: &[crate::config::SectionSpec],
) {
    let block = settings_block(&tier.name);
    let path = crate::workspace_root(manifest_dir).join("docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let content = settings_markdown(sections);
    let Some(updated) = fill_generated(&doc, &block, &content) else {
        panic!("docs/metrics.md has no {block} block; regenerate it with UPDATE_DOCS=1 cargo test -p exporter-core --test docs");
    };
    if update_docs_requested() {
        if updated != doc {
            if let Err(e) = std::fs::write(&path, &updated) {
                panic!("{}: {e}", path.display());
            }
        }
        return;
    }
    assert!(
        updated == doc,
        "docs/metrics.md's {block} block is out of date with the tier's settings; run \
         UPDATE_DOCS=1 cargo test -p {}",
        tier.binary
    );
}

/// The body of the block `NAME` of a doc (see [`fill_generated`]).
pub fn generated_block<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let (body, end) = block_body(doc, name)?;
    doc.get(body..end)
}

/// Where the body of the block `<!-- generated: NAME ... -->` … `<!-- end generated -->`
/// starts and ends.
fn block_body(doc: &str, name: &str) -> Option<(usize, usize)> {
    let open = format!("<!-- generated: {name} ");
    let start = doc.find(&open)?;
    let body = start + doc[start..].find("-->\n")? + 4;
    let end = body + doc[body..].find("<!-- end generated -->")?;
    Some((body, end))
}

/// docs/metrics.md regenerated from `schemas`, keeping each tier's settings block as `current`
/// has it (the tier crates' tests write those).
pub fn metrics_markdown_keeping_settings(schemas: &[Schema], current: &str) -> String {
    let mut doc = metrics_markdown(schemas);
    for schema in schemas {
        let block = settings_block(&schema.tier.name);
        if let Some(kept) = generated_block(current, &block) {
            if let Some(filled) = fill_generated(&doc, &block, kept) {
                doc = filled;
            }
        }
    }
    doc
}

/// Whether the tests were asked to write the generated docs (`UPDATE_DOCS=1`) rather than
/// check them.
pub fn update_docs_requested() -> bool {
    std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1")
}

/// Flags (and their config keys) that a configuration doc does not mention.
pub fn undocumented_flags(doc: &str, flags: &[crate::config::Flag]) -> Vec<String> {
    let mut missing = Vec::new();
    for f in flags {
        let flag = format!("--{}", f.name);
        if !doc.contains(&flag) {
            missing.push(flag);
        }
        if !doc.contains(f.key) {
            missing.push(f.key.to_owned());
        }
    }
    missing
}

/// Replaces the body of the block `<!-- generated: NAME ... -->` … `<!-- end generated -->`
/// in a hand-written doc with `content`; None when the markers are missing.
pub fn fill_generated(doc: &str, name: &str, content: &str) -> Option<String> {
    let (body, end) = block_body(doc, name)?;
    Some(format!("{}{content}{}", &doc[..body], &doc[end..]))
}

/// The generated blocks of docs/ingest.md: each channel's rejection reasons, and which
/// channel feeds each engine metric of every tier.
pub fn ingest_blocks(schemas: &[Schema]) -> [(&'static str, String); 4] {
    use crate::ingest::reason::{markdown_table, EventReason, StatsdReason};
    [
        ("statsd-reasons", markdown_table::<StatsdReason>()),
        ("event-reasons", markdown_table::<EventReason>()),
        ("channels", channel_table(schemas)),
        ("follower-errors", follower_errors_table()),
    ]
}

/// `log_follower_errors_total{reason}`: each reason and its cause.
fn follower_errors_table() -> String {
    use crate::ingest::logtail::FollowerError;
    let mut out = String::from("| `log_follower_errors_total` reason | cause |\n|---|---|\n");
    for e in FollowerError::ALL {
        let _ = writeln!(out, "| `{}` | {} |", e.label(), e.cause());
    }
    out
}

/// Tier → the engine metrics each channel feeds.
fn channel_table(schemas: &[Schema]) -> String {
    use crate::schema::Channel;
    let mut out = String::from("| tier | StatsD | event log |\n|---|---|---|\n");
    for schema in schemas {
        let list = |channel: Channel| {
            let names: Vec<String> = schema
                .metrics
                .iter()
                .filter(|d| d.source == Source::Engine && schema.channels(d).contains(&channel))
                .map(|d| format!("`{}`", d.name))
                .collect();
            if names.is_empty() {
                "—".to_owned()
            } else {
                names.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            schema.tier.name,
            list(Channel::Statsd),
            list(Channel::Events)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_blocks_are_replaced_in_place() {
        let doc = "a\n<!-- generated: x (how) -->\nold\n<!-- end generated -->\nb\n";
        let out = fill_generated(doc, "x", "new\n").expect("markers");
        assert_eq!(
            out,
            "a\n<!-- generated: x (how) -->\nnew\n<!-- end generated -->\nb\n"
        );
        assert_eq!(fill_generated(&out, "x", "new\n").as_deref(), Some(&*out));
        assert!(fill_generated(doc, "y", "").is_none());
    }
}
