//! A live guest instance: one wasmtime store with the REPL instantiated in it, and what it is
//! built from. The [`crate::Sandbox`] owns one (and replaces it after a trap); this module
//! runs steps in it, attaches contexts, replays journal entries, and saves and restores
//! checkpoints of the REPL's state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::bindings::Sandbox as GuestWorld;
use crate::bindings::exports::rlm::sandbox::repl;
use crate::context::Context;
use crate::engine::SandboxEngine;
use crate::error::SandboxError;
use crate::host::ModelHost;
use crate::host::{CallLog, HostState, ModelCall, ReplayDiverged};
use crate::limits::Limits;
use crate::memory::{GuestMemory, MemoryPool};
use crate::pipe::CappedPipe;
use crate::step::{JournalEntry, LimitHit};
use crate::tools::Tool;
use crate::warm::{InitKey, WarmPool};

/// Extra time the calls that are not steps (a context load, a checkpoint, a restore, a
/// definition) get past a step's deadline before they are dropped.
const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

/// The scratch context the warm-up loads (lines, words, digits and a non-ASCII character, so
/// the text paths the guest takes for real contexts are the ones warmed).
const WARM_UP_TEXT: &str = "Warm-up line one: alpha 12.\nLine two: beta 345, gamma.\nÉtoile 6\n";

/// Extra fuel a context's load may burn per character it loads whole.
const LOAD_FUEL_PER_CHAR: u64 = 64;

/// Characters per second a whole load is allowed, beyond a step's time (a floor; loads run
/// faster than this).
const LOAD_CHARS_PER_SECOND: f64 = 50e6;

/// What a live instance is built from: everything about a sandbox but its journal.
#[derive(Clone)]
pub(crate) struct Recipe {
    pub(crate) engine: Arc<SandboxEngine>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) model: Arc<dyn ModelHost>,
    pub(crate) contexts: Vec<Arc<Context>>,
    /// Seed of the guest's randomness, reused by every rebuild so replays draw the same bytes.
    pub(crate) seed: [u8; 32],
    pub(crate) memory: MemoryPlan,
    pub(crate) pool: Arc<MemoryPool>,
    /// The custom tools, bound in every instance (part of the REPL's fixed names).
    pub(crate) tools: Arc<[Tool]>,
}

/// Which contexts load whole, and the memory cap that follows (the rule in [`crate::memory`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryPlan {
    pub(crate) whole: Vec<bool>,
    pub(crate) whole_bytes: u64,
}

impl MemoryPlan {
    /// Decide for one more context: whole when the REPL's cap with it stays within the ceiling
    /// and the shared pool has room for its load (two copies at the peak).
    pub(crate) fn add(&mut self, limits: &Limits, pool: &MemoryPool, ctx: &Context) {
        let bytes = ctx.guest_bytes();
        let whole = limits.loads_whole(ctx.root_size_chars(), bytes, self.whole_bytes)
            && pool.available() >= bytes.saturating_mul(2);
        if whole {
            self.whole_bytes += bytes;
        }
        self.whole.push(whole);
    }

    pub(crate) fn cap(&self, limits: &Limits) -> u64 {
        limits.memory_cap(self.whole_bytes)
    }
}

/// A checkpoint of a REPL's state: what the guest saved, where in the journal, and where the
/// guest's random streams were.
pub(crate) struct Checkpoint {
    pub(crate) bytes: Vec<u8>,
    /// Journal entries it covers (the first `at`).
    pub(crate) at: usize,
    pub(crate) rng: [u64; 2],
}

/// Why a step was stopped.
pub(crate) struct Stop {
    pub(crate) hit: LimitHit,
    pub(crate) detail: String,
}

impl Stop {
    pub(crate) fn message(&self, limits: &Limits, restored: bool) -> String {
        let what = match self.hit {
            LimitHit::Fuel => format!(
                "the step ran out of fuel (its CPU budget, {} units): it did too much work; \
                 process less per step or make the loop cheaper",
                limits.fuel_per_step
            ),
            LimitHit::Deadline => format!(
                "the step ran past its time limit of {:.1} s (time spent waiting on sub-calls \
                 counts too); do less per step",
                limits.step_timeout.as_secs_f64()
            ),
            LimitHit::Stack => "the step overflowed the call stack (too deep recursion); \
                                 use a loop instead"
                .to_string(),
            LimitHit::Crash => format!("the step crashed the interpreter ({})", self.detail),
        };
        let after = if restored {
            "The REPL was restored to its state before this step (earlier variables are intact)."
        } else {
            "The REPL could not be restored and was restarted: earlier variables are gone, \
             the context is loaded again."
        };
        format!("SandboxLimit: {what}. {after}")
    }
}

