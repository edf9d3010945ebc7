//! The one event type that flows from the loop to every consumer: CLI progress, JSONL traces,
//! the web page's stream, evaluation records.

use std::sync::Arc;

use rlm_llm::Usage;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;

/// Which RLM of the tree an event comes from: `root`, or a child's key (parent key, `.`, and a
/// short hash of its prompt), with its depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The RLM's key.
    pub rlm: String,
    /// Its depth (0 = root).
    pub depth: u32,
}

/// The settings a run was made with (enough to re-run it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Root model id.
    pub root_model: String,
    /// Sub-model id.
    pub sub_model: String,
    /// Iterations allowed per RLM.
    pub max_iterations: u32,
    /// Recursion depth.
    pub max_depth: u32,
    /// Characters of each step's output shown to the model.
    pub max_output_chars: usize,
    /// The budget.
    pub budget: Budget,
    /// Seed of every sandbox's randomness in the tree (hex).
    pub seed: String,
    /// Sandbox limits of every REPL in the tree.
    #[serde(default)]
    pub limits: Option<rlm_sandbox::Limits>,
    /// The system-prompt profile.
    #[serde(default)]
    pub profile: crate::PromptProfile,
    /// Context window of the sub-model in tokens (the system prompt states it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_model_context_tokens: Option<u64>,
    /// The custom tools model code could call (a replay serves their recorded results).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolRecord>,
}

/// A custom tool as a trace records it: what the model was told about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRecord {
    /// Its Python name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The JSON schema of its parameters.
    pub parameters: serde_json::Value,
}

impl ToolRecord {
    /// The record of `tool`.
    pub fn of(tool: &rlm_sandbox::Tool) -> Self {
        Self {
            name: tool.name().to_string(),
            description: tool.description().to_string(),
            parameters: tool.parameters().clone(),
        }
    }
}

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An RLM started (the root, or a child from `rlm_query`).
    RunStarted {
        /// Which RLM.
        #[serde(flatten)]
        node: Node,
        /// Its question.
        query: String,
        /// Settings (root only).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        settings: Option<Box<RunSettings>>,
        /// The context, inline when it is small enough (root only), and its description.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        context: Option<ContextRecord>,
    },
    /// An iteration began.
    Iteration {
        /// Which RLM.
        #[serde(flatten)]
        node: Node,
        /// 1-based.
        n: u32,
    },
    /// The root model of an RLM replied.
    ModelReply {
        /// Which RLM.
        #[serde(flatten)]
        node: Node,
        /// The iteration.
        iteration: u32,
        /// The reply.
        text: String,
        /// The model.
        model: String,
        /// Hash of the request (model and messages), to find the reply when replaying.
        request_hash: String,
        /// Tokens.
        usage: Usage,
        /// Dollars, when priced.
        cost_usd: Option<f64>,
        /// Milliseconds.
        ms: f64,
    },
    /// A code block ran.
    CodeExecuted {
        /// Which RLM.
        #[serde(flatten)]
        node: Node,
        /// The iteration.
        iteration: u32,
        /// The code.
        code: String,
        /// Output as the model saw it (truncated).
        output: String,
        /// The exception or limit, if any.
        error: Option<String>,
        /// The final answer the code gave, if any.
        final_answer: Option<String>,
        /// Fuel burned.
        fuel: u64,
        /// Milliseconds.
        ms: f64,
        /// The REPL was restored after a limit.
        restored: bool,
        /// The REPL was reset after a limit.
        reset: bool,
    },
    /// A sub-call began.
    SubCallStarted {
        /// The calling RLM.
        #[serde(flatten)]
        node: Node,
        /// Call id (unique in the run).
        id: u64,
        /// `llm_query` or `rlm_query`.
        kind: crate::SubCallKind,
        /// The model.
        model: String,
        /// Characters of the prompt.
        prompt_chars: usize,
    },
    /// A sub-call ended.
    SubCallFinished {
        /// The calling RLM.
        #[serde(flatten)]
        node: Node,
        /// Call id.
        id: u64,
        /// `llm_query` or `rlm_query`.
        kind: crate::SubCallKind,
        /// The model.
        model: String,
        /// Hash of the request, to find the answer when replaying.
        request_hash: String,
        /// The answer, or the error.
        result: Result<String, String>,
        /// Tokens (for `rlm_query`: of the whole child run).
        usage: Usage,
        /// Dollars.
        cost_usd: Option<f64>,
        /// Milliseconds.
        ms: f64,
        /// Answered from an identical earlier call.
        deduped: bool,
    },
    /// Model code called a custom tool (see [`RlmBuilder::tool`](crate::RlmBuilder::tool)).
    /// Calls that a restored REPL replays from its journal are not repeated, so not re-sent.
    ToolCall {
        /// The calling RLM.
        #[serde(flatten)]
        node: Node,
        /// Call id (unique in the run, shared with sub-calls).
        id: u64,
        /// The tool.
        name: String,
        /// The arguments, a JSON object; when their JSON is longer than
        /// [`MAX_EVENT_ARGS_BYTES`](crate::MAX_EVENT_ARGS_BYTES), a string: its first bytes and
        /// a note of the size.
        args: serde_json::Value,
        /// Bytes of the arguments' JSON (0 in traces written before it was recorded).
        #[serde(default)]
        args_bytes: usize,
        /// Hash of the arguments' JSON, by which a replay finds the call's result (empty in
        /// traces written before it was recorded: the replay hashes `args`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        args_hash: String,
        /// The tool's result, or its error (cut to
        /// [`MAX_EVENT_ERROR_BYTES`](crate::MAX_EVENT_ERROR_BYTES)). A result larger than the
        /// sandbox passes to model code is not kept: the error model code got instead is.
        result: Result<serde_json::Value, String>,
        /// Milliseconds.
        ms: f64,
    },
    /// An RLM finished with an answer (or stopped without one).
    FinalAnswer {
        /// Which RLM.
        #[serde(flatten)]
        node: Node,
        /// The answer.
        answer: Option<String>,
        /// Why it stopped.
        stop: crate::StopReason,
    },
    /// The budget ran out.
    BudgetExceeded {
        /// Which RLM noticed.
        #[serde(flatten)]
        node: Node,
        /// What ran out.
        reason: String,
    },
    /// Something failed (a model call after its retries, the sandbox).
    Error {
        /// Where.
        #[serde(flatten)]
        node: Node,
        /// What.
        message: String,
    },
}

/// How the context of a run is recorded in its trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextRecord {
    /// One-line description.
    pub description: String,
    /// Total characters of text.
    pub chars: u64,
    /// blake3 of the context's JSON form.
    pub hash: String,
    /// The context itself, when it is small enough to store.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inline: Option<serde_json::Value>,
}

/// Receives every event of a run, in order per RLM. Must not block for long.
pub trait EventSink: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}

/// The sinks of a run, plus the in-memory record returned with the result.
#[derive(Clone, Default)]
pub(crate) struct Events {
    sinks: Vec<Arc<dyn EventSink>>,
    record: Arc<std::sync::Mutex<Vec<Event>>>,
}

impl Events {
    pub(crate) fn new(sinks: Vec<Arc<dyn EventSink>>) -> Self {
        Self {
            sinks,
            record: Arc::default(),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        for s in &self.sinks {
            s.event(&event);
        }
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }

    pub(crate) fn take(&self) -> Vec<Event> {
        std::mem::take(
            &mut *self
                .record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}
