//! The command line: every flag with its meaning and default, core's and the tier sections'.

use clap::{Arg, ArgAction, Command};

use super::{Config, SectionSpec};
use crate::schema::TierInfo;

/// A command-line flag and the config key it sets.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `web.listen-address` for `--web.listen-address`.
    pub name: &'static str,
    /// `web.listen_address`: `[web] listen_address` in the file.
    pub key: &'static str,
    /// Repeatable flags (and comma-separated environment values) build a list.
    pub repeatable: bool,
    /// One line on what it does, for `--help` (the default is added from the embedded
    /// defaults).
    pub help: &'static str,
}

impl Flag {
    pub const fn one(name: &'static str, key: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            key,
            repeatable: false,
            help,
        }
    }

    pub const fn list(name: &'static str, key: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            key,
            repeatable: true,
            help,
        }
    }
}

/// Flags of the sections every tier has; tier sections bring their own ([`Settings::FLAGS`]).
pub const FLAGS: &[Flag] = &[
    Flag::one(
        "web.listen-address",
        "web.listen_address",
        "Address to serve /metrics and /health on (IP:PORT, or :PORT for all interfaces)",
    ),
    Flag::one(
        "web.telemetry-path",
        "web.telemetry_path",
        "Path of the metrics page",
    ),
    Flag::one(
        "web.config.file",
        "web.config_file",
        "TLS and basic-auth file in the exporter-toolkit format",
    ),
    Flag::one(
        "web.enable-profiling",
        "web.enable_profiling",
        "Serve CPU profiles on /debug/pprof/profile",
    ),
    Flag::one(
        "web.enable-lifecycle",
        "web.enable_lifecycle",
        "Reload the configuration on POST /-/reload (SIGHUP always does)",
    ),
    Flag::one(
        "web.max-requests",
        "web.max_requests",
        "Scrapes served at once; more get 503 (0: no limit)",
    ),
    Flag::one(
        "web.max-connections",
        "web.max_connections",
        "Connections open at once; over it, the connection idle longest is closed",
    ),
    Flag::one(
        "web.header-read-timeout-seconds",
        "web.header_read_timeout_seconds",
        "Close a connection whose request headers do not arrive within this time",
    ),
    Flag::one(
        "log.level",
        "log.level",
        "Log level or tracing directives (e.g. info,ingest=debug)",
    ),
    Flag::one(
        "log.format",
        "log.format",
        "Log line format: json or logfmt",
    ),
    Flag::one(
        "log.server-id",
        "log.server_id",
        "Written as server_id on every log line",
    ),
    Flag::one(
        "ingest.statsd-udp",
        "ingest.statsd_udp",
        "UDP address for StatsD/DogStatsD (empty disables it)",
    ),
    Flag::one(
        "ingest.statsd-unixgram",
        "ingest.statsd_unixgram",
        "Unix datagram socket path for StatsD/DogStatsD",
    ),
    Flag::list(
        "ingest.log-path",
        "ingest.log_path",
        "Glob of JSON event logs to follow (repeatable)",
    ),
    Flag::one(
        "ingest.positions-file",
        "ingest.positions_file",
        "Where followed-file positions are kept across restarts",
    ),
    Flag::one(
        "ingest.read-from-start",
        "ingest.read_from_start",
        "Read files present at start-up without a stored position from their beginning",
    ),
    Flag::one(
        "ingest.series-limit",
        "ingest.series_limit",
        "Most series per labelled engine metric",
    ),
    Flag::one(
        "ingest.series-ttl-seconds",
        "ingest.series_ttl_seconds",
        "Remove labelled engine series idle this long (0 keeps them)",
    ),
    Flag::one(
        "ingest.gauge-stale-seconds",
        "ingest.gauge_stale_seconds",
        "An engine gauge not set this long loses its value (0 keeps it)",
    ),
    Flag::one(
        "ingest.max-line-bytes",
        "ingest.max_line_bytes",
        "Longer event-log lines are skipped and counted",
    ),
    Flag::one(
        "ingest.log-max-read-bytes-per-second",
        "ingest.log_max_read_bytes_per_second",
        "Read event logs at most this fast, over all files (0: no limit)",
    ),
    Flag::one(
        "ingest.log-max-open-files",
        "ingest.log_max_open_files",
        "Event-log files held open at once; the rest wait with their positions",
    ),
    Flag::one(
        "ingest.log-rotate-wait-seconds",
        "ingest.log_rotate_wait_seconds",
        "Read a rotated-away event log until it has not grown for this long",
    ),
    Flag::one(
        "ingest.log-path-series-limit",
        "ingest.log_path_series_limit",
        "Event-log files with log_*{path} series of their own; the rest share path=\"(other)\"",
    ),
    Flag::one(
        "engine.pid-file",
        "engine.pid_file",
        "Find the engine process by the pid in this file",
    ),
    Flag::one(
        "engine.process-name",
        "engine.process_name",
        "Find the engine process by name",
    ),
    Flag::one(
        "engine.address",
        "engine.address",
        "The engine's TCP address: checked for liveness, and finds its process",
    ),
];

