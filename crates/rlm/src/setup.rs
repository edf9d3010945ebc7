//! Run setup that every front end shares — the CLI (`rlm run`), the server (`rlm serve`) and
//! the evaluation harness (`rlm eval`): which root and sub-model a run uses, how a small local
//! model is prompted, and the budget from the limits people give. Each front end describes a
//! run as a [`RunSpec`] and builds its [`Rlm`](crate::Rlm) with [`RunSpec::builder`], so the
//! rules live here once.
//!
//! ```
//! use rlm::{BudgetLimits, PromptProfile, RunSpec};
//!
//! let spec = RunSpec {
//!     model: Some("local/qwen2.5-coder-0.5b".into()),
//!     budget: BudgetLimits { seconds: Some(60.0), ..BudgetLimits::default() },
//!     ..RunSpec::default()
//! };
//! assert_eq!(spec.models().unwrap().1, "local/qwen2.5-coder-0.5b"); // sub-model: the root
//! assert_eq!(spec.profile(), PromptProfile::Small);                  // local: small prompt
//! assert!(RunSpec { budget: BudgetLimits { seconds: Some(-1.0), ..BudgetLimits::default() },
//!                   ..spec }.budget().is_err());
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rlm_llm::{ChatModel, LlmClient, LlmError, Model, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::budget::{
    Budget, BudgetError, BudgetLimits, DEFAULT_MAX_SUB_CALLS, DEFAULT_MAX_SUB_CALLS_PER_STEP,
};
use crate::builder::RlmBuilder;
use crate::engine::Rlm;
use crate::prompt::PromptProfile;
use crate::repls::ReplLimiter;

/// Makes a model from its id (`provider/model`, `local/...`) for the front ends that pick
/// models per request (the server, MCP); the error is a sentence shown to the user.
pub type ModelFactory = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Arc<dyn ChatModel>, String>> + Send>>
        + Send
        + Sync,
>;

/// The context window of a local model when none is given, in tokens.
pub const DEFAULT_LOCAL_CONTEXT_TOKENS: u32 = 16_384;

/// Characters of each step's output a small local model is shown at most.
pub const SMALL_MODEL_OUTPUT_CHARS: usize = 1_500;

/// Why a run cannot be set up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetupError {
    /// No root model was named and none is configured.
    #[error("{0}")]
    NoModel(String),
    /// A budget limit is unusable.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// The hosted model `id` (`provider/model`: `openai/gpt-5-mini`, `anthropic/...`,
/// `gemini/...`, `openrouter/...`, or `compat/NAME` with `RLM_BASE_URL` set), its key and base
/// URL from the environment as `rlm run --model` takes them, on a client of its own with the
/// default settings. Share one [`LlmClient`] instead (`client.model(id)`) to share its
/// concurrency limit, HTTP connections and usage tracker between models. Local models
/// (`local/...`) come from the `rlm-local` crate.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let rlm = rlm::Rlm::builder(rlm::model("openai/gpt-5-mini")?).build()?;
/// # Ok(()) }
/// ```
pub fn model(id: &str) -> Result<Model, LlmError> {
    LlmClient::new()?.model(id)
}

/// [`model`] served at `base_url` (an OpenAI-compatible server for `compat/NAME`, or a proxy
/// for a hosted provider), as `rlm run --model ID --base-url URL` takes them.
pub fn model_at(id: &str, base_url: &str) -> Result<Model, LlmError> {
    LlmClient::new()?.model_with(
        id,
        ModelConfig {
            base_url: Some(base_url.to_string()),
            ..ModelConfig::default()
        },
    )
}

/// Whether `id` names an in-process local model (`local/NAME` or `local/PATH.gguf`); such
/// models are small and get the [`PromptProfile::Small`] setup.
pub fn is_local_model(id: &str) -> bool {
    id.starts_with("local/")
}

/// The root model when none is named, from the keys set in the environment: OpenAI, then
/// Anthropic, then Gemini; else `offline` (a local model, when the build has them).
///
/// Returns the id and whether it is the offline fallback (front ends say so to the user).
pub fn default_model(offline: Option<&str>) -> Result<(String, bool), SetupError> {
    default_model_from(|v| std::env::var(v).ok(), offline)
}

/// [`default_model`] over any environment.
pub fn default_model_from(
    env: impl Fn(&str) -> Option<String>,
    offline: Option<&str>,
) -> Result<(String, bool), SetupError> {
    let set = |v: &str| env(v).is_some_and(|x| !x.trim().is_empty());
    if set("OPENAI_API_KEY") {
        return Ok(("openai/gpt-5-mini".into(), false));
    }
    if set("ANTHROPIC_API_KEY") {
        return Ok(("anthropic/claude-sonnet-4-5".into(), false));
    }
    if set("GOOGLE_API_KEY") || set("GEMINI_API_KEY") {
        return Ok(("gemini/gemini-2.5-flash".into(), false));
    }
    if set("RLM_BASE_URL") {
        return Err(SetupError::NoModel(
            "RLM_BASE_URL is set: name the server's model with --model compat/<model> (or RLM_MODEL)"
                .into(),
        ));
    }
    if let Some(local) = offline {
        return Ok((local.to_string(), true));
    }
    Err(SetupError::NoModel(
        "no model is configured. Set one of OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_API_KEY \
         (or GEMINI_API_KEY), or point RLM_BASE_URL at an OpenAI-compatible server and pass \
         --model compat/<model>; or name a model with --model provider/model"
            .into(),
    ))
}

/// A run as a front end describes it: what its user gave, `None` for "the default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Root model id (`provider/model`).
    pub model: Option<String>,
    /// Sub-call model id (default: the root model).
    pub sub_model: Option<String>,
    /// Root-model replies per RLM.
    pub max_iterations: Option<u32>,
    /// Recursion depth.
    pub max_depth: Option<u32>,
    /// Characters of each step's output shown to the root model.
    pub max_output_chars: Option<usize>,
    /// The sub-model's context window in tokens (what the prompt says one sub-call reads).
    pub sub_model_context_tokens: Option<u64>,
    /// The context window of a local root model in tokens (its sub-calls read at most half).
    pub local_context_tokens: Option<u32>,
    /// The run's budget limits (sub-calls: [`DEFAULT_MAX_SUB_CALLS`] unless given).
    pub budget: BudgetLimits,
    /// Sub-calls one REPL step may make ([`DEFAULT_MAX_SUB_CALLS_PER_STEP`] unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_calls_per_step: Option<u64>,
    /// REPLs alive at once in the run ([`crate::DEFAULT_MAX_REPLS`] unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_repls: Option<usize>,
    /// A cap on live REPLs the run shares with others (a server's, for all its runs).
    #[serde(skip)]
    pub repl_limiter: Option<ReplLimiter>,
    /// The system-prompt profile (`None`: [`PromptProfile::Auto`], chosen by the root model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_profile: Option<PromptProfile>,
}

