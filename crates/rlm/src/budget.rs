//! One budget for a whole recursion tree: sub-calls, tokens, dollars, wall time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rlm_llm::Usage;
use serde::{Deserialize, Serialize};

/// Limits on a whole run (the root and every sub-call and sub-RLM below it). `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Sub-calls (`llm_query` prompts, `llm_batch` prompts, `rlm_query` calls).
    pub max_sub_calls: Option<u64>,
    /// Input plus output tokens of every model call.
    pub max_tokens: Option<u64>,
    /// Dollars of every model call (calls of unpriced models count 0).
    pub max_usd: Option<f64>,
    /// Wall-clock time of the run.
    #[serde(with = "opt_secs")]
    pub max_time: Option<Duration>,
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(Duration::from_secs_f64))
    }
}

/// The running totals of a budget, shared by the tree.
#[derive(Debug)]
pub(crate) struct BudgetState {
    budget: Budget,
    started: Instant,
    sub_calls: AtomicU64,
    tokens: AtomicU64,
    usd: Mutex<f64>,
}

impl BudgetState {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            started: Instant::now(),
            sub_calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            usd: Mutex::new(0.0),
        }
    }

    /// Why the budget is spent, if it is.
    pub(crate) fn exhausted(&self) -> Option<String> {
        let b = &self.budget;
        if let Some(max) = b.max_time
            && self.started.elapsed() >= max
        {
            return Some(format!(
                "the time budget of {:.1} s is spent",
                max.as_secs_f64()
            ));
        }
        if let Some(max) = b.max_tokens {
            let used = self.tokens.load(Ordering::SeqCst);
            if used >= max {
                return Some(format!(
                    "the token budget is spent ({used} of {max} tokens)"
                ));
            }
        }
        if let Some(max) = b.max_usd {
            let used = *self
                .usd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if used >= max {
                return Some(format!(
                    "the cost budget is spent (${used:.4} of ${max:.4})"
                ));
            }
        }
        if let Some(max) = b.max_sub_calls {
            let used = self.sub_calls.load(Ordering::SeqCst);
            if used >= max {
                return Some(format!(
                    "the sub-call budget is spent ({used} of {max} calls)"
                ));
            }
        }
        None
    }

    /// Count a sub-call, refusing when the budget is spent.
    pub(crate) fn start_sub_call(&self) -> Result<(), String> {
        if let Some(why) = self.exhausted() {
            return Err(format!("budget exhausted: {why}"));
        }
        let n = self.sub_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(max) = self.budget.max_sub_calls
            && n > max
        {
            return Err(format!(
                "budget exhausted: the sub-call budget is spent ({max} calls)"
            ));
        }
        Ok(())
    }

    /// Add a model call's usage and cost.
    pub(crate) fn charge(&self, usage: &Usage, cost_usd: Option<f64>) {
        self.tokens.fetch_add(usage.total(), Ordering::SeqCst);
        if let Some(c) = cost_usd {
            *self
                .usd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += c;
        }
    }

    /// Time left, if the budget limits time.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        self.budget
            .max_time
            .map(|max| max.saturating_sub(self.started.elapsed()))
    }
}
