//! The RLM: configuration, the iteration loop, sub-calls and recursion.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rlm_llm::{
    CallRole, CallTag, ChatModel, ChatRequest, Message, Usage, UsageTotals, UsageTracker,
};
use rlm_sandbox::{
    Context, ContextShape, Limits, ModelHost, Sandbox, SandboxEngine, SandboxError, StepResult,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::budget::{Budget, BudgetLimit, BudgetState, Spent};
use crate::events::{ContextRecord, Event, EventSink, Events, Node, RunSettings};
use crate::parse::{TextFinal, parse_reply};
use crate::prompt::{self, PromptFacts};

/// Errors that stop an RLM before it can run. Failures *during* a run (a model call that
/// fails after its retries, a spent budget) end the run with a [`StopReason`] instead, keeping
/// the partial answer.
#[derive(Debug, thiserror::Error)]
pub enum RlmError {
    /// The sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A setting is unusable.
    #[error("invalid RLM configuration: {0}")]
    Config(String),
    /// The run's setup (models, budget) is unusable.
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
}

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

/// The document(s) a run works over.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextInput {
    /// One text.
    Text(String),
    /// A list of documents.
    Documents(Vec<String>),
    /// Parsed JSON.
    Json(serde_json::Value),
}

impl From<String> for ContextInput {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for ContextInput {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<Vec<String>> for ContextInput {
    fn from(v: Vec<String>) -> Self {
        Self::Documents(v)
    }
}

impl From<serde_json::Value> for ContextInput {
    fn from(v: serde_json::Value) -> Self {
        Self::Json(v)
    }
}

impl ContextInput {
    /// Read a context file (or `-` for stdin): `.json` as JSON (a list of strings becomes
    /// documents), `.jsonl` as a list, anything else as text; see [`Context::read`].
    pub fn load(
        path: &std::path::Path,
        format: rlm_sandbox::ContextFormat,
    ) -> Result<Self, SandboxError> {
        Ok(match Context::read(path, format)? {
            rlm_sandbox::ContextData::Text(t) => Self::Text(t),
            rlm_sandbox::ContextData::Json(v) => Self::from_json(v),
        })
    }

    /// The sandbox's form of this context, consuming the input (no copy of the text).
    pub fn into_context(self) -> Arc<Context> {
        match self {
            Self::Text(s) => Context::text(s),
            Self::Documents(d) => Context::documents(d),
            Self::Json(v) => Context::json(v),
        }
    }

    /// The sandbox's form of this context.
    pub fn to_context(&self) -> Arc<Context> {
        match self {
            Self::Text(s) => Context::text(s.clone()),
            Self::Documents(d) => Context::documents(d.clone()),
            Self::Json(v) => Context::json(v.clone()),
        }
    }

    /// The JSON form (what a trace stores).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(s) => serde_json::Value::String(s.clone()),
            Self::Documents(d) => serde_json::json!(d),
            Self::Json(v) => v.clone(),
        }
    }

    /// Back from the JSON form: a string is a text, a list of strings documents, else JSON.
    pub fn from_json(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::String(s) => Self::Text(s),
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => {
                Self::Documents(
                    items
                        .into_iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                )
            }
            other => Self::Json(other),
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

/// Settings of an RLM. Build with [`Rlm::builder`].
pub(crate) struct Config {
    pub root_model: Arc<dyn ChatModel>,
    pub sub_model: Arc<dyn ChatModel>,
    pub engine: Arc<SandboxEngine>,
    pub limits: Limits,
    pub max_iterations: u32,
    pub max_depth: u32,
    pub max_output_chars: usize,
    pub budget: Budget,
    pub sub_concurrency: usize,
    pub sub_model_context_tokens: u64,
    pub inline_context_chars: u64,
    pub sinks: Vec<Arc<dyn EventSink>>,
    pub seed: Option<[u8; 32]>,
    pub profile: prompt::PromptProfile,
}

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
    sub_model_context_tokens: u64,
    inline_context_chars: u64,
    sinks: Vec<Arc<dyn EventSink>>,
    seed: Option<[u8; 32]>,
    profile: prompt::PromptProfile,
}

impl RlmBuilder {
    /// The system-prompt profile: [`PromptProfile::Small`](crate::PromptProfile::Small) for small
    /// local models, `Standard` (the default) otherwise.
    pub fn prompt_profile(mut self, profile: prompt::PromptProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The model for sub-calls (default: the root model).
    pub fn sub_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.sub_model = Some(model);
        self
    }