/// Top-level keys of the file that core itself reads.
pub(super) const CORE_SECTIONS: &[&str] = &["web", "log", "ingest", "engine", "events"];

/// Boolean keys of [`FLAGS`] whose flag needs no value.
const SWITCHES: &[&str] = &[
    "web.enable_profiling",
    "web.enable_lifecycle",
    "ingest.read_from_start",
];

/// Core's flags followed by each tier section's.
pub(super) fn all_flags(sections: &[SectionSpec]) -> impl Iterator<Item = &Flag> {
    FLAGS.iter().chain(sections.iter().flat_map(|s| s.flags))
}

pub(super) fn command(tier: &TierInfo, sections: &[SectionSpec]) -> Command {
    let mut cmd = Command::new(tier.binary.clone())
        // --version prints the build facts as node_exporter does, so it is our own flag.
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .short('V')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Print the version, revision, branch, rustc version and platform, and exit"),
        )
        // The last occurrence of a flag wins, so wrappers can append overrides.
        .args_override_self(true)
        .about(format!(
            "Prometheus sidecar exporter for the {} tier. Settings: embedded defaults, then \
             --config.file, then {}__SECTION__KEY environment variables, then flags.",
            tier.name,
            env_prefix(tier)
        ))
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("PATH")
                .help("Configuration file, TOML or YAML by extension"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, print the effective one and exit"),
        );
    let defaults = defaults_value(tier, sections);
    for &Flag {
        name: flag,
        key,
        repeatable,
        help,
    } in all_flags(sections)
    {
        let default = default_of(&defaults, key);
        let help = match default.as_deref() {
            Some(d) => format!("{help} [default: {d}]"),
            None => help.to_owned(),
        };
        let mut arg = Arg::new(flag)
            .long(flag)
            .value_name("VALUE")
            .help(help.clone());
        if repeatable {
            arg = arg.action(ArgAction::Append);
        }
        // Switches work bare (`--web.enable-profiling`) or as `--web.enable-profiling=false`.
        if SWITCHES.contains(&key) {
            arg = arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_name("BOOL");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// The embedded defaults of core and the tier's sections, as one JSON tree.
pub(super) fn defaults_value(tier: &TierInfo, sections: &[SectionSpec]) -> serde_json::Value {
    let mut defaults = serde_json::to_value(Config::defaults(tier)).unwrap_or_default();
    if let Some(table) = defaults.as_object_mut() {
        for section in sections {
            table.insert(section.name.to_owned(), (section.defaults)());
        }
    }
    defaults
}

/// A key's default for `--help`: None when unset (an optional setting).
fn default_of(defaults: &serde_json::Value, key: &str) -> Option<String> {
    let v = key.split('.').try_fold(defaults, |v, k| v.get(k))?;
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => Some("\"\"".into()),
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) if a.is_empty() => None,
        other => Some(other.to_string()),
    }
}

pub fn env_prefix(tier: &TierInfo) -> String {
    tier.binary.replace('-', "_").to_uppercase()
}
