//! Every metric name the bundle uses is exposed by an exporter (its schema) or by a known
//! external source: the Kafka JMX exporter rules, kafka_exporter, the monitoring stack's own
//! binaries; the log queries use only the labels the log pipeline sets.

use super::*;

/// Metric names used by the bundle that an exporter is about to expose but whose schema entry has
/// not landed yet. Keep this list empty whenever possible.
pub(crate) const EXPECTED_SOON: &[&str] = &[];

/// Series that do not come from our exporters: Prometheus' own and the standard process metrics
/// every exporter exposes unprefixed. Kafka names are checked against what the JMX exporter
/// rules and kafka_exporter produce (`other_exporter_names`); nothing is allowed by prefix.
pub(crate) const EXTERNAL_NAMES: &[&str] = &[
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// The monitoring stack's own series that alerts/meta.rules.yml watches: Prometheus 2.x,
/// Alertmanager 0.2x and vmalert 1.79+ expose them under these names (checked against the real
/// binaries by `monitoring_stack_names_exist_in_the_real_binaries`).
pub(crate) const MONITORING_STACK_NAMES: &[&str] = &[
    "prometheus_rule_evaluation_failures_total",
    "prometheus_notifications_errors_total",
    "prometheus_notifications_sent_total",
    "prometheus_notifications_alertmanagers_discovered",
    "prometheus_remote_storage_highest_timestamp_in_seconds",
    "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
    "alertmanager_notifications_failed_total",
    "alertmanager_notifications_total",
    "vmalert_execution_errors_total",
    "vmalert_alerts_send_errors_total",
    // read by the runbooks only
    "prometheus_notifications_queue_length",
    "prometheus_remote_storage_samples_failed_total",
    "prometheus_remote_storage_shards",
    "vmalert_alerting_rules_error",
];

/// Kafka broker MBeans as the JMX exporter formats them (`domain<key=value, ...><>attribute`),
/// one for every metric deploy/kafka/jmx-exporter.yml should export (Kafka 3.x names).
pub(crate) const KAFKA_MBEANS: &[&str] = &[
    "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec, topic=db.changes><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec, topic=db.changes><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=BytesOutPerSec><>Count",
    "kafka.server<type=BrokerTopicMetrics, name=FailedProduceRequestsPerSec><>Count",
    "kafka.server<type=ReplicaManager, name=UnderReplicatedPartitions><>Value",
    "kafka.server<type=ReplicaManager, name=UnderMinIsrPartitionCount><>Value",
    "kafka.server<type=ReplicaManager, name=IsrShrinksPerSec><>Count",
    "kafka.server<type=ReplicaManager, name=IsrExpandsPerSec><>Count",
    "kafka.controller<type=KafkaController, name=ActiveControllerCount><>Value",
    "kafka.controller<type=KafkaController, name=OfflinePartitionsCount><>Value",
    "kafka.server<type=FetcherLagMetrics, name=ConsumerLag, clientId=ReplicaFetcherThread-0-2, topic=db.changes, partition=0><>Value",
    "kafka.network<type=RequestMetrics, name=TotalTimeMs, request=Produce><>99thPercentile",
];

/// What danielqsj/kafka_exporter 1.x exposes (its collector's metric names).
pub(crate) const KAFKA_EXPORTER_NAMES: &[&str] = &[
    "kafka_brokers",
    "kafka_topic_partitions",
    "kafka_topic_partition_current_offset",
    "kafka_topic_partition_oldest_offset",
    "kafka_topic_partition_in_sync_replica",
    "kafka_topic_partition_leader",
    "kafka_topic_partition_leader_is_preferred",
    "kafka_topic_partition_replicas",
    "kafka_topic_partition_under_replicated_partition",
    "kafka_consumergroup_current_offset",
    "kafka_consumergroup_current_offset_sum",
    "kafka_consumergroup_lag",
    "kafka_consumergroup_lag_sum",
    "kafka_consumergroup_members",
];

/// Every tier of the checkout, from its schema (exporter_core parses and checks it).
pub(crate) fn tiers() -> Vec<exporter_core::Schema> {
    let tiers = exporter_core::Schema::discover(&root()).expect("tier schemas");
    assert!(!tiers.is_empty(), "no crates/*/schema.toml found");
    tiers
}

/// Every series name the exporters expose, from their schemas.
pub(crate) fn schema_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for schema in tiers() {
        for m in &schema.metrics {
            if m.kind == exporter_core::schema::MetricType::Histogram {
                // A histogram's base name is not a series.
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{s}", m.name));
                }
            } else {
                names.insert(m.name.clone());
            }
        }
    }
    names
}

