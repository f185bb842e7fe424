//! How long a UDP listener woken by a datagram waits before receiving, so that one receive
//! takes the rest of the burst: a wake-up and a syscall per datagram cost more than parsing
//! it. The wait must not let the socket queue fill, or the kernel drops what a faster
//! receiver would have kept: with Linux's default buffer limit (`net.core.rmem_max`, 208 KiB)
//! a fixed 2 ms wait lost over half of a loopback flood. So the wait is adjusted after each
//! one by how full it let the queue get.

use std::time::Duration;

/// The longest wait: a client's flush of its buffer arrives well within it, and metrics do
/// not need the millisecond.
const MAX: Duration = Duration::from_millis(2);
/// A shorter wait is not worth a sleep: the listener receives at once.
const MIN: Duration = Duration::from_micros(50);

/// The wait, kept between a sixteenth and a quarter of the receive buffer's worth of
/// arrivals: halved above a quarter, quartered above half or after a drop, doubled below a
/// sixteenth (from MIN, up to MAX). It starts at MIN, so a first burst cannot overflow a
/// small buffer, and reaches MAX after a handful of light bursts.
#[derive(Debug)]
pub(super) struct Coalesce {
    wait: Duration,
}

impl Coalesce {
    pub(super) fn new() -> Coalesce {
        Coalesce { wait: MIN }
    }

    /// How long to wait now; zero: receive at once.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// After a wait: the socket queue held `queued` bytes of its `capacity` (both as the
    /// kernel charges them, SO_MEMINFO), and `dropped` says whether the kernel dropped
    /// datagrams since the last look.
    pub(super) fn adjust(&mut self, queued: u32, capacity: u32, dropped: bool) {
        let fill = f64::from(queued) / f64::from(capacity.max(1));
        self.wait = if dropped || fill > 0.5 {
            self.wait / 4
        } else if fill > 0.25 {
            self.wait / 2
        } else if fill < 0.0625 {
            (self.wait * 2).clamp(MIN, MAX)
        } else {
            self.wait
        };
        if self.wait < MIN {
            self.wait = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: u32 = 425_984; // what Linux's default rmem_max gives a socket

    #[test]
    fn light_bursts_grow_the_wait_to_its_cap() {
        let mut c = Coalesce::new();
        assert_eq!(c.wait(), MIN);
        for _ in 0..10 {
            c.adjust(CAPACITY / 100, CAPACITY, false);
        }
        assert_eq!(c.wait(), MAX);
    }

    #[test]
    fn a_filling_queue_shortens_the_wait_until_it_receives_at_once() {
        let mut c = Coalesce::new();
        for _ in 0..10 {
            c.adjust(0, CAPACITY, false);
        }
        c.adjust(CAPACITY / 3, CAPACITY, false);
        assert_eq!(c.wait(), MAX / 2);
        c.adjust(CAPACITY * 3 / 4, CAPACITY, false);
        assert_eq!(c.wait(), MAX / 8);
        // Within the band the wait holds.
        c.adjust(CAPACITY / 8, CAPACITY, false);
        assert_eq!(c.wait(), MAX / 8);
        // A drop, however empty the queue: a quarter, and below MIN no wait at all.
        c.adjust(0, CAPACITY, true);
        assert_eq!(c.wait(), MAX / 32);
        c.adjust(0, CAPACITY, true);
        assert_eq!(c.wait(), Duration::ZERO);
        // From zero, a light burst starts again at MIN.
        c.adjust(0, CAPACITY, false);
        assert_eq!(c.wait(), MIN);
    }

    #[test]
    fn a_socket_reporting_no_capacity_does_not_divide_by_zero() {
        let mut c = Coalesce::new();
        c.adjust(1, 0, false);
        assert_eq!(c.wait(), Duration::ZERO);
    }
}
