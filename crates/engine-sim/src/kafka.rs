//! The node's Kafka as Prometheus sees it: one broker's metrics under the names the shipped
//! JMX exporter rules (deploy/kafka/jmx-exporter.yml) give them, on `/metrics`, and the
//! ingestion consumer group's lag as kafka_exporter reports it, on `/kafka-exporter/metrics`.
//! The simulator updates both every tick; a scrape reads the latest rendering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rng::Rng;
use crate::scenario::Kafka as Params;
use crate::walk::WalkState;

/// Topic the ingestion engines consume; its consumer group matches the alert's
/// `ingestion-group-.+`.
const TOPIC: &str = "ingest-events";
const GROUP: &str = "ingestion-group-1";
const PARTITIONS: usize = 4;

#[derive(Default)]
struct Pages {
    broker: String,
    exporter: String,
    up: bool,
}

pub struct KafkaBroker {
    pages: Arc<Mutex<Pages>>,
    pub addr: SocketAddr,
    messages_in: u64,
    isr_shrinks: u64,
    isr_expands: u64,
    follower_lag: Vec<WalkState>,
    consumer_lag: Vec<WalkState>,
}

impl KafkaBroker {
    pub fn start(addr: SocketAddr, p: &Params) -> std::io::Result<KafkaBroker> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let pages = Arc::new(Mutex::new(Pages::default()));
        let served = pages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &served);
            }
        });
        Ok(KafkaBroker {
            pages,
            addr,
            messages_in: 0,
            isr_shrinks: 0,
            isr_expands: 0,
            follower_lag: (0..PARTITIONS)
                .map(|_| WalkState::new(&p.follower_lag_messages))
                .collect(),
            consumer_lag: (0..PARTITIONS)
                .map(|_| WalkState::new(&p.consumer_lag_messages))
                .collect(),
        })
    }

    pub fn tick(&mut self, p: &Params, dt: f64, rng: &mut Rng) {
        self.messages_in += rng.poisson(p.messages_in_per_s * dt);
        self.isr_shrinks += rng.poisson(p.isr_shrinks_per_s * dt);
        self.isr_expands += rng.poisson(p.isr_expands_per_s * dt);
        for w in &mut self.follower_lag {
            w.step(&p.follower_lag_messages, dt, rng);
        }
        for w in &mut self.consumer_lag {
            w.step(&p.consumer_lag_messages, dt, rng);
        }
        let broker = self.render_broker(p);
        let exporter = self.render_exporter();
        if let Ok(mut pages) = self.pages.lock() {
            pages.broker = broker;
            pages.exporter = exporter;
            pages.up = p.up;
        }
    }

    fn render_broker(&self, p: &Params) -> String {
        let mut s = String::new();
        let mut gauge = |name: &str, help: &str, v: f64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        };
        gauge(
            "kafka_server_replicamanager_underreplicatedpartitions",
            "kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions",
            p.under_replicated_partitions,
        );
        gauge(
            "kafka_server_replicamanager_partitioncount",
            "kafka.server:type=ReplicaManager,name=PartitionCount",
            p.partitions,
        );
        gauge(
            "kafka_controller_kafkacontroller_activecontrollercount",
            "kafka.controller:type=KafkaController,name=ActiveControllerCount",
            p.active_controllers,
        );
        gauge(
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "kafka.controller:type=KafkaController,name=OfflinePartitionsCount",
            p.offline_partitions,
        );
        for (name, help, v) in [
            (
                "kafka_server_replicamanager_isrshrinks_total",
                "kafka.server:type=ReplicaManager,name=IsrShrinksPerSec",
                self.isr_shrinks,
            ),
            (
                "kafka_server_replicamanager_isrexpands_total",
                "kafka.server:type=ReplicaManager,name=IsrExpandsPerSec",
                self.isr_expands,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        let name = "kafka_server_brokertopicmetrics_messagesin_total";
        s.push_str(&format!(
            "# HELP {name} kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec\n\
             # TYPE {name} counter\n{name}{{topic=\"{TOPIC}\"}} {}\n",
            self.messages_in
        ));
        let name = "kafka_server_replica_fetcher_lag_messages";
        s.push_str(&format!(
            "# HELP {name} kafka.server:type=FetcherLagMetrics,name=ConsumerLag\n# TYPE {name} gauge\n"
        ));
        for (i, lag) in self.follower_lag.iter().map(WalkState::rounded).enumerate() {
            s.push_str(&format!(
                "{name}{{fetcher=\"ReplicaFetcherThread-0-1\",topic=\"{TOPIC}\",partition=\"{i}\"}} {lag}\n"
            ));
        }
        s
    }

    fn render_exporter(&self) -> String {
        let mut s = String::from(
            "# HELP kafka_consumergroup_lag Current Approximate Lag of a ConsumerGroup at Topic/Partition\n\
             # TYPE kafka_consumergroup_lag gauge\n",
        );
        for (i, lag) in self.consumer_lag.iter().map(WalkState::rounded).enumerate() {
            s.push_str(&format!(
                "kafka_consumergroup_lag{{consumergroup=\"{GROUP}\",partition=\"{i}\",topic=\"{TOPIC}\"}} {lag}\n"
            ));
        }
        s.push_str(&format!(
            "# HELP kafka_consumergroup_members Amount of members in a consumer group\n\
             # TYPE kafka_consumergroup_members gauge\nkafka_consumergroup_members{{consumergroup=\"{GROUP}\"}} 2\n"
        ));
        s
    }
}

/// One request, one answer, connection closed: all a Prometheus scrape needs. A broker that
/// is down closes the connection unanswered.
fn answer(mut conn: TcpStream, pages: &Mutex<Pages>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let path = req
        .split(|b| *b == b' ')
        .nth(1)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let (up, body) = match pages.lock() {
        Ok(p) => (
            p.up,
            match path.as_str() {
                "/metrics" => Some(p.broker.clone()),
                "/kafka-exporter/metrics" => Some(p.exporter.clone()),
                _ => None,
            },
        ),
        Err(_) => return Ok(()),
    };
    if !up {
        return Ok(());
    }
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", "not found\n".to_string()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).expect("connect");
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_the_broker_and_the_consumer_group_as_prometheus_text() {
        let s = scenario::load("kafka-controller-lost", None).expect("scenario");
        let mut k = KafkaBroker::start("127.0.0.1:0".parse().expect("addr"), &s.before.kafka)
            .expect("bind");
        let mut rng = Rng::new(7);
        for _ in 0..10 {
            k.tick(&s.after.kafka, 0.1, &mut rng);
        }
        let broker = get(k.addr, "/metrics");
        assert!(broker.starts_with("HTTP/1.1 200"), "{broker}");
        assert!(broker.contains("\nkafka_controller_kafkacontroller_activecontrollercount 0\n"));
        assert!(broker.contains("\nkafka_controller_kafkacontroller_offlinepartitionscount 3\n"));
        assert!(broker.contains("\nkafka_server_replicamanager_underreplicatedpartitions 14\n"));
        assert!(broker.contains("# TYPE kafka_server_replicamanager_isrshrinks_total counter"));
        let exporter = get(k.addr, "/kafka-exporter/metrics");
        let lags: Vec<f64> = exporter
            .lines()
            .filter(|l| l.starts_with("kafka_consumergroup_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(lags.len(), PARTITIONS);
        assert!(lags.iter().all(|l| *l >= 60000.0), "{lags:?}");
        assert!(get(k.addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}
