//! The builder that makes an RLM from its settings ([`Config`]).

use std::sync::Arc;

use rlm_llm::ChatModel;
use rlm_sandbox::{Limits, SandboxEngine, Tool};

use crate::budget::Budget;
use crate::config::{Config, DEFAULT_MAX_REPLS};
use crate::engine::Rlm;
use crate::error::RlmError;
use crate::events::EventSink;
use crate::prompt;
use crate::repls::ReplLimiter;

/// Configures an [`Rlm`].
pub struct RlmBuilder {
    root_model: Arc<dyn ChatModel>,
    sub_model: Option<Arc<dyn ChatModel>>,
    engine: Option<Arc<SandboxEngine>>,
    limits: Limits,
    max_iterations: u32,
    max_depth: u32,
    max_output_chars: usize,
    budget: Budget,
    sub_concurrency: usize,
    max_repls: usize,
    repl_limiter: Option<ReplLimiter>,
    sub_model_context_tokens: u64,
    inline_context_chars: u64,
    sinks: Vec<Arc<dyn EventSink>>,
    seed: Option<[u8; 32]>,
    profile: prompt::PromptProfile,
    tools: Vec<Tool>,
}

impl RlmBuilder {
    /// A builder with the default settings (see [`Rlm::builder`](crate::Rlm::builder)).
    pub(crate) fn new(root_model: Arc<dyn ChatModel>) -> Self {
        Self {
            root_model,
            sub_model: None,
            engine: None,
            limits: Limits::default(),
            max_iterations: 20,
            max_depth: 1,
            max_output_chars: 10_000,
            budget: Budget::default(),
            sub_concurrency: 16,
            max_repls: DEFAULT_MAX_REPLS,
            repl_limiter: None,
            sub_model_context_tokens: 128_000,
            inline_context_chars: 8 << 20,
            sinks: Vec::new(),
            seed: None,
            profile: prompt::PromptProfile::Auto,
            tools: Vec::new(),
        }
    }

    /// The system-prompt profile: [`PromptProfile::Small`](crate::PromptProfile::Small) for small
    /// local models, `Standard` (the default) otherwise.
    pub fn prompt_profile(mut self, profile: prompt::PromptProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The model for sub-calls (default: the root model).
    pub fn sub_model(mut self, model: impl ChatModel + 'static) -> Self {
        self.sub_model = Some(model.into_shared());
        self
    }

    /// The sandbox engine (default: one engine shared by the whole process, loaded on the first
    /// run; see [`default_engine`](crate::default_engine)).
    pub fn engine(mut self, engine: Arc<SandboxEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Sandbox limits of every REPL in the tree.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Root-model replies per RLM before it is asked for its best answer. Default 20.
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n.max(1);
        self
    }

    /// Recursion depth. 0: no sub-calls; 1 (default, as in the paper): `llm_query` is a plain
    /// call and `rlm_query` falls back to it; 2+: `rlm_query` starts a child RLM.
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth;
        self
    }

    /// Characters of each step's output the root model sees. Default 10,000.
    pub fn max_output_chars(mut self, n: usize) -> Self {
        self.max_output_chars = n.max(200);
        self
    }

    /// A budget for the whole tree.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Sub-calls in flight at once across the whole tree. Default 16.
    pub fn sub_concurrency(mut self, n: usize) -> Self {
        self.sub_concurrency = n.max(1);
        self
    }

    /// Sandboxed REPLs alive at once in one run: the root's and its child RLMs' (`rlm_query`
    /// at `max_depth` 2 and more). A child waits for a slot, and `rlm_batch` starts no more
    /// children than the slots allow; a parent waiting on its children never starves them (see
    /// [`ReplLimiter`]). The run's depth must fit: [`RlmBuilder::build`] refuses a `max_depth`
    /// above it. Default [`DEFAULT_MAX_REPLS`] (16).
    pub fn max_repls(mut self, n: usize) -> Self {
        self.max_repls = n.max(1);
        self
    }

    /// Share a cap on live REPLs with other runs (a server gives every run the same one), on
    /// top of the run's own ([`RlmBuilder::max_repls`]).
    pub fn repl_limiter(mut self, limiter: ReplLimiter) -> Self {
        self.repl_limiter = Some(limiter);
        self
    }

