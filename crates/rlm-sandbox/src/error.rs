//! Errors of the sandbox engine.

use std::path::PathBuf;

/// What can go wrong when setting up or driving a sandbox.
///
/// Errors of *model code* (exceptions, limits hit by a step) are not `SandboxError`s: they come
/// back inside a [`StepResult`](crate::StepResult), and the sandbox stays usable.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The guest component file named by `RLM_GUEST_WASM` or [`crate::EngineOptions::guest`]
    /// does not exist.
    #[error(
        "the sandbox guest component {} does not exist. Point RLM_GUEST_WASM (or --guest) at an \
         rlm_guest.wasm (`just guest` builds one in target/guest/), or unset it to use the guest \
         built into rlm",
        .path.display()
    )]
    GuestMissing {
        /// The path given.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Compiling, loading or instantiating the guest failed.
    #[error("wasmtime: {context}: {message}")]
    Wasm {
        /// What was being done.
        context: &'static str,
        /// wasmtime's message.
        message: String,
    },
    /// The guest refused to start (its `init` or `attach-context` failed).
    #[error("the sandbox guest failed to start: {0}")]
    GuestInit(String),
    /// A context file could not be parsed.
    #[error("context {}: {message}", .path.display())]
    BadContext {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A limit is unusable.
    #[error("invalid sandbox limits: {0}")]
    InvalidLimits(String),
    /// The shared memory budget has no room for another REPL.
    #[error(
        "the sandboxes' shared memory budget is used up ({available} of {total} bytes free): \
         wait for running REPLs to finish, or raise the budget (RLM_MEMORY_BUDGET_MB)"
    )]
    MemoryBudget {
        /// The budget.
        total: u64,
        /// What was free when the REPL could not start.
        available: u64,
    },
    /// A custom tool cannot be registered (its name or schema, or two with one name).
    #[error(transparent)]
    Tool(#[from] crate::tools::ToolError),
    /// More context slots than the sandbox can address.
    #[error("too many contexts: a sandbox holds at most {0}")]
    TooManyContexts(usize),
}

impl SandboxError {
    pub(crate) fn wasm(context: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Wasm {
            context,
            message: format!("{err:#}"),
        }
    }
}
