//! Why the registry refused an update.

use std::fmt;

/// Why an update was refused; the ingest channels turn it into their rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Not one value per declared label.
    LabelMismatch,
    LabelValueTooLong,
    NotFinite,
    NegativeCounter,
    SeriesLimit,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateError::LabelMismatch => "label values do not match the declared labels",
            UpdateError::LabelValueTooLong => "label value too long",
            UpdateError::NotFinite => "value is not a finite number",
            UpdateError::NegativeCounter => "negative counter increment",
            UpdateError::SeriesLimit => "series limit reached",
        })
    }
}
