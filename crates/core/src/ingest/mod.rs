//! Engine → sidecar ingest: StatsD/DogStatsD datagrams and the JSON event log, both checked
//! against the tier's schema. The split follows statsd_exporter's: parsing bytes
//! (`statsd::parse`, `events::parse`) knows nothing of metrics; mapping (`statsd::apply`,
//! `events::apply`) knows the schema; listening and following (`statsd`, `logtail`) move
//! bytes and keep the self-metrics.

pub mod events;
pub mod logtail;
pub mod reason;
pub mod statsd;
mod swar;
pub mod tally;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::context::TaskContext;
use crate::schema::SchemaError;

/// What the running sources hand back: their tasks, and the event-log ledger a scrape must
/// serve through.
pub struct RunningSources {
    pub handles: Vec<JoinHandle<()>>,
    pub ledger: Option<Arc<logtail::ledger::Ledger>>,
    /// Where a reload sends the follower its new globs and rules; None without a follower.
    pub follower: Option<std::sync::mpsc::Sender<logtail::Reconfigure>>,
}

/// Starts every configured ingest source; each handle finishes after `ctx.shutdown`
/// (the follower persists its positions first).
pub fn spawn(ctx: &TaskContext) -> Result<RunningSources, SchemaError> {
    let statsd_mapper = statsd::StatsdMapper::new(&ctx.metrics, &ctx.schema)?;
    let event_mapper = events::EventMapper::new(&ctx.metrics, &ctx.schema)?;
    let mut handles = statsd::spawn(ctx, Arc::new(statsd_mapper));
    let (mut ledger, mut follower) = (None, None);
    if let Some(running) = logtail::spawn(ctx, Arc::new(event_mapper)) {
        handles.push(running.handle);
        ledger = Some(running.ledger);
        follower = Some(running.reconfigure);
    }
    Ok(RunningSources {
        handles,
        ledger,
        follower,
    })
}
