//! Scenarios are data: `scenarios/<name>.toml` (embedded at build time, or read from
//! `--scenarios-dir`). Every scenario is `steady.toml` overridden by the scenario's own
//! top-level tables, and from `[fault] after_s` on by its `[fault.<tier>]` tables.

use std::path::Path;

use serde::Deserialize;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/scenarios.rs"));
}

pub const BASE: &str = "steady";

/// A random-walk gauge: value += drift*dt + step*sqrt(dt)*N(0,1), kept in [min, max].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Walk {
    pub start: f64,
    #[serde(default)]
    pub min: f64,
    #[serde(default = "f64_max")]
    pub max: f64,
    #[serde(default)]
    pub step: f64,
    #[serde(default)]
    pub drift: f64,
}

fn f64_max() -> f64 {
    f64::MAX
}

/// Log-normal latency in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub median_ms: f64,
    pub sigma: f64,
}

/// Log-normal size.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub median: f64,
    pub sigma: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tx {
    pub up: bool,
    /// The engine sends its sidecar StatsD pushes and event-log lines; false keeps it up
    /// (its port answers) but pointed elsewhere.
    pub pushes: bool,
    pub transactions_per_s: f64,
    pub rollback_ratio: f64,
    pub transaction_ms: Latency,
    pub queries_per_s: f64,
    pub query_ms: Latency,
    pub cache_lookups_per_s: f64,
    pub cache_hit_ratio: f64,
    pub cache_size_bytes: Walk,
    pub connections_active: Walk,
    pub connections_idle: Walk,
    pub replication_batches_per_s: f64,
    pub replication_queue_depth: Walk,
    pub replication_lag_s: Walk,
    pub clock_uncertainty_s: Walk,
    pub clock_offset_s: Walk,
    pub heartbeats_missed_per_s: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ingestion {
    pub up: bool,
    pub events_per_s: f64,
    pub failure_ratio: f64,
    pub conflict_ratio: f64,
    pub conflict_resolved_ratio: f64,
    pub duplicate_ratio: f64,
    pub validation_failure_ratio: f64,
    pub processing_ms: Latency,
    pub olap_batches_per_s: f64,
    pub olap_push_ms: Latency,
    pub merge_queue_depth: Walk,
    pub olap_push_queue_depth: Walk,
    pub olap_push_lag_s: Walk,
    pub lag_by_source_s: Walk,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Olap {
    pub up: bool,
    pub queries_per_s: f64,
    pub query_failure_ratio: f64,
    pub query_ms: Latency,
    pub compactions_per_s: f64,
    pub compaction_ms: Latency,
    pub compaction_bytes: Size,
    pub last_compaction_age_s: f64,
    pub compactions_running: Walk,
    pub cache_lookups_per_s: f64,
    pub cache_hit_ratio: f64,
    pub cache_size_bytes: Walk,
    pub total_rows: Walk,
    pub compression_ratio: Walk,
    pub bytes_per_row: f64,
    pub partitions: Walk,
    pub partitions_active_share: f64,
    pub partitions_cold_share: f64,
    pub write_bytes_per_s: f64,
    pub fill_ratio: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    pub up: bool,
    /// Which clock master (index of --clock) is the primary; the others are standbys.
    pub primary: usize,
    pub heartbeats_per_s: f64,
    pub clients_connected: Walk,
    pub serve_ntp: bool,
}

/// The node's Kafka broker (served only with --kafka.listen).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    /// The broker's JMX exporter and kafka_exporter answer scrapes.
    pub up: bool,
    pub messages_in_per_s: f64,
    pub partitions: f64,
    pub under_replicated_partitions: f64,
    pub offline_partitions: f64,
    pub active_controllers: f64,
    pub isr_shrinks_per_s: f64,
    pub isr_expands_per_s: f64,
    /// Per partition: how far the follower replica's fetcher is behind the leader.
    pub follower_lag_messages: Walk,
    /// Per partition: how far the ingestion consumer group is behind.
    pub consumer_lag_messages: Walk,
}

/// Everything the simulator plays at one moment.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub trace_ratio: f64,
    pub tx: Tx,
    pub ingestion: Ingestion,
    pub olap: Olap,
    pub clock: Clock,
    pub kafka: Kafka,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Alerts this scenario must raise (checked by the end-to-end test).
    pub expect: Vec<String>,
    /// When the fault starts; None when the scenario is the same from start to end.
    pub fault_after_s: Option<f64>,
    /// What the harness (tests/e2e/cluster.rs) does to the node's first TX sidecar at the fault, for
    /// alerts about the sidecars themselves; the simulator only checks the names.
    pub sidecar_faults: Vec<SidecarFault>,
    /// The tiers the harness runs engines of; None: all.
    pub tiers: Option<Vec<String>>,
    pub before: Params,
    pub after: Params,
}

/// Name and text of every scenario: embedded ones, then those in `dir` (same name replaces).
pub fn sources(dir: Option<&Path>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = embedded::EMBEDDED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    if let Some(dir) = dir {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("scenarios dir {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.retain(|(n, _)| *n != name);
            out.push((name, text));
        }
    }
    out.sort();
    Ok(out)
}

