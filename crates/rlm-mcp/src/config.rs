//! How the server is set up: roots, defaults, models, limits and where traces go.

use std::path::PathBuf;
use std::sync::Arc;

use rlm::RunSpec;
use rlm_sandbox::SandboxEngine;

use crate::Roots;

pub use rlm::ModelFactory;

/// How the server runs questions.
pub struct McpConfig {
    /// Directories clients may read.
    pub roots: Roots,
    /// Default run settings (model, iterations, depth, budget); requests override them.
    pub defaults: RunSpec,
    /// Why there is no default model, when there is none (requests must then name one).
    pub no_model_reason: Option<String>,
    /// Makes models.
    pub models: ModelFactory,
    /// Models a request may name besides the defaults: exact ids or `provider/*`.
    pub allowed_models: Vec<String>,
    /// The sandbox engine.
    pub engine: Arc<SandboxEngine>,
    /// The base directory of traces. Runs are traced in this server's own subdirectory for its
    /// set of roots ([`crate::trace_dir_for`]), and `list_traces`/`read_trace` see that one
    /// only: a session over other roots never sees them.
    pub trace_dir: Option<PathBuf>,
    /// Sub-model requests in flight at once per run.
    pub sub_concurrency: usize,
    /// Largest context (a file, or a directory's files together) in bytes.
    pub max_context_bytes: u64,
    /// Most files `ask_directory` reads.
    pub max_files: usize,
}