/// The outcome of running one step in a live instance.
pub(crate) struct RunOutcome {
    pub(crate) result: Result<(repl::StepResult, Vec<ModelCall>), Stop>,
    pub(crate) fuel: u64,
    pub(crate) calls: u64,
}

/// A live instance: store + exported bindings + the pipes behind fd 1 and 2.
pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    guest: GuestWorld,
    pub(crate) stdout: CappedPipe,
    pub(crate) stderr: CappedPipe,
    metered: bool,
}

impl Live {
    /// Instantiate, initialise, and bring the REPL to the state `journal` describes.
    pub(crate) async fn start(
        recipe: &Recipe,
        journal: &[JournalEntry],
    ) -> Result<Self, SandboxError> {
        let mut live = Self::new(recipe).await?;
        for entry in journal {
            live.apply(recipe, entry).await?;
        }
        Ok(live)
    }

    /// Instantiate, attach the contexts, restore `checkpoint` and replay the journal's entries
    /// after it.
    pub(crate) async fn from_checkpoint(
        recipe: &Recipe,
        journal: &[JournalEntry],
        checkpoint: &Checkpoint,
    ) -> Result<Self, SandboxError> {
        let (before, after) = journal.split_at(checkpoint.at.min(journal.len()));
        let mut live = Self::new(recipe).await?;
        for entry in before {
            if matches!(entry, JournalEntry::Attach { .. }) {
                live.apply(recipe, entry).await?;
            }
        }
        live.restore(&recipe.limits, checkpoint).await?;
        for entry in after {
            live.apply(recipe, entry).await?;
        }
        Ok(live)
    }

