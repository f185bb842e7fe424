//! Per-batch bookkeeping of accepted and rejected samples, flushed to the self-metrics once
//! per datagram or read chunk so the hot path does not touch labelled families per sample.

use std::sync::Arc;

use crate::health::SourceHealth;
use crate::metrics::{Metric, Metrics};

/// Rejection reasons are a small closed set, so a short linear list beats a map.
#[derive(Default)]
pub struct Tally {
    pub accepted: u64,
    pub tags_dropped: u64,
    rejected: Vec<(&'static str, u64)>,
    /// The last rejection with some context, for `/health`.
    last_error: Option<String>,
}

impl Tally {
    pub fn reject(&mut self, reason: &'static str) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }

    /// Like `reject`, and keeps a description for `/health`. Only the first of a batch is
    /// described, so a flood of bad input costs no allocation per line.
    pub fn reject_with(&mut self, reason: &'static str, context: impl FnOnce() -> String) {
        self.reject(reason);
        if self.last_error.is_none() {
            self.last_error = Some(context());
        }
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.accepted == 0 && self.tags_dropped == 0 && self.rejected.is_empty()
    }
}

/// Handles on the self-metrics one source feeds.
#[derive(Clone)]
pub struct Counters {
    metrics: Arc<Metrics>,
    source: &'static str,
    health: SourceHealth,
}

impl Counters {
    pub fn new(metrics: Arc<Metrics>, source: &'static str, health: SourceHealth) -> Counters {
        let c = Counters {
            metrics,
            source,
            health,
        };
        // Expose the accepted series at zero from the start, so rates work from the first
        // sample on.
        c.inc("ingest_samples_accepted_total", &[source], 0.0);
        c
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn health(&self) -> &SourceHealth {
        &self.health
    }

    pub fn self_metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.self_metric(name)
    }

    /// Adds to a self-metric counter; self-metrics are declared by us, so a failure here is
    /// a schema bug, not bad input, and is only logged.
    pub fn inc(&self, name: &str, labels: &[&str], v: f64) {
        match self.metrics.self_metric(name) {
            Some(m) => {
                if let Err(e) = m.inc_by(labels, v) {
                    tracing::warn!(target: "ingest", metric = name, error = %e, "self-metric update failed");
                }
            }
            None => tracing::warn!(target: "ingest", metric = name, "self-metric missing"),
        }
    }

    pub fn set(&self, name: &str, labels: &[&str], v: f64) {
        if let Some(m) = self.metrics.self_metric(name) {
            let _ = m.set(labels, v);
        }
    }

    pub fn flush(&self, tally: &mut Tally) {
        if tally.accepted > 0 {
            self.inc(
                "ingest_samples_accepted_total",
                &[self.source],
                tally.accepted as f64,
            );
        }
        if tally.tags_dropped > 0 {
            self.inc("ingest_tags_dropped_total", &[], tally.tags_dropped as f64);
        }
        for (reason, n) in tally.rejected.drain(..) {
            self.inc("ingest_rejected_total", &[self.source, reason], n as f64);
        }
        if let Some(e) = tally.last_error.take() {
            self.health.error(e);
        }
        tally.accepted = 0;
        tally.tags_dropped = 0;
    }
}
