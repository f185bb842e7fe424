//! Engine → sidecar ingest: StatsD/DogStatsD datagrams and the JSON event log, both checked
//! against the tier's schema. The split follows statsd_exporter's: parsing bytes
//! (`statsd::parse`, `events::parse`) knows nothing of metrics; mapping (`statsd::apply`,
//! `events::apply`) knows the schema; listening and following (`statsd`, `logtail`) move
//! bytes and keep the self-metrics.

pub mod events;
pub mod logtail;
pub mod statsd;
pub mod tally;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::context::TaskContext;

/// Starts every configured ingest source; each handle finishes after `ctx.shutdown`
/// (the follower persists its positions first).
pub fn spawn(ctx: &TaskContext) -> Vec<JoinHandle<()>> {
    let mut handles = statsd::spawn(ctx, Arc::new(statsd::Mapper::new(&ctx.schema)));
    handles.extend(logtail::spawn(
        ctx,
        Arc::new(events::EventMapper::new(&ctx.schema)),
    ));
    handles
}
