//! Mapping parsed StatsD samples onto the schema's metrics, strictly: every sample is either
//! applied or rejected with a reason.

use hashbrown::HashTable;

use super::parse::{self, Kind, Line, Sample};
use crate::ingest::reason::StatsdReason;
use crate::ingest::tally::Tally;
use crate::metrics::{Metric, Metrics, UpdateError};
use crate::schema::{Channel, Schema, SchemaError, Source, MAX_LABELS};

/// Histogram samples with a rate below 1/this would need that many observations each.
const MAX_HISTOGRAM_REPEAT: f64 = 1000.0;

/// What a StatsD name resolves to: how to write the metric, or why no sample may write it.
/// Decided once per name, so a sample costs a lookup and a match.
#[derive(Clone)]
enum Target {
    /// A metric without labels: untagged samples of it skip label handling.
    Unlabelled(Metric),
    Labelled(Metric),
    ReadOnly,
    /// An engine metric the event log feeds: a sample would count the action twice.
    OtherChannel,
}

/// Name → target table built once from the schema. A name costs one multiply of its
/// length and first and last eight bytes (see `name_hash`), a probe and an inline comparison.
pub struct StatsdMapper {
    names: HashTable<(Box<[u8]>, Target)>,
}

/// A hash of what tells metric names apart: their length and their first and last eight
/// bytes, mixed by one multiply. Names that share all three only share a probe sequence.
/// The table holds the schema's names and never grows from input, so a name crafted to
/// collide costs one more comparison with the few schema names it collides with.
#[inline]
fn name_hash(name: &[u8]) -> u64 {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let (head, tail) = match name.first_chunk::<8>().zip(name.last_chunk::<8>()) {
        Some((head, tail)) => (u64::from_le_bytes(*head), u64::from_le_bytes(*tail)),
        None => (word(name), 0),
    };
    let mixed =
        (head ^ tail.rotate_left(29) ^ name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // hashbrown takes its control byte from the top bits and the slot from the low ones.
    mixed ^ mixed >> 32
}

impl StatsdMapper {
    pub fn new(metrics: &Metrics, schema: &Schema) -> Result<StatsdMapper, SchemaError> {
        let mut names = HashTable::new();
        for def in &schema.metrics {
            let target = match def.source {
                Source::Engine if !schema.channels(def).contains(&Channel::Statsd) => {
                    Target::OtherChannel
                }
                Source::Engine => {
                    let metric = metrics
                        .get(&def.name)
                        .cloned()
                        .ok_or_else(|| SchemaError::metric(&def.name, "not registered"))?;
                    if def.labels.is_empty() {
                        Target::Unlabelled(metric)
                    } else {
                        Target::Labelled(metric)
                    }
                }
                _ => Target::ReadOnly,
            };
            for alias in schema.statsd_names(def) {
                let key = alias.into_bytes().into_boxed_slice();
                let hash = name_hash(&key);
                names.insert_unique(hash, (key, target.clone()), |(k, _)| name_hash(k));
            }
        }
        Ok(StatsdMapper { names })
    }

    fn target(&self, name: &[u8]) -> Option<&Target> {
        self.names
            .find(name_hash(name), |(k, _)| {
                crate::ingest::swar::same_bytes(k, name)
            })
            .map(|(_, t)| t)
    }

    /// Parses and applies one datagram, counting into `tally`; returns the number of lines.
    pub fn apply_datagram(&self, datagram: &[u8], tally: &mut Tally<StatsdReason>) -> u64 {
        let mut lines = 0;
        for line in parse::lines(datagram) {
            lines += 1;
            match line {
                Line::Plain(s) => self.apply(&s, tally),
                Line::Other(line) => parse::parse_line(line, |sample| match sample {
                    Ok(s) => self.apply(&s, tally),
                    Err(e) => tally.reject_with(e.reason(), || {
                        String::from_utf8_lossy(truncate(line)).into_owned()
                    }),
                }),
            }
        }
        lines
    }

    fn apply(&self, s: &Sample<'_>, tally: &mut Tally<StatsdReason>) {
        // A name that is not UTF-8 matches no key.
        let metric = match self.target(s.name) {
            // The common sample, untagged to a counter or gauge without labels: written at
            // once; anything else (a type mismatch too) takes the general way below.
            Some(Target::Unlabelled(m)) if s.tags.is_empty() => match (m, s.kind) {
                (Metric::Counter(c), Kind::Counter) => {
                    return counted(c.inc_by(&[], s.value / s.rate), s, tally)
                }
                (Metric::Gauge(g), Kind::Gauge) if s.signed => {
                    return counted(g.add(&[], s.value), s, tally)
                }
                (Metric::Gauge(g), Kind::Gauge) => return counted(g.set(&[], s.value), s, tally),
                _ => m,
            },
            Some(Target::Unlabelled(m) | Target::Labelled(m)) => m,
            Some(Target::ReadOnly) => return reject(tally, StatsdReason::ReadOnlyMetric, s.name),
            Some(Target::OtherChannel) => return reject(tally, StatsdReason::WrongChannel, s.name),
            None => return reject(tally, StatsdReason::UnknownMetric, s.name),
        };
        let type_ok = matches!(
            (s.kind, metric),
            (Kind::Counter, Metric::Counter(_))
                | (Kind::Gauge, Metric::Gauge(_))
                | (Kind::Timer | Kind::Histogram, Metric::Histogram(_))
        );
        if !type_ok {
            return reject(tally, StatsdReason::TypeMismatch, s.name);
        }
        // The schema caps labels at MAX_LABELS, so they fit in fixed arrays.
        let declared = &metric.def().labels;
        let mut labels: [&str; MAX_LABELS] = [""; MAX_LABELS];
        if !declared.is_empty() || !s.tags.is_empty() {
            let mut values: [Option<&str>; MAX_LABELS] = [None; MAX_LABELS];
            for (key, value) in parse::tags(s.tags) {
                let slot = declared.iter().position(|l| l.as_bytes() == key);
                match (slot, std::str::from_utf8(value)) {
                    (Some(i), Ok(v)) if !v.is_empty() => values[i] = Some(v),
                    (Some(_), _) => return reject(tally, StatsdReason::InvalidTag, s.name),
                    (None, _) => tally.tags_dropped += 1,
                }
            }
            for (i, v) in values.iter().take(declared.len()).enumerate() {
                match v {
                    Some(v) => labels[i] = v,
                    None => return reject(tally, StatsdReason::MissingLabel, s.name),
                }
            }
        }
        let labels = &labels[..declared.len()];
        let result = match (metric, s.kind) {
            // Only probe metrics are totals, and they resolve to ReadOnly above.
            (Metric::Total(_), _) => return reject(tally, StatsdReason::ReadOnlyMetric, s.name),
            (Metric::Counter(c), _) => c.inc_by(labels, s.value / s.rate),
            (Metric::Gauge(g), _) if s.signed => g.add(labels, s.value),
            (Metric::Gauge(g), _) => g.set(labels, s.value),
            (Metric::Histogram(h), kind) => {
                let v = if kind == Kind::Timer {
                    s.value / 1000.0
                } else {
                    s.value
                };
                // A duration below zero is a bug upstream, as the event log holds too.
                let duration = kind == Kind::Timer || h.def().unit.as_deref() == Some("seconds");
                if duration && v < 0.0 {
                    return reject(tally, StatsdReason::InvalidValue, s.name);
                }
                // A sampled observation stands for 1/rate of them, as statsd_exporter does.
                let repeat = (1.0 / s.rate).round();
                if repeat > MAX_HISTOGRAM_REPEAT {
                    return reject(tally, StatsdReason::InvalidSampleRate, s.name);
                }
                let mut r = Ok(());
                for _ in 0..(repeat as u32).max(1) {
                    r = h.observe(labels, v, None);
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
        };
        counted(result, s, tally)
    }
}

/// Counts an update of `s`: accepted, or rejected for the reason the registry gave.
#[inline]
fn counted(result: Result<(), UpdateError>, s: &Sample<'_>, tally: &mut Tally<StatsdReason>) {
    match result {
        Ok(()) => tally.accepted += 1,
        Err(e) => reject(tally, e.into(), s.name),
    }
}

/// Counts a sample's rejection, with its name (cut short) as the example.
#[cold]
fn reject(tally: &mut Tally<StatsdReason>, reason: StatsdReason, name: &[u8]) {
    tally.reject_with(reason, || {
        String::from_utf8_lossy(truncate(name)).into_owned()
    });
}

fn truncate(b: &[u8]) -> &[u8] {
    &b[..b.len().min(120)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::reason::Reason;
    use crate::metrics::Limits;

    fn by_label(label: &str) -> StatsdReason {
        *StatsdReason::ALL
            .iter()
            .find(|r| r.label() == label)
            .expect("a known reason")
    }

    fn setup(limit: usize) -> (StatsdMapper, Metrics) {
        let schema = Schema::parse(&crate::schema::test_schema_toml(
            "tx",
            crate::schema::TEST_METRICS,
        ))
        .expect("schema");
        let metrics = Metrics::new(
            &schema,
            Limits {
                series_limit: limit,
                series_ttl: None,
                ..Limits::default()
            },
        )
        .expect("registry");
        (
            StatsdMapper::new(&metrics, &schema).expect("mapper"),
            metrics,
        )
    }

    fn send(m: &StatsdMapper, _metrics: &Metrics, d: &str) -> Tally<StatsdReason> {
        let mut t = Tally::default();
        m.apply_datagram(d.as_bytes(), &mut t);
        t
    }

    fn value(metrics: &Metrics, name: &str, labels: &[&str]) -> f64 {
        metrics
            .get(name)
            .and_then(|m| m.value(labels))
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn names_that_share_length_and_ends_are_told_apart() {
        // One hash for all three: same length, same first and last eight bytes.
        let names = [
            "tx_engine_a_cache_hits",
            "tx_engine_b_cache_hits",
            "tx_engine_c_cache_hits",
        ];
        assert_eq!(
            name_hash(names[0].as_bytes()),
            name_hash(names[1].as_bytes())
        );
        let mut table = HashTable::new();
        for (i, n) in names.iter().enumerate() {
            table.insert_unique(name_hash(n.as_bytes()), (n.as_bytes(), i), |(k, _)| {
                name_hash(k)
            });
        }
        for (i, n) in names.iter().enumerate() {
            let found = table.find(name_hash(n.as_bytes()), |(k, _)| *k == n.as_bytes());
            assert_eq!(found.map(|(_, j)| *j), Some(i));
        }
        // Short names hash without the tail word; different ones differ.
        assert_ne!(name_hash(b"ab"), name_hash(b"ac"));
        assert_ne!(name_hash(b""), name_hash(b"\0"));
    }

    #[test]
    fn counters_gauges_and_aliases() {
        let (m, metrics) = setup(10);
        let t = send(
            &m,
            &metrics,
            "tx_engine_commits:2|c\ntx_engine_commits_total:3|c|@0.5\ntx_engine_commits_seed:1|c\n\
             tx_engine_depth:10|g\ntx_engine_depth:-3|g\ntx_engine_depth:+1|g",
        );
        assert_eq!((t.accepted, t.is_empty()), (6, false));
        assert_eq!(value(&metrics, "tx_engine_commits_total", &[]), 9.0);
        assert_eq!(value(&metrics, "tx_engine_depth", &[]), 8.0);
        send(&m, &metrics, "tx_engine_depth:4|g");
        assert_eq!(value(&metrics, "tx_engine_depth", &[]), 4.0);
    }

    #[test]
    fn tags_become_declared_labels_only() {
        let (m, metrics) = setup(10);
        let t = send(
            &m,
            &metrics,
            "tx_engine_lag_seconds:1.5|g|#server_id:s1,env:prod,bare",
        );
        assert_eq!((t.accepted, t.tags_dropped), (1, 2));
        assert_eq!(value(&metrics, "tx_engine_lag_seconds", &["s1"]), 1.5);
    }

    #[test]
    fn every_rejection_has_a_reason() {
        let (m, metrics) = setup(1);
        let cases = [
            ("nope:1|c", "unknown_metric"),
            ("tx_engine_depth:1|c", "type_mismatch"),
            ("tx_engine_commits_total:1|ms", "type_mismatch"),
            ("tx_engine_lag_seconds:1|g", "missing_label"),
            ("tx_engine_lag_seconds:1|g|#server_id:", "invalid_tag"),
            ("tx_engine_commits_total:-1|c", "negative_counter"),
            ("tx_engine_commits_total:x|c", "invalid_value"),
            ("tx_engine_latency_seconds:-5|ms", "invalid_value"),
            ("tx_engine_latency_seconds:-0.5|h", "invalid_value"),
            ("tx_engine_depth:1|s", "set_not_supported"),
            ("tx_engine_memory_bytes:1|g", "read_only_metric"),
            ("tx_exporter_engine_up:1|g", "read_only_metric"),
            (
                "tx_engine_latency_seconds:1|h|@0.0001",
                "invalid_sample_rate",
            ),
            ("garbage", "malformed_line"),
            ("tx_engine_depth:1|zz", "unknown_type"),
        ];
        for (line, reason) in cases {
            let t = send(&m, &metrics, line);
            assert_eq!(t.accepted, 0, "{line}");
            assert_eq!(t.rejected(by_label(reason)), 1, "{line}");
        }
        send(&m, &metrics, "tx_engine_lag_seconds:1|g|#server_id:a");
        let t = send(&m, &metrics, "tx_engine_lag_seconds:1|g|#server_id:b");
        assert_eq!(t.rejected(StatsdReason::SeriesLimit), 1);
    }

    #[test]
    fn a_metric_the_event_log_feeds_refuses_statsd() {
        let toml = format!(
            "{}\n[[events]]\nevent = \"commit\"\neffects = [{{ op = \"inc\", metric = \"tx_engine_commits_total\" }}]\n",
            crate::schema::TEST_METRICS
        );
        let schema = Schema::parse(&crate::schema::test_schema_toml("tx", &toml)).expect("schema");
        let metrics = Metrics::new(&schema, Limits::default()).expect("registry");
        let m = StatsdMapper::new(&metrics, &schema).expect("mapper");
        for line in [
            "tx_engine_commits:1|c",
            "tx_engine_commits_total:1|c",
            "tx_engine_commits_seed:1|c",
        ] {
            let mut t = Tally::default();
            m.apply_datagram(line.as_bytes(), &mut t);
            assert_eq!(
                (t.accepted, t.rejected(StatsdReason::WrongChannel)),
                (0, 1),
                "{line}"
            );
        }
        assert_eq!(
            metrics
                .get("tx_engine_commits_total")
                .and_then(|c| c.value(&[])),
            Some(0.0)
        );
    }

    #[test]
    fn timers_are_seconds_and_rates_repeat() {
        let (m, metrics) = setup(10);
        let t = send(
            &m,
            &metrics,
            "tx_engine_latency_seconds:500|ms|@0.5\ntx_engine_latency_seconds:0.05:2|h",
        );
        assert_eq!(t.accepted, 3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, metrics.registry()).expect("encode");
        assert!(out.contains("tx_engine_latency_seconds_count 4"), "{out}");
        assert!(out.contains("tx_engine_latency_seconds_sum 3.05"), "{out}");
        assert!(
            out.contains("tx_engine_latency_seconds_bucket{le=\"1.0\"} 3"),
            "{out}"
        );
    }

    /// What happens to one line: samples accepted, tags dropped, or the one rejection reason.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Accepted { samples: u64, tags_dropped: u64 },
        Rejected(&'static str),
    }

    fn outcome(m: &StatsdMapper, line: &[u8]) -> Outcome {
        let mut t = Tally::default();
        m.apply_datagram(line, &mut t);
        let rejected: Vec<&'static str> = StatsdReason::ALL
            .iter()
            .filter(|r| t.rejected(**r) > 0)
            .map(|r| r.label())
            .collect();
        match (t.accepted, rejected.as_slice()) {
            (samples, []) => Outcome::Accepted {
                samples,
                tags_dropped: t.tags_dropped,
            },
            (0, [reason]) => Outcome::Rejected(reason),
            (n, r) => panic!(
                "{}: mixed outcome: {n} accepted, {r:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }

    /// statsd_exporter's own parser test table (pkg/line, TestLineToEvents), replayed with
    /// `foo` mapped onto a schema metric of the right type. docs/ingest.md lists where the
    /// outcomes differ and why.
    #[test]
    fn statsd_exporter_parser_cases() {
        use Outcome::*;
        let (m, _metrics) = setup(10);
        let ok = |samples, tags_dropped| Accepted {
            samples,
            tags_dropped,
        };
        let cases: &[(&str, &[u8], Outcome)] = &[
            ("simple counter", b"tx_engine_commits:2|c", ok(1, 0)),
            ("simple gauge", b"tx_engine_depth:3|g", ok(1, 0)),
            (
                "gauge with sampling (rate ignored)",
                b"tx_engine_depth:3|g|@0.2",
                ok(1, 0),
            ),
            ("gauge decrement", b"tx_engine_depth:-10|g", ok(1, 0)),
            (
                "simple timer",
                b"tx_engine_latency_seconds:200|ms",
                ok(1, 0),
            ),
            (
                "simple histogram",
                b"tx_engine_latency_seconds:200|h",
                ok(1, 0),
            ),
            (
                "simple distribution",
                b"tx_engine_latency_seconds:200|d",
                ok(1, 0),
            ),
            (
                "distribution with sampling and #-prefixed keys",
                b"tx_engine_latency_seconds:0.01|d|@0.2|#tag1:bar,#tag2:baz",
                ok(1, 2),
            ),
            (
                "librato tags: not parsed, the name is unknown",
                b"tx_engine_commits#tag1=bar:100|c",
                Rejected("unknown_metric"),
            ),
            (
                "influxdb tags: not parsed, the name is unknown",
                b"tx_engine_commits,tag1=bar:100|c",
                Rejected("unknown_metric"),
            ),
            (
                "signalfx tags: not parsed, the name is unknown",
                b"tx_engine_[tag1=bar]commits:100|c",
                Rejected("unknown_metric"),
            ),
            (
                "datadog tags",
                b"tx_engine_commits:100|c|#tag1:bar,tag2:baz",
                ok(1, 2),
            ),
            (
                "datadog tag on a declared label",
                b"tx_engine_lag_seconds:1|g|#server_id:s1",
                ok(1, 0),
            ),
            (
                "datadog #-prefixed declared label",
                b"tx_engine_lag_seconds:1|g|#tag:x,#server_id:s1",
                ok(1, 1),
            ),
            (
                "valueless tag: dropped",
                b"tx_engine_commits:100|c|#tag_without_a_value",
                ok(1, 1),
            ),
            (
                "valueless tag on a declared label",
                b"tx_engine_lag_seconds:1|g|#server_id",
                Rejected("invalid_tag"),
            ),
            (
                "empty tags: skipped",
                b"tx_engine_commits:100|c|#tag:value,,",
                ok(1, 1),
            ),
            (
                "tag value with colons",
                b"tx_engine_lag_seconds:1|g|#server_id:foo:bar",
                ok(1, 0),
            ),
            (
                "undeclared tag with invalid UTF-8: dropped",
                b"tx_engine_commits:100|c|@0.1|#tag:\xc3\x28invalid",
                ok(1, 1),
            ),
            (
                "declared tag with invalid UTF-8",
                b"tx_engine_lag_seconds:1|g|#server_id:\xc3\x28",
                Rejected("invalid_tag"),
            ),
            (
                "extended aggregation on a timer",
                b"tx_engine_latency_seconds:0.5:120:3000|ms|#tag1:bar",
                ok(3, 3),
            ),
            (
                "extended aggregation on a counter",
                b"tx_engine_commits:0.5:120:3000|c",
                ok(3, 0),
            ),
            (
                "extended aggregation on a gauge",
                b"tx_engine_depth:0.5:120|g",
                ok(2, 0),
            ),
            ("bad line", b"foo", Rejected("malformed_line")),
            ("bad component", b"foo:1", Rejected("malformed_line")),
            (
                "bad value",
                b"tx_engine_commits:1o|c",
                Rejected("invalid_value"),
            ),
            (
                "illegal sampling factor",
                b"tx_engine_commits:1|c|@bar",
                Rejected("invalid_sample_rate"),
            ),
            (
                "zero sampling factor",
                b"tx_engine_commits:2|c|@0",
                Rejected("invalid_sample_rate"),
            ),
            (
                "illegal stat type",
                b"tx_engine_commits:2|t",
                Rejected("unknown_type"),
            ),
            ("empty metric name", b":100|ms", Rejected("malformed_line")),
            (
                "empty component: ignored",
                b"tx_engine_commits:1|c|",
                ok(1, 0),
            ),
            (
                "unknown components: ignored",
                b"tx_engine_commits:1|c|zz|T1700000000",
                ok(1, 0),
            ),
            (
                "container id without tags",
                b"tx_engine_commits:1|c|c:ci-4f2a|T1700000000",
                ok(1, 0),
            ),
            (
                "invalid UTF-8 name",
                b"invalid\xc3\x28utf8:1|c",
                Rejected("unknown_metric"),
            ),
            (
                "event split over lines, part 1",
                b"karafka.cpu_idle_second:  0.111090  -0.055903 (  2.419002)",
                Rejected("malformed_line"),
            ),
            (
                "container id: ignored",
                b"tx_engine_commits:100|c|#tag1:value|c:container123",
                ok(1, 1),
            ),
            (
                "container id without a value: ignored",
                b"tx_engine_commits:100|c|#tag1:value|c",
                ok(1, 1),
            ),
            ("set", b"tx_engine_depth:1|s", Rejected("set_not_supported")),
        ];
        for (name, line, expected) in cases {
            assert_eq!(
                &outcome(&m, line),
                expected,
                "{name}: {}",
                String::from_utf8_lossy(line)
            );
        }
        // A line cut before its type (the second half of a split event) is not a sample.
        let part2 = outcome(&m, b"|h|#consumer:Kafka::Consumer,topic:shared");
        assert!(matches!(part2, Rejected(_)), "{part2:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic_and_every_line_is_accounted(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)
        ) {
            let (m, metrics) = setup(5);
            let _ = &metrics;
            let mut t = Tally::<StatsdReason>::default();
            let lines = m.apply_datagram(&bytes, &mut t);
            let rejected = t.rejected_total();
            // Each line yields at least one outcome (multi-value lines can yield more).
            proptest::prop_assert!(t.accepted + rejected >= lines);
        }
    }
}
