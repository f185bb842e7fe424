//! The fast path for the lines engines actually write: one flat JSON object of ASCII strings
//! without escapes, numbers, booleans and nulls. It reads such a line in one pass over its
//! bytes, strings eight bytes at a time, with no visitor machinery and no separate UTF-8
//! pass (every byte it accepts is ASCII); anything else (an escape, a non-ASCII byte, a nested
//! value, a number out of range, malformed input) returns None and the line goes to
//! serde_json, so the decision on every line is serde_json's (a differential proptest in
//! `parse.rs` holds it to that).

use std::borrow::Cow;

use super::parse::{Fields, Value};
use crate::ingest::swar::{eq_bytes, HIGHS, ONES};

/// Reads `line` into `fields`; None: let serde_json decide.
pub(super) fn read<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> Option<()> {
    let mut s = Scanner { b: line, i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.punct(b'"')?;
            let key = s.string()?;
            s.punct(b':')?;
            if s.peek().is_some_and(is_ws) {
                s.ws();
            }
            let value = s.value()?;
            fields.push((Cow::Borrowed(key), value));
            match s.peek()? {
                b',' => s.i += 1,
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => {
                    s.ws();
                    match s.next()? {
                        b',' => {}
                        b'}' => break,
                        _ => return None,
                    }
                }
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// High bit set in the lowest byte of `w` that ends an unescaped ASCII string run: `"`, `\\`,
/// a control character or a non-ASCII byte.
fn special_bytes(w: u64) -> u64 {
    eq_bytes(w, b'"')
        | eq_bytes(w, b'\\')
        // Below 0x20 (the subtraction borrows into bit 7) or 0x80 and above (bit 7 is set).
        | ((w.wrapping_sub(ONES * 0x20) | w) & HIGHS)
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_plain(c: u8) -> bool {
    (0x20..0x80).contains(&c) && c != b'"' && c != b'\\'
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
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    /// Consumes `want` after optional whitespace, looking for `want` first: engines write
    /// compact JSON, so the whitespace loop is rarely needed.
    fn punct(&mut self, want: u8) -> Option<()> {
        if self.peek() == Some(want) {
            self.i += 1;
            return Some(());
        }
        self.ws();
        self.eat(want)
    }

    /// The rest of a string whose opening quote was read; None at an escape, a control
    /// character or a non-ASCII byte (serde_json's cases).
    fn string(&mut self) -> Option<&'a str> {
        let start = self.i;
        let mut i = start;
        // Eight bytes at a time: strings here are timestamps, ids and names of 5 to 40 bytes.
        while let Some(chunk) = self.b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            let special = special_bytes(w);
            if special != 0 {
                i += (special.trailing_zeros() / 8) as usize;
                return self.close(start, i);
            }
            i += 8;
        }
        while self.b.get(i).is_some_and(|&c| is_plain(c)) {
            i += 1;
        }
        self.close(start, i)
    }

    /// The string from `start` ends at `end` if a quote is there.
    fn close(&mut self, start: usize, end: usize) -> Option<&'a str> {
        if *self.b.get(end)? != b'"' {
            return None;
        }
        self.i = end + 1;
        let bytes = self.b.get(start..end)?;
        debug_assert!(bytes.is_ascii());
        // SAFETY: `string` stopped at the first byte that is not plain ASCII (0x20..0x80,
        // neither `"` nor `\\`), and `end` is that byte, so every byte before it is ASCII and
        // ASCII is valid UTF-8. A checked conversion here cost as much as the whole scan.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
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
        // The integer part is accumulated as it is read; None on overflow (serde_json's).
        let mut int: u64 = match self.next()? {
            b'0' => 0,
            c @ b'1'..=b'9' => {
                let mut n = u64::from(c - b'0');
                while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
                    n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                    self.i += 1;
                }
                n
            }
            _ => return None,
        };
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
        if float {
            // serde_json's own conversion, so the value is the one its path would give to
            // the last bit (its default algorithm is not always correctly rounded).
            let v: f64 = serde_json::from_slice(&self.b[start..self.i]).ok()?;
            return Some(Value::F64(v));
        }
        if negative {
            // serde_json reads -0 as a float.
            if int == 0 {
                return Some(Value::F64(-0.0));
            }
            int = int.checked_sub(1)?;
            let n = i64::try_from(int).ok()?;
            return Some(Value::I64(-n - 1));
        }
        Some(Value::U64(int))
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
