//! Errors that stop an RLM before it runs.

use rlm_sandbox::SandboxError;

/// Errors that stop an RLM before it can run. Failures *during* a run (a model call that
/// fails after its retries, a spent budget) end the run with a [`StopReason`](crate::StopReason) instead, keeping
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
