//! StatsD / DogStatsD line parsing over raw bytes: no allocation, no schema knowledge.
//!
//! Accepted shapes (one line):
//! - `name:value|type[|@rate][|#tag:v,tag2:v2][|c:container][|T1700000000]`
//! - several samples after the name, statsd_exporter style: `name:1|c:2|c`
//! - several values before one type, DogStatsD 1.1 style: `name:1:2:3|d[|#tags]`
//!
//! Mapping samples to metrics is `super::apply`'s job; this module only splits bytes.

use crate::ingest::reason::StatsdReason;

/// The StatsD type letter(s) of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// `ms`: milliseconds, converted to seconds on observation.
    Timer,
    /// `h` or `d`: already in the histogram's unit.
    Histogram,
}

/// One value of one line, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    pub value: f64,
    /// The value carried an explicit sign; for gauges that makes it a delta.
    pub signed: bool,
    /// In (0, 1]; 1 when absent.
    pub rate: f64,
    /// The raw DogStatsD tag list (after `#`), possibly empty.
    pub tags: &'a [u8],
}

/// Why a line (or one sample of it) could not be parsed; `reason()` is the rejection label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// No `:` after the name, empty name, or no `|type`.
    Malformed,
    InvalidValue,
    UnknownType,
    /// `s` sets: they need per-interval unique counting the exporter does not do.
    SetNotSupported,
    InvalidSampleRate,
}

impl ParseError {
    pub fn reason(self) -> StatsdReason {
        match self {
            ParseError::Malformed => StatsdReason::MalformedLine,
            ParseError::InvalidValue => StatsdReason::InvalidValue,
            ParseError::UnknownType => StatsdReason::UnknownType,
            ParseError::SetNotSupported => StatsdReason::SetNotSupported,
            ParseError::InvalidSampleRate => StatsdReason::InvalidSampleRate,
        }
    }
}

/// One line of a datagram: a plain sample read on the way, or a line for `parse_line`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line<'a> {
    Plain(Sample<'a>),
    Other(&'a [u8]),
}

/// Splits a datagram into lines, skipping empty ones (trailing `\n`, `\r\n`); the common
/// `name:integer|type` line comes out already parsed.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        if let Some((sample, used)) = plain_line(rest) {
            rest = &rest[used..];
            return Some(Line::Plain(sample));
        }
        // memchr finds the `\n` a word at a time, where `split` tests every byte.
        let line = match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some(Line::Other(line));
        }
    })
}

/// The line clients send most, `name:integer|type` followed by `\n` or the datagram's end,
/// read in one pass without splitting lines first: the sample and the bytes consumed
/// (newline included). None for anything else (spaces, decimals, tags, several samples,
/// errors), which `lines` and `parse_line` decide; a proptest holds the two paths equal.
fn plain_line(rest: &[u8]) -> Option<(Sample<'_>, usize)> {
    let colon = crate::ingest::swar::find2(rest, b':', b'\n')?;
    let name = &rest[..colon];
    let (first, last) = (*name.first()?, *name.last()?);
    if rest[colon] != b':' || first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return None;
    }
    let mut i = colon + 1;
    let sign = *rest.get(i)?;
    let signed = sign == b'-' || sign == b'+';
    if signed {
        i += 1;
    }
    let digits = i;
    let mut n: u64 = 0;
    while let Some(d) = rest.get(i).filter(|d| d.is_ascii_digit()) {
        n = n * 10 + u64::from(d - b'0');
        i += 1;
        // Up to 15 digits an integer is exact in an f64; longer ones go the general way.
        if i - digits > 15 {
            return None;
        }
    }
    if i == digits || *rest.get(i)? != b'|' {
        return None;
    }
    let (kind, len) = match rest.get(i + 1..)? {
        [b'm', b's', ..] => (Kind::Timer, 2),
        [b'c', ..] => (Kind::Counter, 1),
        [b'g', ..] => (Kind::Gauge, 1),
        [b'h' | b'd', ..] => (Kind::Histogram, 1),
        _ => return None,
    };
    let end = i + 1 + len;
    let consumed = match rest.get(end) {
        None => end,
        Some(b'\n') => end + 1,
        Some(_) => return None,
    };
    let value = n as f64;
    Some((
        Sample {
            name,
            kind,
            value: if sign == b'-' { -value } else { value },
            signed,
            rate: 1.0,
            tags: &[],
        },
        consumed,
    ))
}

