//! The engine's JSON event log: parsing one line (`parse`, its fast path `flat`, both into
//! `fields`) and applying the tier's event rules to the registry (`apply`). Following the
//! files is `logtail`'s job.

pub mod apply;
mod fast_path;
pub mod fields;
pub mod parse;

pub use apply::EventMapper;
