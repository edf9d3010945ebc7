//! `rlm mcp`: the MCP server over stdio (argument parsing only; the server is `rlm-mcp`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use rlm_llm::LlmClient;
use rlm_mcp::{McpConfig, Roots};

use crate::{BudgetFlags, ModelFlags, SubCallFlags};

/// `rlm mcp`.
#[derive(Args)]
pub struct McpArgs {
    /// A directory clients may read (repeat for several). Every path is opened beneath it, so
    /// `..` and symlinks cannot leave it; anything outside every root is refused.
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// The default models (`--model`, `--sub-model`, ...); a request may name another.
    #[command(flatten)]
    models: ModelFlags,
    /// A model requests may name besides `--model` and `--sub-model` (repeat for several):
    /// an exact id, or `provider/*` for every model of a hosted provider.
    #[arg(long = "allow-model", value_name = "ID")]
    allow_models: Vec<String>,
    /// Default root iterations per run.
    #[arg(long, default_value_t = 20)]
    max_iterations: u32,
    /// Default recursion depth.
    #[arg(long, default_value_t = 1)]
    max_depth: u32,
    /// Default per-run budget.
    #[command(flatten)]
    budget: BudgetFlags,
    #[command(flatten)]
    sub_calls: SubCallFlags,
    /// Sandboxed REPLs alive at once, all runs together (each run also has at most 16).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_repls: usize,
    /// Model requests in flight at once, all runs together.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Base directory of the traces. Each set of roots gets its own owner-only subdirectory
    /// (`roots-<hash>`), the only one `list_traces`/`read_trace` see. Default:
    /// ~/.cache/rlm/mcp-traces (never `rlm serve`'s directory).
    #[arg(long, env = "RLM_MCP_TRACE_DIR")]
    trace_dir: Option<PathBuf>,
    /// Largest context a request may read (a file, or a directory's files together), in MiB.
    #[arg(long, default_value_t = 256)]
    max_context_mb: u64,
    /// Most files `ask_directory` reads.
    #[arg(long, default_value_t = 10_000)]
    max_files: usize,
}

/// Where `rlm mcp` keeps traces by default: apart from `rlm serve`'s, which serves every trace
/// in its directory to its own clients.
pub(crate) fn default_trace_dir() -> PathBuf {
    rlm_sandbox::default_cache_dir().join("mcp-traces")
}

/// Serve MCP on stdin/stdout until the client disconnects. Nothing but protocol goes to stdout.
pub async fn mcp(args: McpArgs) -> Result<ExitCode> {
    let roots = Roots::new(&args.roots)?;
    if roots.dirs().is_empty() {
        eprintln!("rlm mcp: no --root given, so only ask_text and the trace tools can be used");
    }
    let (mut defaults, no_model_reason) = args.models.served_defaults();
    defaults.max_iterations = Some(args.max_iterations);
    defaults.max_depth = Some(args.max_depth);
    defaults.budget = args.budget.limits();
    defaults.sub_calls_per_step = Some(args.sub_calls.max_sub_calls_per_step);
    defaults.repl_limiter = Some(rlm::ReplLimiter::new(args.max_repls));
    defaults.budget()?;
    let client = LlmClient::builder().concurrency(args.concurrency).build()?;
    let engine = tokio::task::spawn_blocking(crate::engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let trace_base = args.trace_dir.clone().unwrap_or_else(default_trace_dir);
    let trace_dir =
        rlm_mcp::prepare_trace_dir(&trace_base, &roots).context("creating the trace directory")?;
    let config = McpConfig {
        roots,
        defaults,
        no_model_reason,
        models: crate::models::factory(client, args.models.config(), args.models.local()),
        allowed_models: args.allow_models.clone(),
        engine,
        trace_dir: Some(trace_base),
        sub_concurrency: args.concurrency,
        max_context_bytes: args.max_context_mb.max(1) << 20,
        max_files: args.max_files.max(1),
    };
    eprintln!(
        "rlm mcp: serving MCP on stdio (roots: {}; traces in {})",
        config
            .roots
            .dirs()
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        trace_dir.display()
    );
    rlm_mcp::serve_stdio(config).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rlm serve` serves every trace in its directory; MCP traces hold what a client read under
    /// its roots, so by default they live elsewhere (neither directory inside the other).
    #[test]
    fn mcp_and_serve_keep_traces_apart_by_default() {
        let (mcp, serve) = (default_trace_dir(), crate::serve::default_trace_dir());
        assert!(
            !mcp.starts_with(&serve) && !serve.starts_with(&mcp),
            "{mcp:?} {serve:?}"
        );
    }
}
