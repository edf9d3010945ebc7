//! Instances made ahead of time: instantiated and initialised in the background, so that a new
//! REPL (a new sandbox, a child RLM's, a rebuild after a trap) starts by taking one and
//! attaching its contexts instead of paying for both (about 1.5 ms on the reference machine).
//!
//! An instance can serve any REPL whose guest `init` would get the same options (the output
//! cap, the lazy-piece size and the read chunk; no custom tools) and whose memory is charged to
//! the engine's own budget. Taking one hands it the REPL's limits, model host, contexts, memory
//! cap and seed (the random streams go on from where the instance's are, under the new seed,
//! exactly as for an instance made for that REPL: the guest seeds `random` at its first step).
//! Ready instances hold memory (about 10 MiB each) charged to the engine's budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::engine::SandboxEngine;
use crate::limits::Limits;
use crate::live::{Live, MemoryPlan, Recipe};

/// How long a refill waits before it makes instances.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// What the guest's `init` is given: instances made for one key serve REPLs with that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InitKey {
    piece_chars: u64,
    max_output_bytes: u64,
    read_chunk_chars: u64,
}

impl InitKey {
    pub(crate) fn of(limits: &Limits) -> Self {
        Self {
            piece_chars: limits.piece_chars(),
            max_output_bytes: limits.max_output_bytes,
            read_chunk_chars: limits.read_chunk_chars,
        }
    }
}

/// The engine's ready instances.
pub(crate) struct WarmPool {
    ready: Mutex<Vec<(InitKey, Live)>>,
    /// How many to keep ready (0: none, every REPL instantiates its own).
    target: usize,
    /// A refill task is running.
    filling: AtomicBool,
}

impl WarmPool {
    pub(crate) fn new(target: usize) -> Self {
        Self {
            ready: Mutex::new(Vec::new()),
            target,
            filling: AtomicBool::new(false),
        }
    }

    fn ready(&self) -> MutexGuard<'_, Vec<(InitKey, Live)>> {
        // A panic while the list was held leaves it a valid list.
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Instances ready now.
    pub(crate) fn len(&self) -> usize {
        self.ready().len()
    }

    /// A ready instance made for `key`, if there is one.
    pub(crate) fn take(&self, key: &InitKey) -> Option<Live> {
        let mut ready = self.ready();
        let i = ready.iter().position(|(k, _)| k == key)?;
        Some(ready.swap_remove(i).1)
    }

    /// Make instances for `key` in the background until `target` are ready (instances made for
    /// another key are dropped first: a process mostly makes one kind). Does nothing outside a
    /// tokio runtime or while a refill runs.
    pub(crate) fn refill(engine: &Arc<SandboxEngine>, key: InitKey, limits: Arc<Limits>) {
        let pool = &engine.warm;
        let full = || pool.ready().iter().filter(|(k, _)| *k == key).count() >= pool.target;
        if pool.target == 0 || full() || pool.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            pool.filling.store(false, Ordering::Release);
            return;
        };
        let engine = engine.clone();
        runtime.spawn(async move {
            // Let the REPL that just took an instance run its first steps first: making one
            // maps memory and faults pages in, which slows the same process's other threads.
            tokio::time::sleep(REFILL_DELAY).await;
            let pool = &engine.warm;
            let stale: Vec<_> = {
                let mut ready = pool.ready();
                let (keep, stale) = std::mem::take(&mut *ready)
                    .into_iter()
                    .partition(|(k, _)| *k == key);
                *ready = keep;
                stale
            };
            drop(stale);
            let recipe = Recipe {
                engine: engine.clone(),
                limits,
                model: Arc::new(crate::host::NoModel),
                contexts: Vec::new(),
                seed: [0; 32],
                memory: MemoryPlan::default(),
                pool: engine.memory_pool().clone(),
                tools: Arc::new([]),
            };
            while pool.len() < pool.target {
                match Live::instantiate(&recipe).await {
                    Ok(mut live) => {
                        // First-time work (bytecode specialisation, first writes to memory
                        // pages) costs a new REPL about 0.3 ms on its first call and 0.6 ms on
                        // its first step, and a first checkpoint several times a later one:
                        // pay both here, off the REPL's path. The checkpoint is not kept.
                        if let Err(e) = live.warm_up(&recipe.limits).await {
                            tracing::warn!(error = %e, "a warm instance failed its warm-up");
                            break;
                        }
                        if let Ok(Ok(_)) = live.checkpoint(&recipe.limits).await {
                            pool.ready().push((key, live));
                        }
                    }
                    Err(e) => {
                        // Out of memory budget, most likely: REPLs instantiate their own.
                        tracing::debug!(error = %e, "no warm instance made");
                        break;
                    }
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }
}
