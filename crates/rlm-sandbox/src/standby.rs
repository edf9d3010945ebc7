//! The optional standby of a REPL ([`crate::Limits::standby_after`]): a second instance that
//! follows the journal in the background and is swapped in after a trap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::Instrument;

use crate::error::SandboxError;
use crate::live::{Checkpoint, Live, Recipe};
use crate::step::JournalEntry;

/// A second instance that follows the journal in the background: each journaled entry is
/// replayed into it (model answers from the journal) on a tokio task, off the step's path, so
/// that after a trap the REPL is restored by swapping it in rather than by replaying the whole
/// history. At most one per REPL; its memory is charged to the REPL's memory budget.
///
/// Why not a snapshot of the guest restored in one copy: wasmtime 48 gives no way to take one
/// without instrumenting all guest code. A trap poisons the whole store (`trapped` in
/// `component/store.rs`, checked by `may_enter` before every call), so the state must go into a
/// fresh store. A component instance exposes none of its core memories, globals or tables
/// (`component::Instance` has functions, modules, resources and exports only); the core handles
/// come only from `Store::debug_all_instances` and `Instance::debug_memory`/`debug_global`,
/// which return nothing unless `Config::guest_debug` compiles the guest with state-tracking
/// instrumentation and explicit bounds checks. A host-owned memory (`Config::with_host_memory`)
/// cannot take the copy-on-write image (an on-demand memory with an image must be an mmap
/// wasmtime made, `vm/memory.rs`), so every new REPL would copy the 16 MiB image eagerly (about
/// 11 ms instead of 1), and it still reaches neither the guest's 493 mutable globals (the
/// dynamically linked CPython's stack pointer and GOT entries, the WASI adapter's state) nor the
/// component's resource handle tables, which must match the WASI handles (stdout and stderr
/// streams) that wasi-libc keeps in linear memory.
pub(crate) struct Standby {
    /// Journal entries it will have applied once its work is done.
    pub(crate) upto: usize,
    /// Journal entries it has applied so far.
    pub(crate) done: Arc<AtomicUsize>,
    pub(crate) state: StandbyState,
}

pub(crate) enum StandbyState {
    /// Caught up: nothing left to replay.
    Ready(Box<Live>),
    /// Replaying on a tokio task.
    Running(AbortOnDrop),
}

/// A standby's task, stopped when the standby is dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<Result<Live, SandboxError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AbortOnDrop {
    pub(crate) async fn join(mut self) -> Result<Live, SandboxError> {
        match (&mut self.0).await {
            Ok(live) => live,
            Err(e) => Err(SandboxError::GuestInit(format!(
                "the standby REPL stopped: {e}"
            ))),
        }
    }
}

impl Standby {
    /// A fresh instance brought to `journal`'s state in the background, from `checkpoint` when
    /// there is one (`None` outside a tokio runtime).
    pub(crate) fn start(
        recipe: Recipe,
        journal: Vec<JournalEntry>,
        checkpoint: Option<Arc<Checkpoint>>,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let done = Arc::new(AtomicUsize::new(0));
        let upto = journal.len();
        let counter = done.clone();
        let task = runtime.spawn(
            async move {
                if let Some(checkpoint) = checkpoint
                    && let Ok(live) = Live::from_checkpoint(&recipe, &journal, &checkpoint).await
                {
                    counter.store(journal.len(), Ordering::Relaxed);
                    return Ok(live);
                }
                let mut live = Live::new(&recipe).await?;
                for entry in &journal {
                    live.apply(&recipe, entry).await?;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(live)
            }
            .instrument(tracing::debug_span!("standby", entries = upto)),
        );
        Some(Self {
            upto,
            done,
            state: StandbyState::Running(AbortOnDrop(task)),
        })
    }

    /// A standby that has applied `upto` entries and has nothing left to do.
    pub(crate) fn ready(upto: usize, live: Live) -> Self {
        Self {
            upto,
            done: Arc::new(AtomicUsize::new(upto)),
            state: StandbyState::Ready(Box::new(live)),
        }
    }

    /// Queue one more journal entry (`None` outside a tokio runtime).
    pub(crate) fn push(self, recipe: Recipe, entry: JournalEntry) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let Self { upto, done, state } = self;
        let counter = done.clone();
        let task = runtime.spawn(
            async move {
                let mut live = match state {
                    StandbyState::Ready(live) => *live,
                    StandbyState::Running(task) => task.join().await?,
                };
                live.apply(&recipe, &entry).await?;
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(live)
            }
            .instrument(tracing::debug_span!("standby_step")),
        );
        Some(Self {
            upto: upto + 1,
            done,
            state: StandbyState::Running(AbortOnDrop(task)),
        })
    }

    /// Entries it has yet to apply.
    pub(crate) fn behind(&self) -> u64 {
        self.upto.saturating_sub(self.done.load(Ordering::Relaxed)) as u64
    }

    /// Wait for its work and take the instance.
    pub(crate) async fn finish(self) -> Result<Live, SandboxError> {
        match self.state {
            StandbyState::Ready(live) => Ok(*live),
            StandbyState::Running(task) => task.join().await,
        }
    }
}