impl RunSpec {
    /// Whether a request may use model `id`: this spec's own root or sub-model, or one the
    /// operator allowed (`provider/*` for any model of a hosted provider; local models only by
    /// name). Servers (`rlm serve`, `rlm mcp`) ask this before anything is looked up, opened or
    /// downloaded.
    pub fn allows_model(&self, id: &str, allowed: &[String]) -> bool {
        self.model.as_deref() == Some(id)
            || self.sub_model.as_deref() == Some(id)
            || allowed.iter().any(|a| match a.strip_suffix("/*") {
                Some(provider) => {
                    provider != "local"
                        && id
                            .strip_prefix(provider)
                            .and_then(|rest| rest.strip_prefix('/'))
                            .is_some_and(|m| !m.is_empty())
                }
                None => a == id,
            })
    }
}

impl RunSpec {
    /// This spec with every field it leaves unset taken from `defaults`.
    pub fn or(self, defaults: &RunSpec) -> RunSpec {
        let d = defaults.clone();
        let named = |m: Option<String>| m.filter(|m| !m.trim().is_empty());
        RunSpec {
            model: named(self.model).or(d.model),
            sub_model: named(self.sub_model).or(d.sub_model),
            max_iterations: self.max_iterations.or(d.max_iterations),
            max_depth: self.max_depth.or(d.max_depth),
            max_output_chars: self.max_output_chars.or(d.max_output_chars),
            sub_model_context_tokens: self.sub_model_context_tokens.or(d.sub_model_context_tokens),
            local_context_tokens: self.local_context_tokens.or(d.local_context_tokens),
            budget: self.budget.or(d.budget),
            sub_calls_per_step: self.sub_calls_per_step.or(d.sub_calls_per_step),
            max_repls: self.max_repls.or(d.max_repls),
            repl_limiter: self.repl_limiter.or(d.repl_limiter),
            prompt_profile: self.prompt_profile.or(d.prompt_profile),
        }
    }

