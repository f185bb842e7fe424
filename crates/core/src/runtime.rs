//! The composition root: parses the command line, builds the registry from the schema, starts
//! every source and probe, serves HTTP and stops cleanly on SIGTERM/SIGINT.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config, SectionSpec, Settings};
use crate::context::{self, TaskContext};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::schema::{Schema, SchemaError};
use crate::{
    connections, ingest, logging, probe, profiling, reload, server, telemetry, web_config,
};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type BoxTask = Box<dyn FnOnce(TaskContext) -> Result<BoxFuture, SchemaError> + Send>;
type MakeScrapeHook = Box<dyn FnOnce(&Config, &Metrics) -> Result<server::ScrapeHook, SchemaError>>;

/// One tier: its schema plus the probes only it has.
pub struct Tier {
    schema_toml: &'static str,
    sections: Vec<SectionSpec>,
    tasks: Vec<(&'static str, BoxTask)>,
    scrape_hooks: Vec<MakeScrapeHook>,
}

impl Tier {
    /// Its schema, parsed.
    pub fn schema(&self) -> Result<Schema, SchemaError> {
        Schema::parse(self.schema_toml)
    }

    /// The settings sections it registered (its own and its probes').
    pub fn sections(&self) -> &[SectionSpec] {
        &self.sections
    }

    pub fn new(schema_toml: &'static str) -> Tier {
        Tier {
            schema_toml,
            sections: Vec::new(),
            tasks: Vec::new(),
            scrape_hooks: Vec::new(),
        }
    }

    /// Adds the tier's own config section: its flags, defaults and validation join core's,
    /// and tasks read it with `ctx.config.section::<S>()`.
    pub fn settings<S: Settings>(mut self) -> Tier {
        self.sections.push(SectionSpec::of::<S>());
        self
    }

    /// Adds a probe (`crate::probe::Probe`): its settings section, unless an earlier probe
    /// registered the same one, and its refresh task.
    pub fn probe<P: probe::Probe>(mut self) -> Tier {
        let section = <P::Settings as Settings>::SECTION;
        if !section.is_empty() && !self.sections.iter().any(|s| s.name == section) {
            self = self.settings::<P::Settings>();
        }
        self.task(P::SOURCE, probe::start::<P>)
    }

    /// Adds a background task. `start` runs once the registry exists, before anything is
    /// served: it resolves its metric handles (an error stops start-up) and returns the
    /// task, which should end when `ctx.shutdown` fires.
    pub fn task<F, Fut>(mut self, name: &'static str, start: F) -> Tier
    where
        F: FnOnce(TaskContext) -> Result<Fut, SchemaError> + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((
            name,
            Box::new(move |ctx| start(ctx).map(|f| Box::pin(f) as BoxFuture)),
        ));
        self
    }