    /// The sandbox engine (default: [`SandboxEngine::load`]).
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

    /// Finish.
    pub fn build(self) -> Result<Rlm, RlmError> {
        let engine = match self.engine {
            Some(e) => e,
            None => SandboxEngine::load()?,
        };
        self.limits.validate()?;
        let sub_model = self.sub_model.unwrap_or_else(|| self.root_model.clone());
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
                sub_model_context_tokens: self.sub_model_context_tokens,
                inline_context_chars: self.inline_context_chars,
                sinks: self.sinks,
                seed: self.seed,
                profile: self.profile,
            }),
        })
    }
}

/// A Recursive Language Model: a root model that answers questions about a context by writing
/// Python in a sandboxed REPL, with sub-calls to a sub-model and recursive sub-RLMs.
#[derive(Clone)]
pub struct Rlm {
    pub(crate) config: Arc<Config>,
}

impl std::fmt::Debug for Rlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rlm")
            .field("root_model", &self.config.root_model.id())
            .field("sub_model", &self.config.sub_model.id())
            .field("max_iterations", &self.config.max_iterations)
            .field("max_depth", &self.config.max_depth)
            .finish_non_exhaustive()
    }
}

impl Rlm {
    /// Start configuring an RLM whose root model is `root_model`.
    pub fn builder(root_model: Arc<dyn ChatModel>) -> RlmBuilder {
        RlmBuilder {
            root_model,
            sub_model: None,
            engine: None,
            limits: Limits::default(),
            max_iterations: 20,
            max_depth: 1,
            max_output_chars: 10_000,
            budget: Budget::default(),
            sub_concurrency: 16,
            sub_model_context_tokens: 128_000,
            inline_context_chars: 8 << 20,
            sinks: Vec::new(),
            seed: None,
            profile: prompt::PromptProfile::Standard,
        }
    }

    /// Answer `query` about `context`.
    pub async fn run(
        &self,
        context: impl Into<ContextInput>,
        query: &str,
    ) -> Result<RunResult, RlmError> {
        let started = Instant::now();
        let input = context.into();
        let ctx = input.to_context();
        let record = self.context_record(&input, &ctx);
        drop(input);
        let tree = Tree::new(self.config.clone());
        let span = tracing::info_span!("run", root_model = %self.config.root_model.id(), depth = 0);
        async {
            let root = self.config.root_model.clone();
            let mut node = NodeRun::start(tree.clone(), root_node(), root, vec![ctx]).await?;
            tree.events.emit(Event::RunStarted {
                node: root_node(),
                query: query.to_string(),
                settings: Some(Box::new(tree.settings())),
                context: Some(record),
            });
            let outcome = node.answer(query).await;
            Ok(RunResult {
                answer: outcome.answer,
                stop: outcome.stop,
                iterations: outcome.iterations,
                usage: UsageReport::from_tracker(&tree.usage),
                elapsed: started.elapsed(),
                events: tree.events.take(),
            })
        }
        .instrument(span)
        .await
    }

