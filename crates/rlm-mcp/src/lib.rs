//! `rlm-mcp`: a Model Context Protocol server (over stdio) that lets coding agents and editors
//! ask a Recursive Language Model about a big file, a directory of files or a pasted text, and
//! read the traces of past runs.
//!
//! Tools: `ask_file`, `ask_directory`, `ask_text` (each with the model, depth, iteration and
//! budget options of `rlm run`), `list_traces` and `read_trace`. A run sends
//! `notifications/progress` (iteration, sub-calls, tokens, cost) when the client gave a progress
//! token, and stops when the client cancels the request. Every path a client names must lie
//! inside one of the operator's [`Roots`] (canonicalised, so `..` and symlinks cannot leave them).
//!
//! The `rlm mcp` subcommand parses flags into an [`McpConfig`] and calls [`serve_stdio`]:
//!
//! ```no_run
//! # async fn demo(config: rlm_mcp::McpConfig) -> Result<(), rlm_mcp::McpError> {
//! rlm_mcp::serve_stdio(config).await
//! # }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rlm::{BudgetLimits, ContextInput, Event, RunSpec, StopReason, SubCallKind, TraceWriter};
use rlm_llm::ChatModel;
use rlm_sandbox::{ContextFormat, SandboxEngine};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, Implementation, ProgressNotificationParam,
    ProgressToken, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

mod roots;

pub use roots::Roots;

/// Makes a model from its id (`provider/model`); the error is shown to the client.
pub type ModelFactory = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Arc<dyn ChatModel>, String>> + Send>>
        + Send
        + Sync,
>;

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
    /// A path leaves the roots.
    #[error(
        "{path}: refused, outside the allowed roots ({roots}); ask the operator to add a --root"
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
    #[error("{} holds more than {limit} files", path.display())]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
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
    /// A context file could not be loaded.
    #[error(transparent)]
    Context(#[from] rlm_sandbox::SandboxError),
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
    /// Where each run's trace is written (and `list_traces`/`read_trace` read).
    pub trace_dir: Option<PathBuf>,
    /// Sub-model requests in flight at once per run.
    pub sub_concurrency: usize,
    /// Largest context (a file, or a directory's files together) in bytes.
    pub max_context_bytes: u64,
    /// Most files `ask_directory` reads.
    pub max_files: usize,
}

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
    /// The trace's file name, as `list_traces` gives it (e.g. `mcp-1764470000000-1.jsonl`).
    pub name: String,
    /// Characters returned at most (default 100000); the rest is cut with a note.
    #[serde(default)]
    pub max_chars: Option<usize>,
}

/// The MCP server: one per connection.
#[derive(Clone)]
pub struct RlmMcp {
    config: Arc<McpConfig>,
    runs: Arc<AtomicU64>,
    tool_router: ToolRouter<Self>,
}

/// Serve MCP over stdin/stdout until the client disconnects.
pub async fn serve_stdio(config: McpConfig) -> Result<(), McpError> {
    let service = RlmMcp::new(config)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?;
    Ok(())
}

fn tool_error(e: impl std::fmt::Display) -> CallToolResult {
    CallToolResult::error(vec![Content::text(e.to_string())])
}

#[tool_router]
impl RlmMcp {
    /// A server over `config`.
    pub fn new(config: McpConfig) -> Self {
        Self {
            config: Arc::new(config),
            runs: Arc::new(AtomicU64::new(0)),
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Answer a question about one file with a Recursive Language Model: the model writes Python that reads, searches and splits the file in a sandbox and asks sub-models about parts, so files far larger than a context window (50 MB logs, dumps, transcripts) work. The path must lie inside the server's allowed roots. Returns the answer, then a line with the stop reason, iterations, tokens, cost, time and trace name."
    )]
    async fn ask_file(
        &self,
        Parameters(args): Parameters<AskFile>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let input = match self.load_file(&args.path).await {
            Ok(i) => i,
            Err(e) => return Ok(tool_error(e)),
        };
        Ok(self.ask(input, &args.question, args.options, ctx).await)
    }

