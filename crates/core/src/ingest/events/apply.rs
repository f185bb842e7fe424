//! Applying an event's rule (the schema's effects) to the registry. Every effect of a line
//! is checked before any is applied (fields, values, label values, room for a new series),
//! so a bad line changes nothing and is rejected once.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use smallvec::SmallVec;

use super::fields::{Fields, Value};
use super::parse::{parse_event, Event};
use crate::ingest::reason::EventReason;
use crate::ingest::swar::same_bytes;
use crate::ingest::tally::Tally;
use crate::metrics::{Exemplar, Metric, Metrics};
use crate::schema::{duration_scale, Effect, Schema, SchemaError};

/// An event rule with its effects resolved.
struct Rule {
    event: Box<str>,
    effects: Vec<Resolved>,
    /// Some effect observes a histogram: only then are the trace fields looked up.
    observes: bool,
}

/// One effect of a rule, resolved when the mapper is built: the metric's handle, where its
/// value comes from, and the event field behind each of its labels. A line then costs no
/// lookup in the rule's definition.
struct Resolved {
    metric: Metric,
    value: ValueFrom,
    /// Per label of the metric, in its order: the event field that supplies it (None: the
    /// rule names none, so every line is missing it). Empty for a metric without labels.
    label_fields: Box<[Option<Box<str>>]>,
}

enum ValueFrom {
    /// A counter's +1.
    One,
    /// A numeric field; `scale` converts a `_ms`/`_us`/`_ns` observation to seconds.
    Field {
        name: Box<str>,
        optional: bool,
        scale: f64,
    },
    /// The event's `timestamp`, as Unix seconds.
    Timestamp,
}

pub struct EventMapper {
    /// A tier has a handful of rules (eight at most today): a scan that compares lengths
    /// first finds one in fewer instructions than hashing the name would take.
    rules: Vec<Rule>,
}

impl EventMapper {
    /// Resolves every rule's metrics once; the schema has checked their types and labels.
    pub fn new(metrics: &Metrics, schema: &Schema) -> Result<EventMapper, SchemaError> {
        let mut rules = Vec::with_capacity(schema.events.len());
        for rule in &schema.events {
            let mut effects = Vec::with_capacity(rule.effects.len());
            for effect in &rule.effects {
                let metric = metrics.get(effect.metric()).cloned().ok_or_else(|| {
                    SchemaError::event(
                        &rule.event,
                        format!("{} is not registered", effect.metric()),
                    )
                })?;
                effects.push(Resolved::new(metric, effect));
            }
            let observes = effects
                .iter()
                .any(|e| matches!(e.metric, Metric::Histogram(_)));
            rules.push(Rule {
                event: rule.event.as_str().into(),
                effects,
                observes,
            });
        }
        Ok(EventMapper { rules })
    }

    /// Applies one log line; every outcome lands in `tally`.
    pub fn apply_line(&self, line: &[u8], tally: &mut Tally<EventReason>) {
        let mut fields = Fields::new();
        let borrowed = match parse_event(line, &mut fields) {
            Ok(event) => {
                self.apply_event(&event, tally);
                event.borrowed
            }
            Err(e) => {
                tally.reject_with(e.reason(), || {
                    String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned()
                });
                false
            }
        };
        if borrowed && !fields.spilled() {
            // Every field borrows from the line and the vector is on the stack: there is
            // nothing to free, and the drop glue (a check per field) cost ~90 instructions
            // per line.
            std::mem::forget(fields);
        }
    }

