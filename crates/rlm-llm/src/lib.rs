//! Chat-model clients for rlm: OpenAI, Anthropic, Google Gemini, and any OpenAI-compatible
//! server (vLLM, Ollama, llama.cpp server, OpenRouter, LM Studio), behind one [`ChatModel`]
//! trait.
//!
//! An RLM calls models at two levels: the root model that writes REPL code, and sub-calls from
//! that code (`llm_query`, `llm_batch`, sub-RLMs), often hundreds per run and concurrently. One
//! [`LlmClient`] serves them all: a shared HTTP pool, one concurrency limit that every model
//! and every level of recursion share, retries with exponential backoff and jitter that honour
//! `Retry-After`, a per-request timeout, cancellation by dropping the future, and a
//! [`UsageTracker`] that adds up tokens and dollars by model, role and depth. Models are named
//! `provider/model`; keys come from the usual environment variables and never appear in logs,
//! traces or errors.
//!
//! | provider | id | key | base URL override |
//! |---|---|---|---|
//! | OpenAI Chat Completions | `openai/gpt-5-mini` | `OPENAI_API_KEY` | `OPENAI_BASE_URL` |
//! | Anthropic Messages | `anthropic/claude-sonnet-4-5` | `ANTHROPIC_API_KEY` | `ANTHROPIC_BASE_URL` |
//! | Gemini `generateContent` | `gemini/gemini-2.5-flash` | `GOOGLE_API_KEY` or `GEMINI_API_KEY` | `GEMINI_BASE_URL` |
//! | OpenAI-compatible | `compat/<model>` | `RLM_API_KEY` (optional) | `RLM_BASE_URL` or [`ModelConfig::base_url`] (required) |
//!
//! OpenAI:
//! ```no_run
//! use rlm_llm::{ChatModel, ChatRequest, LlmClient, Message};
//! # async fn demo() -> Result<(), rlm_llm::LlmError> {
//! let client = LlmClient::new()?;
//! let model = client.model("openai/gpt-5-mini")?; // reads OPENAI_API_KEY
//! let answer = model.chat(ChatRequest::new(vec![Message::user("Say hi")])).await?;
//! println!("{} ({} tokens, ${:.5})", answer.text, answer.usage.total(), answer.cost_usd.unwrap_or(0.0));
//! # Ok(()) }
//! ```
//!
//! Anthropic, with sampling parameters and streaming:
//! ```no_run
//! use rlm_llm::{ChatModel, ChatRequest, LlmClient, Message, SamplingParams};
//! # async fn demo() -> Result<(), rlm_llm::LlmError> {
//! let model = LlmClient::new()?.model("anthropic/claude-sonnet-4-5")?; // ANTHROPIC_API_KEY
//! let mut request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("Why is the sky blue?")]);
//! request.params = SamplingParams { temperature: Some(0.2), max_output_tokens: Some(300), ..Default::default() };
//! let answer = model.chat_stream(request, &|text| print!("{text}")).await?;
//! # let _ = answer; Ok(()) }
//! ```
//!
//! Gemini, counting usage by role:
//! ```no_run
//! use rlm_llm::{CallTag, ChatModel, ChatRequest, LlmClient, Message};
//! # async fn demo() -> Result<(), rlm_llm::LlmError> {
//! let client = LlmClient::builder().concurrency(32).build()?;
//! let model = client.model("gemini/gemini-2.5-flash")?; // GOOGLE_API_KEY or GEMINI_API_KEY
//! let request = ChatRequest::new(vec![Message::user("Label: 'great product'")]).tagged(CallTag::sub_call(1));
//! model.chat(request).await?;
//! for (tag, totals) in client.usage().by_tag() {
//!     println!("{tag:?}: {} calls, {} tokens, ${:.4}", totals.calls, totals.usage.total(), totals.cost_usd);
//! }
//! # Ok(()) }
//! ```
//!
//! Any OpenAI-compatible server (here a local vLLM or llama.cpp server):
//! ```no_run
//! use rlm_llm::{ChatModel, ChatRequest, LlmClient, Message, ModelConfig};
//! # async fn demo() -> Result<(), rlm_llm::LlmError> {
//! let config = ModelConfig { base_url: Some("http://localhost:8000/v1".into()), ..Default::default() };
//! let model = LlmClient::new()?.model_with("compat/Qwen2.5-7B-Instruct", config)?;
//! let answer = model.chat(ChatRequest::new(vec![Message::user("2+2?")])).await?;
//! # let _ = answer; Ok(()) }
//! ```
//!
//! Prices: [`DEFAULT_PRICES`] covers common models; a JSON file named by `RLM_PRICES`
//! (`{"provider/model": {"input": 0.25, "output": 2.0, "cached_input": 0.025}}`, dollars per
//! million tokens) overrides it, and [`ChatRequest::price`] overrides it per call.

mod client;
mod error;
mod message;
mod model;
mod pricing;
mod providers;
mod retry;
mod secret;
mod usage;

pub use client::{
    COMPAT_MAX_OUTPUT_TOKENS, ChatModel, LlmClient, LlmClientBuilder, Model, ModelConfig, OnText,
    compat_defaults,
};
pub use error::LlmError;
pub use message::{
    ChatRequest, ChatResponse, FinishReason, Message, ReasoningEffort, Role, SamplingParams,
};
pub use model::{ModelId, Provider};
pub use pricing::{DEFAULT_PRICES, Price, PriceTable};
pub use retry::RetryPolicy;
pub use secret::ApiKey;
pub use usage::{CallRole, CallTag, Usage, UsageKey, UsageTotals, UsageTracker};
