//! What a step gives back, and what the REPL keeps of it: the step's result, the limit that
//! stopped it, and the journal entries a rebuilt REPL replays.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::ModelCall;
#[cfg(doc)]
use crate::{Limits, Sandbox};

/// Which limit stopped a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    /// The step used all its fuel.
    Fuel,
    /// The step ran past its wall-clock deadline (also while waiting on a host call).
    Deadline,
    /// The guest's call stack overflowed.
    Stack,
    /// The guest aborted (e.g. an allocation the host refused, or an internal error).
    Crash,
}

/// What one step produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// Captured stdout (Python-level and fd 1), up to the output limit.
    pub stdout: String,
    /// Captured stderr (Python-level and fd 2), up to the output limit.
    pub stderr: String,
    /// Bytes of stdout that were not kept.
    pub stdout_dropped: u64,
    /// Bytes of stderr that were not kept.
    pub stderr_dropped: u64,
    /// The exception as a traceback (model line numbers), or the limit that stopped the step.
    pub error: Option<String>,
    /// The final answer, when the step gave one.
    pub final_answer: Option<String>,
    /// Fuel the step burned.
    pub fuel: u64,
    /// Wall-clock time of the step (not counting recovery).
    pub elapsed: Duration,
    /// The limit that stopped the step, if one did.
    pub limit: Option<LimitHit>,
    /// Host calls the step made.
    pub host_calls: u64,
    /// `search` calls the step made (each host-side regex search, including those behind
    /// `re` functions on a lazy context).
    #[serde(default)]
    pub searches: u32,
    /// Of those, the ones that matched nothing.
    #[serde(default)]
    pub empty_searches: u32,
    /// The step was stopped and the REPL restored to its state before the step.
    pub restored: bool,
    /// The step was stopped and the REPL could not be restored: it starts afresh (contexts
    /// loaded, variables gone).
    pub reset: bool,
    /// Time spent rebuilding the REPL after the step was stopped (not in `elapsed`).
    #[serde(default)]
    pub recovery: Duration,
    /// Journal entries (earlier steps, context loads, definitions) re-run while the REPL was
    /// rebuilt after the step was stopped: only those after the checkpoint it was restored
    /// from (see [`Limits::checkpoint_after`]), or those a standby had not yet caught up with,
    /// or all of them when the journal was replayed.
    #[serde(default)]
    pub replayed: u64,
    /// The REPL was rebuilt from a checkpoint of its state (plus the steps after it).
    #[serde(default)]
    pub from_checkpoint: bool,
    /// Time spent saving the REPL's state after the step (see [`Limits::checkpoint_after`];
    /// zero when none was due; not in `elapsed`).
    #[serde(default)]
    pub checkpoint: Duration,
    /// A checkpoint of the state after this step was taken (false when none was due, or the
    /// state could not be saved).
    #[serde(default)]
    pub checkpointed: bool,
}

impl StepResult {
    /// Whether stdout or stderr lost bytes to the output limit.
    pub fn truncated(&self) -> bool {
        self.stdout_dropped > 0 || self.stderr_dropped > 0
    }

    /// The step's whole cost in wall-clock time: its own time plus the recovery or the
    /// checkpoint after it.
    pub fn total_time(&self) -> Duration {
        self.elapsed
            .saturating_add(self.recovery)
            .saturating_add(self.checkpoint)
    }
}

/// A step (or a context attachment) that succeeded, kept so the REPL can be rebuilt after a trap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    /// A context was bound to `name`.
    Attach { slot: u32, name: String },
    /// A step ran to completion (it may have raised), making these model calls.
    Step { code: String, calls: Vec<ModelCall> },
    /// A variable was bound to a JSON value ([`Sandbox::define`]).
    Define {
        name: String,
        value: serde_json::Value,
    },
}

/// Keep at most `cap` bytes of `text` (on a character boundary); returns what is kept and how
/// many bytes were dropped.
pub(crate) fn cap_text(mut text: String, cap: usize) -> (String, u64) {
    if text.len() <= cap {
        return (text, 0);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = (text.len() - end) as u64;
    text.truncate(end);
    (text, dropped)
}

/// Cut `text` to about `cap` bytes, saying so at the end.
pub(crate) fn cut_marked(text: String, cap: usize) -> String {
    let total = text.len();
    let (mut kept, dropped) = cap_text(text, cap);
    if dropped > 0 {
        kept.push_str(&format!("\n... [cut: {total} bytes in all, {cap} kept]"));
    }
    kept
}

/// Python-level output first, then whatever went straight to the file descriptor.
pub(crate) fn join_streams(python: String, fd: &str) -> String {
    if fd.is_empty() {
        python
    } else if python.is_empty() {
        fd.to_string()
    } else {
        python + fd
    }
}
