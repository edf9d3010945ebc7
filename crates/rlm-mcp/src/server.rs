//! The MCP server: its tools, and serving them over stdio.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rlm::ContextInput;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};

use crate::files::{load_directory, load_file};
use crate::traces::{DEFAULT_TRACE_CHARS, TraceStore};
use crate::{AskDirectory, AskFile, AskText, McpConfig, McpError, ReadTrace};

mod ask;

/// The MCP server: one per connection.
#[derive(Clone)]
pub struct RlmMcp {
    config: Arc<McpConfig>,
    /// This server's traces (its roots' own directory), when it keeps any.
    traces: Option<Arc<TraceStore>>,
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
        let traces = config
            .trace_dir
            .as_deref()
            .map(|base| Arc::new(TraceStore::new(base, &config.roots)));
        Self {
            config: Arc::new(config),
            traces,
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
        let input = match load_file(
            &self.config.roots,
            &args.path,
            self.config.max_context_bytes,
        )
        .await
        {
            Ok(i) => i,
            Err(e) => return Ok(tool_error(e)),
        };
        Ok(self.ask(input, &args.question, args.options, ctx).await)
    }

    #[tool(
        description = "Answer a question about a directory of files (a repository, a folder of logs) with a Recursive Language Model. Every text file under the directory (recursively; hidden entries, binary files, FIFOs, devices and symlinks leaving the root skipped) becomes one document of a list, headed `==> relative/path <==`. The directory must lie inside the server's allowed roots. Returns the answer, then a line with the stop reason, iterations, tokens, cost, time and trace name."
    )]
    async fn ask_directory(
        &self,
        Parameters(args): Parameters<AskDirectory>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let input = match load_directory(
            &self.config.roots,
            &args.path,
            self.config.max_context_bytes,
            self.config.max_files,
        )
        .await
        {
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
        description = "List the traces of this server's past runs (those made over the same allowed roots; the newest 1000, newest first) as JSON: name, bytes and modification time (Unix seconds). Read one with read_trace."
    )]
    async fn list_traces(&self) -> Result<CallToolResult, ErrorData> {
        let Some(store) = self.traces.clone() else {
            return Ok(tool_error(McpError::NoTraces));
        };
        let listed = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(match listed {
            Ok(v) => CallToolResult::success(vec![Content::text(v.to_string())]),
            Err(e) => tool_error(e),
        })
    }

    #[tool(
        description = "Read one trace of this server's past runs, by the name list_traces gives: JSON lines, one event each (run start, iterations, model replies, code executed with its output, sub-calls, the final answer, with tokens and cost). At most max_chars characters (default 100000, at most 1000000) come back; the rest is cut with a note."
    )]
    async fn read_trace(
        &self,
        Parameters(args): Parameters<ReadTrace>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(store) = self.traces.clone() else {
            return Ok(tool_error(McpError::NoTraces));
        };
        let max = args.max_chars.unwrap_or(DEFAULT_TRACE_CHARS);
        let read = tokio::task::spawn_blocking(move || store.read(&args.name, max))
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
