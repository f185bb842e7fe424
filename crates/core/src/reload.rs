//! Configuration reload (SIGHUP, or `POST /-/reload` with `--web.enable-lifecycle`): the
//! config file and the web config are read again and what can change in place is applied at
//! once, or nothing is. Counters, series and log positions are kept.
//!
//! What can change: the web config (users, TLS certificates and parameters, headers), the
//! followed log globs, `read_from_start`, `max_line_bytes`, the series limit and expiries, and
//! the event rules. Anything else (listen address, telemetry path, sockets, tier sections...)
//! needs a restart: a reload that changes it is refused and says which key.

use std::ffi::OsString;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{self, Config, SectionSpec};
use crate::ingest::events::EventMapper;
use crate::ingest::logtail::{self, Reconfigure};
use crate::metrics::{Limits, Metrics};
use crate::schema::{Schema, TierInfo};
use crate::web_config::{self, LiveWeb};

/// Keys a reload applies in place; every other key must be unchanged.
pub const RELOADABLE: &[&str] = &[
    "web.config_file",
    "ingest.log_path",
    "ingest.read_from_start",
    "ingest.max_line_bytes",
    "ingest.log_max_read_bytes_per_second",
    "ingest.log_max_open_files",
    "ingest.log_rotate_wait_seconds",
    "ingest.log_path_series_limit",
    "ingest.series_limit",
    "ingest.series_ttl_seconds",
    "ingest.gauge_stale_seconds",
    "events",
];

/// What a reload needs to rebuild and where it applies the result.
pub struct Reloader {
    pub tier: TierInfo,
    pub sections: Vec<SectionSpec>,
    /// The command line of this process: flags still override the file after a reload.
    pub args: Vec<OsString>,
    /// The tier's schema before the configured event rules were added.
    pub base_schema: Schema,
    pub running: Config,
    pub metrics: Arc<Metrics>,
    pub web: Arc<LiveWeb>,
    pub tls: Option<axum_server::tls_rustls::RustlsConfig>,
    pub follower: Option<Sender<Reconfigure>>,
}

/// A reload request (from `POST /-/reload` or SIGHUP) to the reloader; the reply, when
/// someone waits for it, says whether it was applied.
pub type ReloadRequest = Option<tokio::sync::oneshot::Sender<Result<(), ReloadError>>>;

