//! What the sidecar measures itself, shared by every tier: the engine process, the exporter's
//! own process and the derived ratios declared in the schema. Tier-only probes live in the
//! tier crates.

pub mod derived;
pub mod engine;
pub mod process;

use std::time::Duration;

use tokio::task::JoinHandle;

/// Blocking probe work (system calls, /proc reads) run on a blocking thread under a budget.
/// A run that has not finished in time is reported (`None`) and waited for by the next call
/// instead of being started again, so a call stuck in the kernel never piles up threads and
/// never stalls the caller.
pub struct Budgeted<T> {
    budget: Duration,
    hung: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Budgeted<T> {
    pub fn new(budget: Duration) -> Self {
        Budgeted { budget, hung: None }
    }

    /// Runs `work` (or keeps waiting for the previous run, if it hung); an error says it did
    /// not finish within the budget, or panicked.
    pub async fn run(&mut self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let mut task = self
            .hung
            .take()
            .unwrap_or_else(|| tokio::task::spawn_blocking(work));
        match tokio::time::timeout(self.budget, &mut task).await {
            Ok(done) => done.map_err(|e| format!("failed: {e}")),
            Err(_) => {
                self.hung = Some(task);
                Err(format!("has not finished in {:?}", self.budget))
            }
        }
    }
}
