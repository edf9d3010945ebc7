//! `rlm serve` (the web page and the OpenAI-compatible endpoint) and `rlm view` (a trace in the
//! same page).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use futures::FutureExt;
use rlm::{BudgetLimits, RunSpec};
use rlm_llm::LlmClient;
use rlm_server::runs::Retention;
use rlm_server::{ServeConfig, Server};

use crate::{BudgetFlags, ModelFlags, SubCallFlags};

/// The sample document the page offers.
const SAMPLE: &str = include_str!("../../../data/synthetic_patient_data.md");

/// `rlm serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to bind (default: localhost only).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port.
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// The page's and the API's default models (`--model`, `--sub-model`, ...).
    #[command(flatten)]
    models: ModelFlags,
    /// Default root iterations per run.
    #[arg(long, default_value_t = 20)]
    max_iterations: u32,
    /// Default recursion depth.
    #[arg(long, default_value_t = 1)]
    max_depth: u32,
    /// Default per-run budget (`--budget-seconds` defaults to 600).
    #[command(flatten)]
    budget: BudgetFlags,
    #[command(flatten)]
    sub_calls: SubCallFlags,
    /// Sandboxed REPLs alive at once, all runs together (each run also has at most 16).
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_repls: usize,
    /// Require `Authorization: Bearer KEY` on the API (the page asks for it).
    #[arg(long, env = "RLM_SERVE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body (a pasted or uploaded document) in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mb: usize,
    /// Runs executing at once; more are refused with 429.
    #[arg(long, default_value_t = 4)]
    max_runs: usize,
    /// Model requests in flight at once, all runs together.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Where runs' traces are written (and served from). Default: ~/.cache/rlm/traces.
    #[arg(long, env = "RLM_TRACE_DIR")]
    trace_dir: Option<PathBuf>,
    /// A host name the server answers to besides its address and, on loopback, `localhost`
    /// (repeat for several). Requests naming any other host are refused (DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Seconds a connection may take to send a request's headers, or stay idle between requests.
    #[arg(long, default_value_t = 20.0)]
    header_timeout_secs: f64,
    /// Seconds a request (headers and body) may take to arrive whole, from its first byte; a
    /// slower one is answered 408 and its connection closed.
    #[arg(long, default_value_t = 60.0)]
    request_timeout_secs: f64,
    /// Connections open at once. Past it, the connection idle or still sending its request the
    /// longest is closed to make room (a quarter of them may follow runs' event streams).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// A model requests may name besides `--model` and `--sub-model` (repeat for several):
    /// an exact id, or `provider/*` for every model of a hosted provider. Local models
    /// (`local/NAME` or `local/PATH.gguf`) are allowed one by one.
    #[arg(long = "allow-model", value_name = "ID")]
    allow_models: Vec<String>,
    /// Finished runs kept in memory; older ones are read back from their trace files.
    #[arg(long, default_value_t = 100)]
    keep_runs: usize,
}

/// `rlm view`.
#[derive(Args)]
pub struct ViewArgs {
    /// A trace written by `rlm run --trace` (or `rlm eval`).
    trace: PathBuf,
    /// Port (0: any free one).
    #[arg(long, default_value_t = 7860)]
    port: u16,
}

pub(crate) fn default_trace_dir() -> PathBuf {
    rlm_sandbox::default_cache_dir().join("traces")
}

/// A positive, finite number of seconds as a duration (a usage error otherwise).
fn seconds(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{flag} must be a positive number of seconds, not {s}"))
}

