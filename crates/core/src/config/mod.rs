//! Configuration: embedded defaults → optional `--config.file` (TOML or YAML) → environment
//! (`TX_EXPORTER__WEB__LISTEN_ADDRESS`) → command-line flags, each layer overriding the last.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use serde::{Deserialize, Serialize};

use crate::schema::{EventRule, TierInfo};

mod cli;
mod sections;

use self::cli::{all_flags, command, defaults_value, CORE_SECTIONS};
pub use self::cli::{env_prefix, Flag, FLAGS};
pub use self::sections::{Section, SectionSpec, Sections, Settings};

/// Unknown top-level sections are refused in `layer` (tier sections are not fields here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub web: WebConfig,
    pub log: LogConfig,
    pub ingest: IngestConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Event rules added to (or replacing) the tier's built-in ones.
    #[serde(default)]
    pub events: Vec<EventRule>,
    /// The tier's own sections (`[olap]`, `[clock]`), each owned by its tier crate.
    #[serde(skip)]
    pub sections: Sections,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub listen_address: String,
    pub telemetry_path: String,
    /// TLS and basic auth, exporter-toolkit format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Serve CPU profiles on /debug/pprof/profile (off: profiling has a cost and reveals code).
    #[serde(default)]
    pub enable_profiling: bool,
    /// Reload on `POST /-/reload` (off by default, as in Prometheus: anyone who can reach the
    /// port could trigger it).
    #[serde(default)]
    pub enable_lifecycle: bool,
    /// Scrapes served at once; more get 503 (0: no limit), as node_exporter's flag.
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// A connection whose request headers do not arrive within this time is closed, also
    /// between keep-alive requests.
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// Connections open at once; a new one over the limit closes the one idle longest.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    256
}

fn default_max_requests() -> usize {
    40
}

fn default_header_read_timeout_seconds() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Logfmt,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A level or tracing directives, e.g. `info,ingest=debug`.
    pub level: String,
    pub format: LogFormat,
    /// Written as `server_id` on every log line when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP address for StatsD; empty disables the listener.
    pub statsd_udp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statsd_unixgram: Option<PathBuf>,
    /// Globs of JSON event logs to follow.
    #[serde(default)]
    pub log_path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions_file: Option<PathBuf>,
    /// Files present at start-up without a stored position: read from the beginning
    /// instead of the end.
    pub read_from_start: bool,
    /// Maximum series per labelled metric.
    pub series_limit: usize,
    /// Remove labelled series not updated for this many seconds (0 keeps them forever).
    pub series_ttl_seconds: u64,
    /// An engine gauge not set for this many seconds has no value any more (0 keeps the last
    /// value forever).
    #[serde(default = "default_gauge_stale_seconds")]
    pub gauge_stale_seconds: u64,
    /// Event-log lines longer than this are skipped and counted.
    pub max_line_bytes: usize,
    /// The event-log follower reads at most this many bytes a second over all files (0: no
    /// limit).
    #[serde(default)]
    pub log_max_read_bytes_per_second: u64,
    /// Event-log files held open at once; files past it wait with their positions.
    #[serde(default = "default_log_max_open_files")]
    pub log_max_open_files: usize,
    /// A rotated-away event-log file is read until it has not grown for this long.
    #[serde(default = "default_log_rotate_wait_seconds")]
    pub log_rotate_wait_seconds: u64,
    /// Event-log files with `log_*{path}` series of their own; the rest share one.
    #[serde(default = "default_log_path_series_limit")]
    pub log_path_series_limit: usize,
}

/// Within systemd's default soft limit of 1,024 descriptors with room for HTTP connections
/// (the shipped units raise the limit; docs/ingest.md gives the sum).
fn default_log_max_open_files() -> usize {
    128
}

/// logrotate's `postrotate` signal reaches the engine within a second or two.
fn default_log_rotate_wait_seconds() -> u64 {
    5
}