    /// [`Rlm::run`] for callers without an async runtime (starts one for the call). Called
    /// from inside a runtime, it runs the call on a thread of its own (a runtime cannot be
    /// started on a thread that drives one) and blocks until it ends; async code should
    /// `.await` [`Rlm::run`] instead.
    pub fn run_blocking(
        &self,
        context: impl Into<ContextInput>,
        query: &str,
    ) -> Result<RunResult, RlmError> {
        let context = context.into();
        let run = move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| RlmError::Config(format!("cannot start a tokio runtime: {e}")))?;
            rt.block_on(self.run(context, query))
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("rlm-run-blocking".into())
                .spawn_scoped(scope, run)
                .map_err(|e| RlmError::Config(format!("cannot start a thread for the run: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A multi-turn session over `context`: the REPL and the conversation persist across
    /// questions.
    pub async fn session(
        &self,
        context: impl Into<ContextInput>,
    ) -> Result<crate::session::Session, RlmError> {
        let tree = Tree::new(self.config.clone());
        let node = NodeRun::start(
            tree.clone(),
            root_node(),
            self.config.root_model.clone(),
            vec![context.into().into_context()],
        )
        .await?;
        Ok(crate::session::Session::new(tree, node))
    }

    /// How the trace records the context: facts from the already-built `ctx`, the input itself
    /// only when it is small enough to store.
    fn context_record(&self, input: &ContextInput, ctx: &Context) -> ContextRecord {
        let chars = ctx.total_chars();
        let inline = (chars <= self.config.inline_context_chars).then(|| input.to_json());
        let hash = match (input, &inline) {
            (ContextInput::Text(t), _) => blake3::hash(t.as_bytes()),
            (_, Some(json)) => blake3::hash(json.to_string().as_bytes()),
            (_, None) => blake3::hash(input.to_json().to_string().as_bytes()),
        };
        ContextRecord {
            description: prompt::describe_shape(&ctx.shape()),
            chars,
            hash: hash.to_hex()[..32].to_string(),
            inline,
        }
    }
}

fn root_node() -> Node {
    Node {
        rlm: "root".to_string(),
        depth: 0,
    }
}

/// Hash of a model request: which model, which messages.
pub(crate) fn request_hash(model: &str, messages: &[Message]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(model.as_bytes());
    h.update(b"\n");
    h.update(
        serde_json::to_string(messages)
            .unwrap_or_default()
            .as_bytes(),
    );
    h.finalize().to_hex()[..32].to_string()
}

/// Why a model call gave no response.
#[derive(Debug)]
enum CallError {
    /// The run's budget ran out while waiting.
    Budget(Spent),
    /// The call failed (after the client's retries).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Budget(spent) => f.write_str(&spent.reason),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// What kind of sub-call an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubCallKind {
    /// A plain call to a sub-model (`llm_query`, `llm_batch`, or `rlm_query` at the depth
    /// limit).
    LlmQuery,
    /// A child RLM (`rlm_query` below the depth limit).
    RlmQuery,
}

impl SubCallKind {
    /// The name model code calls it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlmQuery => "llm_query",
            Self::RlmQuery => "rlm_query",
        }
    }
}

impl std::fmt::Display for SubCallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of a sub-call, shared by identical calls.
#[derive(Debug, Clone)]
struct SubOutcome {
    result: Result<String, String>,
    usage: Usage,
    cost_usd: Option<f64>,
}

impl SubOutcome {
    /// A sub-call that produced no answer (nothing to count).
    fn failed(message: String) -> Self {
        Self {
            result: Err(message),
            usage: Usage::default(),
            cost_usd: None,
        }
    }
}

type SharedCall = Shared<BoxFuture<'static, SubOutcome>>;

/// What the whole recursion tree of one run shares.
pub(crate) struct Tree {
    pub(crate) config: Arc<Config>,
    budget: BudgetState,
    pub(crate) events: Events,
    pub(crate) usage: UsageTracker,
    dedupe: Mutex<HashMap<String, SharedCall>>,
    sub_slots: Semaphore,
    next_call: AtomicU64,
    seed: [u8; 32],
}

impl Tree {
    pub(crate) fn new(config: Arc<Config>) -> Arc<Self> {
        let seed = config.seed.unwrap_or_else(rlm_sandbox::fresh_seed);
        Arc::new(Self {
            budget: BudgetState::new(config.budget.clone()),
            events: Events::new(config.sinks.clone()),
            usage: UsageTracker::new(),
            dedupe: Mutex::new(HashMap::new()),
            sub_slots: Semaphore::new(config.sub_concurrency),
            next_call: AtomicU64::new(1),
            seed,
            config,
        })
    }

