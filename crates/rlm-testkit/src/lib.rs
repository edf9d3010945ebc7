//! Dev-only test helpers shared by rlm's crates.
//!
//! [`MockProvider`] is a real HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions,
//! Anthropic Messages and Gemini `generateContent` wire formats (plain JSON and server-sent-event
//! streams), so clients are tested over real sockets with no mocking of the HTTP stack. It is
//! scripted: queue replies with [`MockProvider::push`] (one per request, in order) or compute
//! them from the request with [`MockProvider::respond_with`]; replies can be text, HTTP errors
//! with `Retry-After`, delays, dropped connections, truncated JSON or a wrong content type. It
//! records every request and counts requests in flight and requests abandoned by the client.
//!
//! With the `scripted` feature (on by default), [`scripted`] is a deterministic model that
//! writes the Python a competent model would for each eval family and answers sub-calls by
//! reading the text it is given; the `rlm-mock` binary serves it, so `rlm eval`, `rlm run` and
//! `rlm serve` run end to end without a hosted model. Being here, it is in no product binary.
//!
//! ```no_run
//! # async fn demo() {
//! use rlm_testkit::{MockProvider, Reply};
//! let mock = MockProvider::start().await;
//! mock.push(Reply::rate_limited(1));          // first request: 429, Retry-After: 1
//! mock.push(Reply::text("hello"));            // second request: an answer
//! // point a client at mock.openai_base_url(), mock.url() (Anthropic, Gemini) ...
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

#[cfg(feature = "scripted")]
pub mod scripted;

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST /v1beta/models/{model}:generateContent` (or `:streamGenerateContent`).
    Gemini,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Its wire format.
    pub wire: Wire,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The JSON body.
    pub body: Value,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// When it arrived.
    pub received: Instant,
}

impl RecordedRequest {
    /// The conversation as (role, text) pairs, system first, whatever the wire format.
    pub fn messages(&self) -> Vec<(String, String)> {
        let text_of = |v: &Value| -> String {
            match v {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            }
        };
        let mut out = Vec::new();
        match self.wire {
            Wire::OpenAi => {
                for m in self.body["messages"].as_array().into_iter().flatten() {
                    out.push((
                        m["role"].as_str().unwrap_or("").to_string(),
                        text_of(&m["content"]),
                    ));
                }
            }
            Wire::Anthropic => {
                if let Some(s) = self.body.get("system") {
                    out.push(("system".to_string(), text_of(s)));
                }
                for m in self.body["messages"].as_array().into_iter().flatten() {
                    out.push((
                        m["role"].as_str().unwrap_or("").to_string(),
                        text_of(&m["content"]),
                    ));
                }
            }
            Wire::Gemini => {
                if let Some(s) = self.body.get("systemInstruction") {
                    out.push(("system".to_string(), text_of(&s["parts"])));
                }
                for m in self.body["contents"].as_array().into_iter().flatten() {
                    let role = match m["role"].as_str() {
                        Some("model") => "assistant",
                        _ => "user",
                    };
                    out.push((role.to_string(), text_of(&m["parts"])));
                }
            }
        }
        out
    }

    /// The text of the last user message.
    pub fn last_user(&self) -> String {
        self.messages()
            .into_iter()
            .rev()
            .find(|(r, _)| r == "user")
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// The model named in the request (body or Gemini path).
    pub fn model(&self) -> String {
        match self.wire {
            Wire::Gemini => self
                .path
                .split("/models/")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .unwrap_or("")
                .to_string(),
            _ => self.body["model"].as_str().unwrap_or("").to_string(),
        }
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this text; token counts are the words of the prompt and of the text.
    Text(String),
    /// Answer with this text and these token counts.
    TextWithUsage {
        /// The answer.
        text: String,
        /// Input tokens, cached included.
        input: u64,
        /// Output tokens.
        output: u64,
        /// Cached input tokens.
        cached: u64,
    },
    /// An HTTP error in the provider's error format.
    Status {
        /// The status code.
        status: u16,
        /// The error message.
        message: String,
        /// A `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// Wait, then do the inner reply.
    Delay(Duration, Box<Reply>),
    /// Send the headers and part of the body, then break the connection.
    DropConnection,
    /// 200 with half a JSON document.
    TruncatedJson,
    /// 200 with an HTML page instead of JSON.
    WrongContentType,
}

impl Reply {
    /// An answer.
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }

    /// An HTTP error with a message.
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        Self::Status {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self::Status {
            status: 429,
            message: "rate limit reached, slow down".into(),
            retry_after: Some(secs.to_string()),
        }
    }

    /// The reply after a delay.
    pub fn delayed(delay: Duration, reply: Reply) -> Self {
        Self::Delay(delay, Box::new(reply))
    }
}

