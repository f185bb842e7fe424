//! One line of the engine's JSON event log → its top-level fields, borrowed from the line.
//!
//! No DOM: the line is validated as JSON in full, but only top-level scalars are kept, strings
//! borrowed unless they hold escapes, nested values skipped. A line has a handful of fields,
//! so a linear scan finds one faster than a hash map would, and they live on the stack.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::fields::{Fields, Value};
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

/// A parsed event line: its fields, borrowed from the line.
#[derive(Debug)]
pub struct Event<'f, 'a> {
    fields: &'f Fields<'a>,
    /// The `event` field, found once when the line was checked.
    name: &'f str,
    /// Read by the fast path: every key and string borrows from the line.
    pub(super) borrowed: bool,
}

impl<'f, 'a> Event<'f, 'a> {
    pub fn name(&self) -> &'f str {
        self.name
    }

    /// A field's value; an explicit null is absent (loggers emit it for unset optionals).
    /// With a key given twice, the last one counts, as in serde_json.
    pub fn field(&self, name: &str) -> Option<&'f Value<'a>> {
        find(self.fields, name)
    }

    /// A string field; None when absent, null or not a string.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(Value::as_str)
    }
}

/// Parses `line` into `fields` (cleared first).
pub fn parse_event<'f, 'a>(
    line: &'a [u8],
    fields: &'f mut Fields<'a>,
) -> Result<Event<'f, 'a>, EventError> {
    fields.clear();
    // Flat ASCII lines without escapes (what engines write) take the fast path; serde_json,
    // which also checks UTF-8, has the last word on everything else.
    let borrowed = super::fast_path::read(line, fields).is_some();
    if !borrowed {
        fields.clear();
        let mut de = serde_json::Deserializer::from_slice(line);
        de.deserialize_map(FieldsVisitor(fields))
            .and_then(|()| de.end())
            .map_err(|_| EventError::MalformedJson)?;
    }
    let fields: &'f Fields<'a> = fields;
    let name = match find(fields, "event") {
        None => return Err(EventError::MissingEvent),
        Some(Value::Str(s)) if !s.is_empty() => &**s,
        Some(_) => return Err(EventError::WrongFieldType),
    };
    Ok(Event {
        fields,
        name,
        borrowed,
    })
}

fn find<'f, 'a>(fields: &'f Fields<'a>, name: &str) -> Option<&'f Value<'a>> {
    fields
        .iter()
        .rev()
        .find(|(k, _)| crate::ingest::swar::same_bytes(k.as_bytes(), name.as_bytes()))
        .map(|(_, v)| v)
        .filter(|v| **v != Value::Null)
}

struct FieldsVisitor<'f, 'de>(&'f mut Fields<'de>);

impl<'de> Visitor<'de> for FieldsVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let value = map.next_value::<Value<'de>>()?;
            self.0.push((key, value));
        }
        Ok(())
    }
}

/// A key, borrowed from the line unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ValueVisitor).and_then(|v| match v {
            Value::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("key is not a string")),
        })
    }
}