    fn settings(&self) -> RunSettings {
        let c = &self.config;
        RunSettings {
            root_model: c.root_model.id(),
            sub_model: c.sub_model.id(),
            max_iterations: c.max_iterations,
            max_depth: c.max_depth,
            max_output_chars: c.max_output_chars,
            budget: c.budget.clone(),
            seed: self.seed.iter().map(|b| format!("{b:02x}")).collect(),
            limits: Some(c.limits.clone()),
            profile: c.profile,
            sub_model_context_tokens: Some(c.sub_model_context_tokens),
        }
    }

    /// The seed of one RLM's sandbox: derived from the run's seed and the RLM's key.
    fn node_seed(&self, key: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        h.update(key.as_bytes());
        *h.finalize().as_bytes()
    }

    fn model_named(&self, name: Option<&str>) -> Result<Arc<dyn ChatModel>, String> {
        let c = &self.config;
        match name {
            None => Ok(c.sub_model.clone()),
            Some(n) if n == c.sub_model.id() => Ok(c.sub_model.clone()),
            Some(n) if n == c.root_model.id() => Ok(c.root_model.clone()),
            Some(n) => Err(format!(
                "unknown model {n:?}; this run has {} (the default) and {}",
                c.sub_model.id(),
                c.root_model.id()
            )),
        }
    }

