//! Engine → sidecar ingest: StatsD/DogStatsD datagrams and the JSON event log, both checked
//! against the tier's schema. The split follows statsd_exporter's: parsing bytes
//! (`statsd::parse`, `events::parse`) knows nothing of metrics; mapping (`statsd::apply`,
//! `events::apply`) knows the schema; listening and following (`statsd`, `logtail`) move
//! bytes and keep the self-metrics.

pub mod events;
pub mod logtail;
pub mod reason;
pub mod statsd;
pub mod tally;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::context::TaskContext;
use crate::schema::SchemaError;

/// Starts every configured ingest source; each handle finishes after `ctx.shutdown`
/// (the follower persists its positions first).
pub fn spawn(ctx: &TaskContext) -> Result<Vec<JoinHandle<()>>, SchemaError> {
    let statsd_mapper = statsd::Mapper::new(&ctx.metrics, &ctx.schema)?;
    let event_mapper = events::EventMapper::new(&ctx.metrics, &ctx.schema)?;
    let mut handles = statsd::spawn(ctx, Arc::new(statsd_mapper));
    handles.extend(logtail::spawn(ctx, Arc::new(event_mapper)));
    Ok(handles)
}
