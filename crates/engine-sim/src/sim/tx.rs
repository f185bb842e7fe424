//! A TX engine: commits and aborts with their latencies, connections, its cache, replication
//! to its peers, and its clock as the TX engine sees it.

use super::*;

pub(super) struct TxEngine {
    pub(super) io: Io,
    pub(super) server_id: String,
    pub(super) cache_size: WalkState,
    pub(super) active: WalkState,
    pub(super) idle: WalkState,
    pub(super) queue: WalkState,
    pub(super) lag: WalkState,
    pub(super) uncertainty: WalkState,
    pub(super) offset: WalkState,
    pub(super) hits: u64,
    pub(super) misses: u64,
}

impl TxEngine {
    pub(super) fn new(i: usize, t: &Target, p: &Params) -> std::io::Result<TxEngine> {
        Ok(TxEngine {
            io: Io::new(t, "tx-engine")?,
            server_id: format!("tx-{}", i + 1),
            cache_size: WalkState::new(&p.tx.cache_size_bytes),
            active: WalkState::new(&p.tx.connections_active),
            idle: WalkState::new(&p.tx.connections_idle),
            queue: WalkState::new(&p.tx.replication_queue_depth),
            lag: WalkState::new(&p.tx.replication_lag_s),
            uncertainty: WalkState::new(&p.tx.clock_uncertainty_s),
            offset: WalkState::new(&p.tx.clock_offset_s),
            hits: 0,
            misses: 0,
        })
    }
}

impl Sim {
    pub(super) fn tick_tx(&mut self, p: &Params, dt: f64, flush: bool) {
        let c = &p.tx;
        let host = self.cfg.host.clone();
        let rng = &mut self.rng;
        for e in &mut self.tx {
            if let Some(n) = e.io.set_up(c.up) {
                say(&n);
            }
            // Walks move whether or not the engine is up, so a restart resumes plausibly.
            let cache_size = e.cache_size.step(&c.cache_size_bytes, dt, rng);
            let active = e.active.step(&c.connections_active, dt, rng);
            let idle = e.idle.step(&c.connections_idle, dt, rng);
            let queue = e.queue.step(&c.replication_queue_depth, dt, rng);
            let lag = e.lag.step(&c.replication_lag_s, dt, rng);
            let unc = e.uncertainty.step(&c.clock_uncertainty_s, dt, rng);
            let offset = e.offset.step(&c.clock_offset_s, dt, rng);
            if !c.up || !c.pushes {
                continue;
            }
            for _ in 0..rng.poisson(c.transactions_per_s * dt) {
                let rolled_back = rng.chance(c.rollback_ratio);
                let (name, level) = if rolled_back {
                    ("transaction_rolled_back", "warn")
                } else {
                    ("transaction_committed", "info")
                };
                let mut ev = e.io.event(name, level, &host, &e.server_id);
                ev.num_field("duration_ms", latency(rng, &c.transaction_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.queries_per_s * dt) {
                let mut ev = e.io.event("query_executed", "debug", &host, &e.server_id);
                ev.num_field("duration_ms", latency(rng, &c.query_ms));
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.heartbeats_missed_per_s * dt) {
                let ev =
                    e.io.event("clock_heartbeat_missed", "warn", &host, &e.server_id);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.replication_batches_per_s * dt) {
                let per_batch = c.transactions_per_s * 3.0 / c.replication_batches_per_s.max(0.1);
                let count = rng.poisson(per_batch).max(1);
                let mut ev =
                    e.io.event("replication_events_sent", "debug", &host, &e.server_id);
                ev.num_field("count", count as f64);
                e.io.push(ev);
            }
            for _ in 0..rng.poisson(c.cache_lookups_per_s * dt) {
                if rng.chance(c.cache_hit_ratio) {
                    e.hits += 1;
                } else {
                    e.misses += 1;
                }
            }
            e.io.flush_log();
            if let (true, Some(st)) = (flush, &mut e.io.statsd) {
                st.counter("tx_engine_cache_hits_total", std::mem::take(&mut e.hits));
                st.counter(
                    "tx_engine_cache_misses_total",
                    std::mem::take(&mut e.misses),
                );
                st.gauge("tx_engine_cache_size_bytes", cache_size.round(), "");
                st.gauge("tx_engine_connections_active", active.round(), "");
                st.gauge("tx_engine_connections_idle", idle.round(), "");
                st.gauge("tx_engine_replication_queue_depth", queue.round(), "");
                st.gauge("tx_engine_replication_lag_seconds", lag, "");
                st.gauge("tx_engine_clock_uncertainty_seconds", unc, "");
                st.gauge("tx_engine_clock_offset_seconds", offset, "");
                st.flush();
            }
        }
    }
}