    /// Call a model with timeout from the time budget; record usage.
    async fn call_model(
        &self,
        model: &Arc<dyn ChatModel>,
        request: ChatRequest,
    ) -> Result<rlm_llm::ChatResponse, CallError> {
        let tag = request.tag;
        let call = model.chat(request);
        let result = match self.budget.time_left() {
            Some(left) => match tokio::time::timeout(left, call).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(CallError::Budget(Spent {
                        limit: BudgetLimit::Time,
                        reason: "the time budget ran out during the call".to_string(),
                    }));
                }
            },
            None => call.await,
        };
        let response = result.map_err(|e| CallError::Failed(e.to_string()))?;
        self.budget.charge(&response.usage, response.cost_usd);
        self.usage
            .record(&model.id(), tag, &response.usage, response.cost_usd);
        Ok(response)
    }

    /// A sub-call (`llm_query`, or `rlm_query` falling back to one), deduplicated.
    async fn sub_call(
        self: &Arc<Self>,
        caller: &Node,
        model: Arc<dyn ChatModel>,
        prompt: String,
    ) -> Result<String, String> {
        let depth = caller.depth + 1;
        let messages = vec![Message::user(prompt)];
        let model_id = model.id();
        let hash = request_hash(&model_id, &messages);
        let prompt_chars = messages[0].content.chars().count();
        let make = {
            let tree = self.clone();
            move || -> BoxFuture<'static, SubOutcome> {
                async move {
                    if let Err(e) = tree.budget.start_sub_call() {
                        return SubOutcome::failed(e);
                    }
                    let Ok(_slot) = tree.sub_slots.acquire().await else {
                        return SubOutcome::failed("the run is shutting down".into());
                    };
                    let request = ChatRequest::new(messages).tagged(CallTag::sub_call(depth));
                    match tree.call_model(&model, request).await {
                        Ok(r) => SubOutcome {
                            result: Ok(r.text),
                            usage: r.usage,
                            cost_usd: r.cost_usd,
                        },
                        Err(e) => SubOutcome::failed(e.to_string()),
                    }
                }
                .boxed()
            }
        };
        self.shared_call(
            caller,
            SubCallKind::LlmQuery,
            &model_id,
            hash,
            prompt_chars,
            make,
        )
        .await
    }

    /// Run `make()` once per request hash; identical calls (also concurrent ones) share it.
    /// Only answers are kept: a call that failed (a timeout, a refusal, a spent budget) is
    /// forgotten once it ends, so the same call made again is tried again.
    async fn shared_call(
        self: &Arc<Self>,
        caller: &Node,
        kind: SubCallKind,
        model_id: &str,
        hash: String,
        prompt_chars: usize,
        make: impl FnOnce() -> BoxFuture<'static, SubOutcome>,
    ) -> Result<String, String> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.events.emit(Event::SubCallStarted {
            node: caller.clone(),
            id,
            kind,
            model: model_id.to_string(),
            prompt_chars,
        });
        let (future, deduped) = {
            let mut map = self.dedupe.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get(&hash) {
                Some(f) => (f.clone(), true),
                None => {
                    let f = make().shared();
                    map.insert(hash.clone(), f.clone());
                    (f, false)
                }
            }
        };
        let started = Instant::now();
        let outcome = future.clone().await;
        if outcome.result.is_err() {
            let mut map = self.dedupe.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&hash).is_some_and(|f| f.ptr_eq(&future)) {
                map.remove(&hash);
            }
        }
        self.events.emit(Event::SubCallFinished {
            node: caller.clone(),
            id,
            kind,
            model: model_id.to_string(),
            request_hash: hash,
            result: outcome.result.clone(),
            usage: if deduped {
                Usage::default()
            } else {
                outcome.usage
            },
            cost_usd: if deduped { None } else { outcome.cost_usd },
            ms: started.elapsed().as_secs_f64() * 1e3,
            deduped,
        });
        outcome.result
    }

    /// A child RLM over `prompt` (its context is the prompt) whose root model is `model`,
    /// deduplicated.
    async fn child_rlm(
        self: &Arc<Self>,
        caller: &Node,
        model: Arc<dyn ChatModel>,
        prompt: String,
    ) -> Result<String, String> {
        let key = format!(
            "{}.{}",
            caller.rlm,
            &blake3::hash(prompt.as_bytes()).to_hex()[..8]
        );
        let node = Node {
            rlm: key,
            depth: caller.depth + 1,
        };
        let rlm_model_id = format!("rlm:{}", model.id());
        let hash = request_hash(&rlm_model_id, &[Message::user(prompt.clone())]);
        let prompt_chars = prompt.chars().count();
        let make =
            {
                let tree = self.clone();
                move || -> BoxFuture<'static, SubOutcome> {
                    async move {
                    if let Err(e) = tree.budget.start_sub_call() {
                        return SubOutcome::failed(e);
                    }
                    let query = format!(
                        "The task you are given is in `context` ({prompt_chars} characters): read \
                         it, carry it out, and give the result as FINAL(...)."
                    );
                    let ctx = Context::text(prompt);
                    let outcome = match NodeRun::start(tree.clone(), node.clone(), model, vec![ctx])
                        .await
                    {
                        Ok(mut child) => {
                            tree.events.emit(Event::RunStarted {
                                node: node.clone(),
                                query: query.clone(),
                                settings: None,
                                context: None,
                            });
                            child.answer(&query).await
                        }
                        Err(e) => NodeOutcome {
                            answer: None,
                            stop: StopReason::Error {
                                message: e.to_string(),
                            },
                            iterations: 0,
                        },
                    };
                    let result = match (outcome.answer, outcome.stop) {
                        (Some(a), _) => Ok(a),
                        (None, StopReason::Budget { reason, .. }) => {
                            Err(format!("budget exhausted: {reason}"))
                        }
                        (None, StopReason::Error { message }) => Err(message),
                        (None, _) => Err("the sub-RLM gave no answer".to_string()),
                    };
                    // The child's own calls are counted where they were made.
                    SubOutcome { result, usage: Usage::default(), cost_usd: None }
                }
                .boxed()
                }
            };
        self.shared_call(
            caller,
            SubCallKind::RlmQuery,
            &rlm_model_id,
            hash,
            prompt_chars,
            make,
        )
        .await
    }
}

/// The [`ModelHost`] of one RLM's sandbox: sub-calls go to the tree.
struct NodeHost {
    tree: Arc<Tree>,
    node: Node,
}

