//! The sandbox engine of rlm: a persistent CPython REPL inside wasmtime, with fuel, memory and
//! time limits, and a typed door (the WIT in `guest/wit/sandbox.wit`) to the host.
//!
//! Model code is untrusted. Each [`Sandbox`] is one Python REPL running in its own wasmtime store:
//! no files, no network, no environment, no processes. Every step burns fuel from a per-step
//! budget, runs under a wall-clock deadline (a tokio timeout, checked whenever the guest waits on
//! the host and every [`FUEL_YIELD_INTERVAL`] units of fuel while it computes), and lives in a memory capped by the store limiter. The
//! guest reaches the world only through host imports: reads and regex searches of the
//! [`Context`] (which stays on the host, shared by every sandbox that reads it; model code's
//! `re.findall`/`re.finditer`/`re.search` over a whole context find their matches there too, and
//! CPython confirms each one: see the guest's `rlm_fastre`) and model calls,
//! which the sandbox forwards to a [`ModelHost`] that the embedding application implements (the
//! RLM loop does; the sandbox knows no LLM), and custom [`Tool`]s: named async host functions
//! that model code calls like Python functions, registered with [`SandboxBuilder::tool`]. A step
//! that hits a limit traps the instance (a trap poisons the whole wasmtime store). The sandbox
//! keeps a journal of earlier steps with their recorded model answers and tool results, so the
//! REPL can be rebuilt with its variables and no model or tool call made twice. After a step,
//! once the steps since the last checkpoint took longer than [`Limits::checkpoint_after`] (and
//! longer than that checkpoint took), the guest saves its state (a pickle of its globals, with
//! model-defined functions and classes by value and the contexts by reference). A trap is then
//! recovered by restoring the latest checkpoint into a fresh instance and replaying only the
//! steps after it: the cost follows the state, not the history. State that cannot be saved (a
//! generator, a kept traceback) falls back to replaying the whole journal. Optionally
//! ([`Limits::standby_after`]) a REPL keeps a standby, a second instance that follows each step
//! in the background and is swapped in after a trap in microseconds, at twice the CPU and
//! memory.
//!
//! A [`SandboxEngine`] compiles the guest component once, caches the compiled artifact on disk
//! (keyed by the guest's hash and the engine settings) and instantiates REPLs from it in about a
//! millisecond. Create one per process and share it.
//!
//! ```no_run
//! use rlm_sandbox::{Context, Sandbox, SandboxEngine};
//!
//! # async fn demo() -> Result<(), rlm_sandbox::SandboxError> {
//! let engine = SandboxEngine::load()?; // the guest built into this crate, compiled once and cached
//! let mut repl = Sandbox::builder(engine)
//!     .context(Context::text("The key is 42.\nNothing else."))
//!     .build()
//!     .await?;
//! let step = repl.exec("hits = search(r'key is (\\d+)')\nhits[0]['text']").await?;
//! assert_eq!(step.stdout.trim(), "'key is 42'");
//! let step = repl.exec("FINAL(hits[0]['text'].split()[-1])").await?;
//! assert_eq!(step.final_answer.as_deref(), Some("42"));
//! # Ok(()) }
//! ```

mod bindings;
mod context;
mod engine;
mod error;
mod host;
mod limits;
mod live;
pub mod memory;
mod pipe;
mod sandbox;
mod seeded;
mod standby;
mod step;

mod tools;
mod warm;

pub use context::{
    Context, ContextData, ContextFormat, ContextShape, MAP_MIN_BYTES, PathStep, SearchHit, Text,
    TextDoc,
};
pub use engine::{
    EngineOptions, FUEL_YIELD_INTERVAL, GUEST_FILE, SandboxEngine, WASMTIME_VERSION,
    default_cache_dir,
};
pub use error::SandboxError;
pub use host::ModelCall;
pub use host::{ModelHost, NoModel};
pub use limits::{DEFAULT_STEP_CPU_SECONDS, FUEL_PER_CPU_SECOND, Limits};
pub use memory::MemoryPool;
pub use sandbox::{Sandbox, SandboxBuilder, slot_name};
pub use seeded::fresh_seed;
pub use step::{JournalEntry, LimitHit, StepResult};
pub use tools::{Tool, ToolError, ToolFuture, ToolTextFuture};
