//! A clock master: heartbeats, its clients, and the primary among the masters.

use super::*;

pub(super) struct ClockEngine {
    pub(super) io: Io,
    pub(super) clients: WalkState,
    pub(super) heartbeats: u64,
}

impl ClockEngine {
    pub(super) fn new(t: &Target, p: &Params) -> std::io::Result<ClockEngine> {
        Ok(ClockEngine {
            io: Io::new(t, "clock-master")?,
            clients: WalkState::new(&p.clock.clients_connected),
            heartbeats: 0,
        })
    }
}

impl Sim {
    pub(super) fn tick_clock(&mut self, p: &Params, dt: f64, flush: bool) {
        let c = &p.clock;
        if let Some(n) = &self.ntp {
            n.serving.store(c.up && c.serve_ntp, Ordering::Relaxed);
        }
        let rng = &mut self.rng;
        for (i, e) in self.clock.iter_mut().enumerate() {
            if let Some(n) = e.io.set_up(c.up) {
                say(&n);
            }
            let clients = e.clients.step(&c.clients_connected, dt, rng).round();
            if !c.up {
                continue;
            }
            // A standby serves no clients and sends no heartbeats until it is made primary.
            let primary = i == c.primary;
            if primary {
                e.heartbeats += rng.poisson(c.heartbeats_per_s * dt);
            }
            if let (true, Some(st)) = (flush, &mut e.io.statsd) {
                st.counter(
                    "clock_master_heartbeats_sent_total",
                    std::mem::take(&mut e.heartbeats),
                );
                st.gauge("clock_master_primary", if primary { 1.0 } else { 0.0 }, "");
                st.gauge(
                    "clock_master_clients_connected",
                    if primary { clients } else { 0.0 },
                    "",
                );
                st.flush();
            }
        }
    }
}
