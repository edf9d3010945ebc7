//! The client: one HTTP pool, one concurrency limit, one usage tracker, many models.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::LlmError;
use crate::message::{ChatRequest, ChatResponse, FinishReason, SamplingParams};
use crate::model::{ModelId, Provider};
use crate::pricing::PriceTable;
use crate::providers::{self, Endpoint, Parsed};
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::secret::{ApiKey, redact};
use crate::usage::UsageTracker;

/// Receives streamed text as it arrives.
pub type OnText<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A chat model: messages in; text, usage, model, finish reason and latency out.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The model's `provider/model` id.
    fn id(&self) -> String;

    /// One call (with the client's retries, timeout and concurrency limit).
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;

    /// One call whose text is passed to `on_text` as it is generated. The default calls
    /// [`ChatModel::chat`] and passes the whole text at once.
    async fn chat_stream(
        &self,
        request: ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let response = self.chat(request).await?;
        on_text(&response.text);
        Ok(response)
    }

    /// This model as the shared `Arc<dyn ChatModel>` the RLM holds: a model is moved into a
    /// new `Arc`, an `Arc` is kept as it is. Lets APIs take `impl ChatModel` and an `Arc` alike.
    fn into_shared(self) -> Arc<dyn ChatModel>
    where
        Self: Sized + 'static,
    {
        Arc::new(self)
    }
}

/// A shared model is a model (so `Arc<dyn ChatModel>` goes where `impl ChatModel` is asked).
#[async_trait]
impl ChatModel for Arc<dyn ChatModel> {
    fn id(&self) -> String {
        (**self).id()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).chat(request).await
    }
    async fn chat_stream(
        &self,
        request: ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        (**self).chat_stream(request, on_text).await
    }
    fn into_shared(self) -> Arc<dyn ChatModel> {
        self
    }
}

/// A shared model is a model (so `Arc<M>` goes where `impl ChatModel` is asked).
#[async_trait]
impl<M: ChatModel + 'static> ChatModel for Arc<M> {
    fn id(&self) -> String {
        (**self).id()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).chat(request).await
    }
    async fn chat_stream(
        &self,
        request: ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        (**self).chat_stream(request, on_text).await
    }
    fn into_shared(self) -> Arc<dyn ChatModel> {
        self
    }
}

/// Settings of a [`LlmClient`].
#[derive(Debug, Clone)]
pub struct LlmClientBuilder {
    concurrency: usize,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    prices: Option<PriceTable>,
    usage: Option<Arc<UsageTracker>>,
}

impl Default for LlmClientBuilder {
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            prices: None,
            usage: None,
        }
    }
}

impl LlmClientBuilder {
    /// Most requests in flight at once, across every model and caller of this client.
    /// Default 16.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Time limit of one HTTP request (one attempt), body included. Default 300 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time limit for opening a connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retry policy. Default: [`RetryPolicy::default`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Price table. Default: [`PriceTable::from_env`] (built-in prices, `RLM_PRICES` over them).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Record usage into this tracker (e.g. one shared with another client).
    pub fn usage(mut self, usage: Arc<UsageTracker>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Build the client.
    pub fn build(self) -> Result<LlmClient, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("rlm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let prices = match self.prices {
            Some(p) => p,
            None => PriceTable::from_env()?,
        };
        Ok(LlmClient {
            inner: Arc::new(Inner {
                http,
                semaphore: Arc::new(Semaphore::new(self.concurrency)),
                concurrency: self.concurrency,
                timeout: self.timeout,
                retry: self.retry,
                prices,
                usage: self.usage.unwrap_or_default(),
            }),
        })
    }
}

struct Inner {
    http: reqwest::Client,
    semaphore: Arc<Semaphore>,
    concurrency: usize,
    timeout: Duration,
    retry: RetryPolicy,
    prices: PriceTable,
    usage: Arc<UsageTracker>,
}

/// A handle to the shared HTTP pool, concurrency limit, retry policy, prices and usage
/// tracker. Cheap to clone; every [`Model`] made from it shares all of these.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("concurrency", &self.inner.concurrency)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Most tokens of one reply from an OpenAI-compatible server when none is configured: a reply
/// that runs away ends here rather than at the request timeout.
pub const COMPAT_MAX_OUTPUT_TOKENS: u32 = 4_096;