#[async_trait::async_trait]
impl ModelHost for NodeHost {
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        if self.node.depth + 1 > self.tree.config.max_depth {
            return Err(format!(
                "sub-calls are disabled in this run (max_depth = {}); use search() and Python",
                self.tree.config.max_depth
            ));
        }
        let model = self.tree.model_named(model.as_deref())?;
        self.tree.sub_call(&self.node, model, prompt).await
    }

    async fn rlm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        if self.node.depth + 1 < self.tree.config.max_depth {
            // A child RLM's root is the model named, else the run's root model.
            let model = match model.as_deref() {
                None => self.tree.config.root_model.clone(),
                Some(name) => self.tree.model_named(Some(name))?,
            };
            return self.tree.child_rlm(&self.node, model, prompt).await;
        }
        // At the depth limit a sub-RLM is a plain sub-call, as in the paper.
        self.llm_query(prompt, model).await
    }
}

/// How one RLM's loop ended.
pub(crate) struct NodeOutcome {
    pub answer: Option<String>,
    pub stop: StopReason,
    pub iterations: u32,
}

/// One RLM: its sandbox and its conversation with its root model.
pub(crate) struct NodeRun {
    tree: Arc<Tree>,
    node: Node,
    /// This RLM's root model (the run's, or the one an `rlm_query` named).
    root_model: Arc<dyn ChatModel>,
    pub(crate) sandbox: Sandbox,
    pub(crate) messages: Vec<Message>,
    shapes: Vec<(String, ContextShape)>,
}

impl NodeRun {
    pub(crate) async fn start(
        tree: Arc<Tree>,
        node: Node,
        root_model: Arc<dyn ChatModel>,
        contexts: Vec<Arc<Context>>,
    ) -> Result<Self, RlmError> {
        let c = &tree.config;
        let host = Arc::new(NodeHost {
            tree: tree.clone(),
            node: node.clone(),
        });
        let mut builder = Sandbox::builder(c.engine.clone())
            .limits(c.limits.clone())
            .model(host)
            .seed(tree.node_seed(&node.rlm));
        let mut shapes = Vec::new();
        for (i, ctx) in contexts.into_iter().enumerate() {
            shapes.push((rlm_sandbox::slot_name(i), ctx.shape()));
            builder = builder.context(ctx);
        }
        let sandbox = builder.build().await?;
        let mut run = Self {
            tree,
            node,
            root_model,
            sandbox,
            messages: Vec::new(),
            shapes,
        };
        let system = run.system_prompt();
        run.messages.push(Message::system(system));
        Ok(run)
    }

