//! One budget for a whole recursion tree: sub-calls, tokens, dollars, wall time; and the one
//! place where limits people give (flags, API fields) become a budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rlm_llm::Usage;
use serde::{Deserialize, Serialize};

/// Limits on a whole run (the root and every sub-call and sub-RLM below it). `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Sub-calls (`llm_query` prompts, `llm_batch` prompts, `rlm_query` calls). Past it, calls
    /// are refused and the run stops before its next step with the partial answer.
    pub max_sub_calls: Option<u64>,
    /// Sub-calls one REPL step may ask for (answered from an identical earlier call or not). A
    /// call past it, or a whole batch that would pass it, is refused with a sentence for the
    /// model; the run goes on.
    #[serde(default)]
    pub max_sub_calls_per_step: Option<u64>,
    /// Input plus output tokens of every model call.
    pub max_tokens: Option<u64>,
    /// Dollars of every model call (calls of unpriced models count 0).
    pub max_usd: Option<f64>,
    /// Wall-clock time of the run.
    #[serde(with = "opt_secs", default)]
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

    /// A trace or a request is data from anywhere: a negative, NaN or endless number of
    /// seconds is an error, never a panic.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| {
                (0.0..=super::MAX_SECONDS)
                    .contains(&s)
                    .then(|| Duration::from_secs_f64(s))
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "max_time must be a number of seconds from 0 to {}, not {s}",
                            super::MAX_SECONDS
                        ))
                    })
            })
            .transpose()
    }
}

/// Sub-calls a run makes at most when its front end is given no limit: `rlm run`, `rlm serve`,
/// `rlm mcp` and the Python package ([`RunSpec::budget`](crate::RunSpec::budget)). Enough for
/// several full passes over a large context in chunks: the official rlm's prompt shows 10
/// chunks per batch, and its authors' advice for models that sub-call too much is about 200
/// calls for 1,000 lines of work, where such a model had made thousands. A document that tells
/// the model to make 3,000 calls stops here, with the partial answer. Not a library default: a
/// [`Budget`] built by hand has no limit.
pub const DEFAULT_MAX_SUB_CALLS: u64 = 1_000;

/// Sub-calls one REPL step may ask for when the front end is given no limit (see
/// [`DEFAULT_MAX_SUB_CALLS`]): the 200 calls of that advice, in one step.
pub const DEFAULT_MAX_SUB_CALLS_PER_STEP: u64 = 200;

/// The longest time limit, in seconds (about 31,700 years; what a [`Duration`] holds and more
/// than any run needs).
pub const MAX_SECONDS: f64 = 1e12;

/// Which limit of a [`Budget`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    /// Wall-clock time.
    Time,
    /// Tokens.
    Tokens,
    /// Dollars.
    Cost,
    /// Sub-calls.
    SubCalls,
}

/// A spent budget: which limit, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spent {
    pub limit: BudgetLimit,
    pub reason: String,
}

/// A limit given by a person that cannot be a budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// Not a positive, finite number (or, for time, longer than [`MAX_SECONDS`]).
    #[error("{what} must be a positive number{unit} up to {max}, not {value}")]
    Invalid {
        /// Which limit, in words (`the time budget`).
        what: &'static str,
        /// ` of seconds`, ` of dollars`.
        unit: &'static str,
        /// The largest value allowed.
        max: f64,
        /// The value given.
        value: f64,
    },
}

/// Budget limits as people give them (command-line flags, API fields, evaluation options):
/// plain numbers, `None` for no limit. [`BudgetLimits::to_budget`] checks them; every front end
/// (the CLI, the server, the evaluation harness) goes through it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimits {
    /// Dollars.
    pub usd: Option<f64>,
    /// Tokens.
    pub tokens: Option<u64>,
    /// Sub-calls.
    pub sub_calls: Option<u64>,
    /// Seconds of wall-clock time.
    pub seconds: Option<f64>,
}

impl BudgetLimits {
    /// The budget, or why a limit cannot be one: dollars must be positive and finite, seconds
    /// positive and at most [`MAX_SECONDS`]. Never panics, whatever the numbers.
    pub fn to_budget(&self) -> Result<Budget, BudgetError> {
        Ok(Budget {
            max_sub_calls: self.sub_calls,
            max_sub_calls_per_step: None,
            max_tokens: self.tokens,
            max_usd: self
                .usd
                .map(|v| positive(v, "the cost budget", " of dollars", f64::MAX))
                .transpose()?,
            max_time: self.seconds.map(seconds_limit).transpose()?,
        })
    }

    /// These limits, each one not given taken from `defaults`.
    pub fn or(self, defaults: BudgetLimits) -> BudgetLimits {
        BudgetLimits {
            usd: self.usd.or(defaults.usd),
            tokens: self.tokens.or(defaults.tokens),
            sub_calls: self.sub_calls.or(defaults.sub_calls),
            seconds: self.seconds.or(defaults.seconds),
        }
    }
}