/// The sampling defaults of OpenAI-compatible servers (`compat/...`, usually a local or open
/// model behind Ollama, llama.cpp or vLLM), as rlm's own local models are run: greedy
/// (temperature 0) and at most [`COMPAT_MAX_OUTPUT_TOKENS`] per reply. Whatever
/// [`ModelConfig::params`] sets wins. (An RLM's root calls also stop after the first closed
/// code block; see `rlm`'s loop.)
pub fn compat_defaults() -> SamplingParams {
    SamplingParams {
        temperature: Some(0.0),
        max_output_tokens: Some(COMPAT_MAX_OUTPUT_TOKENS),
        ..SamplingParams::default()
    }
}

/// How to reach one model.
#[derive(Debug, Clone, Default)]
pub struct ModelConfig {
    /// Base URL (default: the provider's env override, e.g. `OPENAI_BASE_URL`, else its public
    /// endpoint; required for `compat/...`, or `RLM_BASE_URL`).
    pub base_url: Option<String>,
    /// API key (default: the provider's environment variable).
    pub api_key: Option<ApiKey>,
    /// Default sampling parameters for every call.
    pub params: SamplingParams,
}

impl LlmClient {
    /// A client with default settings.
    pub fn new() -> Result<Self, LlmError> {
        Self::builder().build()
    }

    /// Configure a client.
    pub fn builder() -> LlmClientBuilder {
        LlmClientBuilder::default()
    }

    /// The usage and cost of every call made through this client.
    pub fn usage(&self) -> &Arc<UsageTracker> {
        &self.inner.usage
    }

    /// The price table in use.
    pub fn prices(&self) -> &PriceTable {
        &self.inner.prices
    }

    /// The model `id` (`provider/model`), configured from the environment.
    pub fn model(&self, id: &str) -> Result<Model, LlmError> {
        self.model_with(id, ModelConfig::default())
    }

    /// The model `id` with an explicit configuration.
    pub fn model_with(&self, id: &str, config: ModelConfig) -> Result<Model, LlmError> {
        let id: ModelId = id.parse()?;
        let base_url = config
            .base_url
            .filter(|u| !u.trim().is_empty())
            .or_else(|| {
                std::env::var(id.provider.base_url_var())
                    .ok()
                    .filter(|u| !u.trim().is_empty())
            })
            .or_else(|| id.provider.default_base_url().map(str::to_string))
            .ok_or_else(|| {
                LlmError::Config(format!(
                    "{id} needs the server's URL: pass --base-url (e.g. http://localhost:8000/v1) \
                     or set {}",
                    id.provider.base_url_var()
                ))
            })?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config(format!(
                "base URL {base_url:?} must start with http:// or https://"
            )));
        }
        let key = match config.api_key {
            Some(k) => Some(k),
            None => id.provider.key_from_env()?,
        };
        let defaults = match id.provider {
            Provider::OpenAiCompatible => config.params.or(&compat_defaults()),
            _ => config.params,
        };
        Ok(Model {
            client: self.clone(),
            id,
            endpoint: Endpoint { base_url, key },
            defaults,
        })
    }
}

/// One model of one provider, bound to a client. Implements [`ChatModel`].
#[derive(Clone)]
pub struct Model {
    client: LlmClient,
    id: ModelId,
    endpoint: Endpoint,
    defaults: SamplingParams,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id.to_string())
            .field("base_url", &self.endpoint.base_url)
            .field("key", &self.endpoint.key)
            .finish()
    }
}

impl Model {
    /// The model's id.
    pub fn model_id(&self) -> &ModelId {
        &self.id
    }

    /// The client it belongs to.
    pub fn client(&self) -> &LlmClient {
        &self.client
    }

