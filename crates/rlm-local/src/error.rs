//! Errors of the local backend.

use std::path::{Path, PathBuf};

/// What can go wrong with a local model.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The weights could not be fetched or verified.
    #[error("fetching the model: {0}")]
    Fetch(String),
    /// The file is not a GGUF model.
    #[error("{} is not a GGUF model file (bad magic or version)", .0.display())]
    NotGguf(PathBuf),
    /// The name is neither a known model nor a GGUF path.
    #[error(
        "unknown local model {0:?}: use local/qwen2.5-coder-0.5b, local/qwen2.5-coder-1.5b, or local/<path to a .gguf file>"
    )]
    Unknown(String),
    /// llama.cpp failed.
    #[error("llama.cpp: {0}")]
    Llama(String),
}

impl LocalError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
