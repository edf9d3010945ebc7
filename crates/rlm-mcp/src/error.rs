//! Why a request (or the server) failed.

use std::path::PathBuf;

/// Why a request (or the server) failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A `--root` is unusable.
    #[error("--root {}: {reason}", root.display())]
    BadRoot {
        /// The root as given.
        root: PathBuf,
        /// Why.
        reason: String,
    },
    /// No roots were given, so no path may be read.
    #[error("no --root directories were given to `rlm mcp`, so no file may be read")]
    NoRoots,
    /// A path leaves the roots (or its open inside them was refused).
    #[error(
        "{path}: refused, outside the allowed roots ({roots}) or not readable; ask the operator to add a --root"
    )]
    OutsideRoots {
        /// The path as given.
        path: String,
        /// The roots, comma-separated.
        roots: String,
    },
    /// A path inside the roots does not exist.
    #[error("{path}: {reason}")]
    NotFound {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reading a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The context is larger than the server allows.
    #[error("{what} is {bytes} bytes, more than the {limit} bytes this server reads")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A directory holds more files than the server reads.
    #[error("{} holds more than {limit} files (or directories)", path.display())]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A context file is not what its name says (JSON, JSON Lines).
    #[error("{path}: {message}")]
    BadContext {
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A path is of the wrong kind (a file where a directory is wanted, or the reverse).
    #[error("{path}: {reason}")]
    WrongKind {
        /// The path as given.
        path: String,
        /// What was expected.
        reason: String,
    },
    /// A model is not allowed or cannot be made.
    #[error("model {id}: {reason}")]
    Model {
        /// The model id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The run's setup (models, budget) is unusable.
    #[error(transparent)]
    Setup(#[from] rlm::SetupError),
    /// The run could not start.
    #[error(transparent)]
    Rlm(#[from] rlm::RlmError),
    /// A trace name is not a plain `*.jsonl` file name.
    #[error("{0:?}: a trace name is a file name ending in .jsonl, as list_traces gives it")]
    BadTraceName(String),
    /// The server was started without a trace directory.
    #[error("this server keeps no traces (no trace directory)")]
    NoTraces,
    /// The MCP transport failed.
    #[error("MCP transport: {0}")]
    Transport(String),
}
