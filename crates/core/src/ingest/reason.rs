//! The ingest channels' rejection reasons (defined in `crate::rejection`, a leaf the schema
//! reads too), and how a registry refusal reads in each channel's terms.

use crate::metrics::error::UpdateError;
pub use crate::rejection::*;

/// A registry refusal in a channel's terms: both channels name these five alike.
macro_rules! from_update_error {
    ($name:ident) => {
        impl From<UpdateError> for $name {
            fn from(e: UpdateError) -> Self {
                match e {
                    UpdateError::LabelMismatch => $name::MissingLabel,
                    UpdateError::LabelValueTooLong => $name::LabelValueTooLong,
                    UpdateError::NotFinite => $name::InvalidValue,
                    UpdateError::NegativeCounter => $name::NegativeCounter,
                    UpdateError::SeriesLimit => $name::SeriesLimit,
                }
            }
        }
    };
}

from_update_error!(StatsdReason);
from_update_error!(EventReason);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_update_error_has_a_reason_on_both_channels() {
        for e in [
            UpdateError::LabelMismatch,
            UpdateError::LabelValueTooLong,
            UpdateError::NotFinite,
            UpdateError::NegativeCounter,
            UpdateError::SeriesLimit,
        ] {
            assert_eq!(StatsdReason::from(e).label(), EventReason::from(e).label());
        }
    }
}