    /// Adds work done at the start of every scrape (cheap reads such as /proc or clocks).
    /// `make` resolves its metric handles once; an error stops start-up.
    pub fn on_scrape<F, H>(mut self, make: F) -> Tier
    where
        F: FnOnce(&Config, &Metrics) -> Result<H, SchemaError> + 'static,
        H: Fn() + Send + Sync + 'static,
    {
        self.scrape_hooks.push(Box::new(move |c, m| {
            make(c, m).map(|h| Box::new(h) as server::ScrapeHook)
        }));
        self
    }
}

/// Runs a tier exporter until SIGTERM/SIGINT. Exit codes: 0 ok, 1 runtime failure,
/// 2 bad configuration or command line.
pub fn run(tier: Tier) -> ExitCode {
    let schema = match Schema::parse(tier.schema_toml) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: built-in schema is invalid: {e}");
            return ExitCode::from(1);
        }
    };
    let binary = schema.tier.binary.clone();
    match prepare(&tier, schema) {
        Ok(Prepared::Start(start)) => start_and_serve(tier, *start),
        Ok(Prepared::Done(code)) => code,
        Err(e) => {
            eprintln!("{binary}: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the command line, the configuration and the environment give, all checked before a
/// runtime starts.
struct Start {
    schema: Schema,
    reload: ReloadInputs,
    loaded: config::Loaded,
    security: Option<web_config::WebSecurity>,
    trace_settings: Option<telemetry::TraceSettings>,
}

enum Prepared {
    Start(Box<Start>),
    /// `--help`, `--version` or `--check-config` answered.
    Done(ExitCode),
}

/// Why a start cannot go ahead: a bad command line or configuration (exit code 2).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("events: {0}")]
    Events(#[from] SchemaError),
    #[error(transparent)]
    WebConfig(#[from] web_config::WebConfigError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
}

/// Loads and checks everything a start needs; an error is a bad command line or
/// configuration (exit code 2).
fn prepare(tier: &Tier, schema: Schema) -> Result<Prepared, PrepareError> {
    let binary = schema.tier.binary.clone();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let loaded = match config::load(&schema.tier, &tier.sections, args.iter().cloned())? {
        config::Invocation::Run(loaded) => *loaded,
        config::Invocation::Print(text) => {
            print!("{text}");
            return Ok(Prepared::Done(ExitCode::SUCCESS));
        }
    };
    let base_schema = schema.clone();
    let mut schema = schema;
    schema.add_event_rules(loaded.config.events.clone())?;
    let security = match &loaded.config.web.config_file {
        Some(path) => Some(web_config::load(path)?),
        None => None,
    };
    let trace_settings = telemetry::settings_from_env(|k| std::env::var(k).ok(), &binary)?;
    if loaded.check_only {
        return Ok(Prepared::Done(check_config(&binary, &loaded)));
    }
    Ok(Prepared::Start(Box::new(Start {
        schema,
        reload: ReloadInputs { args, base_schema },
        loaded,
        security,
        trace_settings,
    })))
}

/// Starts the runtime and tracing, serves until a signal, and stops within a second of the
/// sources' last persist.
fn start_and_serve(tier: Tier, start: Start) -> ExitCode {
    let Start {
        schema,
        reload,
        loaded,
        security,
        trace_settings,
    } = start;
    let binary = schema.tier.binary.clone();
    // One thread serves HTTP and runs the probes: the sources that take the load have their own
    // threads (`context::source_thread`). A multi-thread scheduler cost ~0.8 MiB of idle RSS
    // (two more threads with their malloc arenas, and libm, loaded only for its EWMA `pow`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{binary}: error: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (tracing_guard, tracer) = match trace_settings
        .as_ref()
        .map(|s| telemetry::Tracing::start(s, runtime.handle().clone()))
    {
        Some(Ok((guard, tracer))) => (Some(guard), Some(tracer)),
        Some(Err(e)) => {
            eprintln!("{binary}: error: {e}");
            return ExitCode::from(2);
        }
        None => (None, None),
    };
    logging::init(&loaded.config.log, tracer);
    if let Some(s) = &trace_settings {
        tracing::info!(target: "main", event = "tracing_enabled", endpoint = %s.endpoint, service = %s.service_name, sampler = ?s.sampler);
    }
    let result = runtime.block_on(async {
        let result = serve(tier, schema, loaded.config, security, reload).await;
        // The final export runs on this runtime: flush while this thread still drives it.
        if let Some(guard) = tracing_guard {
            let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
        }
        result
    });
    // A probe thread stuck in a system call (a hung device or /proc read) must not keep the
    // process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "main", event = "exit", error = %e, "exporter failed");
            eprintln!("{binary}: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(binary: &str, loaded: &config::Loaded) -> ExitCode {
    match loaded.config.to_toml() {
        Ok(text) => {
            let source = loaded
                .config_file
                .as_deref()
                .map_or("embedded defaults".to_owned(), |p| p.display().to_string());
            println!("# {binary}: configuration is valid ({source} + environment + flags)");
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{binary}: error: cannot print configuration: {e}");
            ExitCode::from(1)
        }
    }
}

/// What a reload needs from start-up besides the running state.
struct ReloadInputs {
    args: Vec<std::ffi::OsString>,
    base_schema: Schema,
}

/// Why the exporter could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("shutdown signal: {0}")]
    ShutdownSignal(std::io::Error),
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// Wires the registry, the sources and the HTTP server, serves until SIGTERM/SIGINT, then
/// gives the sources time to persist their state.
async fn serve(
    tier: Tier,
    schema: Schema,
    config: Config,
    security: Option<web_config::WebSecurity>,
    reload: ReloadInputs,
) -> Result<(), ServeError> {
    let metrics = Arc::new(registry(&schema, &config)?);
    let config = Arc::new(config);
    let health = Health::exposed(metrics.own().source_up.clone());
    let (stop, shutdown) = context::shutdown_signal().map_err(ServeError::ShutdownSignal)?;
    let schema = Arc::new(schema);
    let ctx = TaskContext {
        schema: schema.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        health: health.clone(),
        shutdown,
    };
    let addr = config.listen_addr()?;
    let listener = bind(addr)?;
    let sources = start_sources(tier.tasks, tier.scrape_hooks, &ctx)?;

    let (tls, web) = web_security(security);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<reload::ReloadRequest>(4);
    tokio::spawn(
        reload::Reloader {
            tier: schema.tier.clone(),
            sections: tier.sections,
            args: reload.args,
            base_schema: reload.base_schema,
            running: (*config).clone(),
            metrics: metrics.clone(),
            web: web.clone(),
            tls: tls.clone(),
            follower: sources.follower,
        }
        .run(reload_rx),
    );
    let state = Arc::new(server::AppState {
        metrics: metrics.clone(),
        health,
        scrape_hooks: sources.scrape_hooks,
        render_guard: sources
            .ledger
            .map(|l| l as Arc<dyn crate::exposition::RenderGuard>),
        scrape_slots: (config.web.max_requests > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(config.web.max_requests))),
        binary: schema.tier.binary.clone(),
        tier: schema.tier.name.clone(),
        telemetry_path: config.web.telemetry_path.clone(),
        profiler: config
            .web
            .enable_profiling
            .then(|| Arc::new(profiling::Profiler::default())),
        reload: config.web.enable_lifecycle.then(|| reload_tx.clone()),
    });
    let app = server::router(state, web);
    tracing::info!(
        target: "main",
        event = "listening",
        address = %addr,
        tls = tls.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "serving {} on {addr}", config.web.telemetry_path
    );

    let served = serve_until_signal(listener, tls, app, &config, stop, reload_tx).await;
    // Give sources the chance to persist state (log positions) before exiting.
    for h in sources.handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    served.map_err(ServeError::Server)
}

/// Serves until SIGTERM/SIGINT (SIGHUP reloads), then lets the requests in flight finish.
async fn serve_until_signal(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: axum::Router,
    config: &Config,
    stop: context::ShutdownTrigger,
    reload: tokio::sync::mpsc::Sender<reload::ReloadRequest>,
) -> std::io::Result<()> {
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal(reload).await;
        tracing::info!(target: "main", event = "shutdown", "signal received, stopping");
        stop.trigger();
        let _ = stopping_tx.send(());
    });
    let policy = connections::Policy {
        max_connections: config.web.max_connections,
        read_timeout: Duration::from_secs(config.web.header_read_timeout_seconds),
    };
    connections::serve(listener, tls, app, policy, async {
        let _ = stopping.await;
    })
    .await
}

/// TLS (fixed until a restart) and the authentication and headers a reload may change.
fn web_security(
    security: Option<web_config::WebSecurity>,
) -> (
    Option<axum_server::tls_rustls::RustlsConfig>,
    Arc<web_config::LiveWeb>,
) {
    let (tls, web) = match security {
        Some(s) => (
            s.tls
                .map(axum_server::tls_rustls::RustlsConfig::from_config),
            web_config::LiveWeb {
                auth: arc_swap::ArcSwapOption::from_pointee(s.auth),
                headers: arc_swap::ArcSwap::from_pointee(s.headers),
            },
        ),
        None => (None, web_config::LiveWeb::default()),
    };
    (tls, Arc::new(web))
}

/// The registry of the schema, with the exporter's own process metrics and build info.
fn registry(schema: &Schema, config: &Config) -> Result<Metrics, ServeError> {
    let mut metrics = Metrics::new(schema, reload::limits(config))?;
    metrics
        .registry_mut()
        .register_collector(Box::new(probe::process::ProcessCollector));
    let _ = metrics.own().build_info.set(
        &[
            env!("CARGO_PKG_VERSION"),
            crate::build::REVISION,
            crate::build::BRANCH,
            crate::build::RUSTC_VERSION,
            crate::build::TARGET,
            &schema.tier.name,
        ],
        1.0,
    );
    Ok(metrics)
}

/// Connections the kernel completes and queues before the server accepts them. std listens
/// with 128: a burst of a few hundred connections filled that queue, and a scrape's SYN was
/// dropped and retried after the 1 s retransmission timeout. The kernel caps this at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: libc::c_int = 4096;

fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    use std::os::fd::AsRawFd;
    let listen = |source| ServeError::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    // SAFETY: listen(2) again on a socket this function owns only resizes its queue.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(listen(std::io::Error::last_os_error()));
    }
    listener.set_nonblocking(true).map_err(listen)?;
    Ok(listener)
}

