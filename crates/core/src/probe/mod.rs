//! What the sidecar measures itself. `Probe` is the one idiom for a periodic measurement, as
//! node_exporter has one collector per file with its own flags: a tier adds one with
//! `Tier::probe::<P>()`. The probes every tier shares live here too: the engine process, the
//! exporter's own process and the derived ratios declared in the schema.

pub mod derived;
pub mod engine;
pub mod process;

use std::time::Duration;

pub use crate::budget::Budgeted;
use crate::config::Settings;
use crate::context::TaskContext;
use crate::metrics::Metrics;
use crate::schema::SchemaError;

/// One periodic measurement: its settings section, the typed handles it writes (bound once at
/// start-up), and a refresh that core runs in the background on a blocking thread under
/// [`Probe::BUDGET`], reporting it as `source_up{source=SOURCE}` and on /health.
pub trait Probe: Clone + Send + Sync + 'static {
    /// Its config section (flags, defaults, validation), registered with the probe; several
    /// probes may share one. [`NoSettings`] when it has none.
    type Settings: Settings;
    /// Its name in /health and `source_up{source}` (one probe per target may refine it with
    /// [`Probe::source`]).
    const SOURCE: &'static str;
    /// Whether core writes `source_up{source}` for it; false for a probe that writes its own
    /// up series under labels of its own (the clock sources): it is then on /health only.
    const EXPOSED: bool = true;
    /// Pause after a refresh.
    const INTERVAL: Duration;
    /// How long a refresh may take; one that overruns is waited for, never started twice,
    /// and everything the probe writes shows as unknown meanwhile.
    const BUDGET: Duration;

    /// Its settings from the configuration: its section (defaults when absent).
    fn settings(config: &crate::config::Config) -> Self::Settings {
        config
            .section::<Self::Settings>()
            .cloned()
            .unwrap_or_default()
    }

    /// Binds the handles it writes: one probe per target its settings name (an NTP server, a
    /// device), none when they leave it off. Each runs on its own, so a dead target delays
    /// nobody else.
    fn bind(settings: &Self::Settings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError>;

    /// Its name on /health: [`Probe::SOURCE`], or one per target.
    fn source(&self) -> String {
        Self::SOURCE.to_owned()
    }

    /// One measurement (blocking calls allowed): writes its handles and returns a short
    /// detail for /health, or why it failed, having marked what it could not measure unknown.
    fn refresh(&self) -> Result<String, String>;

    /// Marks everything it writes unknown: its refresh overran [`Probe::BUDGET`].
    fn unknown(&self);

    /// Pause after a refresh that took `took` (a slow walk may ask for more).
    fn pause(&self, took: Duration) -> Duration {
        let _ = took;
        Self::INTERVAL
    }
}

/// Settings of a probe that has none: no section is registered for it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl Settings for NoSettings {
    const SECTION: &'static str = "";
    const FLAGS: &'static [crate::config::Flag] = &[];
}

/// Binds `P` from the configuration: the task `Tier::probe` adds.
pub(crate) fn start<P: Probe>(
    ctx: TaskContext,
) -> Result<impl std::future::Future<Output = ()>, SchemaError> {
    let probes = P::bind(&P::settings(&ctx.config), &ctx.metrics)?;
    Ok(async move {
        let mut running = tokio::task::JoinSet::new();
        for probe in probes {
            running.spawn(run(probe, ctx.clone()));
        }
        while running.join_next().await.is_some() {}
    })
}

/// Refreshes `probe` until shutdown, reporting each refresh on /health.
pub(crate) async fn run<P: Probe>(probe: P, mut ctx: TaskContext) {
    let name = probe.source();
    let health = if P::EXPOSED {
        ctx.health.source(&name)
    } else {
        ctx.health.source_unexposed(&name)
    };
    let mut refresh = Budgeted::new(P::BUDGET);
    loop {
        let started = std::time::Instant::now();
        let p = probe.clone();
        let refreshed = refresh.run(move || {
            let span = tracing::info_span!(target: "probe", "probe.refresh", source = P::SOURCE, target = %p.source(), ok = tracing::field::Empty);
            let _in_span = span.enter();
            let r = p.refresh();
            span.record("ok", r.is_ok());
            r
        });
        // A long budget (a walk of a large tree) must not hold up shutdown.
        let result = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            r = refreshed => r,
        };
        match result {
            Ok(Ok(detail)) => health.ok(detail),
            Ok(Err(e)) => health.degraded(format!("{name} failed"), e),
            Err(e) => {
                probe.unknown();
                health.degraded(format!("{name} probe hung"), format!("its refresh {e}"));
            }
        }
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            _ = tokio::time::sleep(probe.pause(started.elapsed())) => {}
        }
    }
}