    /// The sub-model's context window in tokens, for the system prompt. Default 128,000.
    pub fn sub_model_context_tokens(mut self, n: u64) -> Self {
        self.sub_model_context_tokens = n;
        self
    }

    /// Contexts up to this many characters are stored in traces (so replays need no file).
    /// Default 8 Mi.
    pub fn inline_context_chars(mut self, n: u64) -> Self {
        self.inline_context_chars = n;
        self
    }

    /// Receive every event.
    pub fn on_event(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Seed of the sandboxes' randomness (default: random; recorded in the trace).
    pub fn seed(mut self, seed: [u8; 32]) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Register a custom tool: model code in every REPL of the run (child RLMs' included)
    /// calls it as a Python function of its name, and the system prompt lists it with its
    /// description and parameters. Each call is a [`Event::ToolCall`](crate::Event::ToolCall)
    /// in the trace. Names must be unique: [`RlmBuilder::build`] refuses duplicates.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use rlm::{Rlm, Tool};
    /// use serde_json::json;
    ///
    /// # fn demo(model: Arc<dyn rlm_llm::ChatModel>) -> Result<(), Box<dyn std::error::Error>> {
    /// let price = Tool::new(
    ///     "price_of",
    ///     "The catalogue price of a product, in euros.",
    ///     json!({
    ///         "type": "object",
    ///         "properties": {"sku": {"type": "string", "description": "the product code"}},
    ///         "required": ["sku"],
    ///     }),
    ///     |args| async move {
    ///         match args["sku"].as_str() {
    ///             Some("A-1") => Ok(json!(12.5)),
    ///             Some(other) => Err(format!("no product {other}")),
    ///             None => Err("sku must be a string".into()),
    ///         }
    ///     },
    /// )?;
    /// let rlm = Rlm::builder(model).tool(price).build()?;
    /// // Model code: `total = price_of("A-1") * 3`
    /// # Ok(()) }
    /// ```
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Register several custom tools (see [`RlmBuilder::tool`]).
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Finish. Checks the settings and returns at once: nothing here blocks, so it is fine in
    /// async code and out of it. Without [`RlmBuilder::engine`] the sandbox engine loads on
    /// the first run or session (see [`default_engine`](crate::default_engine); [`Rlm::load_engine`] loads it now).
    pub fn build(self) -> Result<Rlm, RlmError> {
        for (i, t) in self.tools.iter().enumerate() {
            if self.tools[..i].iter().any(|u| u.name() == t.name()) {
                return Err(
                    rlm_sandbox::SandboxError::from(rlm_sandbox::ToolError::Duplicate(
                        t.name().to_string(),
                    ))
                    .into(),
                );
            }
        }
        // A chain of child RLMs holds one REPL per level at once (see `crate::repls`).
        let chain = usize::try_from(self.max_depth.max(1)).unwrap_or(usize::MAX);
        for (cap, what) in [
            (Some(self.max_repls), "the run's"),
            (
                self.repl_limiter.as_ref().map(ReplLimiter::capacity),
                "the shared",
            ),
        ] {
            if let Some(cap) = cap
                && chain > cap
            {
                return Err(RlmError::Config(format!(
                    "max_depth {} needs up to {chain} REPLs alive at once (one per level), more \
                     than {what} cap of {cap} live REPLs allows; lower max_depth or raise the cap",
                    self.max_depth
                )));
            }
        }
        let engine = self.engine;
        self.limits.validate()?;
        let sub_model = self.sub_model.unwrap_or_else(|| self.root_model.clone());
        let profile = self.profile.resolve(&self.root_model.id());
        Ok(Rlm {
            config: Arc::new(Config {
                root_model: self.root_model,
                sub_model,
                engine,
                limits: self.limits,
                max_iterations: self.max_iterations,
                max_depth: self.max_depth,
                max_output_chars: self.max_output_chars,
                budget: self.budget,
                sub_concurrency: self.sub_concurrency,
                max_repls: self.max_repls,
                repl_limiter: self.repl_limiter,
                sub_model_context_tokens: self.sub_model_context_tokens,
                inline_context_chars: self.inline_context_chars,
                sinks: self.sinks,
                seed: self.seed,
                profile,
                tools: self.tools,
            }),
        })
    }
}