/// Parses one line, calling `out` once per sample or once per error. A line with several
/// samples can yield both samples and errors.
pub fn parse_line<'a>(line: &'a [u8], mut out: impl FnMut(Result<Sample<'a>, ParseError>)) {
    // Lines are a few dozen bytes: a plain loop finds a byte sooner than memchr's dispatch.
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return out(Err(ParseError::Malformed));
    };
    let name = trim(&line[..colon]);
    let rest = &line[colon + 1..];
    if name.is_empty() || rest.is_empty() {
        return out(Err(ParseError::Malformed));
    }
    // The common line, `value|type` and nothing else, in one more pass.
    if let Some(bar) = rest.iter().position(|&b| b == b'|') {
        let (value, kind) = (&rest[..bar], &rest[bar + 1..]);
        if !value.contains(&b':') && !kind.iter().any(|&b| b == b'|' || b == b':') {
            return out(kind_of(trim(kind)).and_then(|kind| sample(name, kind, value, 1.0, &[])));
        }
    }
    // Tags contain `:` themselves, so a tagged line is one sample (statsd_exporter does the
    // same); its value field may still pack several values.
    if memchr::memmem::find(rest, b"|#").is_some() || has_extension_field(rest) {
        return parse_sample(name, rest, &mut out);
    }
    // Untagged: `:` separates samples, and a chunk without `|` is a packed value belonging
    // to the next chunk that has a type (`1:2:3|d`).
    let mut start = 0;
    for (i, chunk) in rest.split(|&b| b == b':').enumerate() {
        let end = chunk.as_ptr() as usize - rest.as_ptr() as usize + chunk.len();
        if memchr::memchr(b'|', chunk).is_some() {
            parse_sample(name, &rest[start..end], &mut out);
            start = end + 1;
        } else if i == 0 && end == rest.len() {
            // `name:value` without any type.
            return out(Err(ParseError::Malformed));
        }
    }
    if start < rest.len() {
        // Trailing values with no type after them.
        out(Err(ParseError::Malformed));
    }
}

/// DogStatsD fields after the type such as `|c:container-id` or `|e:external-data` hold a
/// `:` of their own, so a line with one is a single sample, like a tagged line. `c:3` in
/// `a:1|c:2|c:3|g` is the next sample's type and value instead: a number after the `:`.
fn has_extension_field(rest: &[u8]) -> bool {
    rest.split(|&b| b == b'|').skip(2).any(|f| {
        f.len() >= 2 && f[0].is_ascii_alphabetic() && f[1] == b':' && {
            let value = f[2..].split(|&b| b == b':').next().unwrap_or_default();
            parse_f64(trim(value)).is_none()
        }
    })
}

/// `values|type[|field]...` where values is one value or several joined by `:`.
fn parse_sample<'a>(
    name: &'a [u8],
    body: &'a [u8],
    out: &mut impl FnMut(Result<Sample<'a>, ParseError>),
) {
    let mut fields = body.split(|&b| b == b'|');
    let values = fields.next().unwrap_or_default();
    let kind = match kind_of(fields.next().map(trim).unwrap_or_default()) {
        Ok(kind) => kind,
        Err(e) => return out(Err(e)),
    };
    let mut rate = 1.0;
    let mut tags: &[u8] = &[];
    for field in fields {
        match field.first() {
            Some(b'@') => match parse_f64(&field[1..]) {
                Some(r) if (MIN_SAMPLE_RATE..=1.0).contains(&r) => rate = r,
                _ => return out(Err(ParseError::InvalidSampleRate)),
            },
            Some(b'#') => tags = &field[1..],
            // Container id (`c:`), client timestamp (`T`) and future extensions carry
            // nothing the exporter uses.
            _ => {}
        }
    }
    for raw in values.split(|&b| b == b':') {
        out(sample(name, kind, raw, rate, tags));
    }
}

/// The lowest sample rate honoured (`@0.001`): a sampled sample stands for at most 1,000, so
/// one datagram cannot add 1e300 to a counter (`@1e-300`) and poison it for ever.
pub const MIN_SAMPLE_RATE: f64 = 0.001;

/// The largest a counter sample may add (2^53, after its rate): above it a float count is no
/// longer exact, and one datagram would swamp every later increment.
pub const MAX_COUNTER_INCREMENT: f64 = 9_007_199_254_740_992.0;

/// One sample of a line: its value (`raw`, untrimmed) read, the rest as parsed.
fn sample<'a>(
    name: &'a [u8],
    kind: Kind,
    raw: &[u8],
    rate: f64,
    tags: &'a [u8],
) -> Result<Sample<'a>, ParseError> {
    let raw = trim(raw);
    let value = parse_f64(raw).ok_or(ParseError::InvalidValue)?;
    if kind == Kind::Counter && value.abs() / rate > MAX_COUNTER_INCREMENT {
        return Err(ParseError::InvalidValue);
    }
    Ok(Sample {
        name,
        kind,
        value,
        signed: matches!(raw.first(), Some(b'+' | b'-')),
        rate,
        tags,
    })
}