/// Run the server until the process is stopped.
pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let header_read_timeout = seconds(args.header_timeout_secs, "--header-timeout-secs")?;
    let request_timeout = seconds(args.request_timeout_secs, "--request-timeout-secs")?;
    for m in &args.allow_models {
        let ok = match m.strip_suffix("/*") {
            Some(p) => !p.is_empty() && p != "local" && !p.contains(['/', '*']),
            None => !m.contains('*'),
        };
        if !ok {
            anyhow::bail!(
                "--allow-model {m:?}: a wildcard is `provider/*` for a hosted provider; local models are allowed one by one (local/NAME)"
            );
        }
    }
    let (mut defaults, no_model_reason) = args.models.served_defaults();
    defaults.max_iterations = Some(args.max_iterations);
    defaults.max_depth = Some(args.max_depth);
    defaults.budget = args.budget.limits().or(BudgetLimits {
        seconds: Some(600.0),
        ..BudgetLimits::default()
    });
    defaults.sub_calls_per_step = Some(args.sub_calls.max_sub_calls_per_step);
    defaults.repl_limiter = Some(rlm::ReplLimiter::new(args.max_repls));
    // The defaults' limits are checked once, here, like a request's are.
    defaults.budget()?;
    let client = LlmClient::builder().concurrency(args.concurrency).build()?;
    let config = args.models.config();
    let local = args.models.local();
    let engine = tokio::task::spawn_blocking(crate::engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let trace_dir = args.trace_dir.clone().unwrap_or_else(default_trace_dir);
    std::fs::create_dir_all(&trace_dir)
        .with_context(|| format!("creating the trace directory {}", trace_dir.display()))?;
    let serve_config = ServeConfig {
        defaults,
        no_model_reason,
        models: crate::models::factory(client, config, local),
        engine,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_mb.max(1) << 20,
        // Four bodies of the largest size may be read at once.
        body_budget_bytes: 4 * (args.max_body_mb.max(1) << 20),
        request_timeout,
        max_runs: args.max_runs.max(1),
        trace_dir: Some(trace_dir.clone()),
        sample: Some(("synthetic_patient_data.md".into(), SAMPLE.to_string())),
        allow_hosts: args.allow_hosts.clone(),
        header_read_timeout,
        max_connections: args.max_connections.max(1),
        max_event_streams: (args.max_connections / 4).max(1),
        allowed_models: args.allow_models.clone(),
        retention: Retention {
            finished_runs: args.keep_runs,
            ..Retention::default()
        },
    };
    let server = Server::bind(serve_config, SocketAddr::new(args.host, args.port)).await?;
    let addr = server.local_addr()?;
    if !args.host.is_loopback() && args.api_key.is_none() {
        eprintln!(
            "warning: serving on {addr} without --api-key: anyone who can reach it can run models on your keys"
        );
    }
    eprintln!(
        "rlm serve: http://{addr}/ (OpenAI-compatible API at http://{addr}/v1, model \"rlm\"; traces in {})",
        trace_dir.display()
    );
    server.run().await?;
    Ok(ExitCode::SUCCESS)
}

/// Open a trace in the page.
pub async fn view(args: ViewArgs) -> Result<ExitCode> {
    let events = rlm::read_trace(&args.trace)?;
    let engine = tokio::task::spawn_blocking(crate::engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let name = args
        .trace
        .file_name()
        .map_or("trace".into(), |n| n.to_string_lossy().to_string());
    let config = ServeConfig {
        defaults: RunSpec::default(),
        no_model_reason: Some(
            "rlm view only shows traces; start `rlm serve` to run questions".into(),
        ),
        models: Arc::new(|id| {
            async move {
                Err(format!(
                    "rlm view does not run models ({id}); use rlm serve"
                ))
            }
            .boxed()
        }),
        engine,
        api_key: None,
        max_body_bytes: 1 << 20,
        body_budget_bytes: 4 << 20,
        request_timeout: Duration::from_secs(60),
        max_runs: 1,
        trace_dir: args
            .trace
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from)),
        sample: None,
        allow_hosts: Vec::new(),
        header_read_timeout: Duration::from_secs(20),
        max_connections: 1024,
        max_event_streams: 256,
        retention: Retention::default(),
        allowed_models: Vec::new(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = Server::bind(config, addr).await?;
    let id = server.state().runs.add_trace(&name, events);
    let addr = server.local_addr()?;
    println!("http://{addr}/#run={id}");
    eprintln!("rlm view: open the address above; stop with Ctrl-C");
    server.run().await?;
    Ok(ExitCode::SUCCESS)
}