fn default_log_path_series_limit() -> usize {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Core's own `[engine]` section, loaded with the others core knows (its flags are in
/// `cli.rs`); a `Settings` so that the engine probe is a `Probe` like any tier's. No tier
/// registers it.
impl Settings for EngineConfig {
    const SECTION: &'static str = "engine";
    const FLAGS: &'static [Flag] = &[];
}

impl Config {
    /// The embedded defaults of a tier: everything works with no file, env or flag.
    pub fn defaults(tier: &TierInfo) -> Config {
        Config {
            web: WebConfig {
                listen_address: tier.web_listen_address.clone(),
                telemetry_path: "/metrics".into(),
                config_file: None,
                enable_profiling: false,
                enable_lifecycle: false,
                max_requests: default_max_requests(),
                header_read_timeout_seconds: default_header_read_timeout_seconds(),
                max_connections: default_max_connections(),
            },
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Json,
                server_id: None,
            },
            ingest: IngestConfig {
                statsd_udp: tier.statsd_udp.clone(),
                statsd_unixgram: None,
                log_path: Vec::new(),
                positions_file: None,
                read_from_start: false,
                series_limit: 1000,
                series_ttl_seconds: 0,
                gauge_stale_seconds: default_gauge_stale_seconds(),
                max_line_bytes: 64 * 1024,
                log_max_read_bytes_per_second: 0,
                log_max_open_files: default_log_max_open_files(),
                log_rotate_wait_seconds: default_log_rotate_wait_seconds(),
                log_path_series_limit: default_log_path_series_limit(),
            },
            engine: EngineConfig::default(),
            events: Vec::new(),
            sections: Sections::default(),
        }
    }

    /// A tier's own section, as registered with `Tier::settings`.
    pub fn section<S: Settings>(&self) -> Option<&S> {
        self.sections.0.get(S::SECTION)?.value.downcast_ref()
    }

    /// The effective configuration as TOML, tier sections included (for `--check-config`).
    pub fn to_toml(&self) -> Result<String, String> {
        let mut text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        for (name, section) in &self.sections.0 {
            let mut table = toml::Table::new();
            let value = toml::Value::try_from(&section.shown).map_err(|e| e.to_string())?;
            table.insert((*name).to_owned(), value);
            text.push('\n');
            text.push_str(&toml::to_string_pretty(&table).map_err(|e| e.to_string())?);
        }
        Ok(text)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_listen_addr(&self.web.listen_address)
            .map_err(|e| ConfigError::invalid("web.listen_address", e))
    }

    pub fn statsd_udp_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let addr = self.ingest.statsd_udp.trim();
        if addr.is_empty() {
            return Ok(None);
        }
        parse_listen_addr(addr)
            .map(Some)
            .map_err(|e| ConfigError::invalid("ingest.statsd_udp", e))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.statsd_udp_addr()?;
        let path = &self.web.telemetry_path;
        // Only plain segments: the router would take `:x`, `*x` or `{x}` as a capture.
        let plain = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'));
        if !path.starts_with('/')
            || !plain
            || path.contains("//")
            || path.ends_with('/')
            || ["/health", "/debug/pprof/profile"].contains(&path.as_str())
            || path.starts_with("/-/")
        {
            return Err(ConfigError::invalid(
                "web.telemetry_path",
                format!(
                    "{path:?} must be a path like /metrics (letters, digits, _ - . and /), other than / and the exporter's own pages"
                ),
            ));
        }
        if let Some(addr) = &self.engine.address {
            parse_listen_addr(addr).map_err(|e| ConfigError::invalid("engine.address", e))?;
        }
        if self.web.max_connections == 0 {
            return Err(ConfigError::invalid(
                "web.max_connections",
                "must be at least 1",
            ));
        }
        if self.web.header_read_timeout_seconds == 0 {
            return Err(ConfigError::invalid(
                "web.header_read_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.ingest.series_limit == 0 {
            return Err(ConfigError::invalid(
                "ingest.series_limit",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("ingest.log_max_open_files", self.ingest.log_max_open_files),
            (
                "ingest.log_path_series_limit",
                self.ingest.log_path_series_limit,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.ingest.max_line_bytes < 256 {
            return Err(ConfigError::invalid(
                "ingest.max_line_bytes",
                "must be at least 256",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level", e))?;
        for glob in &self.ingest.log_path {
            if glob.trim().is_empty() {
                return Err(ConfigError::invalid("ingest.log_path", "empty glob"));
            }
            glob::Pattern::new(glob)
                .map_err(|e| ConfigError::invalid("ingest.log_path", format!("{glob:?}: {e}")))?;
        }
        Ok(())
    }
}

/// Five minutes: engines push gauges every few seconds, so this is many missed pushes, and
/// alerts with `for: 5m` or more on a pushed gauge see it go rather than hold a stale value.
fn default_gauge_stale_seconds() -> u64 {
    300
}

/// `:9090` means all interfaces, as in Prometheus' own flags.
pub fn parse_listen_addr(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{addr:?} is not an IP:PORT address"))
}

/// A configuration that cannot be used, and why (printed as `<binary>: error: ...`, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid(format!("{key}: {why}"))
    }
}

/// What the command line asked for beyond the configuration itself.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub check_only: bool,
    pub config_file: Option<PathBuf>,
}

/// What the command line asks for: run with a configuration, or print `--help`/`--version`
/// and exit 0 (asking for help is not an error).
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Loaded>),
    Print(String),
}

/// Parses the command line and layers all configuration sources.
pub fn load<I, T>(
    tier: &TierInfo,
    sections: &[SectionSpec],
    args: I,
) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match command(tier, sections).try_get_matches_from(args) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            return Ok(Invocation::Print(e.to_string()))
        }
        Err(e) => {
            // clap's message starts with its own "error: "; the caller adds one.
            let text = e.to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            return Err(ConfigError::Invalid(text.trim_end().to_owned()));
        }
    };
    if matches.get_flag("version") {
        return Ok(Invocation::Print(crate::build::version_text(&tier.binary)));
    }
    let config_file = matches.get_one::<String>("config.file").map(PathBuf::from);
    let config = layer(
        tier,
        sections,
        config_file.as_deref(),
        std::env::vars().collect(),
        &matches,
    )?;
    Ok(Invocation::Run(Box::new(Loaded {
        config,
        check_only: matches.get_flag("check-config"),
        config_file,
    })))
}

