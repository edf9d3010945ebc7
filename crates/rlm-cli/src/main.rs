//! `rlm`: the command-line front end of the rlm engine. It parses arguments and displays
//! results; all logic lives in the library crates.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rlm_sandbox::{Context, ContextFormat, EngineOptions, Limits, Sandbox, SandboxEngine};

#[derive(Parser)]
#[command(
    name = "rlm",
    version,
    about = "Recursive Language Models with a wasmtime sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Python steps in one persistent sandboxed REPL over a context; print one JSON object
    /// per step.
    Exec(ExecArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Auto,
    Text,
    Json,
    Jsonl,
}

#[derive(Args)]
struct ExecArgs {
    /// The context document (`-` for stdin). `.json` loads as JSON, `.jsonl` as a list.
    #[arg(long)]
    context: Option<PathBuf>,
    /// How to read the context file.
    #[arg(long, value_enum, default_value = "auto")]
    context_format: Format,
    /// Files of Python code, each run as one step (`-` for stdin).
    #[arg(required = true)]
    steps: Vec<PathBuf>,
    /// Fuel per step (default: about 5 CPU-seconds).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory cap of the REPL in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Wall-clock limit per step in milliseconds (includes waiting on host calls).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Bytes of stdout and of stderr kept per step.
    #[arg(long)]
    max_output: Option<u64>,
    /// Contexts up to this many characters load as a real str; larger ones are lazy.
    #[arg(long)]
    lazy_threshold: Option<u64>,
    /// Path of the guest component (default: found automatically; see `just guest`).
    #[arg(long, env = "RLM_GUEST_WASM")]
    guest: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RLM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rlm_sandbox=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Exec(args) => runtime.block_on(exec(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn exec(args: ExecArgs) -> Result<ExitCode> {
    let mut limits = Limits::default();
    if let Some(f) = args.fuel {
        limits.fuel_per_step = f;
    }
    if let Some(m) = args.memory_mb {
        limits.memory_bytes = m << 20;
        limits.lazy_threshold_chars = limits.lazy_threshold_chars.min(limits.memory_bytes / 8);
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

    let format = match args.context_format {
        Format::Auto => ContextFormat::Auto,
        Format::Text => ContextFormat::Text,
        Format::Json => ContextFormat::Json,
        Format::Jsonl => ContextFormat::Jsonl,
    };
    let context = match &args.context {
        Some(path) => Context::load(path, format)?,
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
            "reset": step.reset,
            "limit": step.limit,
            "truncated": step.truncated(),
        });
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
