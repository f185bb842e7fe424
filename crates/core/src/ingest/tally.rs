//! Per-batch bookkeeping of accepted and rejected samples, flushed to the self-metrics once
//! per datagram window or read chunk so the hot path does not touch labelled families per
//! sample.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::reason::{Reason, MAX_REASONS};
use crate::health::SourceHealth;
use crate::metrics::{BoundCounter, BoundGauge, Metrics};

/// Outcomes of one batch of one channel.
pub struct Tally<R: Reason> {
    pub accepted: u64,
    pub tags_dropped: u64,
    rejected: [u64; MAX_REASONS],
    /// The last rejection with some context, for `/health`.
    last_error: Option<String>,
    reason: PhantomData<R>,
}

impl<R: Reason> Default for Tally<R> {
    fn default() -> Self {
        Tally {
            accepted: 0,
            tags_dropped: 0,
            rejected: [0; MAX_REASONS],
            last_error: None,
            reason: PhantomData,
        }
    }
}

impl<R: Reason> Tally<R> {
    pub fn reject(&mut self, reason: R) {
        self.rejected[reason.index()] += 1;
    }

    /// Like `reject`, and keeps a description for `/health`. Only the first of a batch is
    /// described, so a flood of bad input costs no allocation per line.
    pub fn reject_with(&mut self, reason: R, context: impl FnOnce() -> String) {
        self.reject(reason);
        if self.last_error.is_none() {
            self.last_error = Some(format!("{}: {}", reason.label(), context()));
        }
    }

    pub fn rejected(&self, reason: R) -> u64 {
        self.rejected[reason.index()]
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.accepted == 0 && self.tags_dropped == 0 && self.rejected_total() == 0
    }
}

/// Where one channel's outcomes are counted: the ingest self-metrics and its `/health` entry.
#[derive(Clone)]
pub struct Counters<R: Reason> {
    metrics: Arc<Metrics>,
    health: SourceHealth,
    /// The channel's series of samples accepted, resolved at its first flush (so it appears
    /// with the first sample, as before) and then updated without a label lookup.
    accepted: OnceLock<Option<BoundCounter>>,
    /// The channel's last-sample time, resolved at its first flush that accepted a sample.
    last_sample: OnceLock<Option<BoundGauge>>,
    reason: PhantomData<R>,
}

impl<R: Reason> Counters<R> {
    pub fn new(metrics: Arc<Metrics>, health: SourceHealth) -> Counters<R> {
        Counters {
            metrics,
            health,
            accepted: OnceLock::new(),
            last_sample: OnceLock::new(),
            reason: PhantomData,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn health(&self) -> &SourceHealth {
        &self.health
    }

    pub fn flush(&self, tally: &mut Tally<R>) {
        let own = self.metrics.own();
        if tally.accepted > 0 {
            let accepted = self
                .accepted
                .get_or_init(|| own.samples_accepted.bind(&[R::CHANNEL]).ok());
            match accepted {
                Some(c) => c.add(tally.accepted),
                None => own.samples_accepted.add(&[R::CHANNEL], tally.accepted),
            }
            if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
                let now = now.as_secs_f64();
                let last_sample = self
                    .last_sample
                    .get_or_init(|| own.last_sample.bind(&[R::CHANNEL], now).ok());
                match last_sample {
                    Some(g) => g.set(now),
                    None => {
                        let _ = own.last_sample.set(&[R::CHANNEL], now);
                    }
                }
            }
        }
        if tally.tags_dropped > 0 {
            own.tags_dropped.add(&[], tally.tags_dropped);
        }
        for reason in R::ALL {
            let n = std::mem::take(&mut tally.rejected[reason.index()]);
            if n > 0 {
                own.rejected.add(&[R::CHANNEL, reason.label()], n);
            }
        }
        if let Some(e) = tally.last_error.take() {
            self.health.error(e);
        }
        tally.accepted = 0;
        tally.tags_dropped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::ingest::reason::StatsdReason;
    use crate::metrics::Limits;
    use crate::schema::Schema;

    fn unix_now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    #[test]
    fn every_flush_that_accepted_moves_the_last_sample_time() {
        let schema = Schema::parse(&crate::schema::test_schema_toml(
            "tx",
            crate::schema::TEST_METRICS,
        ))
        .expect("schema");
        let metrics = Arc::new(Metrics::new(&schema, Limits::default()).expect("registry"));
        let counters =
            Counters::<StatsdReason>::new(metrics.clone(), Health::default().source("s"));
        let last = || metrics.own().last_sample.value(&[StatsdReason::CHANNEL]);
        let mut tally = Tally::default();
        counters.flush(&mut tally);
        assert_eq!(last(), None, "no sample yet: no series");
        for _ in 0..2 {
            let before = unix_now();
            tally.accepted = 2;
            counters.flush(&mut tally);
            let at = last().expect("set by the flush");
            assert!(before <= at && at <= unix_now(), "{before} {at}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let accepted = metrics
            .own()
            .samples_accepted
            .value(&[StatsdReason::CHANNEL]);
        assert_eq!(accepted, Some(4.0));
    }
}
