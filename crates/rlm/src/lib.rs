//! Recursive Language Models: answer a question about a context of any size without putting
//! the context in the root model's window.
//!
//! An [`Rlm`] loads the context into a sandboxed Python REPL (see `rlm-sandbox`) and gives the
//! root model a system prompt that explains the REPL. Each turn the root model replies; every
//! fenced ```` ```repl ```` / ```` ```python ```` block runs in the REPL, and the output, cut to
//! `max_output_chars`, goes back as the next user turn, until the model gives `FINAL(answer)`,
//! `FINAL_VAR(name)` or sets the `answer` dict. Code calls `llm_query`/`llm_batch` (sub-calls to
//! the sub-model, concurrent, deduplicated, under one concurrency limit for the whole tree) and
//! `rlm_query` (a child RLM with its own REPL while `max_depth` allows, a plain sub-call at the
//! limit). One [`Budget`] (sub-calls, tokens, dollars, time) covers the whole tree; running out
//! stops cleanly with the best partial answer and the reason.
//!
//! Custom tools ([`Tool`], registered with [`RlmBuilder::tool`]) are host functions that model
//! code in every REPL of the tree calls like Python functions (the official rlm's
//! `custom_tools`, DSPy's `tools=[...]`); the system prompt lists them.
//!
//! Every step is an [`Event`]; sinks receive them live (CLI progress, the web page) and a
//! [`TraceWriter`] stores them as JSONL, enough to [`replay`] the run offline.
//!
//! A program needs this crate and tokio (`rlm = { path = ".../crates/rlm" }`); the sandbox's
//! guest ships inside it and is compiled to native code once, on first use, then cached in
//! `~/.cache/rlm`.
//!
//! ```no_run
//! use rlm::{Budget, Rlm};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let rlm = Rlm::builder(rlm::model("openai/gpt-5")?) // key from OPENAI_API_KEY
//!     .sub_model(rlm::model("openai/gpt-5-mini")?)
//!     .max_iterations(20)
//!     .budget(Budget { max_usd: Some(1.0), ..Budget::default() })
//!     .build()?;
//! let document = tokio::fs::read_to_string("data/synthetic_patient_data.md").await?;
//! let result = rlm.run(document, "Which drug is the patient allergic to?").await?;
//! println!("{:?} ({:?}, {} iterations, ${:.4})",
//!     result.answer, result.stop, result.iterations, result.usage.total.cost_usd);
//! # Ok(()) }
//! ```
//!
//! Models: [`model`] takes the ids `rlm run --model` takes (`openai/...`, `anthropic/...`,
//! `gemini/...`, `openrouter/...`, `compat/NAME` for any OpenAI-compatible server at
//! `RLM_BASE_URL`, or [`model_at`] with its URL); models made from one [`LlmClient`] share its
//! concurrency limit and connections. Anything implementing [`ChatModel`] works, moved in or
//! as an `Arc`. [`RlmBuilder::build`] does not block: the sandbox engine (one per process,
//! shared) loads on the first run, off the async threads. The crate's `examples/` directory
//! has a question over a file, a multi-turn session and custom tools.
//!
//! ## Coming from the Python rlm
//!
//! The original project's call `RLM(model).run(context, messages, max_chunk_size,
//! max_output_chars, max_steps)` maps as follows:
//!
//! | Python | here |
//! |---|---|
//! | `model="gpt-5"` | `Rlm::builder(rlm::model("openai/gpt-5")?)` (and `.sub_model(...)`) |
//! | `context` (str, list, dict) | `rlm.run(context, ...)`: a `String`, `Vec<String>` or `serde_json::Value` |
//! | `messages` | the last user message is the `query`; for a conversation use [`Rlm::session`] and [`Session::ask`] |
//! | `max_chunk_size` | [`RlmBuilder::sub_model_context_tokens`] (what the prompt says one sub-call can read) |
//! | `max_output_chars` | [`RlmBuilder::max_output_chars`] |
//! | `max_steps` | [`RlmBuilder::max_iterations`] |
//! | `custom_tools` | [`RlmBuilder::tool`] / [`RlmBuilder::tools`] with [`Tool::new`] |
//!
//! ```no_run
//! # async fn demo(model: rlm::Model, context: String) -> Result<(), rlm::RlmError> {
//! let rlm = rlm::Rlm::builder(model)
//!     .sub_model_context_tokens(32_000) // max_chunk_size
//!     .max_output_chars(2_000)          // max_output_chars
//!     .max_iterations(10)               // max_steps
//!     .build()?;
//! let result = rlm.run(context, "the question").await?; // messages -> query
//! # Ok(()) }
//! ```

mod blocking;
mod budget;
mod builder;
mod config;
mod engine;
mod error;
mod events;
mod grounding;
mod host;
mod input;
mod literals;
mod lookup;
mod node;
mod outcome;
mod parse;
mod prompt;
mod repeat;
mod repls;
mod session;
mod setup;
mod tool_calls;
mod trace;
mod tree;

/// The model clients (`rlm-llm`) in full; the names a program usually needs are re-exported
/// below.
pub use rlm_llm as llm;
/// The sandbox (`rlm-sandbox`) in full; the names a program usually needs are re-exported below.
pub use rlm_sandbox as sandbox;
/// JSON, as tools take and return it and as contexts may be (`rlm::serde_json::json!`).
pub use serde_json;

pub use rlm_llm::{
    ApiKey, CallRole, CallTag, ChatModel, ChatRequest, ChatResponse, LlmClient, LlmClientBuilder,
    LlmError, Message, Model, ModelConfig, ModelId, SamplingParams, Usage, UsageTotals,
    UsageTracker,
};
pub use rlm_sandbox::{
    Context, ContextFormat, EngineOptions, Limits, MemoryPool, SandboxEngine, SandboxError,
};

pub use budget::{
    Budget, BudgetError, BudgetLimit, BudgetLimits, DEFAULT_MAX_SUB_CALLS,
    DEFAULT_MAX_SUB_CALLS_PER_STEP, MAX_SECONDS, seconds_limit,
};
pub use builder::RlmBuilder;
pub use config::{DEFAULT_MAX_REPLS, default_engine};
pub use engine::Rlm;
pub use error::RlmError;
pub use events::{ContextRecord, Event, EventSink, Node, RunSettings, ToolRecord};
pub use input::ContextInput;
pub use literals::is_prompt_literal;
pub use outcome::{RunResult, StopReason, UsageReport};
pub use parse::{ParsedReply, TextFinal, find_final, parse_reply};
pub use prompt::{
    PromptFacts, PromptProfile, UnknownProfile, describe_shape, small_system_prompt, system_prompt,
    system_prompt_for, truncate_middle,
};
pub use repls::ReplLimiter;
pub use rlm_sandbox::{Tool, ToolError, ToolFuture};
pub use session::Session;
pub use setup::{
    DEFAULT_LOCAL_CONTEXT_TOKENS, ModelFactory, RunSpec, SMALL_MODEL_OUTPUT_CHARS, SetupError,
    default_model, default_model_from, is_local_model, model, model_at,
};
pub use tool_calls::{MAX_EVENT_ARGS_BYTES, MAX_EVENT_ERROR_BYTES};
pub use trace::{Replay, TraceError, TraceWriter, read_trace, replay};
pub use tree::SubCallKind;
