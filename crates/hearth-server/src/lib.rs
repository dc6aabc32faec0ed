//! Hearth's OpenAI-compatible HTTP server.
//!
//! The router ([`router`]) is plain axum over an [`AppState`] that holds the
//! scheduler ([`hearth_engine::BatchEngine`]), the optional embedding model
//! and the server's metrics; [`serve`] loads the model, binds, prints
//! `hearth: listening on http://HOST:PORT` and runs until SIGINT or SIGTERM.
//! Generation runs on the scheduler's own thread; handlers only validate,
//! tokenize (on the blocking pool) and relay events, so the async runtime
//! never waits on a forward pass.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `POST /v1/embeddings`, `GET /v1/models[/{id}]` (behind the API key when one
//! is set), `GET /health` and `GET /metrics` (open); with a telemetry
//! directory, the watch dashboard at `GET /watch` and its JSON under
//! `/watch/api` (listed in the `dashboard` module).
//!
//! What OpenAI's schema has no field for goes in a `hearth` object of the
//! response (queue and first-token times; a `max_tokens` lowered to fit the
//! context, with a warning, also sent as the `x-hearth-max-tokens-clamped`
//! header). OpenAI clients ignore it.

mod auth;
mod chat;
mod completions;
mod dashboard;
pub mod embeddings;
pub mod error;
mod extract;
pub mod filter;
mod generation;
pub mod metrics;
mod models;
pub mod openai;
mod response_format;
pub mod telemetry;
mod validate;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hearth_engine::{BatchConfig, BatchEngine, ConstraintFactory, Engine, EngineError};
use hearth_models::LoadOptions;
use hearth_watch::ingest::IngestLog;
use serde_json::json;

pub use embeddings::{BertEmbedder, EmbedError, Embedder};
pub use error::ApiError;
pub use generation::CLAMPED_HEADER;

/// Default request body limit: 4 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Default port.
pub const DEFAULT_PORT: u16 = 8080;
/// How long in-flight requests may run on after a shutdown signal before
/// they are cancelled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (a name or an IP).
    pub host: String,
    /// Port to bind; 0 picks a free one (the listening line tells which).
    pub port: u16,
    /// The GGUF model file to serve.
    pub model_path: PathBuf,
    /// The id clients name in `model` and see in `/v1/models`.
    pub model_id: String,
    /// Threads for the forward pass.
    pub threads: usize,
    /// When set, `/v1` routes require `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    pub batch: BatchConfig,
    /// Directory of the embedding model; `None` serves no embeddings.
    pub embeddings_dir: Option<PathBuf>,
    /// Told to clients that ask for embeddings when none are served, e.g.
    /// how to install the model.
    pub embeddings_hint: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Directory of the telemetry ingest log: enables `POST /v1/telemetry`
    /// and records the server's own requests as events.
    pub telemetry_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// Defaults (127.0.0.1:8080, all cores, no key, 4 MiB bodies) for a model.
    pub fn new(model_path: PathBuf, model_id: impl Into<String>) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            model_path,
            model_id: model_id.into(),
            threads: LoadOptions::default().n_threads,
            api_key: None,
            batch: BatchConfig::default(),
            embeddings_dir: None,
            embeddings_hint: None,
            body_limit: DEFAULT_BODY_LIMIT,
            telemetry_dir: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot load {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: EngineError,
    },
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[source] EngineError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Telemetry(String),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a server task failed: {0}")]
    Task(String),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    model_id: String,
    batch: Arc<BatchEngine>,
    constraints: Option<ConstraintFactory>,
    api_key: Option<String>,
    body_limit: usize,
    embedder: Option<Arc<dyn Embedder>>,
    embeddings_hint: String,
    metrics: metrics::Metrics,
    telemetry: Option<Arc<IngestLog>>,
    /// Prefix of the ids of this process's own telemetry events.
    instance_id: String,
    events_recorded: AtomicU64,
    shutting_down: AtomicBool,
    started: Instant,
    created: u64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("model_id", &self.inner.model_id)
            .field("batch", &self.inner.batch)
            .field("auth", &self.inner.api_key.is_some())
            .field("body_limit", &self.inner.body_limit)
            .field(
                "embeddings",
                &self
                    .inner
                    .embedder
                    .as_ref()
                    .map(|e| e.model_id().to_owned()),
            )
            .finish()
    }
}

