//! One line of the engine's JSON event log → a checked object with its `event` name.

use serde_json::{Map, Value};

use crate::ingest::reason::EventReason;

/// Why a line is not an event; `reason()` is the rejection label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventError {
    /// Not JSON, not UTF-8, or not a JSON object.
    MalformedJson,
    MissingEvent,
    /// `event` present but not a non-empty string.
    WrongFieldType,
}

impl EventError {
    pub fn reason(self) -> EventReason {
        match self {
            EventError::MalformedJson => EventReason::MalformedJson,
            EventError::MissingEvent => EventReason::MissingEvent,
            EventError::WrongFieldType => EventReason::WrongFieldType,
        }
    }
}

/// A parsed event line.
#[derive(Debug)]
pub struct Event {
    fields: Map<String, Value>,
}

impl Event {
    pub fn name(&self) -> &str {
        self.fields
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        // An explicit null is treated as absent: loggers emit it for unset optionals.
        self.fields.get(name).filter(|v| !v.is_null())
    }

    /// A string field; None when absent, null or not a string.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(Value::as_str)
    }
}

pub fn parse_event(line: &[u8]) -> Result<Event, EventError> {
    let value: Value = serde_json::from_slice(line).map_err(|_| EventError::MalformedJson)?;
    let Value::Object(fields) = value else {
        return Err(EventError::MalformedJson);
    };
    match fields.get("event") {
        None | Some(Value::Null) => Err(EventError::MissingEvent),
        Some(Value::String(s)) if !s.is_empty() => Ok(Event { fields }),
        Some(_) => Err(EventError::WrongFieldType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_with_an_event() {
        let e = parse_event(br#"{"event":"query_executed","duration_ms":3.5,"x":null}"#)
            .expect("valid");
        assert_eq!(e.name(), "query_executed");
        assert_eq!(e.field("duration_ms").and_then(Value::as_f64), Some(3.5));
        assert!(e.field("x").is_none());
    }

    #[test]
    fn rejections() {
        let cases: [(&[u8], EventError); 7] = [
            (b"not json", EventError::MalformedJson),
            (b"[1,2]", EventError::MalformedJson),
            (b"{\"event\":\"a\"", EventError::MalformedJson),
            (b"{\"event\":\"\xff\"}", EventError::MalformedJson),
            (b"{\"level\":\"info\"}", EventError::MissingEvent),
            (b"{\"event\":7}", EventError::WrongFieldType),
            (b"{\"event\":\"\"}", EventError::WrongFieldType),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_event(line).map(|_| ()),
                Err(want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_event(&bytes);
        }

        #[test]
        fn json_shaped_input_never_panics(s in r#"\{("[a-z_]{0,6}":(-?[0-9.e]{0,6}|"[a-zT:0-9.-]{0,8}"|null|true|\[\]),?){0,5}\}"#) {
            let _ = parse_event(s.as_bytes());
        }
    }
}
