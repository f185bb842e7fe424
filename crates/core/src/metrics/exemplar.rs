//! Exemplars: the trace reference an observation may carry, checked and held inline.

/// OpenMetrics limits an exemplar's label names and values to 128 characters in total.
const EXEMPLAR_MAX_CHARS: usize = 128;

/// A trace reference attached to a histogram observation.
#[derive(Debug, Clone, Copy)]
pub struct Exemplar<'a> {
    pub trace_id: &'a str,
    pub span_id: Option<&'a str>,
}

impl Exemplar<'_> {
    pub(crate) fn label_set(&self) -> Option<TraceLabels> {
        let valid = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !valid(self.trace_id, TRACE_ID_MAX) {
            return None;
        }
        let span = self.span_id.filter(|s| valid(s, SPAN_ID_MAX)).unwrap_or("");
        let mut chars = "trace_id".len() + self.trace_id.len();
        if !span.is_empty() {
            chars += "span_id".len() + span.len();
        }
        if chars > EXEMPLAR_MAX_CHARS {
            return None;
        }
        let mut labels = TraceLabels {
            trace_id: [0; TRACE_ID_MAX],
            trace_len: self.trace_id.len() as u8,
            span_id: [0; SPAN_ID_MAX],
            span_len: span.len() as u8,
        };
        labels.trace_id[..self.trace_id.len()].copy_from_slice(self.trace_id.as_bytes());
        labels.span_id[..span.len()].copy_from_slice(span.as_bytes());
        Some(labels)
    }
}

const TRACE_ID_MAX: usize = 64;
const SPAN_ID_MAX: usize = 32;

/// An exemplar's labels (`trace_id`, and `span_id` when there is one), held inline: a traced
/// observation allocates nothing, where a Vec of Strings took two or three allocations.
#[derive(Clone, Debug)]
pub(crate) struct TraceLabels {
    trace_id: [u8; TRACE_ID_MAX],
    trace_len: u8,
    span_id: [u8; SPAN_ID_MAX],
    span_len: u8,
}

impl TraceLabels {
    fn trace_id(&self) -> &str {
        // ASCII alphanumerics only (checked in `label_set`).
        std::str::from_utf8(&self.trace_id[..usize::from(self.trace_len)]).unwrap_or_default()
    }

    fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id[..usize::from(self.span_len)]).unwrap_or_default()
    }
}

impl prometheus_client::encoding::EncodeLabelSet for TraceLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("trace_id", self.trace_id()).encode(encoder.encode_label())?;
        if self.span_len > 0 {
            ("span_id", self.span_id()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemplars_are_kept_only_when_valid() {
        let ok = Exemplar {
            trace_id: "abc123",
            span_id: Some("def"),
        };
        let set = ok.label_set().expect("valid");
        assert_eq!((set.trace_id(), set.span_id()), ("abc123", "def"));
        // An invalid span id drops the span, not the trace.
        let no_span = Exemplar {
            trace_id: "abc123",
            span_id: Some("d-f"),
        };
        let set = no_span.label_set().expect("valid trace");
        assert_eq!((set.trace_id(), set.span_id()), ("abc123", ""));
        // The longest ids that fit: 64 + 32 characters of id, 113 with the names.
        let (t, sp) = ("a".repeat(64), "b".repeat(32));
        let longest = Exemplar {
            trace_id: &t,
            span_id: Some(&sp),
        };
        assert!(longest.label_set().is_some());
        let bad = Exemplar {
            trace_id: "not hex!",
            span_id: None,
        };
        assert!(bad.label_set().is_none());
        let too_long = "a".repeat(65);
        let long = Exemplar {
            trace_id: &too_long,
            span_id: None,
        };
        assert!(long.label_set().is_none());
    }
}