impl<'de> de::Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::U64(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value::F64(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_with_an_event() {
        let mut fields = Fields::new();
        let e = parse_event(
            br#"{"event":"query_executed","duration_ms":3.5,"x":null}"#,
            &mut fields,
        )
        .expect("valid");
        assert_eq!(e.name(), "query_executed");
        assert_eq!(e.field("duration_ms").and_then(Value::as_f64), Some(3.5));
        assert!(e.field("x").is_none());
        // Escapes are decoded, nested values skipped, the last of a repeated key counts.
        let mut fields = Fields::new();
        let e = parse_event(
            br#"{"event":"a\"b","n":{"x":[1,{"y":2}]},"k":1,"k":-2,"u":"\u00e9"}"#,
            &mut fields,
        )
        .expect("valid");
        assert_eq!(e.name(), "a\"b");
        assert_eq!(e.field("n"), Some(&Value::Nested));
        assert_eq!(e.field("k"), Some(&Value::I64(-2)));
        assert_eq!(e.str_field("u"), Some("\u{e9}"));
    }

    #[test]
    fn rejections() {
        let cases: [(&[u8], EventError); 12] = [
            (b"{\"event\":\"a\"} x", EventError::MalformedJson),
            (b"{\"event\":\"a\",\"n\":[1,}", EventError::MalformedJson),
            (b"not json", EventError::MalformedJson),
            (b"[1,2]", EventError::MalformedJson),
            (b"{\"event\":\"a\"", EventError::MalformedJson),
            (b"{\"event\":\"\xff\"}", EventError::MalformedJson),
            (b"{\"level\":\"info\"}", EventError::MissingEvent),
            (b"{\"event\":7}", EventError::WrongFieldType),
            (b"{\"event\":\"\"}", EventError::WrongFieldType),
            // The fast path reads a zero as the line's end; serde_json has the last word.
            (b"{\"event\":\"a\0b\"}", EventError::MalformedJson),
            (b"{\"event\":\"a\",\"n\":1\0}", EventError::MalformedJson),
            (b"{\"event\":\"a\"}\0", EventError::MalformedJson),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_event(line, &mut Fields::new()).map(|_| ()),
                Err(want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// What the parser kept, as serde_json's DOM would give it.
    /// A field's name, its value as a number and as a string.
    type Kept = (String, Option<f64>, Option<String>);

    fn via_dom(line: &[u8]) -> Result<Vec<Kept>, ()> {
        let serde_json::Value::Object(map) = serde_json::from_slice(line).map_err(|_| ())? else {
            return Err(());
        };
        Ok(map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.as_f64(), v.as_str().map(str::to_owned)))
            .collect())
    }

    /// The fields serde_json's path alone keeps, for comparing the fast path with it.
    fn via_serde(line: &str) -> Option<Vec<(String, Value<'_>)>> {
        let mut fields = Fields::new();
        let mut de = serde_json::Deserializer::from_str(line);
        de.deserialize_map(FieldsVisitor(&mut fields))
            .and_then(|()| de.end())
            .ok()?;
        Some(
            fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect(),
        )
    }

    #[test]
    fn the_fast_path_reads_seed_lines_and_leaves_the_rest() {
        let mut fields = Fields::new();
        let line = r#"{"timestamp":"2026-11-21T10:00:00Z","event":"transaction_committed","duration_ms":12,"ok":true,"x":null,"f":-1.5e2,"z":-0}"#;
        assert!(super::super::fast_path::read(line.as_bytes(), &mut fields).is_some());
        assert_eq!(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Vec<_>>(),
            via_serde(line).expect("valid")
        );
        for other in [
            r#"{"event":"a\"b"}"#,
            r#"{"event":"a","n":[1]}"#,
            r#"{"event":"a","n":1e400}"#,
            r#"{"event":"a","n":18446744073709551616}"#,
            r#"{"event":"a",}"#,
            r#"{"event":"a"} x"#,
            r#"{"event":01}"#,
            // A string still open at the end of the line, which ends in the first map word,
            // at the end of one (the first zero opens the next), and in a later word.
            r#"{"e":"ab"#,
            r#"{"event":"transaction_committed"#,
            r#"{"timestamp":"2026-11-21T10:00:00Z","event":"transaction_committ"#,
            r#"{"timestamp":"2026-11-21T10:00:00Z","level":"info","event":"transaction_committed"#,
            // A zero byte, which the scan takes for the line's end: in a string, after a
            // value, and after the object.
            "{\"event\":\"a\0b\"}",
            "{\"event\":\"a\",\"n\":1\0}",
            "{\"event\":\"a\"}\0",
        ] {
            assert!(
                super::super::fast_path::read(other.as_bytes(), &mut Fields::new()).is_none(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_line_longer_than_the_fast_path_takes_is_read_by_serde_json() {
        use super::super::fast_path::FAST_MAX;
        // `{"event":"a","pad":"xx…x"}`, `len` bytes long.
        let line = |len: usize| {
            let head = r#"{"event":"a","pad":""#;
            format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
        };
        for len in [FAST_MAX - 1, FAST_MAX, FAST_MAX + 1, 4 * FAST_MAX] {
            let text = line(len);
            assert_eq!(text.len(), len);
            let fast = super::super::fast_path::read(text.as_bytes(), &mut Fields::new()).is_some();
            assert_eq!(fast, len <= FAST_MAX, "{len}");
            let mut fields = Fields::new();
            let event = parse_event(text.as_bytes(), &mut fields).expect("valid");
            assert_eq!(event.name(), "a");
            assert_eq!(
                event.str_field("pad").map(str::len),
                Some(len - 22),
                "{len}"
            );
        }
    }

    proptest::proptest! {
        /// The fast path agrees with serde_json on every line it takes.
        #[test]
        fn the_fast_path_agrees_with_serde(s in r#"[ ]?\{[ ]?("[a-z_]{0,4}"[ ]?:[ ]?(-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?|-?0[0-9]|1\.|"[a-z0-9é\t\\/:. -]{0,4}"|"[a-z0-9é\t\x7f\\/:. -]{6,40}"|null|true|fals|\[\]|\{\})[ ]?,?){0,6}\}[ ]?x?"#) {
            let mut fields = Fields::new();
            if super::super::fast_path::read(s.as_bytes(), &mut fields).is_some() {
                let ours: Vec<(String, Value<'_>)> =
                    fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                let theirs = via_serde(&s);
                proptest::prop_assert_eq!(Some(ours), theirs, "{}", s);
            }
        }

        /// Same accept/reject decision and the same fields as a full serde_json parse.
        #[test]
        fn agrees_with_serde_json(s in r#"\{("(event|[a-z_]{0,3}|\\u0065vent)":(-?[0-9.e]{0,6}|"[a-z\\"]{0,4}"|null|true|\[1,\{"a":\[\]\}\]|\{\}),?){0,5}\}"#) {
            let mut fields = Fields::new();
            let ours = parse_event(s.as_bytes(), &mut fields);
            match (via_dom(s.as_bytes()), &ours) {
                (Err(()), Err(EventError::MalformedJson)) => {}
                (Err(()), other) => panic!("{s}: serde_json refuses, we gave {other:?}"),
                (Ok(_), Err(EventError::MalformedJson)) => panic!("{s}: we refused valid JSON"),
                (Ok(fields), Ok(event)) => {
                    for (k, num, text) in fields {
                        let v = event.field(&k).expect("field kept");
                        proptest::prop_assert_eq!(v.as_f64(), num, "{}", s);
                        proptest::prop_assert_eq!(v.as_str().map(str::to_owned), text, "{}", s);
                    }
                }
                (Ok(_), Err(_)) => {}
            }
        }


        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_event(&bytes, &mut Fields::new());
        }

        #[test]
        fn json_shaped_input_never_panics(s in r#"\{("[a-z_]{0,6}":(-?[0-9.e]{0,6}|"[a-zT:0-9.-]{0,8}"|null|true|\[\]),?){0,5}\}"#) {
            let _ = parse_event(s.as_bytes(), &mut Fields::new());
        }
    }
}
