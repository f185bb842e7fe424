//! The fast path for the lines engines actually write: one flat JSON object of strings without
//! escapes, numbers, booleans and nulls. It reads such a line in one pass with no visitor
//! machinery; anything else (an escape, a nested value, a number out of range, malformed
//! input) returns None and the line goes to serde_json, so the decision on every line is
//! serde_json's (a differential proptest in `parse.rs` holds it to that).

use std::borrow::Cow;

use super::parse::{Fields, Value};

/// Reads `line` (already valid UTF-8) into `fields`; None: let serde_json decide.
pub(super) fn read<'a>(line: &'a str, fields: &mut Fields<'a>) -> Option<()> {
    let mut s = Scanner {
        b: line.as_bytes(),
        text: line,
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            s.eat(b'"')?;
            let key = s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let value = s.value()?;
            fields.push((Cow::Borrowed(key), value));
            s.ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

struct Scanner<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The rest of a string whose opening quote was read; None at an escape or a control
    /// character (serde_json's cases).
    fn string(&mut self) -> Option<&'a str> {
        let start = self.i;
        let rest = self.b.get(start..)?;
        // memchr2 looks at many bytes at a time for the end of the string or an escape.
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        let span = &rest[..end];
        if rest[end] != b'"' || span.iter().any(|&c| c < 0x20) {
            return None;
        }
        self.i = start + end + 1;
        self.text.get(start..start + end)
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(|s| Value::Str(Cow::Borrowed(s)))
            }
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            // Nested arrays and objects: serde_json's.
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], v: Value<'a>) -> Option<Value<'a>> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            v
        })
    }

    /// JSON's number grammar exactly; integers as serde_json types them (u64, else i64),
    /// floats converted by serde_json; an integer that does not fit is left to serde_json.
    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit()?;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
            float = true;
        }
        let text = self.text.get(start..self.i)?;
        if float {
            // serde_json's own conversion, so the value is the one its path would give to
            // the last bit (its default algorithm is not always correctly rounded).
            let v: f64 = serde_json::from_str(text).ok()?;
            return Some(Value::F64(v));
        }
        if negative {
            // serde_json reads -0 as a float.
            match text.parse::<i64>().ok()? {
                0 => Some(Value::F64(-0.0)),
                n => Some(Value::I64(n)),
            }
        } else {
            text.parse().ok().map(Value::U64)
        }
    }

    fn digit(&mut self) -> Option<()> {
        self.next().filter(u8::is_ascii_digit).map(|_| ())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}
