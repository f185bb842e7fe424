//! Rendering the registry: OpenMetrics 1.0.0 (what prometheus-client writes) or the
//! Prometheus 0.0.4 text format (derived from it), chosen by the scraper's Accept header.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }

    /// OpenMetrics when the Accept header ranks it at least as high as plain text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics_q = 0.0f32;
        let mut text_q = 0.0f32;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(q),
                "text/plain" | "*/*" | "text/*" => text_q = text_q.max(q),
                _ => {}
            }
        }
        if openmetrics_q > 0.0 && openmetrics_q >= text_q {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Renders the registry in the requested format.
/// Something a scrape renders under, so that what it serves and what it records stay one
/// (the event-log follower's ledger persists the positions a scrape served, and holds the
/// follower still meanwhile). The server knows no source; a source hands one in.
pub trait RenderGuard: Send + Sync {
    fn serve(&self, render: &mut dyn FnMut() -> Rendered) -> Rendered;
}

/// A rendered `/metrics` body.
pub type Rendered = Result<String, std::fmt::Error>;

pub fn render(registry: &Registry, format: Format) -> Rendered {
    let mut openmetrics = String::with_capacity(16 * 1024);
    encode(&mut openmetrics, registry)?;
    Ok(match format {
        Format::OpenMetrics => openmetrics,
        Format::Text => openmetrics_to_text(&openmetrics),
    })
}

/// Rewrites OpenMetrics text as Prometheus 0.0.4 text: counter families are named with
/// their `_total` sample name, `# UNIT` and `# EOF` go, and exemplars are dropped.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(help) = pending_help.replace(rest) {
                push_line(&mut out, &["# HELP ", help]);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                push_line(&mut out, &["# HELP ", name, suffix, " ", text]);
            }
            push_line(&mut out, &["# TYPE ", name, suffix, " ", kind]);
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else if line.starts_with('#') {
            push_line(&mut out, &[line]);
        } else {
            push_line(&mut out, &[without_exemplar(line)]);
        }
    }
    if let Some(help) = pending_help {
        push_line(&mut out, &["# HELP ", help]);
    }
    out
}

fn push_line(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
    out.push('\n');
}

/// Cuts ` # {...} value` off a sample line, skipping over quoted label values.
fn without_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    // Most sample lines hold no `#` at all: one vectorised search says so, where the walk
    // below costs a branch per byte (most of a 10k-series 0.0.4 scrape's conversion).
    if memchr::memchr(b'#', bytes).is_none() {
        return line;
    }
    let mut i = 0;
    let mut in_labels = false;
    let mut in_quotes = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' if in_labels => in_quotes = !in_quotes,
            b'{' if !in_quotes => in_labels = true,
            b'}' if !in_quotes => in_labels = false,
            b'#' if !in_labels && i > 0 && bytes[i - 1] == b' ' => {
                return line[..i - 1].trim_end();
            }
            _ => {}
        }
        i += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        let text_first = "text/plain;q=1,application/openmetrics-text;q=0.5";
        assert_eq!(Format::negotiate(Some(text_first)), Format::Text);
    }

    #[test]
    fn converts_counters_units_exemplars_and_eof() {
        let om = "# HELP a_bytes Read.\n# TYPE a_bytes counter\n# UNIT a_bytes bytes\n\
                  a_bytes_total 3.0\n\
                  # HELP h_seconds Lat.\n# TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
                  h_seconds_bucket{le=\"0.1\",x=\"a # {b}\"} 1 # {trace_id=\"ab\"} 0.05\n\
                  # EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP a_bytes_total Read.\n# TYPE a_bytes_total counter\na_bytes_total 3.0\n\
             # HELP h_seconds Lat.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.1\",x=\"a # {b}\"} 1\n"
        );
    }

    #[test]
    fn exemplar_stripping_respects_escaped_quotes() {
        let line = r#"m{a="x\" # y"} 1 # {trace_id="1"} 2"#;
        assert_eq!(without_exemplar(line), r#"m{a="x\" # y"} 1"#);
        assert_eq!(without_exemplar("m 1"), "m 1");
    }
}
