//! The ingestion engine: batches from every TX engine, merges, and pushes to OLAP.

use super::*;

pub(super) struct IngestionEngine {
    pub(super) io: Io,
    pub(super) merge_queue: WalkState,
    pub(super) push_queue: WalkState,
    pub(super) push_lag: WalkState,
    pub(super) lag_by_source: Vec<WalkState>,
}

impl IngestionEngine {
    /// `sources`: how many TX engines feed it (one lag series each).
    pub(super) fn new(t: &Target, p: &Params, sources: usize) -> std::io::Result<IngestionEngine> {
        Ok(IngestionEngine {
            io: Io::new(t, "ingestion")?,
            merge_queue: WalkState::new(&p.ingestion.merge_queue_depth),
            push_queue: WalkState::new(&p.ingestion.olap_push_queue_depth),
            push_lag: WalkState::new(&p.ingestion.olap_push_lag_s),
            lag_by_source: (0..sources)
                .map(|_| WalkState::new(&p.ingestion.lag_by_source_s))
                .collect(),
        })
    }
}

impl Sim {
    pub(super) fn tick_ingestion(&mut self, p: &Params, dt: f64, flush: bool) {
        let Some(e) = &mut self.ingestion else { return };
        let c = &p.ingestion;
        let rng = &mut self.rng;
        let host = &self.cfg.host;
        if let Some(n) = e.io.set_up(c.up) {
            say(&n);
        }
        let merge_queue = e.merge_queue.step(&c.merge_queue_depth, dt, rng);
        let push_queue = e.push_queue.step(&c.olap_push_queue_depth, dt, rng);
        let push_lag = e.push_lag.step(&c.olap_push_lag_s, dt, rng);
        let lags: Vec<f64> = e
            .lag_by_source
            .iter_mut()
            .map(|w| w.step(&c.lag_by_source_s, dt, rng))
            .collect();
        if !c.up {
            return;
        }
        // Change events come from the TX engines: none arrive from an engine that is down.
        let sources = if self.cfg.tx.is_empty() || p.tx.up {
            self.cfg.tx.len().max(1)
        } else {
            0
        };
        let rate = if sources == 0 { 0.0 } else { c.events_per_s };
        let self_id = "ingestion-1";
        for _ in 0..rng.poisson(rate * dt) {
            let source = format!("tx-{}", rng.below(sources) + 1);
            // The contract reads the change's origin from server_id on this event.
            let ev = e.io.event("event_received", "debug", host, &source);
            e.io.push(ev);
            if rng.chance(c.validation_failure_ratio) {
                let ev = e.io.event("validation_failed", "warn", host, self_id);
                e.io.push(ev);
                continue;
            }
            if rng.chance(c.duplicate_ratio) {
                let ev = e.io.event("duplicate_skipped", "debug", host, self_id);
                e.io.push(ev);
                continue;
            }
            if rng.chance(c.conflict_ratio) {
                let ev = e.io.event("conflict_detected", "warn", host, self_id);
                e.io.push(ev);
                if rng.chance(c.conflict_resolved_ratio) {
                    let ev = e.io.event("conflict_resolved", "info", host, self_id);
                    e.io.push(ev);
                }
            }
            if rng.chance(c.failure_ratio) {
                let ev = e.io.event("event_failed", "error", host, self_id);
                e.io.push(ev);
            } else {
                let mut ev = e.io.event("event_processed", "debug", host, self_id);
                ev.num_field("duration_ms", latency(rng, &c.processing_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
        }
        for _ in 0..rng.poisson(c.olap_batches_per_s * dt) {
            let mut ev = e.io.event("olap_batch_pushed", "info", host, self_id);
            ev.num_field("duration_ms", latency(rng, &c.olap_push_ms));
            traced(&mut ev, rng, p.trace_ratio);
            e.io.push(ev);
        }
        e.io.flush_log();
        if let (true, Some(st)) = (flush, &mut e.io.statsd) {
            st.gauge("ingestion_merge_queue_depth", merge_queue.round(), "");
            st.gauge("ingestion_olap_push_queue_depth", push_queue.round(), "");
            st.gauge("ingestion_olap_push_lag_seconds", push_lag, "");
            for (i, lag) in lags.iter().enumerate() {
                let tags = format!("server_id:tx-{}", i + 1);
                st.gauge("ingestion_lag_by_source_seconds", *lag, &tags);
            }
            st.flush();
        }
    }
}
