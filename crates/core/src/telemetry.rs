//! Traces of the exporter's own work (scrapes, ingest batches, probe refreshes), exported
//! over OTLP HTTP/protobuf only when the standard `OTEL_EXPORTER_OTLP_*` variables ask for it.
//! Unset, no exporter exists and the spans are disabled at their call sites.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// True once an OTLP exporter is installed; callers skip trace-only work otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What the environment asked for, validated before anything starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Full URL traces are POSTed to (`.../v1/traces`).
    pub endpoint: String,
    pub service_name: String,
    pub sampler: SamplerSpec,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerSpec>),
}

impl SamplerSpec {
    fn build(&self) -> Sampler {
        match self {
            SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
            SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
            SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(*r),
            SamplerSpec::ParentBased(root) => Sampler::ParentBased(Box::new(root.build())),
        }
    }
}

/// Why the OTEL_* variables cannot be honoured (the exporter refuses to start, exit code 2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelemetryError {
    /// A value this build has no support for: what it supports is said.
    #[error("{var}={value:?}: {supported}")]
    Unsupported {
        var: &'static str,
        value: String,
        supported: &'static str,
    },
    /// A value that cannot be read.
    #[error("{var}={value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP trace exporter: {0}")]
    Exporter(String),
}

/// Reads the OTEL_* variables through `env`. `Ok(None)`: tracing stays off.
pub fn settings_from_env(
    env: impl Fn(&str) -> Option<String>,
    default_service: &str,
) -> Result<Option<TraceSettings>, TelemetryError> {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Ok(None);
    }
    // The per-signal URL is used as given; the general one gets the signal path appended.
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => url,
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return Ok(None),
    };
    check_transport(&get, &endpoint)?;
    let timeout_ms = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
    {
        Some(v) => v.parse::<u64>().map_err(|_| TelemetryError::Invalid {
            var: "OTEL_EXPORTER_OTLP_TIMEOUT",
            why: "not milliseconds".into(),
            value: v,
        })?,
        None => 10_000,
    };
    let service_name = get("OTEL_SERVICE_NAME")
        .or_else(|| {
            get("OTEL_RESOURCE_ATTRIBUTES")?
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == "service.name")
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| default_service.to_owned());
    let sampler = parse_sampler(
        get("OTEL_TRACES_SAMPLER").as_deref(),
        get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    Ok(Some(TraceSettings {
        endpoint,
        service_name,
        sampler,
        timeout: Duration::from_millis(timeout_ms),
    }))
}

/// Only OTLP over plain HTTP with protobuf bodies is built in: anything else is refused.
fn check_transport(
    get: &impl Fn(&str) -> Option<String>,
    endpoint: &str,
) -> Result<(), TelemetryError> {
    if let Some(exporter) = get("OTEL_TRACES_EXPORTER").filter(|v| v != "otlp") {
        return Err(TelemetryError::Unsupported {
            var: "OTEL_TRACES_EXPORTER",
            value: exporter,
            supported: "only \"otlp\" and \"none\" are supported",
        });
    }
    let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    if protocol != "http/protobuf" {
        return Err(TelemetryError::Unsupported {
            var: "OTEL_EXPORTER_OTLP_PROTOCOL",
            value: protocol,
            supported: "only \"http/protobuf\" is built in; point the exporter at a \
                        collector's OTLP/HTTP port (4318)",
        });
    }
    // TLS to the collector is not built in: a node-local collector is the intended peer.
    if !endpoint.starts_with("http://") {
        return Err(TelemetryError::Unsupported {
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: endpoint.to_owned(),
            supported: "must be an http:// URL (TLS to the collector is not built in; run a \
                        local OpenTelemetry Collector)",
        });
    }
    if let Err(e) = endpoint.parse::<axum::http::Uri>() {
        return Err(TelemetryError::Invalid {
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: endpoint.to_owned(),
            why: e.to_string(),
        });
    }
    Ok(())
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerSpec, TelemetryError> {
    let ratio = || -> Result<f64, TelemetryError> {
        match arg {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| TelemetryError::Invalid {
                    var: "OTEL_TRACES_SAMPLER_ARG",
                    value: a.to_owned(),
                    why: "must be a ratio in [0, 1]".into(),
                }),
        }
    };
    let parent = |s| SamplerSpec::ParentBased(Box::new(s));
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => SamplerSpec::AlwaysOn,
        "always_off" => SamplerSpec::AlwaysOff,
        "traceidratio" => SamplerSpec::Ratio(ratio()?),
        "parentbased_always_on" => parent(SamplerSpec::AlwaysOn),
        "parentbased_always_off" => parent(SamplerSpec::AlwaysOff),
        "parentbased_traceidratio" => parent(SamplerSpec::Ratio(ratio()?)),
        other => {
            return Err(TelemetryError::Unsupported {
                var: "OTEL_TRACES_SAMPLER",
                value: other.to_owned(),
                supported: "supported are always_on, always_off, traceidratio, \
                            parentbased_always_on, parentbased_always_off, \
                            parentbased_traceidratio",
            })
        }
    })
}

