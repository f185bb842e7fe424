//! The monitoring stack of the scenario test: Alertmanager, the Prometheus that scrapes
//! every cluster, and one with no target.

use super::*;

/// Alertmanager, the Prometheus that scrapes every cluster, and a second Prometheus with
/// the exporter rules and no target (for ExporterTargetsAbsent).
pub(crate) struct Monitoring {
    // Held so the processes live as long as the monitoring; killed when it is dropped, in
    // this order.
    _lone_prom: Proc,
    _prom: Proc,
    _am: Proc,
    pub(crate) am_url: String,
    pub(crate) prom_url: String,
    pub(crate) prom_started: Instant,
}

impl Monitoring {
    pub(crate) fn start(
        stack: &Stack,
        clusters: &[Cluster],
        ports: &mut Ports,
        rule_files: &[PathBuf],
        am_config: &Path,
    ) -> Monitoring {
        let dir = &stack.dir;
        let am_port = ports.tcp();
        ports.release(&[am_port], &[]);
        let am = Proc::spawn(
            "alertmanager",
            Path::new("prometheus-alertmanager"),
            &[
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", dir.join("am-data").display()),
                format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ],
            dir,
        );
        let prom_port = ports.tcp();
        let mut scrape = String::new();
        for job in stack.tier_of_job.keys() {
            scrape.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
            for c in clusters {
                let targets: Vec<String> = c
                    .targets
                    .iter()
                    .filter(|(j, _)| j == job)
                    .map(|(_, t)| format!("'{t}'"))
                    .collect();
                scrape.push_str(&format!(
                    "      - targets: [{}]\n        labels: {{cluster: '{}'}}\n",
                    targets.join(", "),
                    c.scenario
                ));
            }
        }
        // Kafka as the shipped scrape configuration names it: the brokers' JMX exporter (job
        // kafka) and kafka_exporter (job kafka-exporter), both played by each cluster's simulator.
        for (job, path) in [
            ("kafka", "/metrics"),
            ("kafka-exporter", "/kafka-exporter/metrics"),
        ] {
            scrape.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: {path}\n    static_configs:\n"
            ));
            for c in clusters {
                scrape.push_str(&format!(
                    "      - targets: ['{}']\n        labels: {{cluster: '{}'}}\n",
                    c.kafka, c.scenario
                ));
            }
        }
        let prom_config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             rule_files:\n{}\nscrape_configs:\n{scrape}",
            rule_files
                .iter()
                .map(|f| format!("  - '{}'\n", f.display()))
                .collect::<String>()
        );
        let prom_config_path = dir.join("prometheus.yml");
        std::fs::write(&prom_config_path, prom_config).unwrap();
        ports.release(&[prom_port], &[]);
        let prom = spawn_prometheus("prometheus", &prom_config_path, prom_port, dir);
        let prom_url = format!("http://127.0.0.1:{prom_port}");
        let am_url = format!("http://127.0.0.1:{am_port}");
        assert!(
            testkit::eventually(Duration::from_secs(30), || {
                http_get(&format!("{prom_url}/-/ready")).and(http_get(&format!("{am_url}/-/ready")))
            })
            .is_some(),
            "Prometheus/Alertmanager not ready:\n{}\n{}",
            prom.tail(),
            am.tail()
        );
        let prom_started = Instant::now();

        // The second Prometheus: the exporter rules, an Alertmanager, and no target.
        let lone_port = ports.tcp();
        let exporter_rules = rule_files
            .iter()
            .find(|f| f.ends_with("exporters.rules.yml"))
            .expect("exporters.rules.yml");
        let lone_config = dir.join("prometheus-no-targets.yml");
        std::fs::write(
            &lone_config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  \
                 external_labels: {{cluster: '{NO_TARGETS}'}}\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
                 rule_files:\n  - '{}'\n",
                exporter_rules.display()
            ),
        )
        .unwrap();
        ports.release(&[lone_port], &[]);
        let lone_prom = spawn_prometheus("prometheus-no-targets", &lone_config, lone_port, dir);
        Monitoring {
            _lone_prom: lone_prom,
            _prom: prom,
            _am: am,
            am_url,
            prom_url,
            prom_started,
        }
    }
}
