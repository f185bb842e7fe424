//! Source states behind `/health`: every source (listener, follower, probe) reports how it
//! is doing, and the exporter is healthy while none has failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::metrics::Gauge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Ok,
    /// Working, but something needs attention (e.g. a probed peer is unreachable).
    Degraded,
    /// Not doing its job: the exporter reports itself unhealthy.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub state: State,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<String>,
}

#[derive(Clone)]
pub struct Health {
    started: Instant,
    sources: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
    /// `<self prefix>source_up{source}`: a failed source shows in /metrics, not only here.
    source_up: Option<Gauge>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            sources: Arc::default(),
            source_up: None,
        }
    }
}

/// A handle one source uses to report its state.
#[derive(Clone)]
pub struct SourceHealth {
    name: String,
    health: Health,
    /// Whether its state is mirrored into `source_up{source=name}`.
    exposed: bool,
}

impl Health {
    /// Health whose sources' states are also served as `source_up{source}`: 1 while ok, 0
    /// while degraded or failed, absent while starting.
    pub fn exposed(source_up: Gauge) -> Health {
        Health {
            source_up: Some(source_up),
            ..Health::default()
        }
    }

    pub fn source(&self, name: &str) -> SourceHealth {
        self.update(name, |s| s.detail = "starting".into());
        SourceHealth {
            name: name.to_owned(),
            health: self.clone(),
            exposed: true,
        }
    }

    /// A source shown on /health only, for one whose `source_up` series its own code writes
    /// (the clock sources, with their own labels).
    pub fn source_unexposed(&self, name: &str) -> SourceHealth {
        SourceHealth {
            exposed: false,
            ..self.source(name)
        }
    }

    /// Forgets a source that no longer exists (a log glob removed by a reload): it leaves
    /// /health and its `source_up` series goes away.
    pub fn remove(&self, name: &str) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(g) = &self.source_up {
            g.remove(&[name]);
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let status = sources
            .entry(name.to_owned())
            .or_insert_with(|| SourceStatus {
                state: State::Starting,
                detail: String::new(),
                last_error: None,
                last_error_time: None,
            });
        f(status);
    }

    pub fn snapshot(&self) -> (bool, BTreeMap<String, SourceStatus>) {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let healthy = sources.values().all(|s| s.state != State::Failed);
        (healthy, sources)
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl SourceHealth {
    pub fn ok(&self, detail: impl Into<String>) {
        let detail = detail.into();
        self.health.update(&self.name, |s| {
            s.state = State::Ok;
            s.detail = detail;
        });
        self.expose(1.0);
    }

    fn expose(&self, up: f64) {
        if let (true, Some(g)) = (self.exposed, &self.health.source_up) {
            let _ = g.set(&[&self.name], up);
        }
    }

    /// The source is gone for good (see [`Health::remove`]).
    pub fn remove(self) {
        self.health.remove(&self.name);
    }

    /// Keeps working but records an error (e.g. one unreachable peer).
    pub fn degraded(&self, detail: impl Into<String>, error: impl Into<String>) {
        self.set(State::Degraded, detail.into(), error.into());
    }

    pub fn failed(&self, detail: impl Into<String>, error: impl Into<String>) {
        self.set(State::Failed, detail.into(), error.into());
    }

    /// Records an error without changing the state (a skipped line, say).
    pub fn error(&self, error: impl Into<String>) {
        let error = error.into();
        self.health.update(&self.name, |s| {
            s.last_error = Some(error);
            s.last_error_time = Some(now());
        });
    }

    fn set(&self, state: State, detail: String, error: String) {
        self.health.update(&self.name, |s| {
            s.state = state;
            s.detail = detail;
            s.last_error = Some(error);
            s.last_error_time = Some(now());
        });
        self.expose(0.0);
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_source_makes_exporter_unhealthy() {
        let health = Health::default();
        let a = health.source("statsd");
        a.ok("listening on 127.0.0.1:8125");
        assert!(health.snapshot().0);
        a.degraded("listening", "one bad peer");
        assert!(health.snapshot().0);
        a.failed("stopped", "socket closed");
        let (healthy, sources) = health.snapshot();
        assert!(!healthy);
        assert_eq!(
            sources["statsd"].last_error.as_deref(),
            Some("socket closed")
        );
    }
}