/// Builds an [`AppState`]; see [`AppState::builder`].
pub struct AppStateBuilder {
    model_id: String,
    batch: Arc<BatchEngine>,
    api_key: Option<String>,
    body_limit: usize,
    embedder: Option<Arc<dyn Embedder>>,
    embeddings_hint: Option<String>,
    telemetry: Option<Arc<IngestLog>>,
}

impl AppStateBuilder {
    /// The ingest log behind `POST /v1/telemetry` (and of the server's own
    /// request events).
    pub fn telemetry(mut self, log: Option<Arc<IngestLog>>) -> Self {
        self.telemetry = log;
        self
    }

    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }

    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    pub fn embedder(mut self, embedder: Option<Arc<dyn Embedder>>) -> Self {
        self.embedder = embedder;
        self
    }

    pub fn embeddings_hint(mut self, hint: Option<String>) -> Self {
        self.embeddings_hint = hint;
        self
    }

    /// Prepares the constraint factory (a walk over the vocabulary) and
    /// finishes the state.
    pub fn build(self) -> AppState {
        let constraints = match ConstraintFactory::new(self.batch.engine().tokenizer()) {
            Ok(factory) => Some(factory),
            Err(e) => {
                eprintln!("hearth-server: structured output is unavailable: {e}");
                None
            }
        };
        AppState {
            inner: Arc::new(Shared {
                model_id: self.model_id,
                batch: self.batch,
                constraints,
                api_key: self.api_key,
                body_limit: self.body_limit,
                embedder: self.embedder,
                embeddings_hint: self.embeddings_hint.unwrap_or_else(|| {
                    "start the server with an embedding model (`hearth serve --embeddings NAME`)"
                        .to_owned()
                }),
                metrics: metrics::Metrics::default(),
                telemetry: self.telemetry,
                instance_id: format!("hearth-{}-{}", std::process::id(), openai::unix_time()),
                events_recorded: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                created: openai::unix_time(),
            }),
        }
    }
}

impl AppState {
    /// A state serving `model_id` from `batch`, with no API key, the default
    /// body limit and no embeddings.
    pub fn builder(model_id: impl Into<String>, batch: Arc<BatchEngine>) -> AppStateBuilder {
        AppStateBuilder {
            model_id: model_id.into(),
            batch,
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            embedder: None,
            embeddings_hint: None,
            telemetry: None,
        }
    }

    /// The telemetry ingest log, when ingest is on.
    pub fn telemetry(&self) -> Option<&Arc<IngestLog>> {
        self.inner.telemetry.as_ref()
    }

    fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Numbers this process's own telemetry events.
    fn next_event_number(&self) -> u64 {
        self.inner.events_recorded.fetch_add(1, Ordering::Relaxed)
    }

    pub fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    pub fn batch(&self) -> &Arc<BatchEngine> {
        &self.inner.batch
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.batch.engine()
    }

    pub fn constraints(&self) -> Option<&ConstraintFactory> {
        self.inner.constraints.as_ref()
    }

    pub fn api_key(&self) -> Option<&str> {
        self.inner.api_key.as_deref()
    }

    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.inner.embedder.as_ref()
    }

    pub fn embeddings_hint(&self) -> &str {
        &self.inner.embeddings_hint
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Marks the server as stopping: requests the scheduler drops from now
    /// on are answered 503 rather than 500.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Time since the state was built.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Unix time the state was built: the models' `created`.
    pub fn created(&self) -> u64 {
        self.inner.created
    }
}

/// The whole API as a router, for [`serve`] or in-process tests.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(chat::create))
        .route("/completions", post(completions::create))
        .route("/embeddings", post(embeddings::create))
        .route("/telemetry", post(telemetry::ingest))
        .route("/models", get(models::list))
        .route("/models/{id}", get(models::retrieve))
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_key))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::scrape))
        .nest("/v1", v1)
        .merge(dashboard::routes(&state))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(state.body_limit()))
        .with_state(state)
}

