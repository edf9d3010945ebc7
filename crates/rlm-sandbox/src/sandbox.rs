//! One persistent REPL: run steps, enforce limits, recover from traps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::context::Context;
use crate::engine::SandboxEngine;
use crate::error::SandboxError;
use crate::host::{CallLog, ModelCall};
use crate::host::{ModelHost, NoModel};
use crate::limits::Limits;
use crate::live::{Checkpoint, Live, MemoryPlan, Recipe};
use crate::memory::{HostCharge, MemoryPool};
use crate::standby::Standby;
use crate::step::{JournalEntry, StepResult, cap_text, cut_marked, join_streams};
use crate::tools::Tool;

/// When the REPL's state cannot be checkpointed (a live generator, a kept traceback) and
/// replaying the steps since its last checkpoint would take longer than this, it keeps a
/// standby (budget permitting), so that a trap is still recovered without replaying them.
const UNSAVEABLE_STANDBY_AFTER: Duration = Duration::from_millis(50);
/// Most context slots a sandbox holds (`context`, `context_1`, ...).
const MAX_CONTEXTS: usize = 4096;

/// Builder for a [`Sandbox`].
pub struct SandboxBuilder {
    engine: Arc<SandboxEngine>,
    limits: Limits,
    model: Arc<dyn ModelHost>,
    contexts: Vec<Arc<Context>>,
    seed: Option<[u8; 32]>,
    pool: Option<Arc<MemoryPool>>,
    tools: Vec<Tool>,
}

