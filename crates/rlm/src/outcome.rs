//! What a run returns: the answer, why it stopped, and what it cost.

use std::collections::BTreeMap;
use std::time::Duration;

use rlm_llm::{CallTag, UsageTotals, UsageTracker};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetLimit;
use crate::events::Event;

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// The model gave a final answer.
    Final,
    /// The iterations ran out (the model was asked once for its best answer).
    MaxIterations,
    /// The budget ran out.
    Budget {
        /// Which limit ran out (`None` only in traces written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<BudgetLimit>,
        /// What ran out, for people.
        reason: String,
    },
    /// A model call failed after its retries.
    Error {
        /// What failed.
        message: String,
    },
}

/// How front ends say why a run stopped, in a few words: `answered`, `iterations used up (best
/// answer given)`, `stopped: <what ran out>`, `error: <what failed>`.
impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Final => f.write_str("answered"),
            StopReason::MaxIterations => f.write_str("iterations used up (best answer given)"),
            StopReason::Budget { reason, .. } => write!(f, "stopped: {reason}"),
            StopReason::Error { message } => write!(f, "error: {message}"),
        }
    }
}

/// Tokens and dollars of a run, split by model and by role and depth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Everything.
    pub total: UsageTotals,
    /// Per `provider/model`.
    pub by_model: BTreeMap<String, UsageTotals>,
    /// Per role (root or sub-call) and depth.
    pub by_role: Vec<(CallTag, UsageTotals)>,
}

impl UsageReport {
    pub(crate) fn from_tracker(t: &UsageTracker) -> Self {
        Self {
            total: t.total(),
            by_model: t.by_model(),
            by_role: t.by_tag().into_iter().collect(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The answer (a partial one when the run stopped early, if there was any).
    pub answer: Option<String>,
    /// Why the run stopped.
    pub stop: StopReason,
    /// Iterations of the root RLM.
    pub iterations: u32,
    /// Tokens and cost of the whole tree.
    pub usage: UsageReport,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Every event, in order (the trace).
    pub events: Vec<Event>,
}
