//! `ingest.log_max_read_bytes_per_second`: a token bucket over every followed file, so a
//! sidecar catching up on a large backlog takes a bounded share of the node's CPU and disk.
//! It then falls behind instead, which `log_behind_bytes` shows.

use std::time::Instant;

/// At most one second's worth is saved up while the follower is idle.
const BURST_SECONDS: f64 = 1.0;

pub struct ReadRate {
    per_second: f64,
    /// Bytes that may be read now; negative after a chunk overshot it (a debt repaid first).
    allowance: f64,
    refilled: Instant,
}

impl ReadRate {
    /// None when `per_second` is 0 (no limit).
    pub fn new(per_second: u64, now: Instant) -> Option<ReadRate> {
        (per_second > 0).then_some(ReadRate {
            per_second: per_second as f64,
            allowance: per_second as f64 * BURST_SECONDS,
            refilled: now,
        })
    }

    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.allowance =
            (self.allowance + elapsed * self.per_second).min(self.per_second * BURST_SECONDS);
        self.refilled = now;
    }

    /// Bytes a read may take now, at most `cap`.
    pub fn budget(&self, cap: u64) -> u64 {
        (self.allowance.max(0.0) as u64).min(cap)
    }

    pub fn spend(&mut self, bytes: u64) {
        self.allowance -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zero_is_no_limit() {
        assert!(ReadRate::new(0, Instant::now()).is_none());
    }

    #[test]
    fn a_burst_then_the_rate_and_debts_are_repaid() {
        let t0 = Instant::now();
        let mut r = ReadRate::new(1000, t0).expect("limit");
        assert_eq!(r.budget(u64::MAX), 1000);
        assert_eq!(r.budget(300), 300);
        // A 64 KiB chunk overshoots: nothing more until the debt is repaid.
        r.spend(4000);
        r.refill(t0 + Duration::from_secs(2));
        assert_eq!(r.budget(u64::MAX), 0);
        r.refill(t0 + Duration::from_millis(3500));
        assert_eq!(r.budget(u64::MAX), 500);
        // Idle time saves up one second at most.
        r.refill(t0 + Duration::from_secs(60));
        assert_eq!(r.budget(u64::MAX), 1000);
    }
}
