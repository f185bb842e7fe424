//! The fast path for the lines engines actually write: one flat JSON object of ASCII strings
//! without escapes, numbers, booleans and nulls. It reads such a line in one pass over its
//! bytes, string ends found from one bitmap of the line, with no visitor machinery and no
//! separate UTF-8 pass (every byte it accepts is ASCII); anything else (an escape, a
//! non-ASCII byte, a nested value, a number out of range, malformed input, a line over
//! FAST_MAX bytes) returns None and the line goes to serde_json, so the decision on every
//! line is serde_json's (a differential proptest in `parse.rs` holds it to that).

use std::borrow::Cow;
use std::cell::RefCell;

use super::fields::{Fields, Value};

/// Lines up to this long take the fast path (engines' lines are 80 to 300 bytes).
pub(super) const FAST_MAX: usize = 960;
/// The line is scanned in a copy followed by zeros. A zero ends every scan (it is neither
/// whitespace, punctuation, a digit nor a plain string byte), so no step checks for the
/// line's end, and an index taken modulo PAD, a power of two, needs no bounds check: no
/// read goes more than five bytes past the line. Bounds checks and the Option of every
/// byte read were a tenth of the parse.
const PAD: usize = 1024;
const WORDS: usize = PAD / 64;
const _: () = assert!(FAST_MAX + 64 <= PAD && PAD.is_power_of_two());

thread_local! {
    /// The copy's buffer, kept: zeroing a fresh one per line cost more than the checks it
    /// saves. Only the line and the 64 bytes after it are ever read.
    static SCRATCH: RefCell<[u8; PAD]> = const { RefCell::new([0; PAD]) };
}

/// Reads `line` into `fields`; None: let serde_json decide.
pub(super) fn read<'a>(line: &'a [u8], fields: &mut Fields<'a>) -> Option<()> {
    if line.len() > FAST_MAX {
        return None;
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf[..line.len()].copy_from_slice(line);
        buf[line.len()..][..64].fill(0);
        read_padded(line, buf, fields)
    })
}

/// `buf` holds `line` followed by at least 64 zeros.
fn read_padded<'a>(line: &'a [u8], buf: &[u8; PAD], fields: &mut Fields<'a>) -> Option<()> {
    let mut map = [0u64; WORDS];
    // Through the word holding the first zero, so every string search ends by it.
    let used = line.len() / 64 + 1;
    let (words, _) = buf.as_chunks::<64>();
    for (slot, word) in map[..used].iter_mut().zip(&words[..used]) {
        *slot = special_word(word);
    }
    let mut s = Scanner {
        line,
        b: buf,
        i: 0,
        specials: &map,
    };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek() == b'}' {
        s.i += 1;
    } else {
        loop {
            s.punct(b'"')?;
            let key = s.string()?;
            s.punct(b':')?;
            if is_ws(s.peek()) {
                s.ws();
            }
            let value = s.value()?;
            fields.push((Cow::Borrowed(key), value));
            match s.next() {
                b',' => {}
                b'}' => break,
                _ => {
                    s.i -= 1;
                    s.ws();
                    match s.next() {
                        b',' => {}
                        b'}' => break,
                        _ => return None,
                    }
                }
            }
        }
    }
    s.ws();
    (s.i == line.len()).then_some(())
}

struct Scanner<'a, 'm> {
    /// What strings are borrowed from.
    line: &'a [u8],
    /// The line, then zeros (see PAD).
    b: &'m [u8; PAD],
    /// At most one past the line's first zero.
    i: usize,
    /// Bit `i % 64` of word `i / 64` is set when byte `i` ends a string run (see
    /// `special_block`); computed through the word that holds the line's first zero.
    specials: &'m [u64; WORDS],
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
    let plain = |c: u8| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\';
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u16::from(!plain(c)) << i))
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Scanner<'a, '_> {
    /// The byte at `k`, zero past the line; `k` stays under PAD, so the modulo only spares
    /// the bounds check.
    #[inline(always)]
    fn at(&self, k: usize) -> u8 {
        debug_assert!(k < self.line.len() + 64);
        self.b[k % PAD]
    }

    fn peek(&self) -> u8 {
        self.at(self.i)
    }

    fn next(&mut self) -> u8 {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next() == want).then_some(())
    }

    fn ws(&mut self) {
        while is_ws(self.peek()) {
            self.i += 1;
        }
    }

    /// Consumes `want` after optional whitespace, looking for `want` first: engines write
    /// compact JSON, so the whitespace loop is rarely needed.
    fn punct(&mut self, want: u8) -> Option<()> {
        if self.peek() == want {
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
        let end = self.next_special(start);
        if self.at(end) != b'"' {
            return None;
        }
        self.i = end + 1;
        let bytes = self.line.get(start..end)?;
        debug_assert!(bytes.is_ascii());
        // SAFETY: `end` is the first byte from `start` on that is not plain ASCII (0x20..0x80,
        // neither `"` nor `\\`), so every byte before it is ASCII, and ASCII is valid UTF-8.
        // A checked conversion here cost as much as the whole scan.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// The first byte at or after `from` that the map marks: at the latest the zero after
    /// the line, as `from` is at most the line's length.
    #[inline(always)]
    fn next_special(&self, from: usize) -> usize {
        let mut w = from / 64;
        let mut bits = self.specials[w % WORDS] & (!0u64 << (from % 64));
        while bits == 0 && w + 1 < WORDS {
            w += 1;
            bits = self.specials[w];
        }
        if bits == 0 {
            return self.line.len();
        }
        w * 64 + bits.trailing_zeros() as usize
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek() {
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
        // At most five bytes from `i`, which is at most the line's length.
        let found = word
            .iter()
            .enumerate()
            .all(|(k, &c)| self.at(self.i + k) == c);
        found.then(|| {
            self.i += word.len();
            v
        })
    }

    /// JSON's number grammar exactly; integers as serde_json types them (u64, else i64),
    /// floats converted by serde_json; an integer that does not fit is left to serde_json.
    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.i;
        let negative = self.peek() == b'-';
        if negative {
            self.i += 1;
        }
        // The integer part is accumulated as it is read. Nineteen digits always fit in a
        // u64; a longer one is left to serde_json (rare, and it may not fit).
        let mut int: u64 = match self.next() {
            b'0' => 0,
            c @ b'1'..=b'9' => {
                let first = self.i;
                let mut n = u64::from(c - b'0');
                while let d @ b'0'..=b'9' = self.peek() {
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
        if self.peek() == b'.' {
            self.i += 1;
            self.digit()?;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), b'e' | b'E') {
            self.i += 1;
            if matches!(self.peek(), b'+' | b'-') {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
            float = true;
        }
        if float {
            // serde_json's own conversion, so the value is the one its path would give to
            // the last bit (its default algorithm is not always correctly rounded).
            let v: f64 = serde_json::from_slice(self.line.get(start..self.i)?).ok()?;
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
        self.next().is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_ascii_digit() {
            self.i += 1;
        }
    }
}