impl SandboxBuilder {
    /// Charge this REPL's memory to `pool` instead of the engine's (see [`crate::memory`]).
    pub fn memory_pool(mut self, pool: Arc<MemoryPool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Seed the guest's randomness (`os.urandom`, `uuid4`, `secrets`), e.g. to re-run a recorded
    /// session exactly (default: a fresh random seed; see [`Sandbox::seed`]).
    pub fn seed(mut self, seed: [u8; 32]) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Use these limits (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Answer `llm_query`/`llm_batch`/`rlm_query` with `model` (default: [`NoModel`]).
    pub fn model(mut self, model: Arc<dyn ModelHost>) -> Self {
        self.model = model;
        self
    }

    /// Add a context: the first becomes `context`, later ones `context_1`, `context_2`, ...
    pub fn context(mut self, context: Arc<Context>) -> Self {
        self.contexts.push(context);
        self
    }

    /// Register a custom tool: model code calls it as a Python function of its name (see
    /// [`Tool`]). Names must be unique: [`SandboxBuilder::build`] refuses duplicates.
    ///
    /// ```no_run
    /// use rlm_sandbox::{Sandbox, SandboxEngine, Tool};
    /// use serde_json::json;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let add = Tool::new(
    ///     "add",
    ///     "The sum of two numbers.",
    ///     json!({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"]}),
    ///     |args| async move {
    ///         let (a, b) = (args["a"].as_f64(), args["b"].as_f64());
    ///         Ok(json!(a.zip(b).map(|(a, b)| a + b).ok_or("a and b must be numbers")?))
    ///     },
    /// )?;
    /// let mut repl = Sandbox::builder(SandboxEngine::load()?).tool(add).build().await?;
    /// let step = repl.exec("add(2, b=3)").await?;
    /// assert_eq!(step.stdout.trim(), "5.0");
    /// # Ok(()) }
    /// ```
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Register several custom tools (see [`SandboxBuilder::tool`]).
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Start the REPL.
    pub async fn build(self) -> Result<Sandbox, SandboxError> {
        self.limits.validate()?;
        if self.contexts.len() > MAX_CONTEXTS {
            return Err(SandboxError::TooManyContexts(MAX_CONTEXTS));
        }
        crate::tools::check_unique(&self.tools)?;
        let limits = Arc::new(self.limits);
        let pool = self
            .pool
            .unwrap_or_else(|| self.engine.memory_pool().clone());
        let mut memory = MemoryPlan::default();
        for ctx in &self.contexts {
            memory.add(&limits, &pool, ctx);
        }
        let journal: Vec<JournalEntry> = (0..self.contexts.len())
            .map(|slot| JournalEntry::Attach {
                slot: slot as u32,
                name: slot_name(slot),
            })
            .collect();
        let recipe = Recipe {
            engine: self.engine,
            limits,
            model: self.model,
            contexts: self.contexts,
            seed: self.seed.unwrap_or_else(crate::seeded::fresh_seed),
            memory,
            pool,
            tools: self.tools.into(),
        };
        let recipe_pool = recipe.pool.clone();
        let mut live = Live::new(&recipe).await?;
        let started = Instant::now();
        for entry in &journal {
            live.apply(&recipe, entry).await?;
        }
        // No standby yet, whatever the contexts' loading cost: a REPL that never runs a step
        // needs none, and the first step starts one if a replay would cost too much.
        Ok(Sandbox {
            recipe,
            live,
            journal,
            journal_bytes: 0,
            journal_full: false,
            steps: 0,
            replay_cost: started.elapsed(),
            checkpoint: None,
            tail_cost: Duration::ZERO,
            checkpoint_due: Duration::ZERO,
            unsaveable: false,
            standby: None,
            retired: None,
            recovery_memory: HostCharge::new(recipe_pool),
        })
    }
}

/// The Python name of context slot `slot`.
pub fn slot_name(slot: usize) -> String {
    if slot == 0 {
        "context".to_string()
    } else {
        format!("context_{slot}")
    }
}

/// How a REPL was rebuilt after a trap.
struct Recovered {
    /// The state before the step is back (false: the REPL started afresh).
    restored: bool,
    /// Journal entries re-run.
    replayed: u64,
    /// Rebuilt from a checkpoint.
    from_checkpoint: bool,
}

/// One persistent Python REPL in its own wasmtime store.
///
/// Steps run one at a time (`exec` takes `&mut self`). Variables persist between steps. A step
/// that hits a limit is stopped; the REPL is then brought back to its state before the step,
/// without repeating any model call: by restoring its latest checkpoint (its state, saved
/// after a step once the steps since the last one took more than
/// [`Limits::checkpoint_after`]) into a fresh instance and replaying the steps after it, or by
/// swapping in its standby when it keeps one ([`Limits::standby_after`]), else by replaying its
/// whole journal.
pub struct Sandbox {
    recipe: Recipe,
    live: Live,
    journal: Vec<JournalEntry>,
    /// Bytes of code and model answers the journal's steps hold.
    journal_bytes: u64,
    /// A step did not fit the journal's cap: a trap resets instead of restoring.
    journal_full: bool,
    steps: u64,
    /// About how long replaying the journal into a fresh instance would take, beyond
    /// instantiating it: what each journaled entry took the first time.
    replay_cost: Duration,
    /// The latest checkpoint of the REPL's state.
    checkpoint: Option<Arc<Checkpoint>>,
    /// What the journal's entries after the checkpoint took the first time.
    tail_cost: Duration,
    /// The next checkpoint is taken once `tail_cost` passes this (and
    /// [`Limits::checkpoint_after`]): what the last one took, or, after one failed, twice the
    /// tail it failed at.
    checkpoint_due: Duration,
    /// The last checkpoint could not be taken (the state holds something that cannot be
    /// saved): past [`UNSAVEABLE_STANDBY_AFTER`] of steps since the last one, the REPL keeps a
    /// standby instead.
    unsaveable: bool,
    /// A second instance following the journal in the background, swapped in after a trap.
    standby: Option<Standby>,
    /// The trapped instance, between a recovery and its clean-up.
    retired: Option<Live>,
    /// The journal's bytes and the checkpoint's, charged to the REPL's memory pool (the
    /// budget covers the host's copies of what the guest produced, not only guest memory).
    recovery_memory: HostCharge,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.recipe.limits)
            .field("contexts", &self.recipe.contexts.len())
            .field("steps", &self.steps)
            .field("standby", &self.standby.is_some())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Start configuring a sandbox on `engine`.
    pub fn builder(engine: Arc<SandboxEngine>) -> SandboxBuilder {
        SandboxBuilder {
            engine,
            limits: Limits::default(),
            model: Arc::new(NoModel),
            contexts: Vec::new(),
            seed: None,
            pool: None,
            tools: Vec::new(),
        }
    }

    /// The custom tools model code may call.
    pub fn tools(&self) -> &[Tool] {
        &self.recipe.tools
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.recipe.limits
    }

    /// The journal of successful steps (what a restore replays).
    pub fn journal(&self) -> &[JournalEntry] {
        &self.journal
    }

    /// The seed of the guest's randomness (pass it to [`SandboxBuilder::seed`] to reproduce).
    pub fn seed(&self) -> [u8; 32] {
        self.recipe.seed
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The contexts this REPL holds, by slot.
    pub fn contexts(&self) -> &[Arc<Context>] {
        &self.recipe.contexts
    }

    /// Whether context slot `slot` is loaded whole as real Python objects (`str`, `list`,
    /// `dict`); false: it is a lazy object served by the host (too large for the REPL's memory).
    pub fn loaded_whole(&self, slot: usize) -> bool {
        self.recipe.memory.whole.get(slot).copied().unwrap_or(false)
    }

    /// The REPL's memory cap now (the base plus what its whole contexts need).
    pub fn memory_cap(&self) -> u64 {
        self.recipe.memory.cap(&self.recipe.limits)
    }

    /// Bytes of linear memory the REPL holds now.
    pub fn memory_held(&self) -> u64 {
        self.live.store.data().memory.held()
    }

    /// Add another context; returns the Python name it is bound to (`context_1`, ...).
    pub async fn add_context(&mut self, context: Arc<Context>) -> Result<String, SandboxError> {
        if self.recipe.contexts.len() >= MAX_CONTEXTS {
            return Err(SandboxError::TooManyContexts(MAX_CONTEXTS));
        }
        let slot = self.recipe.contexts.len();
        let name = slot_name(slot);
        self.recipe
            .memory
            .add(&self.recipe.limits, &self.recipe.pool, &context);
        self.recipe.contexts.push(context);
        let cap = self.recipe.memory.cap(&self.recipe.limits);
        let data = self.live.store.data_mut();
        data.set_contexts(self.recipe.contexts.clone());
        data.memory.set_cap(cap);
        let whole = self.loaded_whole(slot);
        let started = Instant::now();
        self.live
            .attach(
                slot as u32,
                &name,
                whole,
                &self.recipe.limits,
                &self.recipe.contexts[slot],
            )
            .await?;
        self.journal.push(JournalEntry::Attach {
            slot: slot as u32,
            name: name.clone(),
        });
        self.journaled(started.elapsed());
        Ok(name)
    }

    /// Bind the Python name `name` to `value` (as Python's `json.loads` makes it), e.g. the
    /// question as `query`. Kept in the journal, so it survives a restore.
    pub async fn define(
        &mut self,
        name: &str,
        value: serde_json::Value,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        self.live.define(name, &value, &self.recipe.limits).await?;
        self.journal.push(JournalEntry::Define {
            name: name.to_string(),
            value,
        });
        self.journaled(started.elapsed());
        Ok(())
    }

    /// Run one step of Python code.
    ///
    /// Model-code failures (exceptions, limits) are reported in the [`StepResult`]; an `Err` means
    /// the sandbox itself could not go on (it could not even start a fresh REPL).
    pub async fn exec(&mut self, code: &str) -> Result<StepResult, SandboxError> {
        self.steps += 1;
        let span = tracing::info_span!("step", n = self.steps, code_chars = code.len());
        self.exec_inner(code).instrument(span).await
    }

    async fn exec_inner(&mut self, code: &str) -> Result<StepResult, SandboxError> {
        let started = Instant::now();
        if code.len() as u64 > self.recipe.limits.max_host_string_bytes {
            // The code is itself a string sent into the guest: refuse rather than risk an abort.
            return Ok(StepResult {
                error: Some(format!(
                    "SandboxLimit: the step's code is {} bytes, more than the sandbox accepts ({} \
                     bytes); send smaller steps",
                    code.len(),
                    self.recipe.limits.max_host_string_bytes
                )),
                elapsed: started.elapsed(),
                ..StepResult::default()
            });
        }
        let outcome = self
            .live
            .run(code, &self.recipe.limits, CallLog::Record(Vec::new()))
            .await;
        let elapsed = started.elapsed();
        let (out, out_dropped) = self.live.stdout.take();
        let (err, err_dropped) = self.live.stderr.take();
        let mut result = StepResult {
            stdout_dropped: out_dropped,
            stderr_dropped: err_dropped,
            fuel: outcome.fuel,
            elapsed,
            host_calls: outcome.calls,
            searches: self.live.store.data().searches,
            empty_searches: self.live.store.data().empty_searches,
            ..StepResult::default()
        };
        match outcome.result {
            Ok((step, calls)) => {
                // The guest caps its own output, but model code can get around that: the host
                // enforces every cap on what it receives.
                let cap =
                    usize::try_from(self.recipe.limits.max_output_bytes).unwrap_or(usize::MAX);
                let (stdout, dropped) = cap_text(join_streams(step.stdout, &out), cap);
                result.stdout = stdout;
                result.stdout_dropped += step.stdout_dropped + dropped;
                let (stderr, dropped) = cap_text(join_streams(step.stderr, &err), cap);
                result.stderr = stderr;
                result.stderr_dropped += step.stderr_dropped + dropped;
                result.error = step.error.map(|e| cut_marked(e, cap));
                let answer_cap =
                    usize::try_from(self.recipe.limits.max_host_string_bytes).unwrap_or(usize::MAX);
                result.final_answer = step.final_answer.map(|a| cut_marked(a, answer_cap));
                let bytes = code.len() + calls.iter().map(ModelCall::answer_bytes).sum::<usize>();
                // Once a step is left out, none after it may go in: a replay needs them all.
                let total = self.journal_bytes.saturating_add(bytes as u64);
                if !self.journal_full
                    && total <= self.recipe.limits.max_journal_bytes
                    && self
                        .recovery_memory
                        .set(total.saturating_add(self.checkpoint_bytes()))
                {
                    self.journal_bytes = total;
                    self.journal.push(JournalEntry::Step {
                        code: code.to_string(),
                        calls,
                    });
                    self.journaled(elapsed);
                } else if !self.journal_full {
                    tracing::warn!(
                        bytes = total,
                        "the step journal is full (its cap, or the memory budget): a later trap \
                         will reset the REPL"
                    );
                    self.journal_full = true;
                    self.standby = None;
                }
                self.maybe_checkpoint(&mut result).await?;
            }
            Err(stop) => {
                result.stdout = out;
                result.stderr = err;
                result.limit = Some(stop.hit);
                tracing::info!(limit = ?stop.hit, detail = %stop.detail, "step stopped by a limit");
                let done = self.rebuild(&mut result).await?;
                result.restored = done.restored;
                result.reset = !done.restored;
                result.error = Some(stop.message(&self.recipe.limits, done.restored));
            }
        }
        Ok(result)
    }

    /// Save the REPL's state after a step once the steps since the last checkpoint took longer
    /// than [`Limits::checkpoint_after`] and than the last checkpoint did (so checkpoints never
    /// take more time than the steps they cover). A state that cannot be saved leaves the
    /// previous checkpoint in place and puts the next try off until the tail has doubled. A
    /// checkpoint stopped by a limit kills the instance: the REPL is rebuilt at once.
    async fn maybe_checkpoint(&mut self, result: &mut StepResult) -> Result<(), SandboxError> {
        let limits = self.recipe.limits.clone();
        if self.journal_full
            || limits.checkpoint_after == Duration::MAX
            || self.tail_cost <= limits.checkpoint_after.max(self.checkpoint_due)
        {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = self
            .live
            .checkpoint(&limits)
            .instrument(tracing::debug_span!("checkpoint", tail = ?self.tail_cost))
            .await;
        let cost = started.elapsed();
        result.checkpoint = cost;
        match outcome {
            Ok(Ok(bytes)) if !self.charge_recovery(bytes.len() as u64) => {
                tracing::debug!(
                    bytes = bytes.len(),
                    "the memory budget has no room for a checkpoint now"
                );
                self.checkpoint_due = self.tail_cost.saturating_mul(2).max(cost);
            }
            Ok(Ok(bytes)) => {
                tracing::debug!(bytes = bytes.len(), ?cost, "checkpoint taken");
                let rng = self.live.store.data().rng_positions();
                self.checkpoint = Some(Arc::new(Checkpoint {
                    bytes,
                    at: self.journal.len(),
                    rng,
                }));
                self.tail_cost = Duration::ZERO;
                self.checkpoint_due = cost;
                result.checkpointed = true;
                if self.unsaveable {
                    // The standby stood in for checkpoints: drop it unless it is wanted anyway.
                    self.unsaveable = false;
                    if self.replay_cost <= self.recipe.limits.standby_after {
                        self.standby = None;
                    }
                }
            }
            Ok(Err(why)) => {
                tracing::debug!(%why, "the REPL's state cannot be checkpointed now");
                self.checkpoint_due = self.tail_cost.saturating_mul(2).max(cost);
                self.unsaveable = true;
                self.start_standby();
            }
            Err(stop) => {
                tracing::warn!(limit = ?stop.hit, detail = %stop.detail, "a checkpoint was stopped");
                self.checkpoint_due = self.tail_cost.saturating_mul(2).max(cost);
                let done = self.rebuild(result).await?;
                if !done.restored {
                    result.reset = true;
                    let note = "SandboxLimit: saving the REPL's state after this step hit a \
                                limit, and the REPL could not be rebuilt: earlier variables are \
                                gone, the context is loaded again.";
                    result.error = Some(match result.error.take() {
                        Some(e) => format!("{e}\n{note}"),
                        None => note.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Rebuild the REPL after its instance trapped (see [`Self::recover`]) and say so in
    /// `result`: the time it took, what was re-run and whether it came from a checkpoint.
    async fn rebuild(&mut self, result: &mut StepResult) -> Result<Recovered, SandboxError> {
        let recovering = Instant::now();
        let done = self.recover().await?;
        result.recovery = recovering.elapsed();
        self.after_recovery();
        result.replayed = done.replayed;
        result.from_checkpoint = done.from_checkpoint;
        Ok(done)
    }

    /// Rebuild the REPL after a trap: swap in the standby (replaying only what it has not
    /// caught up with yet), else restore the latest checkpoint into a fresh instance and replay
    /// the entries after it, else replay the whole journal, else start afresh.
    async fn recover(&mut self) -> Result<Recovered, SandboxError> {
        let span = tracing::info_span!("restore", entries = self.journal.len());
        async {
            if !self.journal_full {
                if let Some(standby) = self.standby.take()
                    && standby.upto == self.journal.len()
                {
                    let behind = standby.behind();
                    match standby.finish().await {
                        Ok(live) => {
                            self.swap_in(live);
                            return Ok(Recovered {
                                restored: true,
                                replayed: behind,
                                from_checkpoint: false,
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "the standby failed; restoring"),
                    }
                }
                if let Some(checkpoint) = self.checkpoint.clone() {
                    match Live::from_checkpoint(&self.recipe, &self.journal, &checkpoint).await {
                        Ok(live) => {
                            self.swap_in(live);
                            return Ok(Recovered {
                                restored: true,
                                replayed: self.journal.len().saturating_sub(checkpoint.at) as u64,
                                from_checkpoint: true,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "restoring the checkpoint failed; replaying");
                            self.checkpoint = None;
                            self.charge_recovery(0);
                            self.tail_cost = self.replay_cost;
                        }
                    }
                }
                let started = Instant::now();
                match Live::start(&self.recipe, &self.journal).await {
                    Ok(live) => {
                        self.swap_in(live);
                        self.replay_cost = started.elapsed();
                        return Ok(Recovered {
                            restored: true,
                            replayed: self.journal.len() as u64,
                            from_checkpoint: false,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "replay failed; resetting the REPL"),
                }
            }
            // Start afresh: the contexts and defined variables, not the steps.
            self.standby = None;
            self.checkpoint = None;
            let setup: Vec<JournalEntry> = self
                .journal
                .iter()
                .filter(|e| !matches!(e, JournalEntry::Step { .. }))
                .cloned()
                .collect();
            let started = Instant::now();
            let live = Live::start(&self.recipe, &setup).await?;
            self.swap_in(live);
            self.replay_cost = started.elapsed();
            self.tail_cost = Duration::ZERO;
            self.checkpoint_due = Duration::ZERO;
            let replayed = setup.len() as u64;
            self.journal = setup;
            self.journal_bytes = 0;
            self.journal_full = false;
            self.charge_recovery(0);
            Ok(Recovered {
                restored: false,
                replayed,
                from_checkpoint: false,
            })
        }
        .instrument(span)
        .await
    }

    /// Make `live` the REPL's instance; the trapped one is kept for [`Self::after_recovery`].
    /// Bytes of the latest checkpoint.
    fn checkpoint_bytes(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.bytes.len() as u64)
    }

    /// Charge the journal and a checkpoint of `checkpoint` bytes to the memory pool; false
    /// (charging what was charged) when the pool has no room for more.
    fn charge_recovery(&mut self, checkpoint: u64) -> bool {
        self.recovery_memory
            .set(self.journal_bytes.saturating_add(checkpoint))
    }

    fn swap_in(&mut self, live: Live) {
        self.retired = Some(std::mem::replace(&mut self.live, live));
    }

    /// The work a recovery leaves for after the REPL is usable again: drop the trapped instance
    /// on a blocking thread (unmapping its memory takes milliseconds; the memory goes back to
    /// the budget when it is done), and start rebuilding a standby from the journal in the
    /// background, so that the next trap is recovered by a swap too.
    fn after_recovery(&mut self) {
        if let Some(trapped) = self.retired.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(trapped))),
                Err(_) => drop(trapped),
            }
        }
        self.start_standby();
    }

    /// One more entry is in the journal (it took `cost` the first time): bring the standby
    /// along, or start one once a replay would cost more than [`Limits::standby_after`].
    fn journaled(&mut self, cost: Duration) {
        self.replay_cost = self.replay_cost.saturating_add(cost);
        self.tail_cost = self.tail_cost.saturating_add(cost);
        if let Some(standby) = self.standby.take() {
            if self.standby_affordable()
                && let Some(entry) = self.journal.last()
            {
                self.standby = standby.push(self.recipe.clone(), entry.clone());
            }
            return;
        }
        self.start_standby();
    }

    /// Start a standby from the journal when the REPL wants one and can afford it.
    fn start_standby(&mut self) {
        let wanted = self.replay_cost > self.recipe.limits.standby_after
            || (self.unsaveable && self.tail_cost > UNSAVEABLE_STANDBY_AFTER);
        if self.standby.is_none() && !self.journal_full && wanted && self.standby_affordable() {
            self.standby = Standby::start(
                self.recipe.clone(),
                self.journal.clone(),
                self.checkpoint.clone(),
            );
        }
    }

    /// A standby holds about as much memory as the REPL: keep one only while the shared budget
    /// has room for it and one more copy (what a replay after a trap needs), so it does not
    /// take memory the REPL itself needs.
    fn standby_affordable(&self) -> bool {
        self.recipe.pool.available() >= self.live.store.data().memory.held().saturating_mul(2)
    }

    /// Whether the REPL keeps a standby now (see [`Limits::standby_after`]).
    pub fn has_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// Wait until the standby, if the REPL keeps one, has replayed the whole journal: a trap then
    /// re-runs nothing. Returns whether a standby is ready. (Recovery works without calling
    /// this: it waits for whatever the standby has left.)
    pub async fn settle(&mut self) -> bool {
        let Some(standby) = self.standby.take() else {
            return false;
        };
        let upto = standby.upto;
        match standby.finish().await {
            Ok(live) => {
                self.standby = Some(Standby::ready(upto, live));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the standby failed; a trap will replay the journal");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// The RLM loop and the server move sandboxes and their steps across tokio tasks.
    #[allow(dead_code)]
    fn sandbox_and_its_futures_are_send(sb: &mut Sandbox) {
        is_send(&*sb);
        let step = sb.exec("x = 1");
        is_send(&step);
        drop(step);
        is_send(&sb.add_context(Context::text("")));
    }
}