    fn apply_event(&self, event: &Event<'_, '_>, tally: &mut Tally<EventReason>) {
        let name = event.name().as_bytes();
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| same_bytes(r.event.as_bytes(), name))
        else {
            return tally.reject_with(EventReason::UnknownEvent, || event.name().to_owned());
        };
        // Every effect is checked before any is applied: a line counts whole or not at all.
        // What is kept between the passes is small (labels are rebuilt, and only labelled
        // metrics have any), so no pass moves big values around.
        let mut planned: SmallVec<[(&Resolved, f64); 4]> = SmallVec::new();
        for effect in &rule.effects {
            match effect.plan(event) {
                Ok(Some(v)) => planned.push((effect, v)),
                Ok(None) => {}
                Err(reason) => {
                    return tally.reject_with(reason, || {
                        format!("event {} ({})", event.name(), effect.metric.def().name)
                    })
                }
            }
        }
        let exemplar = rule
            .observes
            .then(|| event.str_field("trace_id"))
            .flatten()
            .map(|trace_id| Exemplar {
                trace_id,
                span_id: event.str_field("span_id"),
            });
        for &(effect, v) in &planned {
            let (owned, values);
            let labels: &[&str] = if effect.label_fields.is_empty() {
                &[]
            } else {
                owned = match effect.label_values(event) {
                    Ok(v) => v,
                    Err(_) => continue, // checked by plan
                };
                values = owned.iter().map(|l| &**l).collect::<SmallVec<[&str; 8]>>();
                &values
            };
            // The schema matched each effect to its metric type at start-up.
            let result = match &effect.metric {
                Metric::Counter(c) => c.inc_by(labels, v),
                Metric::Gauge(g) => g.set(labels, v),
                Metric::Histogram(h) => h.observe(labels, v, exemplar),
                Metric::Total(_) => continue,
            };
            match result {
                Ok(()) => tally.accepted += 1,
                Err(e) => tally.reject_with(e.into(), || {
                    format!("event {} ({})", event.name(), effect.metric.def().name)
                }),
            }
        }
    }
}

impl Resolved {
    fn new(metric: Metric, effect: &Effect) -> Resolved {
        let field = |name: &str, optional: bool, scale: f64| ValueFrom::Field {
            name: name.into(),
            optional,
            scale,
        };
        let value = match effect {
            Effect::Inc { .. } => ValueFrom::One,
            Effect::Add {
                field: f, optional, ..
            }
            | Effect::Set {
                field: f, optional, ..
            } => field(f, *optional, 1.0),
            Effect::SetTimestamp { .. } => ValueFrom::Timestamp,
            Effect::Observe {
                field: f, optional, ..
            } => field(f, *optional, duration_scale(f)),
        };
        let mapping = effect.labels();
        let label_fields = metric
            .def()
            .labels
            .iter()
            .map(|label| mapping.get(label).map(|f| f.as_str().into()))
            .collect();
        Resolved {
            metric,
            value,
            label_fields,
        }
    }

    /// Checks the effect against the event (its value, its labels, the metric's limits) and
    /// gives the value to apply; Ok(None) when an optional field is absent.
    fn plan(&self, event: &Event<'_, '_>) -> Result<Option<f64>, EventReason> {
        let v = match &self.value {
            ValueFrom::One => 1.0,
            ValueFrom::Field {
                name,
                optional,
                scale,
            } => {
                let v = match event.field(name) {
                    None if *optional => return Ok(None),
                    None => return Err(EventReason::MissingField),
                    Some(v) => v.as_f64().ok_or(EventReason::WrongFieldType)?,
                };
                if *scale != 1.0 && v < 0.0 {
                    // A negative duration is a bug upstream, not a fast operation.
                    return Err(EventReason::InvalidValue);
                }
                v * scale
            }
            ValueFrom::Timestamp => {
                let raw = match event.field("timestamp") {
                    None => return Err(EventReason::MissingField),
                    Some(Value::Str(s)) => s,
                    Some(_) => return Err(EventReason::WrongFieldType),
                };
                parse_timestamp(raw).ok_or(EventReason::InvalidTimestamp)?
            }
        };
        if matches!(self.metric, Metric::Counter(_)) && v < 0.0 {
            return Err(EventReason::NegativeCounter);
        }
        if self.label_fields.is_empty() {
            // Nothing to check: the schema allows rules only on engine counters, gauges and
            // histograms, whose single series always exists and takes any finite value.
            return Ok(Some(v));
        }
        let labels = self.label_values(event)?;
        let values: SmallVec<[&str; 8]> = labels.iter().map(|l| &**l).collect();
        self.metric.check(&values).map_err(EventReason::from)?;
        Ok(Some(v))
    }