fn layer(
    tier: &TierInfo,
    sections: &[SectionSpec],
    file: Option<&Path>,
    env: std::collections::HashMap<String, String>,
    matches: &ArgMatches,
) -> Result<Config, ConfigError> {
    let defaults = config::Config::try_from(&defaults_value(tier, sections))
        .map_err(|e| ConfigError::Invalid(format!("embedded defaults: {e}")))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(file_source(path)?);
    }
    let list_keys = all_flags(sections).filter(|f| f.repeatable).map(|f| f.key);
    let mut environment = config::Environment::with_prefix(&env_prefix(tier))
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(env));
    for key in list_keys {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment);
    for flag in all_flags(sections) {
        let Ok(Some(values)) = matches.try_get_many::<String>(flag.name) else {
            continue;
        };
        let values: Vec<String> = values.cloned().collect();
        let (name, key) = (flag.name, flag.key);
        builder = if flag.repeatable {
            builder.set_override(key, values)
        } else {
            builder.set_override(key, values.last().cloned().unwrap_or_default())
        }
        .map_err(|e| ConfigError::Invalid(format!("--{name}: {e}")))?;
    }
    let source = if file.is_some() {
        "configuration"
    } else {
        "environment or flags"
    };
    let invalid = |e: config::ConfigError| ConfigError::Invalid(format!("invalid {source}: {e}"));
    let built = builder.build().map_err(invalid)?;
    refuse_unknown_sections(tier, sections, &built, source)?;
    let mut config: Config = built.clone().try_deserialize().map_err(invalid)?;
    for section in sections {
        config
            .sections
            .0
            .insert(section.name, (section.load)(&built)?);
    }
    config.validate()?;
    Ok(config)
}

/// The configuration file, parsed on its own first so that a syntax error names it.
fn file_source(
    path: &Path,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, ConfigError> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => config::FileFormat::Toml,
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "--config.file {}: extension must be .toml, .yaml or .yml",
                path.display()
            )))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("--config.file {}: {e}", path.display())))?;
    let file_source = config::File::from_str(&text, format);
    // Parse the file on its own first so syntax errors name it.
    config::Config::builder()
        .add_source(file_source.clone())
        .build()
        .map_err(|e| ConfigError::Invalid(format!("--config.file {}: {e}", path.display())))?;
    Ok(file_source)
}

/// A section is either core's or a registered tier's; anything else is refused by name.
fn refuse_unknown_sections(
    tier: &TierInfo,
    sections: &[SectionSpec],
    built: &config::Config,
    source: &str,
) -> Result<(), ConfigError> {
    let invalid = |e: config::ConfigError| ConfigError::Invalid(format!("invalid {source}: {e}"));
    let top: BTreeMap<String, config::Value> = built.clone().try_deserialize().map_err(invalid)?;
    for key in top.keys() {
        if !CORE_SECTIONS.contains(&key.as_str()) && !sections.iter().any(|s| s.name == key) {
            let mut known: Vec<&str> = CORE_SECTIONS.to_vec();
            known.extend(sections.iter().map(|s| s.name));
            return Err(ConfigError::Invalid(format!(
                "invalid {source}: unknown section [{key}]; {} reads {}",
                tier.binary,
                known.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