/// What the running sources hand to the server and the reloader.
struct Sources {
    handles: Vec<tokio::task::JoinHandle<()>>,
    scrape_hooks: Vec<server::ScrapeHook>,
    ledger: Option<Arc<ingest::logtail::ledger::Ledger>>,
    follower: Option<std::sync::mpsc::Sender<ingest::logtail::Reconfigure>>,
}

/// Starts the tier's tasks, the shared probes and the ingest sources. Every handle is
/// resolved before anything starts: a schema/code mismatch stops here.
fn start_sources(
    tasks: Vec<(&'static str, BoxTask)>,
    hooks: Vec<MakeScrapeHook>,
    ctx: &TaskContext,
) -> Result<Sources, ServeError> {
    let mut tier_tasks = Vec::new();
    for (name, task) in tasks {
        tier_tasks.push((name, task(ctx.clone())?));
    }
    let derived = probe::derived::start(ctx.clone())?;
    let engine = probe::engine::EngineProbe::new(&ctx.config.engine, &ctx.metrics)?;
    let mut scrape_hooks: Vec<server::ScrapeHook> = vec![Box::new({
        let engine = engine.clone();
        move || engine.on_scrape()
    })];
    for make in hooks {
        scrape_hooks.push(make(&ctx.config, &ctx.metrics)?);
    }

    let mut handles = Vec::new();
    for (name, task) in tier_tasks {
        tracing::debug!(target: "main", event = "task_started", task = name);
        handles.push(tokio::spawn(task));
    }
    let ingest = ingest::spawn(ctx)?;
    handles.extend(ingest.handles);
    handles.push(tokio::spawn(expire_series(ctx.clone())));
    if let Some(derived) = derived {
        handles.push(tokio::spawn(derived));
    }
    handles.push(tokio::spawn(probe::run(engine, ctx.clone())));
    Ok(Sources {
        handles,
        scrape_hooks,
        ledger: ingest.ledger,
        follower: ingest.follower,
    })
}

/// Expires idle engine series; how often follows the shortest expiry, which a reload may
/// change.
async fn expire_series(mut ctx: TaskContext) {
    loop {
        let period = ctx
            .metrics
            .shortest_expiry()
            .map_or(Duration::from_secs(5), |ttl| {
                (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
            });
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let removed = ctx.metrics.expire_series(std::time::Instant::now());
        if removed > 0 {
            ctx.metrics.own().series_expired.add(&[], removed as u64);
        }
    }
}

/// Returns on SIGTERM or SIGINT; a SIGHUP asks for a reload.
async fn wait_for_signal(reload: tokio::sync::mpsc::Sender<reload::ReloadRequest>) {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn next(s: &mut Option<Signal>) {
        match s.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            _ = next(&mut term) => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = next(&mut hup) => {
                tracing::info!(target: "main", event = "sighup", "SIGHUP received: reloading the configuration");
                let _ = reload.send(None).await;
            }
        }
    }
}