    /// The metric's label values from the event's fields, in the metric's label order
    /// (borrowed from the line when they are strings in it).
    fn label_values<'e>(
        &self,
        event: &'e Event<'_, '_>,
    ) -> Result<SmallVec<[Cow<'e, str>; 4]>, EventReason> {
        let mut labels: SmallVec<[Cow<'e, str>; 4]> = SmallVec::new();
        for field in self.label_fields.iter() {
            let field = field.as_deref().ok_or(EventReason::MissingLabel)?;
            labels.push(match event.field(field) {
                None => return Err(EventReason::MissingLabel),
                Some(Value::Str(s)) if s.is_empty() => return Err(EventReason::MissingLabel),
                Some(Value::Str(s)) => Cow::Borrowed(&**s),
                // Written as serde_json writes them, so label values do not change with the parser.
                Some(Value::U64(n)) => Cow::Owned(n.to_string()),
                Some(Value::I64(n)) => Cow::Owned(n.to_string()),
                Some(&Value::F64(n)) => Cow::Owned(
                    serde_json::Number::from_f64(n)
                        .map_or_else(|| n.to_string(), |n| n.to_string()),
                ),
                Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
                Some(_) => return Err(EventReason::WrongFieldType),
            });
        }
        Ok(labels)
    }
}

/// RFC 3339 → Unix seconds, with `Z` or a numeric offset (humantime alone only takes `Z`).
pub fn parse_timestamp(raw: &str) -> Option<f64> {
    let raw = raw.trim();
    let (base, offset_secs) = split_offset(raw)?;
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some(secs - offset_secs)
}