fn positive(v: f64, what: &'static str, unit: &'static str, max: f64) -> Result<f64, BudgetError> {
    if v > 0.0 && v.is_finite() && v <= max {
        Ok(v)
    } else {
        Err(BudgetError::Invalid {
            what,
            unit,
            max,
            value: v,
        })
    }
}

/// A time limit people give in seconds: positive, at most [`MAX_SECONDS`].
pub fn seconds_limit(s: f64) -> Result<Duration, BudgetError> {
    let s = positive(s, "the time budget", " of seconds", MAX_SECONDS)?;
    Ok(Duration::from_secs_f64(s))
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
    pub(crate) fn exhausted(&self) -> Option<Spent> {
        let b = &self.budget;
        let spent = |limit, reason| Some(Spent { limit, reason });
        if let Some(max) = b.max_time
            && self.started.elapsed() >= max
        {
            return spent(
                BudgetLimit::Time,
                format!("the time budget of {:.1} s is spent", max.as_secs_f64()),
            );
        }
        if let Some(max) = b.max_tokens {
            let used = self.tokens.load(Ordering::SeqCst);
            if used >= max {
                return spent(
                    BudgetLimit::Tokens,
                    format!("the token budget is spent ({used} of {max} tokens)"),
                );
            }
        }
        if let Some(max) = b.max_usd {
            let used = *self
                .usd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if used >= max {
                return spent(
                    BudgetLimit::Cost,
                    format!("the cost budget is spent (${used:.4} of ${max:.4})"),
                );
            }
        }
        if let Some(max) = b.max_sub_calls {
            let used = self.sub_calls.load(Ordering::SeqCst);
            if used >= max {
                return spent(
                    BudgetLimit::SubCalls,
                    format!("the sub-call budget is spent ({used} of {max} calls)"),
                );
            }
        }
        None
    }

    /// Count a sub-call, refusing when the budget is spent.
    pub(crate) fn start_sub_call(&self) -> Result<(), String> {
        if let Some(spent) = self.exhausted() {
            return Err(format!("budget exhausted: {}", spent.reason));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits come from flags and API fields: no number may panic, and only positive, finite,
    /// representable ones make a budget.
    #[test]
    fn limits_people_give_are_checked_not_trusted() {
        for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300, 1e20] {
            let limits = BudgetLimits {
                seconds: Some(bad),
                ..BudgetLimits::default()
            };
            assert!(
                matches!(
                    limits.to_budget(),
                    Err(BudgetError::Invalid {
                        what: "the time budget",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
            let limits = BudgetLimits {
                usd: Some(bad),
                ..BudgetLimits::default()
            };
            assert!(limits.to_budget().is_err(), "{bad}");
        }
        let b = BudgetLimits {
            usd: Some(0.5),
            tokens: Some(10),
            sub_calls: Some(3),
            seconds: Some(1.5),
        }
        .to_budget()
        .unwrap();
        assert_eq!(b.max_time, Some(Duration::from_millis(1500)));
        assert_eq!(
            (b.max_usd, b.max_tokens, b.max_sub_calls),
            (Some(0.5), Some(10), Some(3))
        );
        assert!(
            BudgetLimits {
                seconds: Some(MAX_SECONDS),
                ..BudgetLimits::default()
            }
            .to_budget()
            .is_ok()
        );
    }

    /// A trace's budget is read from a file anyone may write: a negative or endless time is a
    /// parse error, not a panic.
    #[test]
    fn a_budget_with_an_impossible_time_does_not_deserialize() {
        for bad in ["-1", "-0.5", "1e300", "1e20"] {
            let json = format!(
                r#"{{"max_sub_calls":null,"max_tokens":null,"max_usd":null,"max_time":{bad}}}"#
            );
            let err = serde_json::from_str::<Budget>(&json).unwrap_err();
            assert!(err.to_string().contains("max_time"), "{bad}: {err}");
        }
        let ok: Budget = serde_json::from_str(r#"{"max_time":2.5}"#).unwrap();
        assert_eq!(ok.max_time, Some(Duration::from_millis(2500)));
    }

    proptest::proptest! {
        /// Any four numbers: checking them never panics, and whatever passes is a budget whose
        /// time survives a round trip through JSON (as in a trace).
        #[test]
        fn any_limits_check_without_panic(
            usd in proptest::option::of(proptest::num::f64::ANY),
            seconds in proptest::option::of(proptest::num::f64::ANY),
            tokens in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let limits = BudgetLimits { usd, tokens, sub_calls: tokens, seconds };
            if let Ok(b) = limits.to_budget() {
                let back: Budget = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
                proptest::prop_assert_eq!(back.max_time.is_some(), seconds.is_some());
            }
        }

        /// Any JSON number as a trace's `max_time`: a budget or an error, never a panic.
        #[test]
        fn any_recorded_time_reads_without_panic(t in proptest::num::f64::ANY) {
            let _ = serde_json::from_str::<Budget>(&format!(r#"{{"max_time":{t}}}"#));
        }
    }
}
