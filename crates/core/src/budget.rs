//! Calls that may never return (a read of a hung filesystem, a /proc file of a process stuck
//! in the kernel, a PTP device) run where they cannot stall their caller, which waits at most
//! a budget. A call that overruns is waited for, never started again, so a stuck call never
//! piles up threads, and the caller reports it as a failure instead of waiting with it.

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

/// For async callers: the work runs on a blocking thread of the runtime.
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
    pub async fn run(&mut self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Overrun> {
        let mut task = self
            .hung
            .take()
            .unwrap_or_else(|| tokio::task::spawn_blocking(work));
        match tokio::time::timeout(self.budget, &mut task).await {
            Ok(done) => done.map_err(|e| Overrun::Failed(e.to_string())),
            Err(_) => {
                self.hung = Some(task);
                Err(Overrun::Hung(self.budget))
            }
        }
    }
}

/// Why a budgeted call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Overrun {
    #[error("has not finished in {0:?}")]
    Hung(Duration),
    #[error("no thread to run it: {0}")]
    NoThread(String),
    /// It panicked, or the runtime is shutting down.
    #[error("failed: {0}")]
    Failed(String),
}

/// For synchronous callers (a scrape hook, the positions write of a scrape): one named thread
/// of its own runs `work` on each input, started at the first call.
pub struct Worker<I, O> {
    name: &'static str,
    budget: Duration,
    work: std::sync::Arc<dyn Fn(I) -> O + Send + Sync>,
    thread: Mutex<Option<WorkerThread<I, O>>>,
}

struct WorkerThread<I, O> {
    inputs: mpsc::Sender<I>,
    outputs: mpsc::Receiver<O>,
    /// A call that overran is still running.
    pending: bool,
}

impl<I: Send + 'static, O: Send + 'static> Worker<I, O> {
    pub fn new(
        name: &'static str,
        budget: Duration,
        work: impl Fn(I) -> O + Send + Sync + 'static,
    ) -> Self {
        Worker {
            name,
            budget,
            work: std::sync::Arc::new(work),
            thread: Mutex::new(None),
        }
    }

    /// `work(input)`'s answer within the budget. While an earlier call still runs, fails at
    /// once; that call's late answer is dropped.
    pub fn call(&self, input: I) -> Result<O, Overrun> {
        let mut slot = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(self.spawn().map_err(|e| Overrun::NoThread(e.to_string()))?);
        }
        let Some(running) = slot.as_mut() else {
            return Err(Overrun::NoThread("not started".into()));
        };
        if running.pending {
            match running.outputs.try_recv() {
                Ok(_late) => running.pending = false,
                Err(mpsc::TryRecvError::Empty) => return Err(Overrun::Hung(self.budget)),
                Err(mpsc::TryRecvError::Disconnected) => {
                    *slot = None;
                    return Err(Overrun::NoThread("it stopped".into()));
                }
            }
        }
        let answer = match running.inputs.send(input) {
            Ok(()) => running.outputs.recv_timeout(self.budget),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(output) => Ok(output),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                running.pending = true;
                Err(Overrun::Hung(self.budget))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                *slot = None;
                Err(Overrun::NoThread("it stopped".into()))
            }
        }
    }

    fn spawn(&self) -> std::io::Result<WorkerThread<I, O>> {
        let (inputs, input_rx) = mpsc::channel::<I>();
        let (output_tx, outputs) = mpsc::channel();
        let work = self.work.clone();
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                for input in input_rx {
                    if output_tx.send(work(input)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(WorkerThread {
            inputs,
            outputs,
            pending: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_overruns_is_waited_for_not_started_again() {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = started.clone();
        let worker = Worker::new("test-worker", Duration::from_millis(50), move |n: u32| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                let _ = gate.lock().map(|g| g.recv());
            }
            n * 2
        });
        assert_eq!(worker.call(3).ok(), Some(6));
        assert!(matches!(worker.call(0), Err(Overrun::Hung(_))));
        assert!(matches!(worker.call(4), Err(Overrun::Hung(_))));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
        release.send(()).ok();
        // Once the stuck call returns, calls are answered again.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut answer = worker.call(5).ok();
        while answer.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            answer = worker.call(5).ok();
        }
        assert_eq!(answer, Some(10));
    }
}
