//! What every background task is handed: the registry, the configuration, health handles
//! and the shutdown signal. Sources and probes import it from here, never from the crate root.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::schema::Schema;

/// Everything a background task gets: the registry, the configuration, a health handle
/// factory and the shutdown signal.
#[derive(Clone)]
pub struct TaskContext {
    pub schema: Arc<Schema>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub health: Health,
    pub shutdown: Shutdown,
}

/// Resolves when the exporter is asked to stop (SIGTERM/SIGINT).
#[derive(Clone)]
pub struct Shutdown(pub(crate) watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// On a blocking thread: sleeps up to `d`, waking at once on shutdown, so a polling
    /// loop wakes once per period instead of in small steps; true when shutting down.
    pub fn sleep_blocking(&mut self, d: std::time::Duration) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let _ = runtime.block_on(tokio::time::timeout(d, self.wait()));
            }
            Err(_) => std::thread::sleep(d),
        }
        self.is_set()
    }
}