    /// The root and sub-model ids: the root must be named (see [`default_model`] for the
    /// usual default), the sub-model defaults to it.
    pub fn models(&self) -> Result<(String, String), SetupError> {
        let root = self
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| {
                SetupError::NoModel("no model given: name one (provider/model)".into())
            })?;
        let sub = self
            .sub_model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| root.clone());
        Ok((root, sub))
    }

    /// The system-prompt profile of a run whose root model is `root_id`: the one given, or
    /// the one [`PromptProfile::for_model`] chooses.
    pub fn profile_for(&self, root_id: &str) -> PromptProfile {
        self.prompt_profile
            .unwrap_or(PromptProfile::Auto)
            .resolve(root_id)
    }

    /// The system-prompt profile of this spec's root model (see [`RunSpec::profile_for`]).
    pub fn profile(&self) -> PromptProfile {
        self.profile_for(self.model.as_deref().unwrap_or_default())
    }

    /// The budget, its limits checked ([`BudgetLimits::to_budget`]). Paid calls have safe
    /// defaults here, for every front end at once: [`DEFAULT_MAX_SUB_CALLS`] sub-calls per run
    /// and [`DEFAULT_MAX_SUB_CALLS_PER_STEP`] per step unless given (a larger number raises
    /// them).
    pub fn budget(&self) -> Result<Budget, SetupError> {
        let defaults = BudgetLimits {
            sub_calls: Some(DEFAULT_MAX_SUB_CALLS),
            ..BudgetLimits::default()
        };
        let mut budget = self.budget.or(defaults).to_budget()?;
        budget.max_sub_calls_per_step = Some(
            self.sub_calls_per_step
                .unwrap_or(DEFAULT_MAX_SUB_CALLS_PER_STEP),
        );
        Ok(budget)
    }

    /// An [`Rlm`] builder for this run over the resolved `root` and `sub` models, with every
    /// setting of the spec and the small-model setup for a local root (the small prompt, at most
    /// [`SMALL_MODEL_OUTPUT_CHARS`] of output per step, sub-calls that read at most half its
    /// window). Add the engine, sinks and seed, then build.
    pub fn builder(
        &self,
        root: Arc<dyn ChatModel>,
        sub: Arc<dyn ChatModel>,
    ) -> Result<RlmBuilder, SetupError> {
        let profile = self.profile_for(&root.id());
        let local = is_local_model(&root.id());
        let mut b = Rlm::builder(root)
            .sub_model(sub)
            .budget(self.budget()?)
            .prompt_profile(profile);
        if let Some(n) = self.max_iterations {
            b = b.max_iterations(n);
        }
        if let Some(d) = self.max_depth {
            b = b.max_depth(d);
        }
        if let Some(n) = self.max_repls {
            b = b.max_repls(n);
        }
        if let Some(l) = &self.repl_limiter {
            b = b.repl_limiter(l.clone());
        }
        let mut output = self.max_output_chars;
        let mut sub_tokens = self.sub_model_context_tokens;
        if profile == PromptProfile::Small {
            // Small models follow a worked example and see little at a time.
            output = Some(output.map_or(SMALL_MODEL_OUTPUT_CHARS, |o| {
                o.min(SMALL_MODEL_OUTPUT_CHARS)
            }));
        }
        if local {
            // A local model's sub-calls read at most half its window.
            let half = u64::from(
                self.local_context_tokens
                    .unwrap_or(DEFAULT_LOCAL_CONTEXT_TOKENS),
            ) / 2;
            sub_tokens = Some(sub_tokens.map_or(half, |t| t.min(half)));
        }
        if let Some(o) = output {
            b = b.max_output_chars(o);
        }
        if let Some(t) = sub_tokens {
            b = b.sub_model_context_tokens(t);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_follows_the_keys_set() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                vars.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        assert_eq!(
            default_model_from(
                env(&[("ANTHROPIC_API_KEY", "k"), ("GEMINI_API_KEY", "k")]),
                None
            ),
            Ok(("anthropic/claude-sonnet-4-5".into(), false))
        );
        assert_eq!(
            default_model_from(env(&[("OPENAI_API_KEY", " ")]), Some("local/x")),
            Ok(("local/x".into(), true)),
            "a blank key is no key"
        );
        assert!(matches!(
            default_model_from(env(&[("RLM_BASE_URL", "http://h/v1")]), Some("local/x")),
            Err(SetupError::NoModel(m)) if m.contains("compat/<model>")
        ));
        assert!(default_model_from(env(&[]), None).is_err());
    }

    #[test]
    fn request_fields_fall_back_to_the_defaults() {
        let defaults = RunSpec {
            model: Some("compat/a".into()),
            max_iterations: Some(20),
            budget: BudgetLimits {
                seconds: Some(600.0),
                usd: Some(1.0),
                ..BudgetLimits::default()
            },
            ..RunSpec::default()
        };
        let spec = RunSpec {
            model: Some(" ".into()),
            sub_model: Some("compat/b".into()),
            budget: BudgetLimits {
                seconds: Some(5.0),
                ..BudgetLimits::default()
            },
            ..RunSpec::default()
        }
        .or(&defaults);
        assert_eq!(
            spec.models().unwrap(),
            ("compat/a".to_string(), "compat/b".to_string())
        );
        assert_eq!(spec.max_iterations, Some(20));
        assert_eq!(
            (spec.budget.seconds, spec.budget.usd),
            (Some(5.0), Some(1.0))
        );
        assert!(RunSpec::default().models().is_err());
    }

    /// A server's shared cap on live REPLs and its per-step cap reach every request's run; the
    /// sub-call caps default once, here, for every front end.
    #[test]
    fn the_servers_caps_reach_every_request_and_sub_calls_have_defaults() {
        let limiter = ReplLimiter::new(32);
        let defaults = RunSpec {
            repl_limiter: Some(limiter.clone()),
            sub_calls_per_step: Some(50),
            ..RunSpec::default()
        };
        let spec = RunSpec::default().or(&defaults);
        assert_eq!(spec.repl_limiter, Some(limiter));
        let budget = spec.budget().unwrap();
        assert_eq!(
            (budget.max_sub_calls, budget.max_sub_calls_per_step),
            (Some(DEFAULT_MAX_SUB_CALLS), Some(50))
        );
        let asked = RunSpec {
            budget: BudgetLimits {
                sub_calls: Some(5_000),
                ..BudgetLimits::default()
            },
            ..RunSpec::default()
        };
        assert_eq!(
            asked.budget().unwrap().max_sub_calls,
            Some(5_000),
            "raised when given"
        );
        assert_eq!(
            RunSpec::default().budget().unwrap().max_sub_calls_per_step,
            Some(DEFAULT_MAX_SUB_CALLS_PER_STEP)
        );
    }
}