    #[tool(
        description = "Answer a question about a directory of files (a repository, a folder of logs) with a Recursive Language Model. Every text file under the directory (recursively; hidden entries, binary files and symlinks leaving the roots skipped) becomes one document of a list, headed `==> relative/path <==`. The directory must lie inside the server's allowed roots. Returns the answer, then a line with the stop reason, iterations, tokens, cost, time and trace name."
    )]
    async fn ask_directory(
        &self,
        Parameters(args): Parameters<AskDirectory>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let input = match self.load_directory(&args.path).await {
            Ok(i) => i,
            Err(e) => return Ok(tool_error(e)),
        };
        Ok(self.ask(input, &args.question, args.options, ctx).await)
    }

    #[tool(
        description = "Answer a question about a given text with a Recursive Language Model (for text you already hold, too long to read yourself). Returns the answer, then a line with the stop reason, iterations, tokens, cost, time and trace name."
    )]
    async fn ask_text(
        &self,
        Parameters(args): Parameters<AskText>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let bytes = args.text.len() as u64;
        if bytes > self.config.max_context_bytes {
            return Ok(tool_error(McpError::TooLarge {
                what: "the text".into(),
                bytes,
                limit: self.config.max_context_bytes,
            }));
        }
        Ok(self
            .ask(
                ContextInput::Text(args.text.into()),
                &args.question,
                args.options,
                ctx,
            )
            .await)
    }

    #[tool(
        description = "List the traces of past runs (newest first) as JSON: name, bytes and modification time (Unix seconds). Read one with read_trace."
    )]
    async fn list_traces(&self) -> Result<CallToolResult, ErrorData> {
        let Some(dir) = self.config.trace_dir.clone() else {
            return Ok(tool_error(McpError::NoTraces));
        };
        let listed = tokio::task::spawn_blocking(move || list_traces(&dir))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(match listed {
            Ok(v) => CallToolResult::success(vec![Content::text(v.to_string())]),
            Err(e) => tool_error(e),
        })
    }

    #[tool(
        description = "Read one trace of a past run: JSON lines, one event each (run start, iterations, model replies, code executed with its output, sub-calls, the final answer, with tokens and cost)."
    )]
    async fn read_trace(
        &self,
        Parameters(args): Parameters<ReadTrace>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(dir) = self.config.trace_dir.clone() else {
            return Ok(tool_error(McpError::NoTraces));
        };
        let max = args.max_chars.unwrap_or(100_000);
        let read = tokio::task::spawn_blocking(move || read_trace_text(&dir, &args.name, max))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(match read {
            Ok(t) => CallToolResult::success(vec![Content::text(t)]),
            Err(e) => tool_error(e),
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for RlmMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("rlm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "rlm answers questions about files, directories and texts too large to read \
                 directly, with a Recursive Language Model that explores them in a Python \
                 sandbox. Use ask_file / ask_directory / ask_text; runs can take minutes and \
                 report progress. Past runs: list_traces, read_trace.",
            )
    }
}

impl RlmMcp {
    async fn load_file(&self, path: &str) -> Result<ContextInput, McpError> {
        let canon = self.config.roots.resolve(path)?;
        let limit = self.config.max_context_bytes;
        let given = path.to_string();
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&canon).map_err(|source| McpError::Io {
                path: canon.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(McpError::WrongKind {
                    path: given,
                    reason: "not a file (use ask_directory for a directory)".into(),
                });
            }
            if meta.len() > limit {
                return Err(McpError::TooLarge {
                    what: given,
                    bytes: meta.len(),
                    limit,
                });
            }
            // Copied, not mapped: the client may rewrite its files while a run reads them,
            // and a map would see the edit (or fault, if the file is cut short).
            Ok(ContextInput::load_copy(&canon, ContextFormat::Auto)?)
        })
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?
    }

    async fn load_directory(&self, path: &str) -> Result<ContextInput, McpError> {
        let canon = self.config.roots.resolve(path)?;
        if !canon.is_dir() {
            return Err(McpError::WrongKind {
                path: path.to_string(),
                reason: "not a directory (use ask_file for a file)".into(),
            });
        }
        let roots = self.config.roots.clone();
        let (limit, max_files) = (self.config.max_context_bytes, self.config.max_files);
        tokio::task::spawn_blocking(move || {
            let docs = read_directory(&canon, &roots, limit, max_files)?;
            Ok(ContextInput::Documents(docs))
        })
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?
    }

    /// The run's settings: the request's options over the server's defaults, its models checked.
    fn spec(&self, o: RunOptions) -> Result<RunSpec, McpError> {
        let d = &self.config.defaults;
        for id in [&o.model, &o.sub_model].into_iter().flatten() {
            let id = id.trim();
            if !id.is_empty() && !self.model_allowed(id) {
                return Err(McpError::Model {
                    id: id.to_string(),
                    reason: format!(
                        "not allowed by this server (its models: {}; the operator may add more with --allow-model)",
                        self.allowed_list()
                    ),
                });
            }
        }
        let spec = RunSpec {
            model: o.model,
            sub_model: o.sub_model,
            max_iterations: o.max_iterations,
            max_depth: o.max_depth,
            budget: BudgetLimits {
                usd: o.budget_usd,
                tokens: o.budget_tokens,
                sub_calls: o.budget_sub_calls,
                seconds: o.budget_seconds,
            },
            ..RunSpec::default()
        }
        .or(d);
        if spec.model.is_none()
            && let Some(reason) = &self.config.no_model_reason
        {
            return Err(McpError::Model {
                id: "(default)".into(),
                reason: reason.clone(),
            });
        }
        spec.budget()?;
        Ok(spec)
    }

    fn model_allowed(&self, id: &str) -> bool {
        self.config
            .defaults
            .allows_model(id, &self.config.allowed_models)
    }

    fn allowed_list(&self) -> String {
        let d = &self.config.defaults;
        let mut v: Vec<&str> = [d.model.as_deref(), d.sub_model.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        v.extend(self.config.allowed_models.iter().map(String::as_str));
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    async fn make(&self, id: &str) -> Result<Arc<dyn ChatModel>, McpError> {
        (self.config.models)(id.to_string())
            .await
            .map_err(|reason| McpError::Model {
                id: id.to_string(),
                reason,
            })
    }

    /// Run a question; setup failures and run errors come back as tool errors.
    async fn ask(
        &self,
        input: ContextInput,
        question: &str,
        options: RunOptions,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        match self.ask_inner(input, question, options, ctx).await {
            Ok(r) => r,
            Err(e) => tool_error(e),
        }
    }

    async fn ask_inner(
        &self,
        input: ContextInput,
        question: &str,
        options: RunOptions,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let spec = self.spec(options)?;
        let (root_id, sub_id) = spec.models()?;
        let root = self.make(&root_id).await?;
        let sub = if sub_id == root_id {
            root.clone()
        } else {
            self.make(&sub_id).await?
        };
        let progress = Progress::start(ctx.meta.get_progress_token(), ctx.peer.clone());
        let mut builder = spec
            .builder(root, sub)?
            .engine(self.config.engine.clone())
            .sub_concurrency(self.config.sub_concurrency.max(1))
            .on_event(progress.sink.clone());
        let mut trace_name = None;
        if let Some(dir) = &self.config.trace_dir {
            let name = format!(
                "mcp-{}-{}.jsonl",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                self.runs.fetch_add(1, Ordering::Relaxed) + 1
            );
            let path = dir.join(&name);
            let writer = TraceWriter::create(&path).map_err(|source| McpError::Io {
                path: path.clone(),
                source,
            })?;
            builder = builder.on_event(writer);
            trace_name = Some(name);
        }
        let rlm = builder.build()?;
        let outcome = tokio::select! {
            r = rlm.run(input, question) => Some(r),
            () = ctx.ct.cancelled() => None,
        };
        drop(rlm);
        progress.finish().await;
        let Some(result) = outcome else {
            return Ok(tool_error("the run was cancelled"));
        };
        let result = result?;
        let u = &result.usage.total;
        let stop = match &result.stop {
            StopReason::Final => "answered".to_string(),
            StopReason::MaxIterations => "iterations used up (best answer given)".to_string(),
            StopReason::Budget { reason, .. } => format!("stopped: {reason}"),
            StopReason::Error { message } => format!("error: {message}"),
        };
        let mut stats = format!(
            "[rlm: {stop} · {} iterations · {} tokens · ${:.4}{} · {:.1} s",
            result.iterations,
            u.usage.total(),
            u.cost_usd,
            if u.unpriced_calls > 0 {
                format!(" (+{} unpriced calls)", u.unpriced_calls)
            } else {
                String::new()
            },
            result.elapsed.as_secs_f64()
        );
        if let Some(name) = &trace_name {
            stats.push_str(&format!(" · trace {name}"));
        }
        stats.push(']');
        let answer = result
            .answer
            .clone()
            .unwrap_or_else(|| "(no answer)".into());
        let content = vec![Content::text(answer), Content::text(stats)];
        Ok(match result.stop {
            StopReason::Error { .. } => CallToolResult::error(content),
            _ => CallToolResult::success(content),
        })
    }
}

/// What a run's progress notifications report.
#[derive(Default)]
struct Tally {
    iterations: u32,
    sub_calls: u64,
    tokens: u64,
    cost_usd: f64,
}

impl Tally {
    /// Count `event`; whether it is worth a notification.
    fn add(&mut self, event: &Event) -> bool {
        match event {
            Event::Iteration { node, .. } => {
                if node.depth == 0 {
                    self.iterations += 1;
                }
                true
            }
            Event::ModelReply {
                usage, cost_usd, ..
            } => {
                self.tokens += usage.total();
                self.cost_usd += cost_usd.unwrap_or(0.0);
                false
            }
            Event::SubCallFinished {
                kind,
                usage,
                cost_usd,
                deduped,
                ..
            } => {
                self.sub_calls += 1;
                // A child RLM's own replies are counted as they come.
                if *kind == SubCallKind::LlmQuery && !deduped {
                    self.tokens += usage.total();
                    self.cost_usd += cost_usd.unwrap_or(0.0);
                }
                true
            }
            _ => false,
        }
    }

    fn message(&self) -> String {
        format!(
            "iteration {} · {} sub-calls · {} tokens · ${:.4}",
            self.iterations, self.sub_calls, self.tokens, self.cost_usd
        )
    }
}

/// Forwards a run's events to the client as progress notifications.
struct Progress {
    sink: Arc<dyn rlm::EventSink>,
    sender: Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(token: Option<ProgressToken>, peer: Peer<RoleServer>) -> Self {
        let Some(token) = token else {
            return Self {
                sink: Arc::new(|_: &Event| {}),
                sender: Arc::default(),
                task: None,
            };
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let sender = Arc::new(Mutex::new(Some(tx)));
        let s = sender.clone();
        let sink: Arc<dyn rlm::EventSink> = Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::Iteration { .. } | Event::ModelReply { .. } | Event::SubCallFinished { .. }
            ) && let Some(tx) = s.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            {
                let _ = tx.send(e.clone());
            }
        });
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut sent = 0u32;
            while let Some(e) = rx.recv().await {
                if tally.add(&e) {
                    sent += 1;
                    let param = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                        .with_message(tally.message());
                    if peer.notify_progress(param).await.is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            sink,
            sender,
            task: Some(task),
        }
    }

    /// Stop taking events and wait until those taken are sent (before the tool's result).
    async fn finish(mut self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The text files under `dir` as documents, each headed `==> relative/path <==`.
fn read_directory(
    dir: &Path,
    roots: &Roots,
    limit: u64,
    max_files: usize,
) -> Result<Vec<String>, McpError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| McpError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| McpError::Io {
                path: d.clone(),
                source,
            })?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.push(path);
            } else if kind.is_symlink() {
                // Followed only to files that stay inside the roots.
                if let Ok(target) = path.canonicalize()
                    && roots.contains(&target)
                    && target.is_file()
                {
                    files.push(path);
                }
            }
            if files.len() > max_files {
                return Err(McpError::TooManyFiles {
                    path: dir.to_path_buf(),
                    limit: max_files,
                });
            }
        }
    }
    files.sort();
    let mut total = 0u64;
    let mut docs = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(&f).map_err(|source| McpError::Io {
            path: f.clone(),
            source,
        })?;
        total += bytes.len() as u64;
        if total > limit {
            return Err(McpError::TooLarge {
                what: dir.display().to_string(),
                bytes: total,
                limit,
            });
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // binary
        };
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        docs.push(format!("==> {} <==\n{text}", rel.display()));
    }
    Ok(docs)
}

