//! Derived gauges (`source = "derived"` in the schema): ratios the exporter computes from its
//! own metrics, e.g. conflicts per received event over the last five minutes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::context::TaskContext;
use crate::metrics::{Gauge, Metric, Metrics};
use crate::schema::{Derived, Schema, SchemaError, Source};

/// How often derived values are recomputed.
pub const REFRESH: Duration = Duration::from_secs(5);

/// One derived gauge: where it reads and writes.
struct DerivedGauge {
    target: Gauge,
    numerator: Metric,
    denominator: Metric,
    window: Window,
}

/// The arithmetic of one derived gauge over its sliding window.
struct Window {
    rule: Derived,
    counters: bool,
    samples: VecDeque<(Instant, f64, f64)>,
}

impl Window {
    /// Records the current inputs and returns the derived value (NaN when undefined).
    fn update(&mut self, now: Instant, num: f64, den: f64) -> f64 {
        if !self.counters {
            return ratio(num, den, self.rule.scale);
        }
        let window = Duration::from_secs(self.rule.window_seconds);
        self.samples.push_back((now, num, den));
        // Keep one sample at or before the window start as the baseline.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
        let (_, num0, den0) = self.samples[0];
        ratio(num - num0, den - den0, self.rule.scale)
    }
}

fn ratio(num: f64, den: f64, scale: f64) -> f64 {
    if den > 0.0 && num.is_finite() {
        scale * num / den
    } else {
        f64::NAN
    }
}

/// A window per derived gauge of the schema, its inputs resolved to handles.
fn resolve(metrics: &Metrics, schema: &Schema) -> Result<Vec<DerivedGauge>, SchemaError> {
    let mut out = Vec::new();
    for def in schema
        .metrics
        .iter()
        .filter(|m| m.source == Source::Derived)
    {
        let Some(rule) = def.derived.clone() else {
            continue;
        };
        let input = |name: &str| {
            metrics
                .get(name)
                .cloned()
                .ok_or_else(|| SchemaError::metric(&def.name, format!("no input {name}")))
        };
        let numerator = input(&rule.numerator)?;
        let denominator = input(&rule.denominator)?;
        out.push(DerivedGauge {
            target: metrics.gauge(&def.name)?,
            window: Window {
                counters: matches!(numerator, Metric::Counter(_)),
                rule,
                samples: VecDeque::new(),
            },
            denominator,
            numerator,
        });
    }
    Ok(out)
}

/// Resolves every derived gauge of the schema; the returned task recomputes them every
/// [`REFRESH`].
pub fn start(
    ctx: TaskContext,
) -> Result<Option<impl std::future::Future<Output = ()>>, SchemaError> {
    let gauges = resolve(&ctx.metrics, &ctx.schema)?;
    Ok((!gauges.is_empty()).then(|| run(ctx, gauges)))
}

async fn run(mut ctx: TaskContext, mut gauges: Vec<DerivedGauge>) {
    loop {
        let now = Instant::now();
        for w in &mut gauges {
            let (Some(num), Some(den)) = (w.numerator.value(&[]), w.denominator.value(&[])) else {
                continue;
            };
            let v = w.window.update(now, num, den);
            let _ = if v.is_finite() {
                w.target.set(&[], v)
            } else {
                w.target.set_unknown(&[])
            };
        }
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(counters: bool) -> Window {
        Window {
            rule: Derived {
                numerator: "n".into(),
                denominator: "d".into(),
                window_seconds: 300,
                scale: 100.0,
            },
            counters,
            samples: VecDeque::new(),
        }
    }

    #[test]
    fn counter_ratio_uses_increases_over_the_window() {
        let mut w = window(true);
        let t0 = Instant::now();
        assert!(w.update(t0, 0.0, 0.0).is_nan(), "no events yet: undefined");
        assert_eq!(w.update(t0 + Duration::from_secs(60), 5.0, 100.0), 5.0);
        // Five minutes later only the increase since the baseline counts.
        let t = t0 + Duration::from_secs(420);
        assert_eq!(w.update(t, 6.0, 200.0), 1.0);
        // No traffic for a whole window: undefined again, not 0.
        let t = t + Duration::from_secs(400);
        w.update(t, 6.0, 200.0);
        assert!(w.update(t + Duration::from_secs(5), 6.0, 200.0).is_nan());
    }

    #[test]
    fn gauge_ratio_uses_current_values() {
        let mut w = window(false);
        w.rule.scale = 1.0;
        assert_eq!(w.update(Instant::now(), 300.0, 100.0), 3.0);
        assert!(w.update(Instant::now(), 300.0, 0.0).is_nan());
    }
}