/// `GET /health`: the model and the scheduler's load.
async fn health(State(state): State<AppState>) -> Response {
    let stats = state.batch().stats();
    let config = state.batch().config();
    Json(json!({
        "status": "ok",
        "model": state.model_id(),
        "embeddings_model": state.embedder().map(|e| e.model_id()),
        "uptime_seconds": state.uptime().as_secs(),
        "queue": {
            "queued": stats.queued,
            "running": stats.running,
            "max_queue": config.max_queue,
            "max_running": config.max_running,
            "context": config.context,
            "kv_blocks_used": stats.kv_blocks_used,
            "kv_blocks_total": stats.kv_blocks_total,
        },
    }))
    .into_response()
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

/// Loads the model, binds, prints the listening line and serves until
/// SIGINT/SIGTERM. In-flight requests get [`SHUTDOWN_GRACE`] to finish
/// before the scheduler cancels them.
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    let path = config.model_path.clone();
    let threads = config.threads.max(1);
    let engine = tokio::task::spawn_blocking(move || {
        Engine::load(&path, &LoadOptions { n_threads: threads })
    })
    .await
    .map_err(|e| ServerError::Task(e.to_string()))?
    .map_err(|source| ServerError::Load {
        path: config.model_path.clone(),
        source,
    })?;
    let batch = Arc::new(
        BatchEngine::start(Arc::new(engine), config.batch.clone())
            .map_err(ServerError::Scheduler)?,
    );
    let (embedder, embeddings_hint) = load_embedder(&config);
    let telemetry = match &config.telemetry_dir {
        Some(dir) => Some(telemetry::open_log(dir).map_err(ServerError::Telemetry)?),
        None => None,
    };
    let state = AppState::builder(config.model_id.clone(), batch.clone())
        .api_key(config.api_key.clone())
        .body_limit(config.body_limit)
        .embedder(embedder)
        .embeddings_hint(embeddings_hint)
        .telemetry(telemetry)
        .build();

    let address = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|source| ServerError::Bind {
            address: address.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "hearth: listening on http://{local}")?;
        stdout.flush()?;
    }

    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(true);
    });
    let mut graceful_rx = signalled_rx.clone();
    let stopping_state = state.clone();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        let _ = graceful_rx.wait_for(|signalled| *signalled).await;
        stopping_state.begin_shutdown();
    });
    let mut server = tokio::spawn(async move { server.await });
    let finished = tokio::select! {
        result = &mut server => Some(result),
        _ = signalled_rx.wait_for(|signalled| *signalled) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            eprintln!("hearth: shutting down");
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    eprintln!("hearth: cancelling requests still running");
                    let stopping = batch.clone();
                    let _ = tokio::task::spawn_blocking(move || stopping.shutdown()).await;
                    server.await
                }
            }
        }
    };
    let stopping = batch.clone();
    let _ = tokio::task::spawn_blocking(move || stopping.shutdown()).await;
    result
        .map_err(|e| ServerError::Task(e.to_string()))?
        .map_err(ServerError::Io)
}

/// The embedding model named in `config`, or why there is none. A model that
/// fails to load does not stop the server: embeddings answer with the reason.
fn load_embedder(config: &ServerConfig) -> (Option<Arc<dyn Embedder>>, Option<String>) {
    let Some(dir) = &config.embeddings_dir else {
        return (None, config.embeddings_hint.clone());
    };
    let id = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embeddings".to_owned());
    match embeddings::BertEmbedder::load(dir, id, config.threads) {
        Ok(embedder) => (Some(Arc::new(embedder)), None),
        Err(e) => {
            let hint = format!(
                "the embedding model in {} failed to load: {e}",
                dir.display()
            );
            eprintln!("hearth: embeddings are off: {hint}");
            (None, Some(hint))
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("hearth: cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(e) => {
                eprintln!("hearth: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
