//! Traces, exemplars and profiles on the real fixture-exporter binary (the fixture tier of crates/core/fixture): spans arrive at a real
//! OTLP/HTTP receiver (decoded with the opentelemetry-proto definitions), engine trace ids
//! come back out of a real Prometheus' exemplar API, and a CPU profile decodes as pprof.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use testkit::{eventually, Exporter, TempDir};

mod otlp;

use otlp::{attr, hex, Receiver};

const BIN: &str = env!("CARGO_BIN_EXE_fixture-exporter");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn scrape_spans_reach_an_otlp_receiver_and_continue_the_callers_trace() {
    let receiver = Receiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let exp = Exporter::start_with_env(
        BIN,
        &["--log.level=info,http=debug"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme%20corp"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let resp = exp.get("/metrics", &[("traceparent", &traceparent)]);
    assert_eq!(resp.status, 200);
    // A scrape without a caller starts its own trace.
    assert_eq!(exp.get("/health", &[]).status, 200);

    // Log lines inside the request carry its ids.
    let logs = exp.logs();
    let scrape_log: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "scrape")
        .unwrap_or_else(|| panic!("no scrape log line:\n{logs}"));
    assert_eq!(scrape_log["trace_id"], TRACE_ID, "{scrape_log}");
    assert_eq!(scrape_log["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(scrape_log["component"], "http");

    // SIGTERM flushes the batch the exporter still holds.
    assert!(exp.terminate().success());
    let spans = eventually(Duration::from_secs(10), || {
        let s = receiver.spans();
        (s.len() >= 4).then_some(s)
    })
    .unwrap_or_else(|| panic!("spans never arrived: {:?}", receiver.spans().len()));

    {
        let exports = receiver.exports.lock().unwrap();
        let first = &exports[0];
        assert_eq!(first.path, "/v1/traces");
        assert_eq!(
            first.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        assert_eq!(
            first.headers.get("x-tenant").map(String::as_str),
            Some("acme corp")
        );
        let resource = first.body.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(
            attr(&resource.attributes, "deployment.environment").as_deref(),
            Some("test")
        );
    }
    let by_name = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    assert!(spans.iter().all(|(svc, _)| svc == "fixture-exporter"));
    let request = by_name("GET /metrics");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), PARENT_SPAN);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(&request.attributes, "http.route").as_deref(),
        Some("/metrics")
    );
    assert_eq!(
        attr(&request.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr(&request.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    let scrape = by_name("scrape");
    assert_eq!(scrape.len(), 1);
    assert_eq!(scrape[0].parent_span_id, request.span_id);
    assert_eq!(scrape[0].trace_id, request.trace_id);
    for child in ["scrape.hooks", "scrape.render"] {
        let c = by_name(child);
        assert_eq!(c.len(), 1, "{child}");
        assert_eq!(c[0].parent_span_id, scrape[0].span_id, "{child}");
    }
    let health = by_name("GET /health");
    assert_eq!(health.len(), 1);
    assert!(health[0].parent_span_id.is_empty(), "a new root span");
    assert_ne!(health[0].trace_id, request.trace_id);
}

#[test]
fn service_name_and_sampler_come_from_the_environment() {
    let receiver = Receiver::start();
    let endpoint = format!("http://{}/v1/traces", receiver.addr);
    let exp = Exporter::start_with_env(
        BIN,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "tx-sidecar-7"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_off"),
        ],
    );
    // A sampled caller is followed; an unsampled root is not recorded.
    let sampled = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    assert_eq!(exp.get("/health", &[("traceparent", &sampled)]).status, 200);
    assert_eq!(exp.get("/metrics", &[]).status, 200);
    assert!(exp.terminate().success());
    let spans = eventually(Duration::from_secs(10), || {
        let s = receiver.spans();
        (!s.is_empty()).then_some(s)
    })
    .expect("the sampled request's span");
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(names, ["GET /health"], "only the caller-sampled request");
    assert_eq!(spans[0].0, "tx-sidecar-7");
}

#[test]
fn unsupported_otlp_settings_stop_the_exporter_at_startup() {
    for (env, expected) in [
        (
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "http/protobuf",
        ),
        (
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
            "OTEL_TRACES_SAMPLER",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("--web.listen-address=127.0.0.1:0")
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}

#[test]
fn without_otel_variables_log_lines_carry_no_trace_ids() {
    let exp = Exporter::start(BIN, &["--log.level=info,http=debug"]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    assert_eq!(
        exp.get("/metrics", &[("traceparent", &traceparent)]).status,
        200
    );
    let logs = exp.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"event\":\"scrape\""))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(!line.contains("trace_id"), "{line}");
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn engine_trace_ids_come_back_from_prometheus_exemplar_storage() {
    if !testkit::require_tool("prometheus") {
        return;
    }
    let dir = TempDir::new("exemplar-prom");
    let log = dir.join("events.log");
    let glob = format!("--ingest.log-path={}", dir.join("events*.log").display());
    std::fs::write(&log, "").unwrap();
    let exp = Exporter::start(BIN, &[&glob]);
    // The file exists at start-up, so it is read from its end: write after the first scan.
    exp.wait_for_follower();
    // A slow query from the engine, inside trace TRACE_ID.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        f,
        "{{\"event\":\"query_executed\",\"duration_ms\":800,\"trace_id\":\"{TRACE_ID}\",\"span_id\":\"{PARENT_SPAN}\"}}"
    )
    .unwrap();
    drop(f);
    let om = eventually(Duration::from_secs(15), || {
        let om = exp.scrape_openmetrics();
        om.contains(TRACE_ID).then_some(om)
    })
    .unwrap_or_else(|| panic!("no exemplar in OpenMetrics output:\n{}", exp.logs()));
    let bucket = om
        .lines()
        .find(|l| l.starts_with("fixture_query_duration_seconds_bucket") && l.contains(TRACE_ID))
        .unwrap();
    assert!(
        bucket.contains(&format!(
            "# {{trace_id=\"{TRACE_ID}\",span_id=\"{PARENT_SPAN}\"}} 0.8"
        )),
        "{bucket}"
    );

    let prom_dir = TempDir::new("prometheus");
    let config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tx-engines\n    static_configs:\n      - targets: ['{}']\n",
            exp.addr
        ),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_tcp_port()));
    let prom = Prometheus {
        child: Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr,
        _dir: prom_dir,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!(
        "http://{}/api/v1/query_exemplars?query=fixture_query_duration_seconds_bucket&start={}&end={}",
        prom.addr,
        now - 600,
        now + 600
    );
    let mut last = String::new();
    let found = eventually(Duration::from_secs(30), || {
        if std::net::TcpStream::connect(prom.addr).is_err() {
            return None;
        }
        last = testkit::get(&url, &[]).text();
        let v: serde_json::Value = serde_json::from_str(&last).ok()?;
        let series = v["data"].as_array()?;
        series.iter().find_map(|s| {
            s["exemplars"]
                .as_array()?
                .iter()
                .find_map(|e| (e["labels"]["trace_id"] == TRACE_ID).then(|| (s.clone(), e.clone())))
        })
    });
    let (series, exemplar) =
        found.unwrap_or_else(|| panic!("Prometheus returned no exemplar: {last}"));
    assert_eq!(exemplar["labels"]["span_id"], PARENT_SPAN);
    assert_eq!(exemplar["value"], "0.8");
    assert_eq!(series["seriesLabels"]["job"], "tx-engines");
    let le = series["seriesLabels"]["le"].as_str().unwrap_or_default();
    assert!(le == "1.0" || le == "1", "{series}");
}

#[test]
fn cpu_profile_endpoint_serves_gzipped_pprof_behind_auth() {
    // Off by default.
    let plain = Exporter::start(BIN, &[]);
    assert_eq!(plain.get("/debug/pprof/profile?seconds=1", &[]).status, 404);
    drop(plain);

    let dir = TempDir::new("pprof-auth");
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    let exp = Exporter::start(
        BIN,
        &[
            "--web.enable-profiling",
            &format!("--web.config.file={}", web.display()),
        ],
    );
    let auth = ("Authorization", "Basic YWxpY2U6czNjcmV0"); // alice:s3cret
    assert_eq!(exp.get("/debug/pprof/profile?seconds=1", &[]).status, 401);
    assert_eq!(
        exp.get("/debug/pprof/profile?seconds=0", &[auth]).status,
        400
    );
    assert_eq!(
        exp.get("/debug/pprof/profile?seconds=99999", &[auth])
            .status,
        400
    );

    // Keep the exporter busy so the profile has stacks in it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = exp.url("/metrics");
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                testkit::get(&url, &[auth]);
            }
        })
    };
    let profile_url = exp.url("/debug/pprof/profile?seconds=2");
    let first = std::thread::spawn(move || testkit::get(&profile_url, &[auth]));
    // A second profile while the first runs is refused, not queued.
    std::thread::sleep(Duration::from_millis(500));
    let busy = exp.get("/debug/pprof/profile?seconds=1", &[auth]);
    assert_eq!(busy.status, 409);
    let resp = first.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(&resp.body[..2], &[0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(resp.body.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let profile = <pprof::protos::Profile as pprof::protos::Message>::decode(raw.as_slice())
        .expect("pprof protobuf");
    let string = |i: i64| profile.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (string(t.ty), string(t.unit)))
        .collect();
    assert!(types.contains(&("cpu", "nanoseconds")), "{types:?}");
    assert!(!profile.sample.is_empty(), "no samples in 2 s of load");
    assert!(!profile.function.is_empty());
    assert!(profile.duration_nanos >= 1_000_000_000);
    let names: Vec<&str> = profile.function.iter().map(|f| string(f.name)).collect();
    assert!(
        names.iter().any(|n| n.contains("exporter_core")),
        "the exporter's own frames are symbolized: {:?}",
        &names[..names.len().min(20)]
    );
    // Free again afterwards.
    assert_eq!(
        exp.get("/debug/pprof/profile?seconds=1", &[auth]).status,
        200
    );
}

#[test]
fn ingest_reads_and_probe_refreshes_are_traced() {
    let receiver = Receiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let dir = TempDir::new("trace-ingest");
    let log = dir.join("events.log");
    std::fs::write(&log, "").unwrap();
    let glob = format!("--ingest.log-path={}", dir.join("events*.log").display());
    let exp =
        Exporter::start_with_env(BIN, &[&glob], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    // The file exists at start-up, so it is read from its end: write after the first scan.
    exp.wait_for_follower();
    std::fs::write(
        &log,
        "{\"event\":\"query_executed\",\"duration_ms\":3}\n{\"event\":\"query_executed\",\"duration_ms\":4}\n",
    )
    .unwrap();
    eventually(Duration::from_secs(15), || {
        let text = exp.scrape_text();
        (testkit::sample_value(&text, "fixture_query_duration_seconds_count") == Some(2.0))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("events not applied: {}", exp.logs()));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"queries:1|c\nqueries:2|c", exp.statsd)
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let text = exp.scrape_text();
        (testkit::sample_value(
            &text,
            "fixture_exporter_statsd_datagrams_total{listener=\"udp\"}",
        ) == Some(1.0))
        .then_some(())
    })
    .expect("datagram counted");
    assert!(exp.terminate().success());
    let spans = eventually(Duration::from_secs(10), || {
        let s = receiver.spans();
        s.iter().any(|(_, s)| s.name == "events.read").then_some(s)
    })
    .expect("an events.read span");
    let read: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "events.read")
        .collect();
    let lines: i64 = read
        .iter()
        .map(|s| {
            attr(&s.attributes, "lines")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(lines, 2, "{read:#?}");
    assert!(read
        .iter()
        .all(|s| attr(&s.attributes, "path").is_some_and(|p| p.ends_with("events.log"))));
    let statsd: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "statsd.batch")
        .collect();
    assert_eq!(statsd.len(), 1, "{statsd:#?}");
    assert_eq!(
        attr(&statsd[0].attributes, "datagrams").as_deref(),
        Some("1")
    );
    assert_eq!(attr(&statsd[0].attributes, "lines").as_deref(), Some("2"));
    assert_eq!(
        attr(&statsd[0].attributes, "listener").as_deref(),
        Some("udp")
    );
    let probe = spans
        .iter()
        .find(|(_, s)| s.name == "engine.probe")
        .expect("an engine.probe span");
    assert_eq!(
        attr(&probe.1.attributes, "configured").as_deref(),
        Some("false")
    );
}
