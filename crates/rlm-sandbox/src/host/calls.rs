//! The record of the model and tool calls a step made, which the journal replays when a REPL is
//! rebuilt, so no model or tool is asked twice.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One model call made by a step, with its answer: the journal replays these instead of asking
/// the model again when a REPL is restored.
///
/// Prompts are not kept (a restore serves the answers in the order the calls were made, checking
/// the kind, the model and a batch's size), so the journal holds no copy of what the guest sent,
/// and a prompt that differs on replay (one holding the current time) still gets its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelCall {
    /// `llm_query`.
    Query {
        model: Option<String>,
        result: Result<String, String>,
    },
    /// `llm_batch`.
    Batch {
        model: Option<String>,
        results: Vec<Result<String, String>>,
    },
    /// `rlm_query`.
    Rlm {
        model: Option<String>,
        result: Result<String, String>,
    },
    /// `rlm_batch` (`rlm_query_batched`).
    RlmBatch {
        model: Option<String>,
        results: Vec<Result<String, String>>,
    },
    /// A custom tool call: the tool's name and its result as the guest got it (JSON text), or
    /// the failure. The arguments are not kept, as prompts are not.
    Tool {
        name: String,
        result: Result<String, String>,
    },
}

impl ModelCall {
    /// Bytes of answers this call keeps in the journal.
    pub fn answer_bytes(&self) -> usize {
        let one = |r: &Result<String, String>| r.as_ref().map_or_else(String::len, String::len);
        match self {
            Self::Query { result, .. } | Self::Rlm { result, .. } | Self::Tool { result, .. } => {
                one(result)
            }
            Self::Batch { results, .. } | Self::RlmBatch { results, .. } => {
                results.iter().map(one).sum()
            }
        }
    }
}

/// Whether model calls go to the model (and are recorded) or come from a journal.
#[derive(Debug)]
pub(crate) enum CallLog {
    Record(Vec<ModelCall>),
    Replay(VecDeque<ModelCall>),
    /// No model or tool call may be made (the REPL's state is being saved or restored): each is
    /// refused, and counted.
    Closed,
}

/// The refusal a call gets while the log is [`CallLog::Closed`].
pub(super) const CLOSED: &str =
    "no model or tool calls while the REPL's state is saved or restored";

/// Error raised (as a trap) when a restored REPL asks for a different model call than the one
/// the journal recorded: the replay cannot be trusted, so the REPL is reset instead.
#[derive(Debug, thiserror::Error)]
#[error("replay diverged from the journal at a model call")]
pub(crate) struct ReplayDiverged;
