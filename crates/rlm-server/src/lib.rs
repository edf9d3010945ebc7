//! `rlm serve`: the web page, live run streams, a trace viewer and an OpenAI-compatible endpoint.
//!
//! The server holds a registry of runs ([`runs`]). A run starts from the page (`POST /api/runs`)
//! or from an OpenAI client (`POST /v1/chat/completions`, [`openai`]); it executes in its own
//! task, and every [`rlm::Event`] it emits is kept (the run's trace, also written to the trace
//! directory) and broadcast to whoever follows it as Server-Sent Events. Past runs stay listed;
//! traces written by `rlm run --trace` open in the same viewer.
//!
//! Safety: the server binds to localhost unless told otherwise, can require a bearer token
//! (`--api-key`), answers only to its own host names and refuses state changes from other sites
//! ([`guard`]), cannot be held by slow or idle clients ([`conn`]: header, idle and
//! whole-request deadlines, a connection cap that closes waiting connections for room), reads
//! request bodies bounded in size, time and memory and parses them into typed structures,
//! refusing (401, 403, 413, 429) before the document is copied ([`body`], [`runs::request`],
//! [`openai::request`]), caps concurrent runs and event streams (a clear 429 past the cap),
//! serves trace files only by plain name from its trace directory, and cancels a page's run when
//! the page goes away. The page itself is
//! one HTML file compiled into the binary: no CDN, and it renders every value from a run or a
//! trace as text.

pub mod body;
pub mod conn;
pub mod guard;
pub mod openai;
pub mod runs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rlm::RunSpec;
use rlm_sandbox::SandboxEngine;

pub use rlm::ModelFactory;

/// How the server is set up.
pub struct ServeConfig {
    /// Defaults of every run (a request's own settings win, within the server's caps); its
    /// budget is checked when the server starts.
    pub defaults: RunSpec,
    /// Why there is no default model, when there is none (shown when a run names none).
    pub no_model_reason: Option<String>,
    /// Makes models by id.
    pub models: ModelFactory,
    /// The sandbox engine.
    pub engine: Arc<SandboxEngine>,
    /// Require `Authorization: Bearer <key>` on the API.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together; a request past it gets 429.
    pub body_budget_bytes: usize,
    /// A request (headers and body) must arrive whole within this time of its first byte.
    pub request_timeout: Duration,
    /// Runs executing at once; more get 429.
    pub max_runs: usize,
    /// Where runs' traces are written and from which traces are served.
    pub trace_dir: Option<PathBuf>,
    /// The document offered as "sample" on the page: (name, text).
    pub sample: Option<(String, String)>,
    /// Host names the server answers to besides its address (and `localhost` on loopback).
    pub allow_hosts: Vec<String>,
    /// How long a connection may take to send a request's headers (also how long an idle
    /// kept-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Connections open at once; past it, the one idle or reading the longest is closed
    /// ([`conn`]).
    pub max_connections: usize,
    /// Run event streams (`/api/runs/{id}/events`) open at once; more get 429.
    pub max_event_streams: usize,
    /// How much of its runs the server keeps in memory.
    pub retention: runs::Retention,
    /// Model ids requests may name besides the defaults: exact ids, or `provider/*` for every
    /// model of a hosted provider. A `local/...` id (a file path, or a download) must be exact.
    pub allowed_models: Vec<String>,
}

impl ServeConfig {
    /// Whether a request may use model `id`: the server's default root and sub-model, and the
    /// ids the operator allowed. Nothing else is looked up, opened or downloaded.
    pub fn allows_model(&self, id: &str) -> bool {
        self.defaults.allows_model(id, &self.allowed_models)
    }

    /// The models a request may name, defaults first (wildcards as given).
    pub fn model_list(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let d = &self.defaults;
        for m in d
            .model
            .iter()
            .chain(&d.sub_model)
            .chain(&self.allowed_models)
        {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

/// An error as JSON, in the OpenAI error shape: `{"error": {"message", "type"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with a status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        (
            self.status,
            axum::Json(serde_json::json!({"error": {"message": self.message, "type": kind}})),
        )
            .into_response()
    }
}

