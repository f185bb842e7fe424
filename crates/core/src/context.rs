//! What every background task is handed: the registry, the configuration, health handles
//! and the shutdown signal. Sources and probes import it from here, never from the crate root.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Resolves when the exporter is asked to stop (SIGTERM/SIGINT). Blocking loops wait on it
/// with `wait_blocking`, which sleeps in the kernel until their socket has data, their period
/// ends or the exporter stops: an idle source costs no wake-up at all.
#[derive(Clone)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
    /// The same flag as `stop`, read without the watch's lock by loops that check it per
    /// batch.
    stopping: Arc<AtomicBool>,
    /// Becomes readable, and stays so, when the exporter stops.
    wake: Arc<OwnedFd>,
}

/// The sending half of `Shutdown`, held by whoever handles the stop signal.
pub struct ShutdownTrigger {
    stop: watch::Sender<bool>,
    stopping: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
}

/// What ended a `wait_blocking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The watched descriptor has data.
    Readable,
    /// The period passed.
    Timeout,
    Shutdown,
}

/// A stop signal and its trigger.
pub fn shutdown_signal() -> io::Result<(ShutdownTrigger, Shutdown)> {
    // SAFETY: eventfd has no memory arguments; a non-negative result is a new descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and nothing else owns it.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (tx, rx) = watch::channel(false);
    let stopping = Arc::new(AtomicBool::new(false));
    Ok((
        ShutdownTrigger {
            stop: tx,
            stopping: stopping.clone(),
            wake: wake.clone(),
        },
        Shutdown {
            stop: rx,
            stopping,
            wake,
        },
    ))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Shutdown {
    pub async fn wait(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// On a blocking thread: sleeps up to `d`, waking at once on shutdown; true when
    /// shutting down.
    pub fn sleep_blocking(&self, d: Duration) -> bool {
        self.wait_blocking(None, Some(d)) == Woken::Shutdown
    }

    /// On a blocking thread: waits until `fd` is readable, `timeout` (None: no limit) passes
    /// or the exporter stops. Shutdown wins over data, so a flooded loop still stops.
    pub fn wait_blocking(&self, fd: Option<RawFd>, timeout: Option<Duration>) -> Woken {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: fd.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = deadline.map_or(-1, |d| {
                // Rounded up: a poll that ends early would only be repeated.
                let left = d.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            });
            // SAFETY: fds is a live array of two pollfd; a negative fd is ignored by poll.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll cannot fail on valid descriptors; sleep rather than spin if it does.
                std::thread::sleep(timeout.unwrap_or(Duration::from_millis(100)));
                return Woken::Timeout;
            }
            if fds[0].revents != 0 || self.is_set() {
                return Woken::Shutdown;
            }
            if fds[1].revents != 0 {
                return Woken::Readable;
            }
            if n == 0 {
                return Woken::Timeout;
            }
        }
    }
}

/// Runs a source's blocking loop on a thread of its own, named so that `top -H` shows which
/// source spends the CPU; the handle finishes when the loop returns (or panics).
pub(crate) fn source_thread(
    name: &str,
    run: impl FnOnce() + Send + 'static,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            run();
            let _ = done.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_wait_ends_on_data_timeout_or_shutdown() {
        let (stop, shutdown) = shutdown_signal().expect("eventfd");
        let (a, b) = std::os::unix::net::UnixDatagram::pair().expect("socketpair");
        let ms = Some(Duration::from_millis(20));
        assert_eq!(
            shutdown.wait_blocking(Some(b.as_raw_fd()), ms),
            Woken::Timeout
        );
        a.send(b"x").expect("send");
        assert_eq!(
            shutdown.wait_blocking(Some(b.as_raw_fd()), ms),
            Woken::Readable
        );
        let waiter = shutdown.clone();
        let sleeper = std::thread::spawn(move || waiter.wait_blocking(None, None));
        stop.trigger();
        assert_eq!(sleeper.join().expect("join"), Woken::Shutdown);
        // Shutdown wins over pending data, so a flooded loop still stops.
        assert_eq!(
            shutdown.wait_blocking(Some(b.as_raw_fd()), ms),
            Woken::Shutdown
        );
        assert!(shutdown.sleep_blocking(Duration::from_secs(60)));
    }
}