fn kind_of(field: &[u8]) -> Result<Kind, ParseError> {
    match field {
        b"c" => Ok(Kind::Counter),
        b"g" => Ok(Kind::Gauge),
        b"ms" => Ok(Kind::Timer),
        b"h" | b"d" => Ok(Kind::Histogram),
        b"s" => Err(ParseError::SetNotSupported),
        b"" => Err(ParseError::Malformed),
        _ => Err(ParseError::UnknownType),
    }
}

/// Iterates `key:value` pairs of a DogStatsD tag list; a tag without `:` has an empty value.
pub fn tags(list: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    list.split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
        // Some clients (datadog-php) prefix every key with `#`, not only the list.
        .map(|t| t.strip_prefix(b"#").unwrap_or(t))
        .map(|t| match memchr::memchr(b':', t) {
            Some(i) => (&t[..i], &t[i + 1..]),
            None => (t, &t[t.len()..]),
        })
}

/// A finite f64 from ASCII; NaN, infinities and anything non-numeric are None.
fn parse_f64(raw: &[u8]) -> Option<f64> {
    // Most values are small integers: exact in an f64 up to 15 digits, without the general
    // decimal conversion.
    let digits = raw
        .strip_prefix(b"-")
        .or(raw.strip_prefix(b"+"))
        .unwrap_or(raw);
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')) as f64;
        return Some(if raw[0] == b'-' { -n } else { n });
    }
    // Only digits, signs, `.`, `e`/`E` can form a number; this also rejects "inf"/"nan",
    // which str::parse would accept.
    if raw.is_empty()
        || !raw
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    // SAFETY: every byte was just checked to be ASCII, and ASCII is valid UTF-8.
    let text = unsafe { std::str::from_utf8_unchecked(raw) };
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample and error of a datagram, through `lines`.
    fn samples(d: &[u8]) -> Vec<Result<Sample<'_>, ParseError>> {
        let mut v = Vec::new();
        for line in lines(d) {
            match line {
                Line::Plain(s) => v.push(Ok(s)),
                Line::Other(l) => parse_line(l, |r| v.push(r)),
            }
        }
        v
    }

    fn parse(line: &str) -> Vec<Result<Sample<'_>, ParseError>> {
        let mut v = Vec::new();
        parse_line(line.as_bytes(), |s| v.push(s));
        v
    }

    fn ok(line: &str) -> Vec<(String, Kind, f64, bool, f64, String)> {
        parse(line)
            .into_iter()
            .map(|r| {
                let s = r.unwrap_or_else(|e| panic!("{line}: {e:?}"));
                (
                    String::from_utf8_lossy(s.name).into_owned(),
                    s.kind,
                    s.value,
                    s.signed,
                    s.rate,
                    String::from_utf8_lossy(s.tags).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn plain_types() {
        assert_eq!(
            ok("a:1|c"),
            vec![("a".into(), Kind::Counter, 1.0, false, 1.0, "".into())]
        );
        assert_eq!(ok("a:2.5|g")[0].1, Kind::Gauge);
        assert_eq!(ok("a:320|ms")[0].1, Kind::Timer);
        assert_eq!(ok("a:0.3|h")[0].1, Kind::Histogram);
        assert_eq!(ok("a:0.3|d")[0].1, Kind::Histogram);
    }

    #[test]
    fn signs_rates_and_tags() {
        let s = &ok("a:-3|g")[0];
        assert_eq!((s.2, s.3), (-3.0, true));
        let s = &ok("a:+3|g")[0];
        assert_eq!((s.2, s.3), (3.0, true));
        let s = &ok("a:5|c|@0.5|#env:prod,server_id:s1|T1700000000|c:abc")[0];
        assert_eq!(s.4, 0.5);
        assert_eq!(s.5, "env:prod,server_id:s1");
        let pairs: Vec<_> = tags(b"env:prod, bare ,url:http://x").collect();
        assert_eq!(
            pairs,
            vec![
                (&b"env"[..], &b"prod"[..]),
                (&b"bare"[..], &b""[..]),
                (&b"url"[..], &b"http://x"[..])
            ]
        );
    }

    #[test]
    fn multi_value_lines() {
        let v = ok("a:1|c:2|c:3|g");
        assert_eq!(
            v.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
            vec![
                (Kind::Counter, 1.0),
                (Kind::Counter, 2.0),
                (Kind::Gauge, 3.0)
            ]
        );
        let v = ok("a:1:2:3|d|#k:v");
        assert_eq!(
            v.iter().map(|s| s.2).collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0]
        );
        assert!(v.iter().all(|s| s.5 == "k:v"));
        let v = ok("a:1:2|ms:4|c");
        assert_eq!(
            v.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
            vec![(Kind::Timer, 1.0), (Kind::Timer, 2.0), (Kind::Counter, 4.0)]
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("novalue", ParseError::Malformed),
            (":1|c", ParseError::Malformed),
            ("a:", ParseError::Malformed),
            ("a:1", ParseError::Malformed),
            ("a:1|", ParseError::Malformed),
            ("a:x|c", ParseError::InvalidValue),
            ("a:NaN|g", ParseError::InvalidValue),
            ("a:inf|g", ParseError::InvalidValue),
            ("a:1e999|g", ParseError::InvalidValue),
            ("a:1|q", ParseError::UnknownType),
            ("a:1|s", ParseError::SetNotSupported),
            ("a:1|c|@0", ParseError::InvalidSampleRate),
            ("a:1|c|@2", ParseError::InvalidSampleRate),
            ("a:1|c|@1e-300", ParseError::InvalidSampleRate),
            ("a:1|c|@0.0009", ParseError::InvalidSampleRate),
            ("a:1e300|c", ParseError::InvalidValue),
            ("a:9007199254740992|c|@0.5", ParseError::InvalidValue),
            ("a:1|c|@x", ParseError::InvalidSampleRate),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), vec![Err(want)], "{line}");
        }
        // One bad sample does not hide the good one.
        assert_eq!(parse("a:1|c:x|c").len(), 2);
        assert_eq!(parse("a:1|c:2").last(), Some(&Err(ParseError::Malformed)));
    }

    #[test]
    fn datagram_lines() {
        let d = b"a:1|c\nb:2|g\r\n\n  \nc:3.5|ms\nd:4|h";
        let v: Vec<_> = lines(d).collect();
        let plain = |name: &'static [u8], kind, value| {
            Line::Plain(Sample {
                name,
                kind,
                value,
                signed: false,
                rate: 1.0,
                tags: &[],
            })
        };
        assert_eq!(
            v,
            vec![
                plain(b"a", Kind::Counter, 1.0),
                Line::Other(b"b:2|g"),
                Line::Other(b"c:3.5|ms"),
                plain(b"d", Kind::Histogram, 4.0),
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for s in samples(&bytes).into_iter().flatten() {
                assert!(s.value.is_finite());
                assert!(s.rate > 0.0 && s.rate <= 1.0);
                for (k, v) in tags(s.tags) { let _ = (k, v); }
            }
        }

        /// Datagrams read with the plain-line path give what splitting every line and
        /// parsing it the general way gives.
        #[test]
        fn the_datagram_fast_path_agrees_with_line_by_line_parsing(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    // Plain-shaped, and near misses of it.
                    "[a-z_]{1,6}:[-+]?[0-9]{1,17}\\|(c|g|ms|h|d|s|q|cc|m|)",
                    " ?[a-z_:]{0,6} ?:[-+ ]?[0-9.e]{0,17} ?\\|[ ]?(c|g|ms|h|d|s|x|)[ ]?(\\|@0.5|\\|#a:b)?",
                ],
                0..6,
            ),
            ends in proptest::collection::vec("(\n|\r\n|\n \n|\n\n|)", 6),
        ) {
            let d: String = lines.iter().zip(&ends).map(|(l, e)| format!("{l}{e}")).collect();
            let general: Vec<_> = d
                .as_bytes()
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .flat_map(|l| { let mut v = Vec::new(); parse_line(l, |r| v.push(r)); v })
                .collect();
            proptest::prop_assert_eq!(samples(d.as_bytes()), general, "{:?}", d);
        }

        /// The one-pass path for `name:value|type` gives what the general path gives, and
        /// integers read by the shortcut equal the general decimal conversion.
        #[test]
        fn the_plain_line_path_agrees_with_the_general_one(
            name in " ?[a-z_]{1,8} ?",
            value in "[-+ ]?([0-9]{1,17}|[0-9]{0,3}\\.[0-9]{0,3}|[0-9]e[0-9]|x)[ ]?",
            kind in "[ ]?(c|g|ms|h|d|s|q|)[ ]?",
        ) {
            let line = format!("{name}:{value}|{kind}");
            let mut fast = Vec::new();
            parse_line(line.as_bytes(), |r| fast.push(r));
            let mut general = Vec::new();
            let rest = format!("{value}|{kind}");
            let name = name.trim();
            parse_sample(name.as_bytes(), rest.as_bytes(), &mut |r| general.push(r));
            proptest::prop_assert_eq!(fast, general, "{}", line);
            if let Some(n) = parse_f64(value.trim().as_bytes()) {
                let text = value.trim();
                proptest::prop_assert_eq!(Some(n), text.parse::<f64>().ok(), "{}", text);
            }
        }

        #[test]
        fn statsd_shaped_input_never_panics(s in "[a-z_]{0,8}(:[-+0-9.e]{0,5}(\\|[cgmshd@#:,0-9.a-z]{0,6}){0,4}){0,3}") {
            parse_line(s.as_bytes(), |_| {});
        }
    }
}