    fn system_prompt(&self) -> String {
        let c = &self.tree.config;
        let facts = PromptFacts {
            shape: self
                .shapes
                .first()
                .map_or(ContextShape::Text { chars: 0 }, |s| s.1.clone()),
            extra_contexts: self.shapes.iter().skip(1).cloned().collect(),
            lazy_contexts: (0..self.shapes.len())
                .filter(|&i| !self.sandbox.loaded_whole(i))
                .map(rlm_sandbox::slot_name)
                .collect(),
            sub_model_chars: c.sub_model_context_tokens.saturating_mul(3),
            sub_calls: self.node.depth < c.max_depth,
            recursive: self.node.depth + 1 < c.max_depth,
            max_output_chars: c.max_output_chars,
            max_iterations: c.max_iterations,
        };
        prompt::system_prompt_for(c.profile, &facts)
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// Bind another context (`context_1`, ...) and tell the model about it.
    pub(crate) async fn add_context(&mut self, ctx: Arc<Context>) -> Result<String, RlmError> {
        let shape = ctx.shape();
        let name = self.sandbox.add_context(ctx).await?;
        let lazy = if self.sandbox.loaded_whole(self.shapes.len()) {
            ""
        } else {
            " It is too large for the REPL's memory: a lazy object (slice it, search it, iterate \
             its lines), not a str."
        };
        self.messages.push(Message::user(format!(
            "A new document was loaded as `{name}`: {}.{lazy}",
            prompt::describe_shape(&shape)
        )));
        self.shapes.push((name.clone(), shape));
        Ok(name)
    }

    /// The loop: ask the root model, run its code, feed back the output, until a final answer,
    /// the iteration limit or the budget.
    pub(crate) async fn answer(&mut self, query: &str) -> NodeOutcome {
        let c = self.tree.config.clone();
        // The question as a variable too, as DSPy gives its inputs (`query`, `question`).
        for name in ["query", "question"] {
            if let Err(e) = self
                .sandbox
                .define(name, serde_json::Value::String(query.to_string()))
                .await
            {
                tracing::warn!(error = %e, "could not bind the question as `{name}`");
            }
        }
        self.messages
            .push(Message::user(prompt::first_user_message(query)));
        let mut last_prose = String::new();
        for iteration in 1..=c.max_iterations {
            if let Some(spent) = self.tree.budget.exhausted() {
                return self
                    .stop_for_budget(spent, iteration - 1, &last_prose)
                    .await;
            }
            self.tree.events.emit(Event::Iteration {
                node: self.node.clone(),
                n: iteration,
            });
            let span = tracing::info_span!("iteration", rlm = %self.node.rlm, n = iteration);
            let reply = match self.ask_root(iteration).instrument(span.clone()).await {
                Ok(r) => r,
                Err(CallError::Budget(spent)) => {
                    return self.stop_for_budget(spent, iteration, &last_prose).await;
                }
                Err(CallError::Failed(message)) => {
                    return self.stop_for_error(message, iteration, &last_prose).await;
                }
            };
            let parsed = parse_reply(&reply);
            last_prose = parsed.prose.clone();
            self.messages.push(Message::assistant(reply));

            let mut feedback = Vec::new();
            let blocks = parsed.code_blocks.len();
            for (i, code) in parsed.code_blocks.iter().enumerate() {
                let (step, shown) = match self.exec(code, iteration).instrument(span.clone()).await
                {
                    Ok(s) => s,
                    Err(message) => {
                        return self.stop_for_error(message, iteration, &last_prose).await;
                    }
                };
                feedback.push(if blocks == 1 {
                    format!("Output:\n{shown}")
                } else {
                    format!("Output of block {}:\n{shown}", i + 1)
                });
                if let Some(answer) = step.final_answer {
                    return self.finish(Some(answer), StopReason::Final, iteration);
                }
            }
            if blocks == 0 {
                match parsed.final_answer {
                    Some(TextFinal::Answer(a)) => {
                        return self.finish(Some(a), StopReason::Final, iteration);
                    }
                    Some(TextFinal::Var(name)) => match self.final_var(&name, iteration).await {
                        Ok(a) => return self.finish(Some(a), StopReason::Final, iteration),
                        Err(why) => feedback.push(why),
                    },
                    None => feedback.push(prompt::NUDGE.to_string()),
                }
            }
            self.messages.push(Message::user(feedback.join("\n\n")));
        }
        // Out of iterations: ask once for the best answer.
        if let Some(spent) = self.tree.budget.exhausted() {
            return self
                .stop_for_budget(spent, c.max_iterations, &last_prose)
                .await;
        }
        self.messages
            .push(Message::user(prompt::last_call(c.max_iterations)));
        let answer = match self.ask_root(c.max_iterations + 1).await {
            Ok(reply) => {
                let parsed = parse_reply(&reply);
                let prose = parsed.prose;
                self.messages.push(Message::assistant(reply));
                match parsed.final_answer {
                    Some(TextFinal::Answer(a)) => Some(a),
                    Some(TextFinal::Var(name)) => {
                        self.final_var(&name, c.max_iterations).await.ok()
                    }
                    None => (!prose.is_empty()).then_some(prose),
                }
            }
            Err(_) => self.partial(&last_prose).await,
        };
        self.finish(answer, StopReason::MaxIterations, c.max_iterations)
    }

    async fn ask_root(&mut self, iteration: u32) -> Result<String, CallError> {
        let model = self.root_model.clone();
        let model_id = model.id();
        let request_hash = request_hash(&model_id, &self.messages);
        let tag = CallTag {
            role: CallRole::Root,
            depth: self.node.depth,
        };
        let request = ChatRequest::new(self.messages.clone()).tagged(tag);
        let started = Instant::now();
        let response = self.tree.call_model(&model, request).await?;
        self.tree.events.emit(Event::ModelReply {
            node: self.node.clone(),
            iteration,
            text: response.text.clone(),
            model: model_id,
            request_hash,
            usage: response.usage,
            cost_usd: response.cost_usd,
            ms: started.elapsed().as_secs_f64() * 1e3,
        });
        Ok(response.text)
    }

    /// Run one block; returns the step and its output as the model sees it (also in the event).
    async fn exec(&mut self, code: &str, iteration: u32) -> Result<(StepResult, String), String> {
        let step = self
            .sandbox
            .exec(code)
            .await
            .map_err(|e| format!("the sandbox failed: {e}"))?;
        let c = &self.tree.config;
        let shown = format_step(&step, c.max_output_chars, c.profile);
        self.tree.events.emit(Event::CodeExecuted {
            node: self.node.clone(),
            iteration,
            code: code.to_string(),
            output: shown.clone(),
            error: step.error.clone(),
            final_answer: step.final_answer.clone(),
            fuel: step.fuel,
            ms: step.elapsed.as_secs_f64() * 1e3,
            restored: step.restored,
            reset: step.reset,
        });
        Ok((step, shown))
    }

    /// `FINAL_VAR(name)` written in the reply text: read the variable from the REPL.
    async fn final_var(&mut self, name: &str, iteration: u32) -> Result<String, String> {
        let code = format!("FINAL_VAR({})", serde_json::Value::String(name.to_string()));
        let (step, _) = self.exec(&code, iteration).await?;
        step.final_answer.ok_or_else(|| {
            format!(
                "FINAL_VAR({name}) failed: {}",
                step.error.unwrap_or_else(|| "no such variable".into())
            )
        })
    }

    /// The best partial answer: the REPL's `answer["content"]` if set, else the last reply's
    /// prose.
    async fn partial(&mut self, last_prose: &str) -> Option<String> {
        let code =
            "print(str(answer.get('content') or '') if isinstance(answer, dict) else '', end='')";
        if let Ok(step) = self.sandbox.exec(code).await
            && step.error.is_none()
            && !step.stdout.trim().is_empty()
        {
            return Some(step.stdout);
        }
        (!last_prose.trim().is_empty()).then(|| last_prose.trim().to_string())
    }

    async fn stop_for_budget(
        &mut self,
        spent: Spent,
        iterations: u32,
        last_prose: &str,
    ) -> NodeOutcome {
        self.tree.events.emit(Event::BudgetExceeded {
            node: self.node.clone(),
            reason: spent.reason.clone(),
        });
        let answer = self.partial(last_prose).await;
        let stop = StopReason::Budget {
            limit: Some(spent.limit),
            reason: spent.reason,
        };
        self.finish(answer, stop, iterations)
    }

    async fn stop_for_error(
        &mut self,
        message: String,
        iterations: u32,
        last_prose: &str,
    ) -> NodeOutcome {
        self.tree.events.emit(Event::Error {
            node: self.node.clone(),
            message: message.clone(),
        });
        let answer = self.partial(last_prose).await;
        self.finish(answer, StopReason::Error { message }, iterations)
    }

    fn finish(&mut self, answer: Option<String>, stop: StopReason, iterations: u32) -> NodeOutcome {
        self.tree.events.emit(Event::FinalAnswer {
            node: self.node.clone(),
            answer: answer.clone(),
            stop: stop.clone(),
        });
        NodeOutcome {
            answer,
            stop,
            iterations,
        }
    }
}

/// A step's output as the model sees it.
pub(crate) fn format_step(
    step: &StepResult,
    max_chars: usize,
    profile: prompt::PromptProfile,
) -> String {
    let mut s = String::new();
    if !step.stdout.is_empty() {
        s.push_str(&step.stdout);
    }
    if !step.stderr.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[stderr]\n");
        s.push_str(&step.stderr);
    }
    if let Some(e) = &step.error {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[error]\n");
        s.push_str(e);
    }
    if step.truncated() {
        s.push_str(&format!(
            "\n[the sandbox kept only part of the output: {} bytes were dropped]",
            step.stdout_dropped + step.stderr_dropped
        ));
    }
    if s.trim().is_empty() {
        s = prompt::no_output(profile).to_string();
    }
    prompt::truncate_middle(s.trim_end(), max_chars)
}
