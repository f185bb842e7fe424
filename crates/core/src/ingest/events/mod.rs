//! The engine's JSON event log: parsing one line (`parse`) and applying the tier's event
//! rules to the registry (`apply`). Following the files is `logtail`'s job.

pub mod apply;
mod flat;
pub mod parse;

pub use apply::EventMapper;
