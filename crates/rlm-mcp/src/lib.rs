//! `rlm-mcp`: a Model Context Protocol server (over stdio) that lets coding agents and editors
//! ask a Recursive Language Model about a big file, a directory of files or a pasted text, and
//! read the traces of past runs.
//!
//! Tools: `ask_file`, `ask_directory`, `ask_text` (each with the model, depth, iteration and
//! budget options of `rlm run`), `list_traces` and `read_trace`. A run sends
//! `notifications/progress` (iteration, sub-calls, tokens, cost) when the client gave a progress
//! token, and stops when the client cancels the request. Traces are private to the set of roots
//! that made them ([`trace_dir_for`]). Every path a client names must lie
//! inside one of the operator's [`Roots`]: it is opened beneath its root's handle, so `..` and
//! symlinks cannot leave it, not even swapped in while it is read; only regular files are read,
//! and no more of them than the size limit allows.
//!
//! The `rlm mcp` subcommand parses flags into an [`McpConfig`] and calls [`serve_stdio`]:
//!
//! ```no_run
//! # async fn demo(config: rlm_mcp::McpConfig) -> Result<(), rlm_mcp::McpError> {
//! rlm_mcp::serve_stdio(config).await
//! # }
//! ```

mod config;
mod error;
mod files;
mod params;
mod progress;
mod roots;
mod server;
mod traces;

pub use config::{McpConfig, ModelFactory};
pub use error::McpError;
pub use params::{AskDirectory, AskFile, AskText, ReadTrace, RunOptions};
pub use roots::Roots;
pub use server::{RlmMcp, serve_stdio};
pub use traces::{
    DEFAULT_TRACE_CHARS, MAX_LISTED_TRACES, MAX_TRACE_CHARS, prepare_trace_dir, trace_dir_for,
};
