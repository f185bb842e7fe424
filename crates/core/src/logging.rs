//! Log lines in the database's own structured-log shape (timestamp, level, component, event,
//! host, server_id, then the event's fields), as JSON or logfmt. The component is the tracing
//! target, so `--log.level=info,ingest=debug` filters per component.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub struct LineFormat {
    format: LogFormat,
    host: String,
    server_id: Option<String>,
}

impl LineFormat {
    pub fn new(format: LogFormat, server_id: Option<String>) -> LineFormat {
        LineFormat {
            format,
            host: hostname(),
            server_id,
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Installs the global subscriber. Safe to call once; later calls are ignored. With a
/// `tracer`, spans (and warnings inside them) are also exported through OpenTelemetry.
pub fn init(config: &LogConfig, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber(config, tracer).try_init();
}

fn subscriber(
    config: &LogConfig,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The log layer takes events only: with no trace exporter every span call site is then
    // disabled, so spans cost nothing when OTEL is unset.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(LineFormat::new(config.format, config.server_id.clone()))
        .with_filter(filter.and(filter_fn(|meta| meta.is_event())));
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(|meta| {
                // The exporter's own HTTP client must not trace itself.
                let own = ["opentelemetry", "hyper", "h2", "tower", "reqwest"];
                let level = if meta.is_span() {
                    LevelFilter::INFO
                } else {
                    LevelFilter::WARN
                };
                *meta.level() <= level && !own.iter().any(|t| meta.target().starts_with(t))
            }))
    });
    // Not `.with(Option<layer>)`: a `None` layer reports every callsite enabled, so every
    // span (one per StatsD flush, one per log read) would be built, entered and closed in
    // the registry for no one.
    let logged = tracing_subscriber::registry().with(logs);
    match traces {
        Some(traces) => Box::new(logged.with(traces)),
        None => Box::new(logged),
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    event: Option<String>,
    rest: Vec<(&'static str, FieldValue)>,
}

enum FieldValue {
    Str(String),
    Num(String),
    Bool(bool),
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            name => self.rest.push((name, FieldValue::Str(value.to_owned()))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest
            .push((field.name(), FieldValue::Num(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest
            .push((field.name(), FieldValue::Num(value.to_string())));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = if value.is_finite() {
            FieldValue::Num(value.to_string())
        } else {
            FieldValue::Str(value.to_string())
        };
        self.rest.push((field.name(), v));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name(), FieldValue::Bool(value)));
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        // `event` is the short machine name; a free-text message is kept beside it.
        let (name, message) = match (fields.event.take(), fields.message.take()) {
            (Some(e), m) => (e, m),
            (None, Some(m)) => (m, None),
            (None, None) => (String::new(), None),
        };
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let level = meta.level().as_str();
        let mut pairs: Vec<(&str, FieldValue)> = vec![
            ("timestamp", FieldValue::Str(timestamp)),
            ("level", FieldValue::Str(level.to_owned())),
            ("component", FieldValue::Str(meta.target().to_owned())),
            ("event", FieldValue::Str(name)),
            ("host", FieldValue::Str(self.host.clone())),
        ];
        if let Some(id) = &self.server_id {
            pairs.push(("server_id", FieldValue::Str(id.clone())));
        }
        if let Some(m) = message {
            pairs.push(("message", FieldValue::Str(m)));
        }
        // Lets a log line be joined to its trace; only sampled spans are in the trace store.
        if let Some((trace_id, span_id)) = crate::telemetry::current_ids() {
            pairs.push(("trace_id", FieldValue::Str(trace_id)));
            pairs.push(("span_id", FieldValue::Str(span_id)));
        }
        pairs.extend(fields.rest);
        let mut line = String::with_capacity(256);
        match self.format {
            LogFormat::Json => write_json(&mut line, &pairs),
            LogFormat::Logfmt => write_logfmt(&mut line, &pairs),
        }
        writeln!(writer, "{line}")
    }
}

fn write_json(out: &mut String, pairs: &[(&str, FieldValue)]) {
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, k);
        out.push(':');
        match v {
            FieldValue::Str(s) => push_json_str(out, s),
            FieldValue::Num(n) => out.push_str(n),
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
}

/// `s` as a JSON string literal, appended to `out` (quotes, backslashes and control characters
/// escaped). engine-sim writes its event lines with it too.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_logfmt(out: &mut String, pairs: &[(&str, FieldValue)]) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        match v {
            FieldValue::Str(s) if s.is_empty() || s.contains([' ', '"', '=', '\n', '\\']) => {
                push_json_str(out, s)
            }
            FieldValue::Str(s) | FieldValue::Num(s) => out.push_str(s),
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_logfmt_escape_values() {
        let pairs = vec![
            ("event", FieldValue::Str("a \"b\"\n".into())),
            ("n", FieldValue::Num("3".into())),
            ("ok", FieldValue::Bool(true)),
        ];
        let mut json = String::new();
        write_json(&mut json, &pairs);
        assert_eq!(json, r#"{"event":"a \"b\"\n","n":3,"ok":true}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["event"], "a \"b\"\n");
        let mut logfmt = String::new();
        write_logfmt(&mut logfmt, &pairs);
        assert_eq!(logfmt, r#"event="a \"b\"\n" n=3 ok=true"#);
    }

    #[test]
    fn without_a_trace_exporter_spans_are_not_built() {
        let config = LogConfig {
            level: "info".into(),
            format: LogFormat::Logfmt,
            server_id: None,
        };
        tracing::subscriber::with_default(subscriber(&config, None), || {
            let span = tracing::info_span!(target: "ingest", "statsd.batch", lines = 3);
            assert!(span.is_disabled(), "{span:?}");
            // Events still reach the log layer.
            assert!(tracing::enabled!(
                kind: tracing::metadata::Kind::EVENT,
                target: "ingest",
                tracing::Level::INFO
            ));
        });
    }
}