type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    responder: Mutex<Responder>,
    requests: Mutex<Vec<RecordedRequest>>,
    recording: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    cancelled: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scriptable mock of the providers' HTTP APIs on 127.0.0.1 (see the crate docs).
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Start on a free port. By default every request is answered with
    /// `"mock answer to: <last user message>"`.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1")
    }

    /// Start on `addr` (port 0: a free one).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            responder: Mutex::new(Arc::new(|r: &RecordedRequest| {
                Reply::Text(format!("mock answer to: {}", r.last_user()))
            })),
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(route::<0>))
            .route("/v1/messages", post(route::<1>))
            .route("/v1beta/models/{*rest}", post(route::<2>))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// Keep (default) or stop keeping every request; a long-running server stops.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT` (the base URL for Anthropic and Gemini clients).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1` (the base URL for OpenAI and compatible clients).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue a reply for the next request that finds the queue non-empty.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.script).push_back(reply);
    }

    /// Answer requests (when the queue is empty) with `f`.
    pub fn respond_with(&self, f: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        *lock(&self.shared.responder) = Arc::new(f);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The most requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Requests the client abandoned before the answer was sent.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight; on drop before `done`, counts it as cancelled.
struct InFlight {
    shared: Arc<Shared>,
    done: bool,
}

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self {
            shared,
            done: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.shared.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The handler of one wire format (`W` is a [`Wire`] as `u8`: 0 OpenAI, 1 Anthropic, 2 Gemini).
async fn route<const W: u8>(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wire = match W {
        0 => Wire::OpenAi,
        1 => Wire::Anthropic,
        _ => Wire::Gemini,
    };
    handle(s, wire, uri, headers, body).await
}

async fn handle(
    shared: Arc<Shared>,
    wire: Wire,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut guard = InFlight::new(shared.clone());
    let Ok(json_body) = serde_json::from_slice::<Value>(&body) else {
        guard.done = true;
        return error_response(wire, 400, "request body is not JSON", None);
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.to_string());
    let stream = match wire {
        Wire::Gemini => path.contains("streamGenerateContent"),
        _ => json_body.get("stream").and_then(Value::as_bool) == Some(true),
    };
    let request = RecordedRequest {
        wire,
        path,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: json_body,
        stream,
        received: Instant::now(),
    };
    if shared.recording.load(Ordering::SeqCst) {
        lock(&shared.requests).push(request.clone());
    }
    let scripted = lock(&shared.script).pop_front();
    let mut reply = match scripted {
        Some(r) => r,
        None => {
            let f = lock(&shared.responder).clone();
            f(&request)
        }
    };
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    guard.done = true;
    match reply {
        Reply::Text(text) => {
            let input = words(
                &request
                    .messages()
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            let output = words(&text);
            answer(&request, &text, input, output, 0)
        }
        Reply::TextWithUsage {
            text,
            input,
            output,
            cached,
        } => answer(&request, &text, input, output, cached),
        Reply::Status {
            status,
            message,
            retry_after,
        } => error_response(wire, status, &message, retry_after),
        Reply::Delay(..) => unreachable_delay(),
        Reply::DropConnection => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"choices\": [")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock drop",
                )),
            ];
            Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    if stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    },
                )
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap_or_default()
        }
        Reply::TruncatedJson => {
            let full = answer_json(&request, "truncated", 1, 1, 0).to_string();
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(full[..full.len() / 2].to_string()))
                .unwrap_or_default()
        }
        Reply::WrongContentType => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from(
                "<html><body>502 Bad Gateway (proxy)</body></html>",
            ))
            .unwrap_or_default(),
    }
}

fn unreachable_delay() -> Response {
    // Delays are unwrapped before this match; answer 500 rather than panic if that changes.
    error_response(Wire::OpenAi, 500, "mock: nested delay", None)
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn error_response(wire: Wire, status: u16, message: &str, retry_after: Option<String>) -> Response {
    let body = match wire {
        Wire::Anthropic => {
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        }
        Wire::Gemini => json!({"error": {"code": status, "message": message, "status": "ERROR"}}),
        Wire::OpenAi => json!({"error": {"message": message, "type": "api_error", "code": null}}),
    };
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(ra) = retry_after {
        builder = builder.header(header::RETRY_AFTER, ra);
    }
    builder
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn answer_json(req: &RecordedRequest, text: &str, input: u64, output: u64, cached: u64) -> Value {
    let model = req.model();
    match req.wire {
        Wire::OpenAi => json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
                      "prompt_tokens_details": {"cached_tokens": cached}}
        }),
        Wire::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": input - cached.min(input), "output_tokens": output,
                      "cache_read_input_tokens": cached}
        }),
        Wire::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": input, "candidatesTokenCount": output,
                              "cachedContentTokenCount": cached, "totalTokenCount": input + output},
            "modelVersion": model
        }),
    }
}

fn answer(req: &RecordedRequest, text: &str, input: u64, output: u64, cached: u64) -> Response {
    if !req.stream {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                answer_json(req, text, input, output, cached).to_string(),
            ))
            .unwrap_or_default();
    }
    let model = req.model();
    let pieces: Vec<&str> = text.split_inclusive(' ').collect();
    let mut events: Vec<String> = Vec::new();
    let data = |v: Value| format!("data: {v}\n\n");
    match req.wire {
        Wire::OpenAi => {
            for p in &pieces {
                events.push(data(json!({"model": model, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})));
            }
            events.push(data(json!({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            events.push(data(json!({"model": model, "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "prompt_tokens_details": {"cached_tokens": cached}}})));
            events.push("data: [DONE]\n\n".to_string());
        }
        Wire::Anthropic => {
            let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            events.push(ev("message_start", json!({"type": "message_start", "message": {"model": model, "usage": {"input_tokens": input - cached.min(input), "cache_read_input_tokens": cached, "output_tokens": 1}}})));
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for p in &pieces {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            }
            events.push(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}})));
            events.push(ev("message_stop", json!({"type": "message_stop"})));
        }
        Wire::Gemini => {
            for p in &pieces {
                events.push(data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}}], "modelVersion": model})));
            }
            events.push(data(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": input, "candidatesTokenCount": output, "cachedContentTokenCount": cached}, "modelVersion": model})));
        }
    }
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        events.into_iter().map(|e| Ok(Bytes::from(e))).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap_or_default()
}