fn text_of(name: &str, dir: Option<&Path>) -> Result<String, String> {
    sources(dir)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| format!("unknown scenario {name:?}; --list shows them"))
}

/// Deep merge: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: &toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Faults of a sidecar rather than of an engine, played by the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarFault {
    /// The exporter process is stopped: its target is down.
    Stop,
    /// Lines that are not JSON keep arriving in its event log.
    GarbageInput,
    /// Its config file is broken and it is asked to reload.
    BadReload,
    /// Another process holds its StatsD port before it starts: it cannot listen.
    StatsdPortTaken,
    /// It is stalled (no CPU) while its engine bursts StatsD: the kernel drops datagrams.
    StalledDuringBurst,
    /// Its event-log read rate is limited and a large backlog arrives at once: it falls
    /// behind.
    LogBacklog,
    /// The host of the first engine of the scenario's first tier is lost: the harness kills
    /// that sidecar; the scenario's fault takes the engine down (`up = false`).
    HostLost,
    /// The simulator is stopped (SIGSTOP) once the scenario's first expected alert fires: its
    /// engines still accept connections and send nothing, as a hung engine does.
    HangEngine,
}

impl SidecarFault {
    pub const NAMES: [(&'static str, SidecarFault); 8] = [
        ("stop", SidecarFault::Stop),
        ("garbage-input", SidecarFault::GarbageInput),
        ("bad-reload", SidecarFault::BadReload),
        ("statsd-port-taken", SidecarFault::StatsdPortTaken),
        ("stalled-during-burst", SidecarFault::StalledDuringBurst),
        ("log-backlog", SidecarFault::LogBacklog),
        ("host-lost", SidecarFault::HostLost),
        ("hang-engine", SidecarFault::HangEngine),
    ];
}

/// Keys for the harness, not the simulator: `silent` (alerts that must not reach Alertmanager
/// for this cluster), `receivers` (alert = the receiver it must reach after routing) and
/// `clock_masters` (how many clock masters it runs, the first the primary).
const META_KEYS: [&str; 8] = [
    "description",
    "expect",
    "fault",
    "sidecar_faults",
    "tiers",
    "silent",
    "receivers",
    "clock_masters",
];

/// The harness keys' types, checked here so that a typo fails the scenario's load.
fn check_harness_keys(name: &str, own: &toml::Value) -> Result<(), String> {
    let strings = |v: &toml::Value| v.as_array().is_some_and(|a| a.iter().all(|x| x.is_str()));
    if own.get("silent").is_some_and(|v| !strings(v)) {
        return Err(format!("scenario {name}: silent is a list of alert names"));
    }
    if own
        .get("receivers")
        .is_some_and(|v| !v.as_table().is_some_and(|t| t.values().all(|x| x.is_str())))
    {
        return Err(format!(
            "scenario {name}: receivers is a table of alert = \"receiver\""
        ));
    }
    if own
        .get("clock_masters")
        .is_some_and(|v| !v.as_integer().is_some_and(|n| (1..=4).contains(&n)))
    {
        return Err(format!("scenario {name}: clock_masters is 1 to 4"));
    }
    Ok(())
}

/// The tiers a scenario may name in `tiers`.
pub const TIERS: [&str; 4] = ["tx", "ingestion", "olap", "clock"];

/// `tiers`: which engines the end-to-end harness runs for the scenario (all when absent),
/// so a cluster runs only what its alerts need.
fn tiers(name: &str, v: Option<&toml::Value>) -> Result<Option<Vec<String>>, String> {
    let Some(v) = v else {
        return Ok(None);
    };
    let refuse = || format!("scenario {name}: tiers lists only {}", TIERS.join(", "));
    v.as_array()
        .ok_or_else(refuse)?
        .iter()
        .map(|t| {
            t.as_str()
                .filter(|t| TIERS.contains(t))
                .map(str::to_owned)
                .ok_or_else(refuse)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn sidecar_faults(name: &str, v: Option<&toml::Value>) -> Result<Vec<SidecarFault>, String> {
    let refuse = || {
        let names: Vec<&str> = SidecarFault::NAMES.iter().map(|(n, _)| *n).collect();
        format!(
            "scenario {name}: sidecar_faults lists only {}",
            names.join(", ")
        )
    };
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.as_array()
        .ok_or_else(refuse)?
        .iter()
        .map(|f| {
            f.as_str()
                .and_then(|n| SidecarFault::NAMES.iter().find(|(k, _)| *k == n))
                .map(|(_, f)| *f)
                .ok_or_else(refuse)
        })
        .collect()
}

pub fn load(name: &str, dir: Option<&Path>) -> Result<Scenario, String> {
    let parse = |n: &str| -> Result<toml::Value, String> {
        text_of(n, dir)?
            .parse::<toml::Value>()
            .map_err(|e| format!("scenario {n}: {e}"))
    };
    let own = parse(name)?;
    check_harness_keys(name, &own)?;
    let mut before = parse(BASE)?;
    let mut own_params = own.clone();
    if let toml::Value::Table(t) = &mut own_params {
        for k in META_KEYS {
            t.remove(k);
        }
    }
    merge(&mut before, &own_params);
    let mut after = before.clone();
    let fault = own.get("fault");
    let fault_after_s = match fault {
        None => None,
        Some(f) => {
            let mut f = f.clone();
            let at = match &mut f {
                toml::Value::Table(t) => t.remove("after_s"),
                _ => return Err(format!("scenario {name}: [fault] must be a table")),
            };
            let at = at
                .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                .ok_or_else(|| format!("scenario {name}: [fault] needs a numeric after_s"))?;
            merge(&mut after, &f);
            Some(at)
        }
    };
    let to_params = |v: toml::Value, what: &str| -> Result<Params, String> {
        let mut v = v;
        if let toml::Value::Table(t) = &mut v {
            for k in META_KEYS {
                t.remove(k);
            }
        }
        v.try_into()
            .map_err(|e| format!("scenario {name} ({what}): {e}"))
    };
    Ok(Scenario {
        name: name.to_string(),
        description: own
            .get("description")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        expect: own
            .get("expect")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        fault_after_s,
        sidecar_faults: sidecar_faults(name, own.get("sidecar_faults"))?,
        tiers: tiers(name, own.get("tiers"))?,
        before: to_params(before, "before the fault")?,
        after: to_params(after, "after the fault")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `text` as scenario `name` from a scenarios dir of its own.
    fn load_text(name: &str, text: &str) -> Result<Scenario, String> {
        let dir = std::env::temp_dir().join(format!("engine-sim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write");
        let loaded = load(name, Some(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn an_unknown_sidecar_fault_is_refused() {
        let err = load_text(
            "fault",
            "description = \"x\"\nexpect = [\"A\"]\nsidecar_faults = [\"explode\"]\n",
        )
        .expect_err("refused");
        assert!(err.contains("sidecar_faults"), "{err}");
    }

    #[test]
    fn tiers_name_known_tiers_only() {
        let head = "description = \"x\"\nexpect = [\"A\"]\n";
        let s = load_text("tiers", &format!("{head}tiers = [\"tx\", \"clock\"]\n")).expect("load");
        assert_eq!(s.tiers, Some(vec!["tx".to_string(), "clock".to_string()]));
        let err =
            load_text("bad-tiers", &format!("{head}tiers = [\"kafka\"]\n")).expect_err("refused");
        assert!(
            err.contains("tiers lists only tx, ingestion, olap, clock"),
            "{err}"
        );
        assert_eq!(load(BASE, None).expect("steady").tiers, None);
    }

    #[test]
    fn every_embedded_scenario_loads_and_names_its_alerts() {
        let all = sources(None).expect("sources");
        assert!(all.len() >= 11, "{all:?}");
        for (name, text) in &all {
            let s = load(name, None).unwrap_or_else(|e| panic!("{e}"));
            // A scenario may promise silence instead (`silent`): a failover must page nobody.
            let promises_silence = text
                .parse::<toml::Value>()
                .ok()
                .and_then(|v| {
                    v.get("silent")
                        .and_then(|x| x.as_array())
                        .map(|a| !a.is_empty())
                })
                .unwrap_or(false);
            assert!(!s.description.is_empty(), "{name} has no description");
            if name == BASE {
                assert!(s.expect.is_empty(), "steady must expect no alert");
                assert_eq!(s.before, s.after);
            } else {
                assert!(
                    !s.expect.is_empty() || promises_silence,
                    "{name} expects no alert and promises no silence"
                );
                assert!(
                    s.before != s.after
                        || s.before != load(BASE, None).expect("base").before
                        || !s.sidecar_faults.is_empty()
                        // A cluster without some tier (tier-missing): its discovery is the fault.
                        || s.tiers.as_ref().is_some_and(|t| !t.is_empty() && t.len() < TIERS.len()),
                    "{name} changes nothing"
                );
            }
        }
    }

    #[test]
    fn fault_overrides_merge_into_the_base() {
        let s = load("replication-lag", None).expect("load");
        assert_eq!(s.fault_after_s, Some(20.0));
        // Only the keys the fault names change; the rest of the walk is steady's.
        assert_eq!(s.after.tx.replication_lag_s.min, 8.0);
        assert_eq!(
            s.after.tx.replication_lag_s.start,
            s.before.tx.replication_lag_s.start
        );
        assert_eq!(
            s.after.tx.transactions_per_s,
            s.before.tx.transactions_per_s
        );
    }

    #[test]
    fn typos_and_unknown_names_are_errors() {
        let err = load_text(
            "typo",
            "description = \"x\"\nexpect = [\"A\"]\n[fault]\nafter_s = 1\n[fault.tx]\ntransactons_per_s = 3.0\n",
        )
        .expect_err("typo accepted");
        assert!(err.contains("transactons_per_s"), "{err}");
        assert!(load("no-such-scenario", None).is_err());
    }
}