/// Why a reload was refused; the previous configuration keeps running. The text is what
/// `POST /-/reload` answers and the log says.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("the command line asks for --help")]
    AsksForHelp,
    #[error("{} changed, which needs a restart", .0.join(", "))]
    RestartOnly(Vec<String>),
    #[error("events: {0}")]
    Events(#[from] crate::schema::SchemaError),
    #[error(transparent)]
    WebConfig(#[from] web_config::WebConfigError),
    #[error("web config: turning TLS on or off needs a restart")]
    TlsToggled,
    #[error("web config: the new configuration has no basic_auth_users; turning authentication off needs a restart")]
    AuthDropped,
    #[error("ingest.log_path: {0}")]
    LogPath(String),
    #[error("ingest.log_path: no event log was followed at start-up; starting to follow one needs a restart")]
    FollowerNotStarted,
}

impl Reloader {
    /// Serves reload requests one at a time until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<ReloadRequest>) {
        self.record(true);
        while let Some(reply) = requests.recv().await {
            let result = self.reload();
            match &result {
                Ok(()) => {
                    tracing::info!(target: "main", event = "config_reloaded", "configuration reloaded")
                }
                Err(e) => {
                    tracing::error!(target: "main", event = "config_reload_failed", error = %e, "configuration reload refused; the previous configuration keeps running")
                }
            }
            self.record(result.is_ok());
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    fn record(&self, ok: bool) {
        let own = self.metrics.own();
        let _ = own.reload_successful.set(&[], if ok { 1.0 } else { 0.0 });
        if ok {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let _ = own.reload_success_time.set(&[], now.as_secs_f64());
        }
    }

    /// Loads and checks everything first; applies only when all of it is good.
    fn reload(&mut self) -> Result<(), ReloadError> {
        let loaded = match config::load(&self.tier, &self.sections, self.args.iter().cloned())? {
            config::Invocation::Run(loaded) => *loaded,
            // The command line is the one the exporter started with, which ran.
            config::Invocation::Print(_) => return Err(ReloadError::AsksForHelp),
        };
        let new = loaded.config;
        let fixed = restart_only_changes(&self.running, &new);
        if !fixed.is_empty() {
            return Err(ReloadError::RestartOnly(fixed));
        }
        let mut schema = self.base_schema.clone();
        schema.add_event_rules(new.events.clone())?;
        let mapper = EventMapper::new(&self.metrics, &schema)?;
        let security = match &new.web.config_file {
            Some(path) => Some(web_config::load(path)?),
            None => None,
        };
        let tls = security.as_ref().and_then(|s| s.tls.clone());
        if tls.is_some() != self.tls.is_some() {
            return Err(ReloadError::TlsToggled);
        }
        // A truncated web config file, a config.toml without its [web] table: a reload must
        // never drop authentication silently. Turning it off is a restart, which is logged.
        let new_auth = security.as_ref().is_some_and(|s| s.auth.is_some());
        if self.web.auth.load().is_some() && !new_auth {
            return Err(ReloadError::AuthDropped);
        }
        logtail::check_globs(&new.ingest.log_path).map_err(ReloadError::LogPath)?;
        if self.follower.is_none() && !new.ingest.log_path.is_empty() {
            return Err(ReloadError::FollowerNotStarted);
        }

        // Everything checked: apply.
        if let (Some(running), Some(new)) = (&self.tls, tls) {
            running.reload_from_config(new);
        }
        let (auth, headers) = match security {
            Some(s) => (s.auth.map(Arc::new), s.headers),
            None => (None, Vec::new()),
        };
        if let (Some(new), Some(old)) = (&auth, self.web.auth.load_full()) {
            new.inherit(&old);
        }
        self.web.auth.store(auth);
        self.web.headers.store(Arc::new(headers));
        self.metrics.set_limits(limits(&new));
        if let Some(follower) = &self.follower {
            let _ = follower.send(Reconfigure {
                globs: new.ingest.log_path.clone(),
                read_from_start: new.ingest.read_from_start,
                max_line_bytes: new.ingest.max_line_bytes,
                max_read_bytes_per_second: new.ingest.log_max_read_bytes_per_second,
                limits: logtail::limits(&new.ingest),
                mapper: Arc::new(mapper),
            });
        }
        self.running = new;
        Ok(())
    }
}

/// The registry limits a configuration asks for.
pub fn limits(config: &Config) -> Limits {
    let seconds = |n: u64| (n > 0).then(|| Duration::from_secs(n));
    Limits {
        series_limit: config.ingest.series_limit,
        series_ttl: seconds(config.ingest.series_ttl_seconds),
        gauge_stale: seconds(config.ingest.gauge_stale_seconds),
    }
}

/// Keys (dotted, as in the file) whose value differs and that a reload cannot apply.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &as_json(old), &mut a);
    flatten("", &as_json(new), &mut b);
    let mut keys: Vec<String> = a
        .iter()
        .chain(&b)
        .map(|(k, _)| k.clone())
        .filter(|k| !RELOADABLE.contains(&k.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    let value = |v: &[(String, serde_json::Value)], k: &str| {
        v.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    keys.retain(|k| value(&a, k) != value(&b, k));
    keys
}

fn as_json(config: &Config) -> serde_json::Value {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for (name, section) in config.sections.shown() {
            map.insert(name.to_owned(), section.clone());
        }
    }
    value
}

/// Leaves of nested tables as (`a.b.c`, value); arrays are leaves.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value.as_object() {
        Some(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        None => out.push((prefix.to_owned(), value.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::test_schema_toml;

    #[test]
    fn only_keys_a_reload_cannot_apply_are_named() {
        let schema = Schema::parse(&test_schema_toml("tx", "")).expect("schema");
        let old = Config::defaults(&schema.tier);
        let mut new = old.clone();
        new.ingest.series_limit = 5;
        new.ingest.log_path = vec!["/tmp/x/*.log".into()];
        new.web.config_file = Some("/etc/web.yml".into());
        assert!(restart_only_changes(&old, &new).is_empty());
        new.web.listen_address = "127.0.0.1:1".into();
        new.engine.process_name = Some("engine".into());
        assert_eq!(
            restart_only_changes(&old, &new),
            ["engine.process_name", "web.listen_address"]
        );
    }
}