/// The installed exporter; `shutdown` flushes what is still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Builds the OTLP exporter. Exports run on `runtime` (the hyper client needs Tokio;
    /// the SDK's batch thread only waits for them).
    pub fn start(
        settings: &TraceSettings,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Tracing, SdkTracer), TelemetryError> {
        let client = OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                settings.timeout,
                None,
            ),
            runtime,
        };
        // Headers come from OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, read by the builder itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        // Resource::builder() reads OTEL_RESOURCE_ATTRIBUTES; the name is set last so the
        // binary-name default applies only when neither variable names a service.
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(settings.sampler.build())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(settings.service_name.clone());
        ENABLED.store(true, Ordering::Relaxed);
        Ok((Tracing { provider }, tracer))
    }

    /// Flushes queued spans and stops the exporter. Blocks until the last export is done, which
    /// runs on the runtime: call it off the runtime thread while that thread still drives it.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

/// Runs each export on the exporter's Tokio runtime, so the SDK's plain batch thread can
/// drive the hyper client.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

/// The remote parent named by a W3C `traceparent` header, if any.
pub fn extract_parent(headers: &axum::http::HeaderMap) -> Context {
    use opentelemetry::propagation::TextMapPropagator;
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// `(trace_id, span_id)` of the current span when tracing is on and the span is sampled.
pub fn current_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled())
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings_from_env(|k| map.get(k).cloned(), "tx-exporter")
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        assert!(settings(&on).expect("valid").is_some());
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(settings(&disabled), Ok(None));
    }

    #[test]
    fn endpoints_names_and_samplers() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .expect("valid")
            .expect("on");
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.service_name, "tx-exporter");
        assert_eq!(
            s.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
        );
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=b,service.name=from-attrs"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(s.endpoint, "http://t:1/x");
        assert_eq!(s.service_name, "from-attrs");
        assert_eq!(
            s.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(0.25)))
        );
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(s.service_name, "svc");
    }

    #[test]
    fn unsupported_settings_are_startup_errors() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "http/protobuf",
            ),
            (
                &[on, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
                "http/protobuf",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")],
                "http:// URL",
            ),
            (
                &[on, ("OTEL_TRACES_SAMPLER", "jaeger_remote")],
                "supported are",
            ),
            (
                &[
                    on,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "[0, 1]",
            ),
            (
                &[on, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "milliseconds",
            ),
            (&[on, ("OTEL_TRACES_EXPORTER", "zipkin")], "otlp"),
        ];
        for (vars, expected) in cases {
            let err = settings(vars).expect_err(expected);
            assert!(err.to_string().contains(expected), "{vars:?}: {err}");
        }
    }
}