/// Shared state of the server.
pub struct AppState {
    /// The setup.
    pub config: ServeConfig,
    /// The runs.
    pub runs: runs::Registry,
    /// The host names and origins it answers.
    pub hosts: guard::HostCheck,
    /// How request bodies are bounded.
    pub body: body::BodyLimits,
    /// Run event streams open (one permit each).
    pub streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state of a server with `config` bound to `bound`.
    pub fn new(config: ServeConfig, bound: std::net::IpAddr) -> Self {
        let c = &config;
        Self {
            runs: runs::Registry::new(c.max_runs, c.retention),
            hosts: guard::HostCheck::new(bound, &c.allow_hosts),
            body: body::BodyLimits::new(c.max_body_bytes, c.request_timeout, c.body_budget_bytes),
            streams: Arc::new(tokio::sync::Semaphore::new(c.max_event_streams.max(1))),
            config,
        }
    }
}

const PAGE: &str = include_str!("../assets/index.html");

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

/// What the page needs to know at start.
async fn info(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let c = &s.config;
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "defaults": c.defaults,
        "no_model_reason": c.no_model_reason,
        "sample": c.sample.as_ref().map(|(name, text)| serde_json::json!({"name": name, "chars": text.chars().count()})),
        "max_body_bytes": c.max_body_bytes,
        "max_runs": c.max_runs,
        "auth": c.api_key.is_some(),
        "models": c.model_list(),
    }))
}

async fn sample(State(s): State<Arc<AppState>>) -> Response {
    match &s.config.sample {
        Some((_, text)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text.clone(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "this server has no sample document")
            .into_response(),
    }
}

/// Bearer-token check for every route but the page itself (constant-time comparison of hashes);
/// it runs before a request's body is read.
async fn auth(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &s.config.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if blake3::hash(given.as_bytes()) != blake3::hash(key.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send `Authorization: Bearer <key>` (the key given to \
                 `rlm serve --api-key` or RLM_SERVE_API_KEY)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Host and Origin checks on every route ([`guard`]).
async fn check_host_and_origin(
    State(s): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    if let Err(e) = s.hosts.check(req.method(), host.as_deref(), req.headers()) {
        tracing::info!(host = ?host, method = %req.method(), path = %req.uri().path(), "refused: {}", e.message);
        return e.into_response();
    }
    next.run(req).await
}

/// The whole application.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/runs", post(runs::start).get(runs::list))
        .route("/api/runs/{id}", get(runs::get_run))
        .route("/api/runs/{id}/events", get(runs::events))
        .route("/api/runs/{id}/cancel", post(runs::cancel))
        .route("/api/traces", get(runs::list_traces))
        .route("/api/traces/{name}", get(runs::get_trace))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/api/info", get(info))
        .route("/api/sample", get(sample))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host_and_origin,
        ))
        .with_state(state)
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another server on that port? pick one with --port)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound server, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Bind `addr` (port 0: a free port).
    pub async fn bind(config: ServeConfig, addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = Arc::new(AppState::new(config, addr.ip()));
        Ok(Self { listener, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state (to preload traces before serving).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serve until the process ends: HTTP/1.1, each connection in its own task, within the
    /// connection cap and timeouts ([`conn`]).
    pub async fn run(self) -> Result<(), ServeError> {
        let c = &self.state.config;
        let (timeout, max) = (c.header_read_timeout, c.max_connections);
        let app = router(self.state.clone());
        conn::serve(self.listener, app, timeout, max).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    /// A trace file is data from anywhere: the page must never hand its values to an
    /// HTML-parsing sink, where a crafted value would run script next to the API key.
    #[test]
    fn the_page_uses_no_html_sinks() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "createContextualFragment",
            "DOMParser",
            "srcdoc",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "setInterval(\"",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
    }
}