#[test]
fn metric_names_exist_in_the_schemas() {
    let all_rules = rules();
    let recorded: BTreeSet<String> = all_rules.iter().filter_map(|r| r.record.clone()).collect();
    let mut used = BTreeMap::<String, String>::new();
    for r in &all_rules {
        let at = r.alert.clone().or(r.record.clone()).expect("rule name");
        for n in metric_names(&r.expr) {
            used.entry(n).or_insert_with(|| format!("{}: {at}", r.file));
        }
    }
    for (at, expr) in dashboard_exprs() {
        for n in metric_names(&substitute_variables(&expr)) {
            used.entry(n).or_insert_with(|| at.clone());
        }
    }
    let names: BTreeSet<String> = used.keys().cloned().collect();
    let unknown: Vec<String> = unknown_names(&names, &recorded)
        .into_iter()
        .map(|n| format!("{n} (used by {})", used[&n]))
        .collect();
    assert!(
        unknown.is_empty(),
        "names not exposed by any exporter:\n{}",
        unknown.join("\n")
    );
    // Every recording rule is used by an alert or a dashboard.
    for r in &recorded {
        assert!(
            all_rules
                .iter()
                .any(|x| x.alert.is_some() && x.expr.contains(r.as_str()))
                || dashboard_exprs()
                    .iter()
                    .any(|(_, e)| e.contains(r.as_str()))
                || all_rules
                    .iter()
                    .any(|x| x.record.as_deref() != Some(r) && x.expr.contains(r.as_str())),
            "recording rule {r} is unused"
        );
    }
    for n in EXPECTED_SOON {
        assert!(
            !schema_names().contains(*n),
            "{n} is in the schema now: remove it from EXPECTED_SOON"
        );
    }
}

/// Labels the shipped log pipeline (deploy/alloy/config.alloy) puts on every stream: the
/// path targets' labels, `stage.labels` and `stage.static_labels`.
pub(crate) fn alloy_labels() -> BTreeSet<String> {
    let text = read(&root().join("deploy/alloy/config.alloy"));
    let mut labels = BTreeSet::new();
    let mut stage = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("//") {
            continue;
        }
        if let Some(s) = line.strip_prefix("stage.") {
            stage = s.split_whitespace().next().unwrap_or_default().to_owned();
        }
        if line.starts_with("{\"__path__\"") {
            for part in line.split(',') {
                let key = part.trim().trim_start_matches('{').trim();
                if let Some(name) = key.strip_prefix('"').and_then(|k| k.split('"').next()) {
                    if !name.starts_with("__") {
                        labels.insert(name.to_owned());
                    }
                }
            }
        } else if (stage == "labels" || stage == "static_labels") && line.contains(" = ") {
            let name = line.split(" = ").next().unwrap_or_default().trim();
            if name != "values" && !name.is_empty() {
                labels.insert(name.to_owned());
            }
        }
    }
    labels
}

#[test]
fn runbook_logql_uses_only_labels_the_log_pipeline_sets() {
    let labels = alloy_labels();
    for want in ["job", "tier", "level", "component", "host"] {
        assert!(
            labels.contains(want),
            "alloy config lacks label {want}: {labels:?}"
        );
    }
    let mut checked = 0;
    for page in files(&root().join("docs/runbooks"), ".md") {
        for line in read(&page).lines() {
            if !(line.contains("| json") || line.contains("|=") || line.contains("| logfmt")) {
                continue;
            }
            let Some(start) = line.find('{') else {
                continue;
            };
            let Some(end) = line[start..].find('}') else {
                continue;
            };
            for matcher in line[start + 1..start + end].split(',') {
                let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
                assert!(
                    labels.contains(name),
                    "{}: LogQL selects on `{name}`, which the log pipeline never sets ({labels:?}): {line}",
                    page.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} LogQL matchers found in the runbooks"
    );
}

/// The names the JMX exporter rules produce from `KAFKA_MBEANS` (first matching rule wins, as
/// in the JMX exporter; `$N` are the pattern's groups; lowercased when the config says so).
/// Every rule must match some MBean, so a rule that can never fire is caught.
pub(crate) fn jmx_exporter_names() -> BTreeSet<String> {
    let config = yaml(&root().join("deploy/kafka/jmx-exporter.yml"));
    let lowercase = config["lowercaseOutputName"].as_bool() == Some(true);
    let rules = config["rules"].as_vec().expect("rules");
    let compiled: Vec<(regex::Regex, String)> = rules
        .iter()
        .map(|r| {
            let pattern = r["pattern"].as_str().expect("pattern");
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).expect("pattern is a regex");
            (re, r["name"].as_str().expect("name").to_owned())
        })
        .collect();
    let mut used = vec![false; compiled.len()];
    let mut names = BTreeSet::new();
    for mbean in KAFKA_MBEANS {
        let Some((i, caps, template)) = compiled
            .iter()
            .enumerate()
            .find_map(|(i, (re, t))| re.captures(mbean).map(|c| (i, c, t)))
        else {
            panic!("no JMX exporter rule matches {mbean}");
        };
        used[i] = true;
        let mut name = template.clone();
        for k in (1..caps.len()).rev() {
            name = name.replace(&format!("${k}"), caps.get(k).map_or("", |m| m.as_str()));
        }
        if lowercase {
            name = name.to_lowercase();
        }
        names.insert(name);
    }
    for (i, used) in used.iter().enumerate() {
        assert!(
            used,
            "JMX exporter rule {i} matches none of the sample MBeans"
        );
    }
    names
}

pub(crate) fn other_exporter_names() -> BTreeSet<String> {
    let mut names = jmx_exporter_names();
    names.extend(KAFKA_EXPORTER_NAMES.iter().map(|s| (*s).to_owned()));
    names
}

#[test]
fn kafka_jmx_rules_produce_the_names_the_bundle_uses() {
    let names = jmx_exporter_names();
    for want in [
        "kafka_server_brokertopicmetrics_messagesin_total",
        "kafka_server_brokertopicmetrics_messagesin_alltopics_total",
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_server_replicamanager_isrshrinks_total",
        "kafka_controller_kafkacontroller_activecontrollercount",
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "kafka_server_replica_fetcher_lag_messages",
    ] {
        assert!(names.contains(want), "{want} is not produced: {names:#?}");
    }
    for n in &names {
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{n}: not a clean metric name"
        );
    }
}

