//! What the whole recursion tree of one run shares: budget, events, usage, the sub-call
//! concurrency limit, the cap on live REPLs and dedupe, and the sub-calls and child RLMs
//! themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rlm_llm::{CallTag, ChatModel, ChatRequest, Message, Usage, UsageTracker};
use rlm_sandbox::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::budget::{BudgetLimit, BudgetState, Spent};
use crate::config::Config;
use crate::events::{Event, Events, Node, RunSettings};
use crate::node::{NodeOutcome, NodeRun};
use crate::outcome::StopReason;
use crate::repls::{ReplPermit, ReplSlots};

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
pub(crate) enum CallError {
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
    pub(crate) budget: BudgetState,
    pub(crate) events: Events,
    pub(crate) usage: UsageTracker,
    dedupe: Mutex<HashMap<String, SharedCall>>,
    sub_slots: Semaphore,
    /// The REPLs alive at once: the root's and its children's (see [`crate::repls`]).
    repls: ReplSlots,
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
            repls: ReplSlots::new(config.max_repls, config.repl_limiter.clone()),
            next_call: AtomicU64::new(1),
            seed,
            config,
        })
    }

    pub(crate) fn settings(&self) -> RunSettings {
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
            tools: c.tools.iter().map(crate::events::ToolRecord::of).collect(),
        }
    }

    /// A fresh call id (unique in the run).
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// Wait for a slot for `node`'s REPL, in the run's cap on live REPLs and in the shared
    /// one if the run has it. Its height (the levels of child REPLs that may open below it)
    /// keeps room for its children (see [`crate::repls`]).
    pub(crate) async fn open_repl(&self, node: &Node) -> ReplPermit {
        let height = self
            .config
            .max_depth
            .saturating_sub(1)
            .saturating_sub(node.depth);
        self.repls.open(height).await
    }

    /// The seed of one RLM's sandbox: derived from the run's seed and the RLM's key.
    pub(crate) fn node_seed(&self, key: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        h.update(key.as_bytes());
        *h.finalize().as_bytes()
    }

    pub(crate) fn model_named(&self, name: Option<&str>) -> Result<Arc<dyn ChatModel>, String> {
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
    pub(crate) async fn call_model(
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
    pub(crate) async fn sub_call(
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
    pub(crate) async fn child_rlm(
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
        // Identical calls share one child only at the same depth: a child asking for its own
        // task again gets a grandchild, never itself to wait on (nor a REPL of its own level).
        let hash = request_hash(
            &format!("{rlm_model_id}@{}", node.depth),
            &[Message::user(prompt.clone())],
        );
        let prompt_chars = prompt.chars().count();
        let make = {
            let tree = self.clone();
            move || -> BoxFuture<'static, SubOutcome> {
                async move {
                    if let Err(e) = tree.budget.start_sub_call() {
                        return SubOutcome::failed(e);
                    }
                    let repl = match tree.budget.time_left() {
                        None => tree.open_repl(&node).await,
                        Some(left) => match tokio::time::timeout(left, tree.open_repl(&node)).await
                        {
                            Ok(permit) => permit,
                            Err(_) => {
                                return SubOutcome::failed(format!(
                                    "budget exhausted: the time budget ran out while the sub-RLM \
                                     waited for a REPL ({} may be alive at once in this run)",
                                    tree.config.max_repls
                                ));
                            }
                        },
                    };
                    let query = format!(
                        "The task you are given is in `context` ({prompt_chars} characters): read \
                         it, carry it out, and give the result as FINAL(...)."
                    );
                    let ctx = Context::text(prompt);
                    let outcome =
                        match NodeRun::start(tree.clone(), node.clone(), model, vec![ctx], repl)
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
                    SubOutcome {
                        result,
                        usage: Usage::default(),
                        cost_usd: None,
                    }
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