    /// Save the REPL's state. `Err` when the call was stopped by a limit (the instance is then
    /// dead); `Ok(Err(why))` when the state cannot be saved.
    pub(crate) async fn checkpoint(
        &mut self,
        limits: &Limits,
    ) -> Result<Result<Vec<u8>, String>, Stop> {
        if let Err(e) = self.prepare(limits, CallLog::Closed) {
            return Err(Stop {
                hit: LimitHit::Crash,
                detail: e.to_string(),
            });
        }
        let call = self
            .guest
            .rlm_sandbox_repl()
            .call_checkpoint(&mut self.store, limits.max_checkpoint_bytes);
        let outcome = tokio::time::timeout(limits.step_timeout + BACKSTOP_GRACE, call).await;
        // Whatever a model's pickling hook printed or asked for is not part of any step.
        self.stdout.take();
        self.stderr.take();
        let calls = self.store.data().calls;
        self.store.data_mut().log = CallLog::Record(Vec::new());
        match outcome {
            Ok(Ok(Ok(_))) if calls > 0 => Ok(Err(format!(
                "saving the state made {calls} host calls (a pickling hook in model code)"
            ))),
            Ok(Ok(Ok(bytes))) if bytes.len() as u64 > limits.max_checkpoint_bytes => Ok(Err(
                format!("the state is {} bytes, over the cap", bytes.len()),
            )),
            Ok(Ok(Ok(bytes))) => Ok(Ok(bytes)),
            Ok(Ok(Err(why))) => Ok(Err(why)),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Stop {
                hit: LimitHit::Deadline,
                detail: "saving the state timed out".into(),
            }),
        }
    }

    /// Do the REPL's first-time work ahead of time (see the guest's `warm-up`): typical steps in
    /// scratch globals, and the load of a scratch text context, whole and lazy. For an instance
    /// made ahead of time only: it leaves the REPL's state and random streams as they were, and
    /// the context slots empty.
    pub(crate) async fn warm_up(&mut self, limits: &Limits) -> Result<(), SandboxError> {
        self.prepare(limits, CallLog::Closed)?;
        let rng = self.store.data().rng_positions();
        self.store
            .data_mut()
            .set_contexts(vec![Context::text(WARM_UP_TEXT)]);
        let call = self
            .guest
            .rlm_sandbox_repl()
            .call_warm_up(&mut self.store, Some(0));
        let outcome = tokio::time::timeout(limits.step_timeout + BACKSTOP_GRACE, call).await;
        self.stdout.take();
        self.stderr.take();
        let data = self.store.data_mut();
        data.set_contexts(Vec::new());
        data.log = CallLog::Record(Vec::new());
        if data.rng_positions() != rng {
            return Err(SandboxError::GuestInit(
                "the warm-up drew random bytes".into(),
            ));
        }
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(SandboxError::GuestInit(why)),
            Ok(Err(e)) => Err(SandboxError::wasm("warming up the REPL", e)),
            Err(_) => Err(SandboxError::GuestInit("the warm-up timed out".into())),
        }
    }

    /// Replace the REPL's state with `checkpoint`'s, and move the random streams to where the
    /// checkpoint's instance had them.
    pub(crate) async fn restore(
        &mut self,
        limits: &Limits,
        checkpoint: &Checkpoint,
    ) -> Result<(), SandboxError> {
        // No model or tool call may happen while a state loads.
        self.prepare(limits, CallLog::Closed)?;
        self.store.data().set_rng_positions(checkpoint.rng);
        let call = self
            .guest
            .rlm_sandbox_repl()
            .call_restore(&mut self.store, &checkpoint.bytes);
        let outcome = tokio::time::timeout(limits.step_timeout + BACKSTOP_GRACE, call).await;
        self.stdout.take();
        self.stderr.take();
        self.store.data_mut().log = CallLog::Record(Vec::new());
        let calls = self.store.data().calls;
        match outcome {
            // A model's unpickling hook asked for a model or tool call (refused): the state it
            // built may differ from the original's, so the journal is replayed instead.
            Ok(Ok(Ok(()))) if calls > 0 => Err(SandboxError::GuestInit(format!(
                "restoring a checkpoint made {calls} host calls"
            ))),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(SandboxError::GuestInit(format!(
                "restoring a checkpoint failed: {why}"
            ))),
            Ok(Err(e)) => Err(SandboxError::wasm("restoring a checkpoint", e)),
            Err(_) => Err(SandboxError::GuestInit(
                "restoring a checkpoint timed out".into(),
            )),
        }
    }

    /// A REPL with no context attached yet: a ready instance from the engine's warm pool when
    /// one fits (see [`crate::warm`]), else a new one.
    pub(crate) async fn new(recipe: &Recipe) -> Result<Self, SandboxError> {
        let poolable =
            recipe.tools.is_empty() && Arc::ptr_eq(&recipe.pool, recipe.engine.memory_pool());
        if !poolable {
            return Self::instantiate(recipe).await;
        }
        let key = InitKey::of(&recipe.limits);
        let warm = recipe.engine.warm.take(&key);
        WarmPool::refill(&recipe.engine, key, recipe.limits.clone());
        match warm {
            Some(mut live) => {
                live.adopt(recipe);
                Ok(live)
            }
            None => Self::instantiate(recipe).await,
        }
    }

    /// Give a ready instance to the REPL `recipe` describes.
    fn adopt(&mut self, recipe: &Recipe) {
        let data = self.store.data_mut();
        data.adopt(recipe.limits.clone(), recipe.model.clone(), &recipe.seed);
        data.set_contexts(recipe.contexts.to_vec());
        data.memory.set_cap(recipe.memory.cap(&recipe.limits));
    }

    /// Instantiate and initialise a REPL with no context attached yet.
    pub(crate) async fn instantiate(recipe: &Recipe) -> Result<Self, SandboxError> {
        let Recipe {
            engine,
            limits,
            model,
            contexts,
            seed,
            memory,
            pool,
            tools,
        } = recipe;
        let cap = usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX);
        let (stdout, stderr) = (CappedPipe::new(cap), CappedPipe::new(cap));
        let state = HostState::new(
            limits.clone(),
            contexts.to_vec(),
            model.clone(),
            stdout.clone(),
            stderr.clone(),
            seed,
            GuestMemory::new(memory.cap(limits), pool.clone()),
        );
        let mut store = Store::new(&engine.engine, state);
        store.data_mut().set_tools(tools.clone());
        store.limiter(|s| &mut s.memory);
        store.data_mut().deadline = Instant::now() + limits.step_timeout;
        if engine.metered {
            // Yield to tokio every FUEL_YIELD_INTERVAL units, so the step's timeout is checked
            // while the guest computes (and the worker's other tasks run).
            store
                .set_fuel(limits.fuel_per_step)
                .and_then(|()| {
                    store.fuel_async_yield_interval(Some(crate::engine::FUEL_YIELD_INTERVAL))
                })
                .map_err(|e| SandboxError::wasm("setting fuel", e))?;
        }
        let guest = match engine.pre.instantiate_async(&mut store).await {
            Ok(g) => g,
            Err(_) if store.data().memory.pool_refused => {
                return Err(SandboxError::MemoryBudget {
                    total: pool.total(),
                    available: pool.available(),
                });
            }
            Err(e) => return Err(SandboxError::wasm("instantiating the guest", e)),
        };
        let options = repl::Options {
            lazy_threshold_chars: limits.piece_chars(),
            max_output_bytes: limits.max_output_bytes,
            read_chunk_chars: limits.read_chunk_chars,
            tools: tools.iter().map(tool_spec).collect(),
        };
        guest
            .rlm_sandbox_repl()
            .call_init(&mut store, &options)
            .await
            .map_err(|e| SandboxError::wasm("initialising the REPL", e))?
            .map_err(SandboxError::GuestInit)?;
        Ok(Self {
            store,
            guest,
            stdout,
            stderr,
            metered: engine.metered,
        })
    }

    /// Replay one journal entry (model answers from the journal). Fails when the replay cannot
    /// be trusted: a step that stopped, made other model calls than recorded, or met a memory
    /// budget the original did not meet.
    pub(crate) async fn apply(
        &mut self,
        recipe: &Recipe,
        entry: &JournalEntry,
    ) -> Result<(), SandboxError> {
        let limits = &recipe.limits;
        match entry {
            JournalEntry::Attach { slot, name } => {
                let i = *slot as usize;
                let (Some(ctx), Some(&whole)) =
                    (recipe.contexts.get(i), recipe.memory.whole.get(i))
                else {
                    return Err(SandboxError::GuestInit(format!("no context in slot {i}")));
                };
                let data = self.store.data_mut();
                if data.context_count() <= i {
                    data.set_contexts(recipe.contexts.clone());
                }
                data.memory.set_cap(recipe.memory.cap(limits));
                self.attach(*slot, name, whole, limits, ctx).await?
            }
            JournalEntry::Define { name, value } => self.define(name, value, limits).await?,
            JournalEntry::Step { code, calls } => {
                let log = CallLog::Replay(calls.iter().cloned().collect::<VecDeque<_>>());
                let outcome = self.run(code, limits, log).await;
                self.stdout.take();
                self.stderr.take();
                if let Err(stop) = outcome.result {
                    return Err(SandboxError::GuestInit(format!(
                        "replaying an earlier step failed: {}",
                        stop.detail
                    )));
                }
                if let CallLog::Replay(left) = &self.store.data().log
                    && !left.is_empty()
                {
                    return Err(SandboxError::GuestInit(
                        "replay made fewer model calls than the journal recorded".into(),
                    ));
                }
            }
        }
        if self.store.data().memory.pool_refused {
            return Err(SandboxError::GuestInit(
                "the shared memory budget refused the replay memory the first run had".into(),
            ));
        }
        Ok(())
    }

    pub(crate) async fn attach(
        &mut self,
        slot: u32,
        name: &str,
        whole: bool,
        limits: &Limits,
        ctx: &Context,
    ) -> Result<(), SandboxError> {
        self.prepare(limits, CallLog::Record(Vec::new()))?;
        // Loading a large context whole takes time and fuel in proportion to its size: give
        // the load that on top of a step's allowance.
        let chars = if whole { ctx.root_size_chars() } else { 0 };
        let timeout = limits.step_timeout
            + BACKSTOP_GRACE
            + Duration::from_secs_f64(chars as f64 / LOAD_CHARS_PER_SECOND);
        let state = self.store.data_mut();
        state.deadline = Instant::now() + timeout;
        if self.metered {
            self.store
                .set_fuel(
                    limits
                        .fuel_per_step
                        .saturating_add(chars.saturating_mul(LOAD_FUEL_PER_CHAR)),
                )
                .map_err(|e| SandboxError::wasm("setting fuel", e))?;
        }
        let call =
            self.guest
                .rlm_sandbox_repl()
                .call_attach_context(&mut self.store, slot, name, whole);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(msg))) => Err(SandboxError::GuestInit(msg)),
            Ok(Err(e)) => Err(SandboxError::wasm("loading a context into the REPL", e)),
            Err(_) => Err(SandboxError::GuestInit(format!("loading {name} timed out"))),
        }
    }

    pub(crate) async fn define(
        &mut self,
        name: &str,
        value: &serde_json::Value,
        limits: &Limits,
    ) -> Result<(), SandboxError> {
        let json = value.to_string();
        if json.len() as u64 > limits.max_host_string_bytes {
            return Err(SandboxError::GuestInit(format!(
                "the value of {name} is {} bytes of JSON, more than the sandbox passes in one \
                 piece ({} bytes)",
                json.len(),
                limits.max_host_string_bytes
            )));
        }
        self.prepare(limits, CallLog::Record(Vec::new()))?;
        let call = self
            .guest
            .rlm_sandbox_repl()
            .call_define(&mut self.store, name, &json);
        match tokio::time::timeout(limits.step_timeout + BACKSTOP_GRACE, call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(msg))) => Err(SandboxError::GuestInit(msg)),
            Ok(Err(e)) => Err(SandboxError::wasm("defining a variable in the REPL", e)),
            Err(_) => Err(SandboxError::GuestInit(format!(
                "defining {name} timed out"
            ))),
        }
    }

    fn prepare(&mut self, limits: &Limits, log: CallLog) -> Result<(), SandboxError> {
        let state = self.store.data_mut();
        state.calls = 0;
        state.tool_calls = 0;
        state.searches = 0;
        state.empty_searches = 0;
        state.deadline = Instant::now() + limits.step_timeout;
        state.log = log;
        if !self.metered {
            return Ok(());
        }
        self.store
            .set_fuel(limits.fuel_per_step)
            .map_err(|e| SandboxError::wasm("setting fuel", e))
    }

    pub(crate) async fn run(&mut self, code: &str, limits: &Limits, log: CallLog) -> RunOutcome {
        if let Err(e) = self.prepare(limits, log) {
            return RunOutcome {
                result: Err(Stop {
                    hit: LimitHit::Crash,
                    detail: e.to_string(),
                }),
                fuel: 0,
                calls: 0,
            };
        }
        let call = self
            .guest
            .rlm_sandbox_repl()
            .call_exec(&mut self.store, code);
        // The deadline: checked when the guest waits on the host, and at each fuel yield while
        // it computes. Dropping the call at either kills the instance, as a trap does.
        let outcome = tokio::time::timeout(limits.step_timeout, call).await;
        let fuel = match self.store.get_fuel() {
            Ok(left) if self.metered => limits.fuel_per_step.saturating_sub(left),
            _ => 0,
        };
        let calls = self.store.data().calls;
        let result = match outcome {
            Ok(Ok(step)) => {
                let log =
                    std::mem::replace(&mut self.store.data_mut().log, CallLog::Record(Vec::new()));
                let calls = match log {
                    CallLog::Record(v) => v,
                    CallLog::Replay(_) | CallLog::Closed => Vec::new(),
                };
                Ok((step, calls))
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Stop {
                hit: LimitHit::Deadline,
                detail: "the step ran past its deadline".into(),
            }),
        };
        RunOutcome {
            result,
            fuel,
            calls,
        }
    }
}

/// A tool as the guest binds it.
fn tool_spec(tool: &Tool) -> repl::ToolSpec {
    repl::ToolSpec {
        name: tool.name().to_string(),
        description: tool.description().to_string(),
        params: tool.params().to_vec(),
        required: tool.required().to_vec(),
    }
}

fn classify(err: &wasmtime::Error) -> Stop {
    let (hit, detail) = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (LimitHit::Fuel, Trap::OutOfFuel.to_string()),
        Some(Trap::Interrupt) => (LimitHit::Deadline, Trap::Interrupt.to_string()),
        Some(Trap::StackOverflow) => (LimitHit::Stack, Trap::StackOverflow.to_string()),
        Some(trap) => (LimitHit::Crash, trap.to_string()),
        None if err.downcast_ref::<ReplayDiverged>().is_some() => {
            (LimitHit::Crash, ReplayDiverged.to_string())
        }
        // Keep the cause, not the multi-line wasm backtrace.
        None => (
            LimitHit::Crash,
            err.to_string().lines().next().unwrap_or("").to_string(),
        ),
    };
    Stop { hit, detail }
}
