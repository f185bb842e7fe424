//! The fast path for the lines engines actually write: one flat JSON object of ASCII strings
//! without escapes, numbers, booleans and nulls. It reads such a line in one pass over its
//! bytes, strings eight bytes at a time, with no visitor machinery and no separate UTF-8
//! pass (every byte it accepts is ASCII); anything else (an escape, a non-ASCII byte, a nested
//! value, a number out of range, malformed input) returns None and the line goes to
//! serde_json, so the decision on every line is serde_json's (a differential proptest in
//! `parse.rs` holds it to that).

use std::borrow::Cow;

use super::fields::{Fields, Value};
use crate::ingest::swar::{eq_bytes, HIGHS, ONES};

/// Lines up to this long get their string ends found from one bitmap of the whole line;
/// longer ones scan each string (engines' lines are 80 to 300 bytes).
const MAPPED_LEN: usize = 512;

/// Reads `line` into `fields`; None: let serde_json decide.
pub(super) fn read<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> Option<()> {
    let mut map = [0u64; MAPPED_LEN / 64];
    let specials: &[u64] = if line.len() <= MAPPED_LEN {
        special_map(line, &mut map);
        &map[..line.len().div_ceil(64)]
    } else {
        &[]
    };
    let mut s = Scanner {
        b: line,
        i: 0,
        specials,
    };
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

struct Scanner<'a, 'm> {
    b: &'a [u8],
    i: usize,
    /// Bit `i % 64` of word `i / 64` is set when byte `i` ends a string run (see
    /// `special_bytes`); empty for a line too long to map.
    specials: &'m [u64],
}

/// Sets, in `map`, the bit of every byte of `line` that ends an unescaped ASCII string run,
/// one 64-byte word at a time: one pass for the whole line instead of a scan per string.
/// Bits past the end of the line stay clear: a string still open there finds no end in the
/// map, and `close` then sees the line end.
fn special_map(line: &[u8], map: &mut [u64; MAPPED_LEN / 64]) {
    let (words, rest) = line.as_chunks::<64>();
    for (slot, word) in map.iter_mut().zip(words) {
        *slot = special_word(word);
    }
    if rest.is_empty() {
        return;
    }
    let bits = match line.last_chunk::<64>() {
        // The line's last 64 bytes, overlapping the word before: keep the rest's bits.
        Some(last) => special_word(last) >> (64 - rest.len()),
        None => {
            let mut short = [0u8; 64];
            short[..rest.len()].copy_from_slice(rest);
            special_word(&short) & ((1u64 << rest.len()) - 1)
        }
    };
    if let Some(slot) = map.get_mut(words.len()) {
        *slot = bits;
    }
}

#[inline(always)]
fn special_word(word: &[u8; 64]) -> u64 {
    let (blocks, _) = word.as_chunks::<16>();
    blocks
        .iter()
        .enumerate()
        .fold(0, |m, (k, b)| m | u64::from(special_block(b)) << (k * 16))
}

/// Bit i set: byte i of `block` is `"`, `\`, below 0x20 or 0x80 and above.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_block(block: &[u8; 16]) -> u16 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes `block` refers to and
    // needs no alignment.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Signed: 0x80 and above are negative, so one comparison finds them and the controls.
        let outside = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), outside)) as u16
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn special_block(block: &[u8; 16]) -> u16 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u16::from(!is_plain(c)) << i))
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

impl<'a> Scanner<'a, '_> {
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
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        let start = self.i;
        if !self.specials.is_empty() {
            return self.close(start, self.next_special(start));
        }
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

    /// The first byte at or after `from` that the map marks; the line's length if none.
    #[inline(always)]
    fn next_special(&self, from: usize) -> usize {
        let mut w = from / 64;
        let Some(&first) = self.specials.get(w) else {
            return self.b.len();
        };
        let mut bits = first & (!0u64 << (from % 64));
        while bits == 0 {
            w += 1;
            match self.specials.get(w) {
                Some(&next) => bits = next,
                None => return self.b.len(),
            }
        }
        w * 64 + bits.trailing_zeros() as usize
    }

    /// The string from `start` ends at `end` if a quote is there.
    #[inline(always)]
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
        // The integer part is accumulated as it is read. Nineteen digits always fit in a
        // u64; a longer one is left to serde_json (rare, and it may not fit).
        let mut int: u64 = match self.next()? {
            b'0' => 0,
            c @ b'1'..=b'9' => {
                let first = self.i;
                let mut n = u64::from(c - b'0');
                while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
                    if self.i - first >= 18 {
                        return None; // a twentieth digit
                    }
                    n = n * 10 + u64::from(d - b'0');
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
