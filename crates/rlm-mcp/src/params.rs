//! The tools' arguments, as clients send them (their JSON schemas are what clients see).

use schemars::JsonSchema;
use serde::Deserialize;

/// The model, depth, iteration and budget options of a run (all optional; the server's
/// flags give the defaults).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct RunOptions {
    /// Root model as `provider/model` (default: the server's --model). Only the server's models
    /// and those it allows with --allow-model are accepted.
    #[serde(default)]
    pub model: Option<String>,
    /// Model for sub-calls (default: the server's --sub-model, else the root model).
    #[serde(default)]
    pub sub_model: Option<String>,
    /// Recursion depth: 0 no sub-calls, 1 plain sub-calls (default), 2+ recursive sub-RLMs.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Root-model replies before it must answer (default 20).
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// Stop when the run has cost this many US dollars.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Stop after this many tokens (all calls together).
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    /// Stop after this many sub-calls.
    #[serde(default)]
    pub budget_sub_calls: Option<u64>,
    /// Stop after this many seconds.
    #[serde(default)]
    pub budget_seconds: Option<f64>,
}

/// `ask_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskFile {
    /// The file: absolute, or relative to an allowed root. `.json` loads as JSON, `.jsonl` as a
    /// list of records, anything else as text.
    pub path: String,
    /// The question to answer about the file.
    pub question: String,
    /// Run options.
    #[serde(flatten)]
    pub options: RunOptions,
}

/// `ask_directory`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskDirectory {
    /// The directory: absolute, or relative to an allowed root. Its text files (recursively,
    /// hidden entries skipped) become a list of documents, each starting with `==> PATH <==`.
    pub path: String,
    /// The question to answer about the files.
    pub question: String,
    /// Run options.
    #[serde(flatten)]
    pub options: RunOptions,
}

/// `ask_text`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AskText {
    /// The text (a document, a log, a transcript).
    pub text: String,
    /// The question to answer about the text.
    pub question: String,
    /// Run options.
    #[serde(flatten)]
    pub options: RunOptions,
}

/// `read_trace`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadTrace {
    /// The trace's file name, as `list_traces` gives it (e.g. `mcp-1764470000000-4242-1.jsonl`).
    pub name: String,
    /// Characters returned at most (default 100000, at most 1000000); the rest is cut with a
    /// note.
    #[serde(default)]
    pub max_chars: Option<usize>,
}
