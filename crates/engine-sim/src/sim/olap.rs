//! The OLAP engine: queries, compactions, its cache, rows and partitions, and the bytes it
//! really writes into its data directory.

use super::*;

pub(super) struct OlapEngine {
    pub(super) io: Io,
    pub(super) running: WalkState,
    pub(super) cache_size: WalkState,
    pub(super) rows: WalkState,
    pub(super) compression: WalkState,
    pub(super) partitions: WalkState,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) bytes_written: u64,
    pub(super) pending_write: f64,
    pub(super) data: Option<DataDir>,
    pub(super) started: bool,
}

/// The gauges one tick moved.
struct OlapGauges {
    running: f64,
    cache_size: f64,
    rows: f64,
    compression: f64,
    partitions: f64,
}

const SELF_ID: &str = "olap-1";

impl OlapEngine {
    /// The events of one tick: the log's first compaction, then queries and compactions.
    fn log_events(&mut self, rng: &mut Rng, p: &Params, host: &str, dt: f64, partitions: f64) {
        let (c, e, self_id) = (&p.olap, self, SELF_ID);
        if !e.started {
            // The engine's log starts with its most recent compaction.
            e.started = true;
            let at = SystemTime::now() - Duration::from_secs_f64(c.last_compaction_age_s.max(0.0));
            let mut ev = Event::new("compaction_completed", at, "info", "olap", host);
            ev.str_field("server_id", self_id)
                .num_field("duration_ms", latency(rng, &c.compaction_ms))
                .num_field(
                    "bytes",
                    rng.lognormal(c.compaction_bytes.median, c.compaction_bytes.sigma)
                        .round(),
                );
            e.io.push(ev);
        }
        for _ in 0..rng.poisson(c.queries_per_s * dt) {
            let duration = latency(rng, &c.query_ms);
            if rng.chance(c.query_failure_ratio) {
                let mut ev = e.io.event("query_failed", "error", host, self_id);
                ev.num_field("duration_ms", duration);
                traced(&mut ev, rng, p.trace_ratio);
                e.io.push(ev);
                continue;
            }
            let mut ev = e.io.event("query_completed", "info", host, self_id);
            // Slower queries read more: about 200 MB/s of scan.
            ev.num_field("duration_ms", duration)
                .num_field("bytes_read", (duration * 2.0e5).round())
                .num_field("partitions_pruned", rng.poisson(partitions * 0.8) as f64)
                .num_field("columns_pruned", rng.poisson(12.0) as f64);
            traced(&mut ev, rng, p.trace_ratio);
            e.io.push(ev);
        }
        for _ in 0..rng.poisson(c.compactions_per_s * dt) {
            let mut ev = e.io.event("compaction_completed", "info", host, self_id);
            ev.num_field("duration_ms", latency(rng, &c.compaction_ms))
                .num_field(
                    "bytes",
                    rng.lognormal(c.compaction_bytes.median, c.compaction_bytes.sigma)
                        .round(),
                );
            e.io.push(ev);
        }
    }

    /// What the engine's metrics client pushes at a flush.
    fn push_metrics(&mut self, c: &crate::scenario::Olap, g: &OlapGauges) {
        let Some(st) = &mut self.io.statsd else {
            return;
        };
        let uncompressed = (g.rows * c.bytes_per_row).round();
        st.gauge("olap_total_rows", g.rows, "");
        st.gauge("olap_total_bytes_uncompressed", uncompressed, "");
        st.gauge(
            "olap_total_bytes_compressed",
            (uncompressed / g.compression.max(1.0)).round(),
            "",
        );
        st.gauge("olap_partitions", g.partitions, "");
        st.gauge(
            "olap_partitions_active",
            (g.partitions * c.partitions_active_share).round(),
            "",
        );
        st.gauge(
            "olap_partitions_cold",
            (g.partitions * c.partitions_cold_share).round(),
            "",
        );
        st.gauge("olap_compactions_running", g.running, "");
        st.gauge("olap_cache_size_bytes", g.cache_size.round(), "");
        st.counter("olap_cache_hits_total", std::mem::take(&mut self.hits));
        st.counter("olap_cache_misses_total", std::mem::take(&mut self.misses));
        st.counter(
            "olap_bytes_written_total",
            std::mem::take(&mut self.bytes_written),
        );
        st.flush();
    }

    pub(super) fn new(
        t: &Target,
        p: &Params,
        data_dir: Option<&std::path::Path>,
        max_fill: u64,
    ) -> std::io::Result<OlapEngine> {
        Ok(OlapEngine {
            io: Io::new(t, "olap")?,
            running: WalkState::new(&p.olap.compactions_running),
            cache_size: WalkState::new(&p.olap.cache_size_bytes),
            rows: WalkState::new(&p.olap.total_rows),
            compression: WalkState::new(&p.olap.compression_ratio),
            partitions: WalkState::new(&p.olap.partitions),
            hits: 0,
            misses: 0,
            bytes_written: 0,
            pending_write: 0.0,
            data: data_dir.map(|d| DataDir::new(d, max_fill)).transpose()?,
            started: false,
        })
    }
}

impl Sim {
    pub(super) fn tick_olap(&mut self, p: &Params, dt: f64, flush: bool) {
        let Some(e) = &mut self.olap else { return };
        let c = &p.olap;
        let rng = &mut self.rng;
        if let Some(n) = e.io.set_up(c.up) {
            say(&n);
        }
        let gauges = OlapGauges {
            running: e.running.step(&c.compactions_running, dt, rng).round(),
            cache_size: e.cache_size.step(&c.cache_size_bytes, dt, rng),
            rows: e.rows.step(&c.total_rows, dt, rng).round(),
            compression: e.compression.step(&c.compression_ratio, dt, rng),
            partitions: e.partitions.step(&c.partitions, dt, rng).round(),
        };
        if let Some(d) = &mut e.data {
            if let Some(msg) = d.maintain_fill(c.fill_ratio) {
                say(&msg);
            }
        }
        if !c.up {
            return;
        }
        e.log_events(rng, p, &self.cfg.host, dt, gauges.partitions);
        for _ in 0..rng.poisson(c.cache_lookups_per_s * dt) {
            if rng.chance(c.cache_hit_ratio) {
                e.hits += 1;
            } else {
                e.misses += 1;
            }
        }
        e.pending_write += c.write_bytes_per_s * dt;
        if flush {
            let bytes = e.pending_write as u64;
            e.pending_write -= bytes as f64;
            e.bytes_written += match &mut e.data {
                Some(d) => d.write(bytes),
                None => bytes,
            };
        }
        e.io.flush_log();
        if flush {
            e.push_metrics(c, &gauges);
        }
    }
}