/// The monitoring stack's series the meta rules and runbooks name exist in the real Prometheus,
/// Alertmanager and vmalert Debian ships: each is started on loopback (Prometheus with a rule
/// file, an Alertmanager, and remote write into VictoriaMetrics, so the queue has sent once)
/// and every name of MONITORING_STACK_NAMES is looked up in their /metrics.
#[test]
fn monitoring_stack_names_exist_in_the_real_binaries() {
    if !testkit::require_tools(&[
        "prometheus",
        "prometheus-alertmanager",
        "vmalert",
        "victoria-metrics",
    ]) {
        return;
    }
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = testkit::TempDir::new("stack-names");
    let port = || testkit::free_tcp_port();
    let (prom, am, vm, vma) = (port(), port(), port(), port());
    let spawn = |cmd: &str, args: Vec<String>| {
        Killed(
            Command::new(cmd)
                .args(args)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n",
    )
    .expect("rules");
    fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am}']}}]}}]}}\n\
             remote_write: [{{url: 'http://127.0.0.1:{vm}/api/v1/write'}}]\n\
             rule_files: [rules.yml]\n\
             scrape_configs: [{{job_name: prometheus, static_configs: [{{targets: ['127.0.0.1:{prom}']}}]}}]\n"
        ),
    )
    .expect("config");
    fs::write(
        dir.join("am.yml"),
        "route: {receiver: x}\nreceivers: [{name: x}]\n",
    )
    .expect("am");
    let _vm = spawn(
        "victoria-metrics",
        vec![
            format!("-httpListenAddr=127.0.0.1:{vm}"),
            format!("-storageDataPath={}", dir.join("vm").display()),
        ],
    );
    let _am = spawn(
        "prometheus-alertmanager",
        vec![
            "--config.file=am.yml".into(),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am}"),
            "--cluster.listen-address=".into(),
        ],
    );
    let _prom = spawn(
        "prometheus",
        vec![
            "--config.file=prometheus.yml".into(),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom}"),
        ],
    );
    let _vmalert = spawn(
        "vmalert",
        vec![
            format!("-rule={}", dir.join("rules.yml").display()),
            format!("-datasource.url=http://127.0.0.1:{prom}"),
            format!("-notifier.url=http://127.0.0.1:{am}"),
            format!("-httpListenAddr=127.0.0.1:{vma}"),
            "-evaluationInterval=1s".into(),
        ],
    );
    let scrape = || -> String {
        [prom, am, vma]
            .iter()
            .filter_map(|p| {
                testkit::try_request("GET", &format!("http://127.0.0.1:{p}/metrics"), &[]).ok()
            })
            .map(|r| r.text())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let has = |text: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
    };
    let all = testkit::eventually(std::time::Duration::from_secs(40), || {
        let text = scrape();
        MONITORING_STACK_NAMES
            .iter()
            .all(|n| has(&text, n))
            .then_some(())
    });
    let text = scrape();
    let missing: Vec<&&str> = MONITORING_STACK_NAMES
        .iter()
        .filter(|n| !has(&text, n))
        .collect();
    assert!(
        all.is_some(),
        "not exposed by the real Prometheus, Alertmanager or vmalert: {missing:?}"
    );
}
