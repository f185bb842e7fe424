//! Mapping parsed StatsD samples onto the schema's metrics, strictly: every sample is either
//! applied or rejected with a reason.

use hashbrown::HashTable;

use super::parse::{self, Kind, Line, Sample};
use crate::ingest::reason::StatsdReason;
use crate::ingest::tally::Tally;
use crate::metrics::{Histogram, Metric, Metrics, UpdateError};
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
        let declared = &metric.def().labels;
        let mut labels: [&str; MAX_LABELS] = [""; MAX_LABELS];
        if let Err(reason) = label_values(declared, s.tags, &mut labels, tally) {
            return reject(tally, reason, s.name);
        }
        let labels = &labels[..declared.len()];
        let result = match (metric, s.kind) {
            // Only probe metrics are totals, and they resolve to ReadOnly above.
            (Metric::Total(_), _) => return reject(tally, StatsdReason::ReadOnlyMetric, s.name),
            (Metric::Counter(c), _) => c.inc_by(labels, s.value / s.rate),
            (Metric::Gauge(g), _) if s.signed => g.add(labels, s.value),
            (Metric::Gauge(g), _) => g.set(labels, s.value),
            (Metric::Histogram(h), kind) => match observe(h, labels, s, kind) {
                Ok(r) => r,
                Err(reason) => return reject(tally, reason, s.name),
            },
        };
        counted(result, s, tally)
    }
}

/// The values of a metric's `declared` labels from a sample's tags, in declared order (the
/// schema caps labels at MAX_LABELS, so they fit in a fixed array); a tag no label declares is
/// dropped and counted.
#[inline]
fn label_values<'a>(
    declared: &[String],
    tags: &'a [u8],
    labels: &mut [&'a str; MAX_LABELS],
    tally: &mut Tally<StatsdReason>,
) -> Result<(), StatsdReason> {
    if declared.is_empty() && tags.is_empty() {
        return Ok(());
    }
    let mut values: [Option<&str>; MAX_LABELS] = [None; MAX_LABELS];
    for (key, value) in parse::tags(tags) {
        let slot = declared.iter().position(|l| l.as_bytes() == key);
        match (slot, std::str::from_utf8(value)) {
            (Some(i), Ok(v)) if !v.is_empty() => values[i] = Some(v),
            (Some(_), _) => return Err(StatsdReason::InvalidTag),
            (None, _) => tally.tags_dropped += 1,
        }
    }
    for (i, v) in values.iter().take(declared.len()).enumerate() {
        labels[i] = v.ok_or(StatsdReason::MissingLabel)?;
    }
    Ok(())
}

/// A timer or histogram sample observed: milliseconds as seconds for a timer, and a sampled
/// observation 1/rate times, as statsd_exporter does.
fn observe(
    h: &Histogram,
    labels: &[&str],
    s: &Sample<'_>,
    kind: Kind,
) -> Result<Result<(), UpdateError>, StatsdReason> {
    let v = if kind == Kind::Timer {
        s.value / 1000.0
    } else {
        s.value
    };
    // A duration below zero is a bug upstream, as the event log holds too.
    let duration = kind == Kind::Timer || h.def().unit.as_deref() == Some("seconds");
    if duration && v < 0.0 {
        return Err(StatsdReason::InvalidValue);
    }
    let repeat = (1.0 / s.rate).round();
    if repeat > MAX_HISTOGRAM_REPEAT {
        return Err(StatsdReason::InvalidSampleRate);
    }
    let mut r = Ok(());
    for _ in 0..(repeat as u32).max(1) {
        r = h.observe(labels, v, None);
        if r.is_err() {
            break;
        }
    }
    Ok(r)
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
mod tests;
