//! What leaves the simulator: StatsD datagrams (loopback UDP), JSON event lines (appended to
//! the log files it was given), RFC 3339 timestamps without a date library.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Keep datagrams under a typical loopback-safe payload (statsd clients use 1432 by default).
const MAX_DATAGRAM: usize = 1432;

/// Buffers StatsD lines and sends them in datagrams of at most [`MAX_DATAGRAM`] bytes.
pub struct Statsd {
    socket: UdpSocket,
    to: SocketAddr,
    buf: String,
    pub sent_datagrams: u64,
    pub send_errors: u64,
}

impl Statsd {
    pub fn new(to: SocketAddr) -> std::io::Result<Statsd> {
        Ok(Statsd {
            socket: UdpSocket::bind(("127.0.0.1", 0))?,
            to,
            buf: String::new(),
            sent_datagrams: 0,
            send_errors: 0,
        })
    }

    /// Adds one unit (one or more lines that must travel in the same datagram).
    fn push(&mut self, unit: &str) {
        if !self.buf.is_empty() && self.buf.len() + 1 + unit.len() > MAX_DATAGRAM {
            self.flush();
        }
        if !self.buf.is_empty() {
            self.buf.push('\n');
        }
        self.buf.push_str(unit);
    }

    pub fn counter(&mut self, name: &str, n: u64) {
        if n > 0 {
            self.push(&format!("{name}:{n}|c"));
        }
    }

    /// A gauge set to `v`. StatsD reads a leading sign as a delta, so a negative value is sent
    /// as "set 0, then add v" in one datagram (lines of a datagram are applied in order).
    pub fn gauge(&mut self, name: &str, v: f64, tags: &str) {
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!("|#{tags}")
        };
        if v < 0.0 {
            self.push(&format!("{name}:0|g{tags}\n{name}:{}|g{tags}", fmt_num(v)));
        } else {
            self.push(&format!("{name}:{}|g{tags}", fmt_num(v)));
        }
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.socket.send_to(self.buf.as_bytes(), self.to) {
            Ok(_) => self.sent_datagrams += 1,
            // Nobody listening yet (ECONNREFUSED on loopback) is normal while an exporter starts.
            Err(_) => self.send_errors += 1,
        }
        self.buf.clear();
    }
}

/// Shortest text that round-trips, without exponent for ordinary magnitudes.
pub fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_string()
    }
}

/// One JSON event line under construction.
pub struct Event {
    line: String,
}

impl Event {
    /// The contract's common fields: event, timestamp, level, component, host, server_id.
    pub fn new(event: &str, at: SystemTime, level: &str, component: &str, host: &str) -> Event {
        let mut line = String::with_capacity(200);
        line.push('{');
        let mut e = Event { line };
        e.str_field("event", event);
        e.str_field("timestamp", &rfc3339(at));
        e.str_field("level", level);
        e.str_field("component", component);
        e.str_field("host", host);
        e
    }

    pub fn str_field(&mut self, k: &str, v: &str) -> &mut Event {
        if self.line.len() > 1 {
            self.line.push(',');
        }
        self.line.push_str(&json_string(k));
        self.line.push(':');
        self.line.push_str(&json_string(v));
        self
    }

    pub fn num_field(&mut self, k: &str, v: f64) -> &mut Event {
        self.line.push(',');
        self.line.push_str(&json_string(k));
        let _ = write!(self.line, ":{}", fmt_num(v));
        self
    }

    pub fn finish(mut self) -> String {
        self.line.push_str("}\n");
        self.line
    }
}

/// `s` as a JSON string literal, escaped as the exporter's own JSON logs escape it
/// (`exporter_core::logging::push_json_str`; engine-sim stays free of core, a test keeps the
/// two equal).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
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
    out
}

/// `2026-11-21T08:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-since-1970 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An engine's event log: lines are appended in one write per tick, as an engine's logger
/// would flush them.
pub struct EventLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: String,
    pub lines: u64,
    pub write_errors: u64,
}

impl EventLog {
    pub fn new(path: &Path) -> EventLog {
        EventLog {
            path: path.to_path_buf(),
            file: None,
            buf: String::new(),
            lines: 0,
            write_errors: 0,
        }
    }

    pub fn push(&mut self, line: String) {
        self.buf.push_str(&line);
        self.lines += 1;
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        let ok = self
            .file
            .as_mut()
            .is_some_and(|f| f.write_all(self.buf.as_bytes()).is_ok());
        if !ok {
            self.write_errors += 1;
            // Reopen next time: the file may have been rotated away or the disk was full.
            self.file = None;
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_string_escapes_as_the_exporters_logs_do() {
        for s in [
            "plain",
            "quote \" and \\ back",
            "new\nline\r\ttab",
            "\u{1}\u{1f}ctl",
            "ünïcode ✓",
            "",
        ] {
            let mut core = String::new();
            exporter_core::logging::push_json_str(&mut core, s);
            assert_eq!(json_string(s), core, "{s:?}");
        }
    }
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_219_200_123);
        assert_eq!(rfc3339(t), "2026-11-21T00:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(-0.0015), "-0.0015");
        assert_eq!(fmt_num(2.0e9), "2000000000");
    }

    #[test]
    fn event_line_is_one_json_object() {
        let mut e = Event::new(
            "transaction_committed",
            UNIX_EPOCH,
            "info",
            "tx-engine",
            "h\"1",
        );
        e.num_field("duration_ms", 12.5)
            .str_field("server_id", "tx-1");
        let line = e.finish();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).expect("valid JSON");
        assert_eq!(v["duration_ms"], 12.5);
        assert_eq!(v["host"], "h\"1");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn statsd_batches_and_keeps_negative_gauges_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut s = Statsd::new(rx.local_addr().expect("addr")).expect("statsd");
        s.gauge("tx_engine_clock_offset_seconds", -0.002, "");
        s.counter("tx_engine_cache_hits_total", 7);
        s.counter("tx_engine_cache_misses_total", 0);
        s.gauge("ingestion_lag_by_source_seconds", 1.5, "server_id:tx-1");
        for i in 0..200 {
            s.counter(&format!("filler_{i}"), 1);
        }
        s.flush();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).expect("datagram");
        let text = std::str::from_utf8(&buf[..n]).expect("utf8");
        assert!(n <= MAX_DATAGRAM);
        assert!(text.starts_with(
            "tx_engine_clock_offset_seconds:0|g\ntx_engine_clock_offset_seconds:-0.002|g\n"
        ));
        assert!(text.contains("tx_engine_cache_hits_total:7|c"));
        assert!(!text.contains("misses"), "zero counters are not sent");
        assert!(text.contains("ingestion_lag_by_source_seconds:1.5|g|#server_id:tx-1"));
        assert!(
            s.sent_datagrams >= 2,
            "200 fillers need more than one datagram"
        );
    }
}