fn list_traces(dir: &Path) -> Result<serde_json::Value, McpError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::json!([])),
        Err(source) => {
            return Err(McpError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut traces: Vec<(u64, String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let meta = e.metadata().ok()?;
            (name.ends_with(".jsonl") && meta.is_file()).then(|| {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                (modified, name, meta.len())
            })
        })
        .collect();
    traces.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    Ok(serde_json::Value::Array(
        traces
            .into_iter()
            .map(|(modified, name, bytes)| {
                serde_json::json!({"name": name, "bytes": bytes, "modified": modified})
            })
            .collect(),
    ))
}

fn read_trace_text(dir: &Path, name: &str, max_chars: usize) -> Result<String, McpError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".jsonl")
        && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(McpError::BadTraceName(name.to_string()));
    }
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| McpError::Io {
        path: PathBuf::from(name),
        source,
    })?;
    Ok(match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!(
            "{}\n[... cut at {max_chars} of {} characters]",
            &text[..cut],
            text.chars().count()
        ),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_become_documents_and_traces_are_named_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/.git")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::write(root.join("src/.git/x"), "hidden").unwrap();
        std::fs::write(root.join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(root.join("c.txt"), "see").unwrap();
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let docs = read_directory(&root, &roots, 1 << 20, 100).unwrap();
        assert_eq!(docs, ["==> c.txt <==\nsee", "==> src/a.rs <==\nfn a() {}"]);
        assert!(matches!(
            read_directory(&root, &roots, 4, 100),
            Err(McpError::TooLarge { .. })
        ));
        assert!(matches!(
            read_directory(&root, &roots, 1 << 20, 1),
            Err(McpError::TooManyFiles { .. })
        ));

        std::fs::write(root.join("t.jsonl"), "{\"a\":1}\n").unwrap();
        assert_eq!(list_traces(&root).unwrap()[0]["name"], "t.jsonl");
        assert_eq!(
            read_trace_text(&root, "t.jsonl", 3).unwrap().lines().next(),
            Some("{\"a")
        );
        for bad in ["../t.jsonl", "c.txt", "/etc/passwd.jsonl", ".jsonl"] {
            assert!(matches!(
                read_trace_text(&root, bad, 10),
                Err(McpError::BadTraceName(_))
            ));
        }
    }

    #[test]
    fn progress_counts_iterations_sub_calls_tokens_and_cost() {
        let node = rlm::Node {
            rlm: "r".into(),
            depth: 0,
        };
        let mut t = Tally::default();
        assert!(t.add(&Event::Iteration {
            node: node.clone(),
            n: 1
        }));
        let usage = rlm_llm::Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        };
        assert!(!t.add(&Event::ModelReply {
            node: node.clone(),
            iteration: 1,
            text: String::new(),
            model: "m".into(),
            request_hash: String::new(),
            usage,
            cost_usd: Some(0.5),
            ms: 1.0,
        }));
        assert_eq!(
            t.message(),
            "iteration 1 · 0 sub-calls · 15 tokens · $0.5000"
        );
    }
}
