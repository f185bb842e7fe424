//! The HTTP side: `/metrics` (content-negotiated, gzip on request), `/health`, and a landing
//! page, optionally behind TLS and basic auth.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tower_http::compression::predicate::{NotForContentType, Predicate};
use tower_http::compression::{CompressionLayer, DefaultPredicate};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::exposition::{self, Format};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::profiling::{self, Profiler};
use crate::reload::ReloadRequest;
use crate::web_config::{self, BasicAuth, LiveWeb, Precheck};

pub type ScrapeHook = Box<dyn Fn() + Send + Sync>;

pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Health,
    pub scrape_hooks: Vec<ScrapeHook>,
    /// What a scrape renders under (the event-log follower's ledger, which persists the
    /// positions it served); None: render directly.
    pub render_guard: Option<Arc<dyn exposition::RenderGuard>>,
    /// Scrapes served at once (`web.max_requests`); None: no limit.
    pub scrape_slots: Option<Arc<tokio::sync::Semaphore>>,
    pub binary: String,
    pub tier: String,
    pub telemetry_path: String,
    /// Set when `web.enable_profiling` is on.
    pub profiler: Option<Arc<Profiler>>,
    /// Where `POST /-/reload` asks for a reload; None unless `web.enable_lifecycle` is on.
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
}

pub fn router(state: Arc<AppState>, web: Arc<LiveWeb>) -> Router {
    let profiler = state.profiler.clone();
    let mut router = Router::new()
        .route("/", get(landing))
        .route("/health", get(health))
        // Probes as Prometheus names them: alive, and able to serve /metrics.
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        .route("/-/reload", post(reload))
        .route(&state.telemetry_path, get(metrics))
        .with_state(state);
    if let Some(profiler) = profiler {
        router = router.merge(
            Router::new()
                .route(profiling::PATH, get(profiling::handler))
                .with_state(profiler),
        );
    }
    let auth = web.clone();
    let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let auth = auth.auth.load_full();
        async move {
            match auth {
                Some(auth) => require_auth(auth, req, next).await,
                None => next.run(req).await,
            }
        }
    }));
    // Outside auth, so refused requests are traced too.
    let router = with_headers(router.layer(middleware::from_fn(trace_request)), web);
    // Profiles are gzip files already.
    let compress =
        DefaultPredicate::new().and(NotForContentType::const_new("application/octet-stream"));
    router.layer(CompressionLayer::new().gzip(true).compress_when(compress))
}

/// Adds the web config's `http_server_config.headers` to every response.
fn with_headers(router: Router, web: Arc<LiveWeb>) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let headers = web.headers.load_full();
        async move {
            let mut response = next.run(req).await;
            for (name, value) in headers.iter() {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            response
        }
    }))
}

/// One server span per request, continuing the caller's trace from a W3C `traceparent`.
async fn trace_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!(
        target: "http",
        "request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Only when exporting: extraction is wasted work otherwise.
    if crate::telemetry::enabled() && !span.is_disabled() {
        let _ = span.set_parent(crate::telemetry::extract_parent(req.headers()));
    }
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

async fn require_auth(auth: Arc<BasicAuth>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let ok = match auth.precheck(header) {
        Precheck::Cached => true,
        Precheck::Refused => false,
        Precheck::Verify(header) => web_config::verify_scheduled(auth, header, peer).await,
    };
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"exporter\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let _slot = match &app.scrape_slots {
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many scrapes at once (web.max_requests)\n",
                )
                    .into_response()
            }
        },
        None => None,
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let started = Instant::now();
    let span = tracing::info_span!(target: "http", "scrape", format = ?format);
    let _in_scrape = span.enter();
    {
        let _hooks =
            tracing::info_span!(target: "http", "scrape.hooks", hooks = app.scrape_hooks.len())
                .entered();
        for hook in &app.scrape_hooks {
            hook();
        }
    }
    let mut render = || exposition::render(app.metrics.registry(), format);
    let rendered =
        tracing::info_span!(target: "http", "scrape.render").in_scope(|| match &app.render_guard {
            Some(guard) => guard.serve(&mut render),
            None => render(),
        });
    let took = started.elapsed().as_secs_f64();
    let _ = app.metrics.own().scrape_duration.observe(&[], took, None);
    tracing::debug!(target: "http", event = "scrape", format = ?format, duration_seconds = took);
    match rendered {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            )],
            body,
        )
            .into_response(),
        Err(_) => {
            tracing::error!(target: "http", event = "render_failed", "could not render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "render failed\n").into_response()
        }
    }
}

/// `POST /-/reload`: answers once the reload is applied or refused (as Prometheus: 200, or
/// 500 with the reason; 403 unless `--web.enable-lifecycle`).
async fn reload(State(app): State<Arc<AppState>>) -> Response {
    let Some(requests) = &app.reload else {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    };
    let (reply, result) = tokio::sync::oneshot::channel();
    if requests.send(Some(reply)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match result.await {
        Ok(Ok(())) => "configuration reloaded\n".into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let (healthy, sources) = app.health.snapshot();
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "binary": app.binary,
        "tier": app.tier,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.health.uptime_seconds(),
        "sources": sources,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn landing(State(app): State<Arc<AppState>>) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{bin}</title></head>\n\
         <body>\n<h1>{bin}</h1>\n<p>Prometheus sidecar exporter for the {tier} tier, version {ver}.</p>\n\
         <ul>\n<li><a href=\"{path}\">{path}</a>: metrics (OpenMetrics or Prometheus text)</li>\n\
         <li><a href=\"/health\">/health</a>: exporter and source status (JSON)</li>\n</ul>\n\
         </body></html>\n",
        bin = app.binary,
        tier = app.tier,
        ver = env!("CARGO_PKG_VERSION"),
        path = app.telemetry_path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_is_503_while_a_source_has_failed() {
        let schema = Schema::parse(&crate::schema::test_schema_toml("tx", "")).expect("schema");
        let health = Health::default();
        let state = Arc::new(AppState {
            metrics: Arc::new(Metrics::new(&schema, Default::default()).expect("registry")),
            health: health.clone(),
            scrape_hooks: Vec::new(),
            render_guard: None,
            scrape_slots: None,
            binary: "tx-exporter".into(),
            tier: "tx".into(),
            telemetry_path: "/metrics".into(),
            profiler: None,
            reload: None,
        });
        let app = router(state, Arc::default());
        let source = health.source("statsd");
        source.ok("listening");
        let (status, body) = get(app.clone(), "/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        source.failed("stopped", "socket closed");
        let (status, body) = get(app.clone(), "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["status"], "unhealthy");
        assert_eq!(v["sources"]["statsd"]["last_error"], "socket closed");
        // /metrics keeps working while unhealthy.
        let (status, _) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
    }
}
