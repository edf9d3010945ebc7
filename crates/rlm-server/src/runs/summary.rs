//! How a run ended ([`Summary`]), from its result, from a trace, or from a failure.

use std::time::Duration;

use rlm::{Event, RunResult, StopReason, UsageReport};
use serde::{Deserialize, Serialize};

use super::retention::{Retention, capped, cut};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The model gave its final answer.
    Answered,
    /// The budget or the iterations ran out (the answer is partial).
    Exhausted,
    /// The run failed.
    Error,
    /// The run was cancelled.
    Cancelled,
    /// A trace opened for viewing.
    Trace,
}

impl RunStatus {
    /// The name the API and the page use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Exhausted => "exhausted",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Trace => "trace",
        }
    }
}

/// How a run ended, in words a person understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `answered`, `exhausted` (budget or iterations; partial answer), `error` or `cancelled`.
    pub status: RunStatus,
    /// The answer (partial when exhausted).
    pub answer: Option<String>,
    /// What happened, for people.
    pub message: String,
    /// The loop's stop reason, when it ran.
    pub stop: Option<StopReason>,
    /// Root iterations.
    pub iterations: u32,
    /// Tokens and cost.
    pub usage: Option<UsageReport>,
    /// Seconds.
    pub elapsed_s: f64,
}

impl Summary {
    pub(super) fn of(result: &RunResult) -> Self {
        let (status, message) = match &result.stop {
            StopReason::Final => (
                RunStatus::Answered,
                "The model gave its final answer.".to_string(),
            ),
            StopReason::MaxIterations => (
                RunStatus::Exhausted,
                format!(
                    "The iteration limit ({}) was reached; this is the model's best answer so far.",
                    result.iterations
                ),
            ),
            StopReason::Budget { reason, .. } => (
                RunStatus::Exhausted,
                format!(
                    "Stopped because {reason}. The answer so far is shown; raise the budget to go further."
                ),
            ),
            StopReason::Error { message } => (
                RunStatus::Error,
                format!("A model call failed after its retries: {message}"),
            ),
        };
        Self {
            status,
            answer: result.answer.clone(),
            message,
            stop: Some(result.stop.clone()),
            iterations: result.iterations,
            usage: Some(result.usage.clone()),
            elapsed_s: result.elapsed.as_secs_f64(),
        }
    }

    /// A copy within the retention's field sizes.
    pub(super) fn capped(&self, r: &Retention) -> Self {
        let mut s = self.clone();
        if let Some(a) = &mut s.answer {
            cut(a, r.answer_bytes);
        }
        cut(&mut s.message, r.field_bytes);
        s.stop = s.stop.map(|stop| capped(&stop, r.field_bytes).0);
        s
    }

    /// What a trace says of how its run ended.
    pub(super) fn of_trace(events: &[Event], status: Option<RunStatus>, message: String) -> Self {
        let last = events.iter().rev().find_map(|e| match e {
            Event::FinalAnswer { node, answer, stop } if node.depth == 0 => {
                Some((answer.clone(), stop.clone()))
            }
            _ => None,
        });
        let derived = match last.as_ref().map(|l| &l.1) {
            Some(StopReason::Final) => RunStatus::Answered,
            Some(StopReason::MaxIterations | StopReason::Budget { .. }) => RunStatus::Exhausted,
            Some(StopReason::Error { .. }) => RunStatus::Error,
            None => RunStatus::Cancelled,
        };
        Self {
            status: status.unwrap_or(derived),
            answer: last.as_ref().and_then(|a| a.0.clone()),
            message,
            stop: last.map(|a| a.1),
            iterations: events
                .iter()
                .filter_map(|e| match e {
                    Event::Iteration { node, n } if node.depth == 0 => Some(*n),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            usage: None,
            elapsed_s: 0.0,
        }
    }

    pub(super) fn failed(status: RunStatus, message: String, elapsed: Duration) -> Self {
        Self {
            status,
            answer: None,
            message,
            stop: None,
            iterations: 0,
            usage: None,
            elapsed_s: elapsed.as_secs_f64(),
        }
    }
}
