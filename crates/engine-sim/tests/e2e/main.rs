//! End to end: engine-sim → the four real exporters → real Prometheus (the shipped rules with
//! every `for:` and range window divided by 60, generated here from alerts/*.rules.yml) →
//! real Alertmanager (the shipped routing and inhibition, notifications stripped).
//!
//! Every scenario runs at once in one stack as its own `cluster` (2 TX exporters, one of each
//! other tier, one simulator), so the run takes as long as the slowest alert. Asserted through
//! the HTTP APIs: each scenario's expected alerts reach Alertmanager with its cluster label;
//! the steady cluster raises none; every dashboard query returns data for the steady cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;
use testkit::{eventually, free_tcp_port, free_udp_port, require_tool, require_tools, TempDir};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

mod cluster;
mod judge;
mod monitoring;
mod nondefault;
mod rules;
mod scale_out;
mod scenarios;
mod stack;
mod start;
mod watch;

use cluster::*;
use monitoring::*;
use rules::*;
use scenarios::*;
use stack::*;
use start::*;
use watch::*;

/// When the faults start, after the simulators start (Prometheus gets a steady warm-up first).
pub(crate) const FAULT_AFTER_S: u64 = 25;

/// How long after the fault an expected alert may take to reach Alertmanager.
pub(crate) const FIRE_DEADLINE: Duration = Duration::from_secs(150);

/// The `cluster` external label of a second Prometheus whose service discovery finds no
/// target at all: it must raise ExporterTargetsAbsent for every tier's job.
pub(crate) const NO_TARGETS: &str = "no-targets";

/// The `log-backlog` sidecar fault: the first TX sidecar reads its event log at this many
/// bytes a second, and this much arrives at once, so it stays over the alert's 64 MiB for
/// about half a minute.
pub(crate) const BACKLOG_READ_RATE: u64 = 512 * 1024;

pub(crate) const BACKLOG_BYTES: u64 = 80 << 20;

/// Grafana's $__rate_interval for a 1 s scrape interval (4 x scrape interval, with margin).
pub(crate) const RATE_INTERVAL: &str = "10s";

/// The stack tests pick free loopback ports and start dozens of processes: run one at a time,
/// so one test's port cannot be taken by the other's between picking and binding.
pub(crate) static ONE_STACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn one_stack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_STACK_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A sibling binary of engine-sim in target/<profile>/. `cargo test --workspace` builds every
/// package's binaries before running any test; `cargo test -p engine-sim` builds only ours,
/// so a missing one is built here with the same cargo and profile.
pub(crate) fn sibling(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_engine-sim"))
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join(name);
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", name]).current_dir(root());
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "cargo build -p {name} failed");
    }
    assert!(
        bin.exists(),
        "{} is missing after cargo build",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// The test-only rules variant, generated from the real rules.
