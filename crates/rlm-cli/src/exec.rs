//! `rlm exec`: steps of Python run one after another in one sandboxed REPL, with no model; each
//! step's result printed as a line of JSON.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use rlm_sandbox::{Context, EngineOptions, Limits, Sandbox, SandboxEngine};

use crate::Format;

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// The context document (`-` for stdin). `.json` loads as JSON, `.jsonl` as a list.
    #[arg(long)]
    context: Option<PathBuf>,
    /// How to read the context file.
    #[arg(long, value_enum, default_value = "auto")]
    context_format: Format,
    /// Files of Python code, each run as one step (`-` for stdin).
    #[arg(required = true)]
    steps: Vec<PathBuf>,
    /// Fuel per step (default: 4.2 × 10^11 units, 60 CPU-seconds at 7 × 10^9 a second; a Python
    /// loop burns about 8 × 10^9 a second, sorting 3 × 10^9).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory of the REPL in MiB before its context (a context that loads whole as a real str
    /// adds 3 times its size, up to 4 GiB in all; default 512).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Wall-clock limit per step in milliseconds (includes waiting on host calls).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Bytes of stdout and of stderr kept per step.
    #[arg(long)]
    max_output: Option<u64>,
    /// Keep contexts above this many characters lazy (served by the host) even when they fit
    /// the REPL's memory (default: no threshold; the memory rule decides).
    #[arg(long)]
    lazy_threshold: Option<u64>,
    /// Path of a guest component to run instead of the one built into rlm (`just guest` builds one).
    #[arg(long, env = "RLM_GUEST_WASM")]
    guest: Option<PathBuf>,
}

pub(crate) async fn exec(args: ExecArgs) -> Result<ExitCode> {
    let mut limits = Limits::default();
    if let Some(f) = args.fuel {
        limits.fuel_per_step = f;
    }
    if let Some(m) = args.memory_mb {
        limits.memory_bytes = m << 20;
    }
    if let Some(t) = args.timeout_ms {
        limits.step_timeout = Duration::from_millis(t);
    }
    if let Some(o) = args.max_output {
        limits.max_output_bytes = o;
    }
    if let Some(t) = args.lazy_threshold {
        limits.lazy_threshold_chars = t;
    }
    limits.validate()?;

    // Read every step first, so a missing file fails before any code runs.
    let mut steps = Vec::with_capacity(args.steps.len());
    let mut stdin_used = args.context.as_deref() == Some(std::path::Path::new("-"));
    for path in &args.steps {
        let code = if path.as_os_str() == "-" {
            anyhow::ensure!(!stdin_used, "stdin (`-`) can be used only once");
            stdin_used = true;
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading a step from stdin")?;
            s
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading step file {}", path.display()))?
        };
        steps.push(code);
    }

    let context = match &args.context {
        Some(path) => Context::load(path, args.context_format.into())?,
        None => Context::text(String::new()),
    };
    let options = EngineOptions {
        guest: args.guest,
        ..EngineOptions::default()
    };
    let engine = tokio::task::spawn_blocking(move || SandboxEngine::with_options(options))
        .await
        .context("loading the sandbox engine")??;
    let mut sandbox = Sandbox::builder(engine)
        .limits(limits)
        .context(context)
        .build()
        .await?;

    let mut out = std::io::stdout().lock();
    for code in &steps {
        let step = sandbox.exec(code).await?;
        let line = serde_json::json!({
            "stdout": step.stdout,
            "stderr": step.stderr,
            "error": step.error,
            "final": step.final_answer,
            "fuel": step.fuel,
            "ms": step.elapsed.as_secs_f64() * 1000.0,
            "restored": step.restored,
            "restore_ms": step.recovery.as_secs_f64() * 1000.0,
            "replayed": step.replayed,
            "from_checkpoint": step.from_checkpoint,
            "checkpoint_ms": step.checkpoint.as_secs_f64() * 1000.0,
            "checkpointed": step.checkpointed,
            "reset": step.reset,
            "limit": step.limit,
            "truncated": step.truncated(),
        });
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
