//! A bounded random walk: how a simulated gauge (a queue depth, a lag, a cache size) drifts
//! and jitters between its scenario's bounds from one tick to the next.

use crate::rng::Rng;
use crate::scenario::Walk;

/// Where one walk stands now.
pub(crate) struct WalkState(f64);

impl WalkState {
    pub(crate) fn new(w: &Walk) -> WalkState {
        WalkState(w.start.clamp(w.min, w.max.max(w.min)))
    }

    /// The current value, rounded (a count).
    pub(crate) fn rounded(&self) -> f64 {
        self.0.round()
    }

    pub(crate) fn step(&mut self, w: &Walk, dt: f64, rng: &mut Rng) -> f64 {
        let (lo, hi) = (w.min, w.max.max(w.min));
        let mut v = self.0 + w.drift * dt + w.step * dt.sqrt() * rng.normal();
        // Reflect at the bounds so a walk does not stick to them, then clamp.
        if v < lo {
            v = lo + (lo - v);
        }
        if v > hi {
            v = hi - (v - hi);
        }
        self.0 = v.clamp(lo, hi);
        self.0
    }
}