fn split_offset(raw: &str) -> Option<(&str, f64)> {
    if let Some(base) = raw.strip_suffix(['Z', 'z']) {
        return Some((base, 0.0));
    }
    let bytes = raw.as_bytes();
    let n = bytes.len();
    // `...+HH:MM` / `...-HH:MM` after a time part.
    if n > 6 && matches!(bytes[n - 6], b'+' | b'-') && bytes[n - 3] == b':' && raw.contains('T') {
        let hours: f64 = raw.get(n - 5..n - 3)?.parse().ok()?;
        let minutes: f64 = raw.get(n - 2..)?.parse().ok()?;
        let sign = if bytes[n - 6] == b'-' { -1.0 } else { 1.0 };
        return Some((raw.get(..n - 6)?, sign * (hours * 3600.0 + minutes * 60.0)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::reason::Reason;
    use crate::metrics::Limits;

    const METRICS: &str = r#"

[[metrics]]
name = "olap_queries_total"
type = "counter"
help = "q"

[[metrics]]
name = "olap_read_bytes_total"
type = "counter"
unit = "bytes"
help = "b"

[[metrics]]
name = "olap_by_source_total"
type = "counter"
help = "s"
labels = ["server_id"]

[[metrics]]
name = "olap_query_duration_seconds"
type = "histogram"
unit = "seconds"
help = "d"
buckets = [0.01, 0.1, 1.0]

[[metrics]]
name = "olap_last_timestamp_seconds"
type = "gauge"
unit = "seconds"
help = "t"

[[events]]
event = "query_completed"
effects = [
  { op = "inc", metric = "olap_queries_total" },
  { op = "observe", metric = "olap_query_duration_seconds", field = "duration_ms" },
  { op = "add", metric = "olap_read_bytes_total", field = "bytes_read", optional = true },
  { op = "set_timestamp", metric = "olap_last_timestamp_seconds" },
]

[[events]]
event = "received"
effects = [{ op = "inc", metric = "olap_by_source_total", labels = { server_id = "server_id" } }]

[[events]]
event = "counted_twice"
effects = [
  { op = "inc", metric = "olap_queries_total" },
  { op = "inc", metric = "olap_by_source_total", labels = { server_id = "server_id" } },
]
"#;

    fn setup() -> (EventMapper, Metrics) {
        let schema =
            Schema::parse(&crate::schema::test_schema_toml("olap", METRICS)).expect("schema");
        let metrics = Metrics::new(&schema, Limits::default()).expect("registry");
        (
            EventMapper::new(&metrics, &schema).expect("mapper"),
            metrics,
        )
    }

    fn value(metrics: &Metrics, name: &str, labels: &[&str]) -> Option<f64> {
        metrics.get(name).and_then(|m| m.value(labels))
    }

    #[test]
    fn applies_all_effects() {
        let (m, metrics) = setup();
        let mut t = Tally::default();
        m.apply_line(
            br#"{"event":"query_completed","timestamp":"2026-11-21T10:00:00Z","duration_ms":250,"bytes_read":4096,"trace_id":"abc123","span_id":"def"}"#,
            &mut t,
        );
        m.apply_line(
            br#"{"event":"query_completed","timestamp":"2026-11-21T12:00:00.5+02:00","duration_ms":5}"#,
            &mut t,
        );
        m.apply_line(br#"{"event":"received","server_id":17}"#, &mut t);
        assert_eq!(t.accepted, 4 + 3 + 1);
        assert_eq!(value(&metrics, "olap_queries_total", &[]), Some(2.0));
        assert_eq!(value(&metrics, "olap_read_bytes_total", &[]), Some(4096.0));
        assert_eq!(value(&metrics, "olap_by_source_total", &["17"]), Some(1.0));
        assert_eq!(
            value(&metrics, "olap_last_timestamp_seconds", &[]),
            Some(1_795_255_200.5)
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, metrics.registry()).expect("encode");
        assert!(
            out.contains("olap_query_duration_seconds_sum 0.255"),
            "{out}"
        );
        assert!(out.contains("trace_id=\"abc123\""), "{out}");
    }

    #[test]
    fn bad_lines_change_nothing_and_are_counted() {
        let (m, metrics) = setup();
        let cases: [(&[u8], &str); 9] = [
            (b"{oops", "malformed_json"),
            (br#"{"level":"info"}"#, "missing_event"),
            (br#"{"event":"nope"}"#, "unknown_event"),
            (br#"{"event":"query_completed","timestamp":"2026-11-21T10:00:00Z"}"#, "missing_field"),
            (br#"{"event":"query_completed","timestamp":"2026-11-21T10:00:00Z","duration_ms":"5"}"#, "wrong_field_type"),
            (br#"{"event":"query_completed","timestamp":"2026-11-21T10:00:00Z","duration_ms":-5}"#, "invalid_value"),
            (br#"{"event":"query_completed","timestamp":"yesterday","duration_ms":5}"#, "invalid_timestamp"),
            (br#"{"event":"query_completed","timestamp":"2026-11-21T10:00:00Z","duration_ms":5,"bytes_read":-1}"#, "negative_counter"),
            (br#"{"event":"received"}"#, "missing_label"),
        ];
        for (line, reason) in cases {
            let mut t = Tally::default();
            m.apply_line(line, &mut t);
            let reason = *EventReason::ALL
                .iter()
                .find(|r| r.label() == reason)
                .expect("reason");
            assert_eq!(
                (t.accepted, t.rejected(reason)),
                (0, 1),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(value(&metrics, "olap_queries_total", &[]), Some(0.0));
    }

    #[test]
    fn a_line_applies_all_its_effects_or_none() {
        let (m, metrics) = setup();
        let long = "x".repeat(300);
        let mut t = Tally::default();
        let line = format!(r#"{{"event":"counted_twice","server_id":"{long}"}}"#);
        m.apply_line(line.as_bytes(), &mut t);
        assert_eq!(t.accepted, 0);
        assert_eq!(t.rejected(EventReason::LabelValueTooLong), 1);
        assert_eq!(value(&metrics, "olap_queries_total", &[]), Some(0.0));
        m.apply_line(br#"{"event":"counted_twice","server_id":"a"}"#, &mut t);
        assert_eq!(t.accepted, 2);
        assert_eq!(value(&metrics, "olap_queries_total", &[]), Some(1.0));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:10Z"), Some(10.0));
        assert_eq!(parse_timestamp("1970-01-01T01:00:10+01:00"), Some(10.0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:10-01:00"), Some(3610.0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:10"), None);
        assert_eq!(parse_timestamp("garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let (m, _metrics) = setup();
            let mut t = Tally::default();
            m.apply_line(&bytes, &mut t);
        }

        #[test]
        fn event_shaped_lines_never_panic(
            event in "(query_completed|received|nope)",
            duration in proptest::num::f64::ANY,
            ts in "[0-9T:+Z.-]{0,30}",
            sid in proptest::option::of("[a-z0-9]{0,300}"),
        ) {
            let (m, _metrics) = setup();
            let mut t = Tally::default();
            let mut obj = serde_json::json!({"event": event, "timestamp": ts});
            if duration.is_finite() {
                obj["duration_ms"] = serde_json::json!(duration);
                obj["bytes_read"] = serde_json::json!(duration);
            }
            if let Some(sid) = sid {
                obj["server_id"] = serde_json::json!(sid);
            }
            m.apply_line(obj.to_string().as_bytes(), &mut t);
            proptest::prop_assert!(t.accepted > 0 || !t.is_empty());
        }
    }
}