    fn provider(&self) -> &'static str {
        self.id.provider.name()
    }

    /// The retry loop around single attempts.
    async fn call(
        &self,
        request: ChatRequest,
        on_text: Option<OnText<'_>>,
    ) -> Result<ChatResponse, LlmError> {
        let inner = &self.client.inner;
        let params = request.params.or(&self.defaults);
        let wire = providers::build(
            &self.endpoint,
            &self.id,
            &request.messages,
            &params,
            on_text.is_some(),
        );
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut streamed = false;
            let result = {
                // Hold a permit for the attempt only, never while backing off.
                let _permit = inner
                    .semaphore
                    .acquire()
                    .await
                    .map_err(|_| LlmError::Config("the client was shut down".into()))?;
                let one = self.attempt(&wire, on_text, &mut streamed);
                match tokio::time::timeout(inner.timeout, one).await {
                    Ok(r) => r,
                    Err(_) => Err(LlmError::Timeout {
                        provider: self.provider(),
                        after: inner.timeout,
                    }),
                }
            };
            match result {
                Ok(parsed) => return Ok(self.finish(parsed, &request, started, attempt)),
                // Text already shown to a streaming caller cannot be taken back: no retry then.
                Err(e) if e.is_retryable() && attempt < inner.retry.max_attempts && !streamed => {
                    if e.retry_after()
                        .is_some_and(|ra| ra > inner.retry.max_retry_after)
                    {
                        return Err(LlmError::GaveUp {
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                    let wait = inner.retry.delay(attempt, e.retry_after());
                    tracing::warn!(model = %self.id, attempt, error = %e, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) if attempt > 1 => {
                    return Err(LlmError::GaveUp {
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One HTTP exchange.
    async fn attempt(
        &self,
        wire: &providers::WireRequest,
        on_text: Option<OnText<'_>>,
        streamed: &mut bool,
    ) -> Result<Parsed, LlmError> {
        let provider = self.provider();
        let key = self.endpoint.key.as_ref();
        let connect = |e: reqwest::Error| LlmError::Connect {
            provider,
            message: redact(&describe(&e), key),
        };
        let mut req = self.client.inner.http.post(&wire.url).json(&wire.body);
        for (name, value) in &wire.headers {
            req = req.header(*name, value);
        }
        let response = req.send().await.map_err(connect)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            return Err(LlmError::Http {
                provider,
                status: status.as_u16(),
                message: redact(&providers::error_message(&body), key),
                retry_after,
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bad = |message: String| LlmError::BadResponse {
            provider,
            message: redact(&message, key),
        };
        if let Some(on_text) = on_text {
            if !content_type.starts_with("text/event-stream") {
                return Err(bad(format!(
                    "expected an event stream, got content type {content_type:?}"
                )));
            }
            let mut state = Parsed::default();
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| bad(format!("stream broke: {e}")))?;
                if let Some(delta) =
                    providers::stream_event(self.id.provider, &event.data, &mut state)
                        .map_err(bad)?
                {
                    *streamed = true;
                    on_text(&delta);
                }
            }
            if state.finish.is_none() && state.text.is_empty() {
                return Err(bad("the stream ended without an answer".into()));
            }
            return Ok(state);
        }
        if !content_type.contains("json") {
            let body = response.text().await.unwrap_or_default();
            let start: String = body.chars().take(120).collect();
            return Err(bad(format!(
                "expected JSON, got content type {content_type:?} (body starts {start:?})"
            )));
        }
        let bytes = response.bytes().await.map_err(connect)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("invalid JSON ({e}) in {} bytes", bytes.len())))?;
        providers::parse(self.id.provider, &value).map_err(bad)
    }

    fn finish(
        &self,
        parsed: Parsed,
        request: &ChatRequest,
        started: Instant,
        attempts: u32,
    ) -> ChatResponse {
        let inner = &self.client.inner;
        let id = self.id.to_string();
        let cost_usd = request
            .price
            .or_else(|| inner.prices.get(&id))
            .map(|p| p.cost(&parsed.usage));
        inner
            .usage
            .record(&id, request.tag, &parsed.usage, cost_usd);
        ChatResponse {
            text: parsed.text,
            usage: parsed.usage,
            model: if parsed.model.is_empty() {
                self.id.name.clone()
            } else {
                parsed.model
            },
            finish_reason: parsed.finish.unwrap_or(FinishReason::Stop),
            latency: started.elapsed(),
            attempts,
            cost_usd,
        }
    }
}

/// reqwest's error with its causes (the chain says what actually failed).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[async_trait]
impl ChatModel for Model {
    fn id(&self) -> String {
        self.id.to_string()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm_call", model = %self.id, role = ?request.tag.role, depth = request.tag.depth);
        self.call(request, None).instrument(span).await
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let span = tracing::info_span!("llm_call", model = %self.id, stream = true);
        self.call(request, Some(on_text)).instrument(span).await
    }
}
