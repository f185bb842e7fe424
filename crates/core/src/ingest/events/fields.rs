//! What a line's top-level fields are read into: shared by the fast path (`flat`) and
//! serde_json's (`parse`), and what the rules (`apply`) look values up in.

use std::borrow::Cow;

use smallvec::SmallVec;

/// A top-level field's value: a scalar, or a nested array/object that no rule can use.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    Nested,
}

impl Value<'_> {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::U64(n) => Some(n as f64),
            Value::I64(n) => Some(n as f64),
            Value::F64(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Room for the fields of a typical line without touching the heap. The caller owns it, so
/// the fields are written once where they stay, not moved on every return.
pub type Fields<'a> = SmallVec<[(Cow<'a, str>, Value<'a>); 12]>;
