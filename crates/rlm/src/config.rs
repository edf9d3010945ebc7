//! The settings of an RLM, as the builder leaves them and every part of a run reads them, and
//! the sandbox engine runs share by default.

use std::sync::Arc;

use rlm_llm::ChatModel;
use rlm_sandbox::{Limits, SandboxEngine, SandboxError, Tool};
use tokio::sync::OnceCell;

use crate::budget::Budget;
use crate::events::EventSink;
use crate::prompt;
use crate::repls::ReplLimiter;

/// Settings of an RLM. Build with [`Rlm::builder`](crate::Rlm::builder).
pub(crate) struct Config {
    pub root_model: Arc<dyn ChatModel>,
    pub sub_model: Arc<dyn ChatModel>,
    /// The engine given to the builder; `None`: the process's shared default engine.
    pub engine: Option<Arc<SandboxEngine>>,
    pub limits: Limits,
    pub max_iterations: u32,
    pub max_depth: u32,
    pub max_output_chars: usize,
    pub budget: Budget,
    pub sub_concurrency: usize,
    /// REPLs alive at once in the run (the root's included).
    pub max_repls: usize,
    /// A cap on live REPLs shared with other runs.
    pub repl_limiter: Option<ReplLimiter>,
    pub sub_model_context_tokens: u64,
    pub inline_context_chars: u64,
    pub sinks: Vec<Arc<dyn EventSink>>,
    pub seed: Option<[u8; 32]>,
    pub profile: prompt::PromptProfile,
    pub tools: Vec<Tool>,
}

/// REPLs alive at once in one run by default, the root's included (as many as the default
/// sub-call concurrency).
pub const DEFAULT_MAX_REPLS: usize = 16;

impl Config {
    /// The sandbox engine: the one given to the builder, else the process's shared default
    /// engine, loaded on first use off the async threads.
    pub async fn engine(&self) -> Result<Arc<SandboxEngine>, SandboxError> {
        match &self.engine {
            Some(e) => Ok(e.clone()),
            None => default_engine().await,
        }
    }
}

/// The engine every [`Rlm`](crate::Rlm) built without
/// [`RlmBuilder::engine`](crate::RlmBuilder::engine) shares, loaded once per process
/// ([`SandboxEngine::load`]: the built-in guest, compiled once and cached on disk). Loading
/// blocks (file reads, on the first use of a guest a compilation of tens of seconds), so it runs
/// on tokio's blocking threads; a failed load is tried again by the next call.
pub async fn default_engine() -> Result<Arc<SandboxEngine>, SandboxError> {
    static ENGINE: OnceCell<Arc<SandboxEngine>> = OnceCell::const_new();
    ENGINE
        .get_or_try_init(|| crate::blocking::off_runtime(SandboxEngine::load))
        .await
        .cloned()
}
