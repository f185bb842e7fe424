//! The closed set of rejection reasons of each ingest channel. Each enum is the one home of
//! its reasons: the `ingest_rejected_total{source,reason}` series created at 0 (the schema
//! seeds them), the tables in docs/ingest.md and the code that rejects all come from it, so a
//! reason cannot be emitted without being served from the first scrape and documented. A leaf:
//! the schema below everything reads it; the ingest channels map registry refusals onto it
//! (`ingest::reason`).

/// A channel's rejection reasons.
pub trait Reason: Copy + Eq + std::fmt::Debug + 'static {
    /// The `source` label of the channel.
    const CHANNEL: &'static str;
    /// Every reason, in documentation order.
    const ALL: &'static [Self];
    /// The `reason` label value.
    fn label(self) -> &'static str;
    /// One line on what causes it, for the docs.
    fn cause(self) -> &'static str;
    /// Position in [`Reason::ALL`], for counting without a map.
    fn index(self) -> usize;
}

/// Most reasons any channel has; tallies count into a fixed array of this size.
pub const MAX_REASONS: usize = 24;

macro_rules! reasons {
    ($(#[$doc:meta])* $name:ident, channel $channel:literal {
        $($variant:ident = $label:literal: $cause:literal,)+
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl Reason for $name {
            const CHANNEL: &'static str = $channel;
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            fn cause(self) -> &'static str {
                match self {
                    $($name::$variant => $cause,)+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        const _: () = assert!(<$name as Reason>::ALL.len() <= MAX_REASONS);
    };
}

reasons! {
    /// Why a StatsD/DogStatsD line or sample was not applied.
    StatsdReason, channel "statsd" {
        MalformedLine = "malformed_line": "no `:`, empty name, no `|type`, or values with no type after them",
        InvalidValue = "invalid_value": "not a finite number (`NaN`, `Inf`, `abc`, `1e999`), an increment that would take the value past the largest finite number, or a negative duration (`-5|ms`, or below 0 on a `_seconds` histogram)",
        UnknownType = "unknown_type": "a type other than `c g ms h d s`",
        SetNotSupported = "set_not_supported": "type `s`",
        InvalidSampleRate = "invalid_sample_rate": "`@rate` not in (0, 1], or below 0.001 on a histogram",
        UnknownMetric = "unknown_metric": "the name is not in the schema (nor a counter alias)",
        ReadOnlyMetric = "read_only_metric": "a probe, derived or self metric",
        WrongChannel = "wrong_channel": "the event log feeds this metric (see the channel lists below), so a StatsD sample would count the same action twice",
        TypeMismatch = "type_mismatch": "e.g. `c` on a gauge, `ms` on a counter",
        NegativeCounter = "negative_counter": "a counter increment below zero",
        MissingLabel = "missing_label": "a declared label has no tag",
        InvalidTag = "invalid_tag": "a declared label's tag has an empty or non-UTF-8 value",
        LabelValueTooLong = "label_value_too_long": "a label value over 256 bytes",
        SeriesLimit = "series_limit": "the metric is at its series cap (`ingest.series_limit`)",
        DatagramTooLarge = "datagram_too_large": "a Unix datagram over 64 KiB (cut by the kernel; dropped whole)",
    }
}

reasons! {
    /// Why a JSON event-log line was not applied. A rejected line changes no metric.
    EventReason, channel "events" {
        MalformedJson = "malformed_json": "not JSON, not UTF-8, or not an object",
        MissingEvent = "missing_event": "no `event` field",
        WrongFieldType = "wrong_field_type": "`event` not a non-empty string, a value field not a number, a label field an object or array",
        UnknownEvent = "unknown_event": "no rule for this event",
        MissingField = "missing_field": "a required value field (or `timestamp` for `set_timestamp`) is absent",
        MissingLabel = "missing_label": "the field a label comes from is absent or empty",
        InvalidValue = "invalid_value": "a negative duration, a value that is not a finite number, or an increment that would take the value past the largest finite number",
        InvalidTimestamp = "invalid_timestamp": "`timestamp` is not RFC 3339 with a zone",
        NegativeCounter = "negative_counter": "an `add` with a negative number",
        LineTooLong = "line_too_long": "over `ingest.max_line_bytes` (default 64 KiB); the line is skipped without being buffered",
        LabelValueTooLong = "label_value_too_long": "a label value over 256 bytes",
        SeriesLimit = "series_limit": "the metric is at its series cap (`ingest.series_limit`)",
    }
}

/// The ingest channels, as `source` label values.
pub const CHANNELS: [&str; 2] = [StatsdReason::CHANNEL, EventReason::CHANNEL];

/// `(source, reason)` of every rejection series, created at 0 with the registry.
pub fn rejection_series() -> Vec<Vec<String>> {
    fn of<R: Reason>() -> impl Iterator<Item = Vec<String>> {
        R::ALL
            .iter()
            .map(|r| vec![R::CHANNEL.to_owned(), r.label().to_owned()])
    }
    of::<StatsdReason>().chain(of::<EventReason>()).collect()
}

/// The docs table of one channel's reasons.
pub fn markdown_table<R: Reason>() -> String {
    let mut out = String::from("| reason | cause |\n|---|---|\n");
    for r in R::ALL {
        out.push_str(&format!("| `{}` | {} |\n", r.label(), r.cause()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<R: Reason>() {
        for (i, r) in R::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            let label = r.label();
            assert!(
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            assert_eq!(
                R::ALL.iter().filter(|o| o.label() == label).count(),
                1,
                "{label} twice"
            );
        }
    }

    #[test]
    fn labels_are_unique_snake_case_and_indexed_in_order() {
        check::<StatsdReason>();
        check::<EventReason>();
    }
}
