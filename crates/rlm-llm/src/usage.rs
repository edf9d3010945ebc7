//! Token usage and cost, per call and accumulated by model, role and depth.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Tokens one call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens (reasoning tokens included where the provider counts them).
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
}

impl Usage {
    /// Add another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
    }

    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// Which part of an RLM made a call.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CallRole {
    /// The root model, writing REPL code.
    #[default]
    Root,
    /// A sub-call from the REPL (`llm_query`, `llm_batch`, a sub-RLM's calls).
    SubCall,
}

/// Who made a call: its role and its depth in the recursion (0 = the root RLM).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct CallTag {
    /// Root or sub-call.
    pub role: CallRole,
    /// Recursion depth.
    pub depth: u32,
}

impl CallTag {
    /// The root model at depth 0.
    pub const ROOT: CallTag = CallTag {
        role: CallRole::Root,
        depth: 0,
    };

    /// A sub-call at `depth`.
    pub fn sub_call(depth: u32) -> Self {
        Self {
            role: CallRole::SubCall,
            depth,
        }
    }
}

/// Totals for one key of the accumulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Successful calls.
    pub calls: u64,
    /// Tokens.
    pub usage: Usage,
    /// Dollars, over the calls that have a price.
    pub cost_usd: f64,
    /// Calls whose model has no price (their cost is not in `cost_usd`).
    pub unpriced_calls: u64,
}

impl UsageTotals {
    fn add(&mut self, other: &UsageTotals) {
        self.calls += other.calls;
        self.usage.add(&other.usage);
        self.cost_usd += other.cost_usd;
        self.unpriced_calls += other.unpriced_calls;
    }
}

/// Key of the accumulator: model, role and depth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageKey {
    /// `provider/model`.
    pub model: String,
    /// Role and depth.
    pub tag: CallTag,
}

/// A thread-safe usage and cost accumulator, shared by every model of a client.
#[derive(Debug, Default)]
pub struct UsageTracker {
    totals: Mutex<BTreeMap<UsageKey, UsageTotals>>,
}

impl UsageTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one successful call.
    pub fn record(&self, model: &str, tag: CallTag, usage: &Usage, cost_usd: Option<f64>) {
        let mut totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = totals
            .entry(UsageKey {
                model: model.to_string(),
                tag,
            })
            .or_default();
        entry.calls += 1;
        entry.usage.add(usage);
        match cost_usd {
            Some(c) => entry.cost_usd += c,
            None => entry.unpriced_calls += 1,
        }
    }

    /// Every key with its totals.
    pub fn snapshot(&self) -> Vec<(UsageKey, UsageTotals)> {
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        totals.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Everything added up.
    pub fn total(&self) -> UsageTotals {
        self.fold(|_| ()).remove(&()).unwrap_or_default()
    }

    /// Totals per model.
    pub fn by_model(&self) -> BTreeMap<String, UsageTotals> {
        self.fold(|k| k.model.clone())
    }

    /// Totals per role and depth.
    pub fn by_tag(&self) -> BTreeMap<CallTag, UsageTotals> {
        self.fold(|k| k.tag)
    }

    fn fold<K: Ord>(&self, key: impl Fn(&UsageKey) -> K) -> BTreeMap<K, UsageTotals> {
        let mut out: BTreeMap<K, UsageTotals> = BTreeMap::new();
        for (k, v) in self.snapshot() {
            out.entry(key(&k)).or_default().add(&v);
        }
        out
    }
}
