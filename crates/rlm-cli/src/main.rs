//! `rlm`: the command-line front end of the rlm engine. It parses arguments and displays
//! results; all logic lives in the library crates.
//!
//! Exit codes: 0 answered, 1 model/runtime error, 2 bad arguments or setup, 3 budget or
//! iterations exhausted (a partial answer may still be printed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rlm::{ContextInput, StopReason, TraceWriter};
use rlm_llm::{ChatModel, LlmClient, ModelConfig};
use rlm_sandbox::{ContextFormat, SandboxEngine};

mod eval;
mod exec;
mod mcp;
mod models;
mod progress;
mod serve;

/// Exit code: the run gave a final answer.
const EXIT_ANSWERED: u8 = 0;
/// Exit code: a model or runtime error.
const EXIT_ERROR: u8 = 1;
/// Exit code: bad arguments or setup (missing key, file, guest).
const EXIT_SETUP: u8 = 2;
/// Exit code: the budget or the iterations ran out (a partial answer may be printed).
const EXIT_EXHAUSTED: u8 = 3;

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
    Exec(exec::ExecArgs),
    /// Answer a question about a context with a Recursive Language Model.
    Run(RunArgs),
    /// Re-run a traced run offline from its trace and check it reaches the same answer.
    Replay(ReplayArgs),
    /// Serve the web page, live run streams and an OpenAI-compatible endpoint (port 7860).
    Serve(Box<serve::ServeArgs>),
    /// Open a trace in the web page's viewer.
    View(serve::ViewArgs),
    /// Serve the Model Context Protocol on stdio, so coding agents can ask questions about
    /// files, directories and texts under the given roots.
    Mcp(Box<mcp::McpArgs>),
    /// Evaluate methods on benchmark datasets: run, merge shards, report.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Download, assemble and verify a local model's weights into the model cache.
    #[cfg(feature = "local")]
    FetchModel {
        /// The model: qwen2.5-coder-0.5b or qwen2.5-coder-1.5b.
        #[arg(default_value = "qwen2.5-coder-0.5b")]
        name: String,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The context document (`-` for stdin). `.json` loads as JSON, `.jsonl` as a list.
    #[arg(long)]
    context: PathBuf,
    /// How to read the context file.
    #[arg(long, value_enum, default_value = "auto")]
    context_format: Format,
    /// The question.
    #[arg(long)]
    query: String,
    #[command(flatten)]
    models: ModelFlags,
    /// Root-model replies before it must answer.
    #[arg(long, default_value_t = 20)]
    max_iterations: u32,
    /// Recursion depth: 0 no sub-calls, 1 plain sub-calls, 2+ recursive sub-RLMs.
    #[arg(long, default_value_t = 1)]
    max_depth: u32,
    /// Characters of each step's output shown to the root model.
    #[arg(long, default_value_t = 10_000)]
    max_output_chars: usize,
    #[command(flatten)]
    budget: BudgetFlags,
    #[command(flatten)]
    sub_calls: SubCallFlags,
    /// Sandboxed REPLs alive at once (the root's and its child RLMs' at --max-depth 2 and more).
    #[arg(long, value_name = "N", default_value_t = rlm::DEFAULT_MAX_REPLS)]
    max_repls: usize,
    /// Model requests in flight at once (all levels together).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Write every event as JSON lines to this file (replay it with `rlm replay`).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the whole result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Budget flags shared by `run`, `eval run` and `serve`; checked by
/// [`rlm::BudgetLimits::to_budget`] like every other budget.
#[derive(Args)]
struct BudgetFlags {
    /// Stop a run when it has cost this many dollars.
    #[arg(long)]
    budget_usd: Option<f64>,
    /// Stop a run after this many tokens (all calls).
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Stop a run after this many sub-calls, with its partial answer (default for `run`, `serve`
    /// and `mcp`: 1000; `eval`: no limit, it measures methods as they are).
    #[arg(long)]
    budget_sub_calls: Option<u64>,
    /// Stop a run after this many seconds (`rlm serve`: default 600).
    #[arg(long, allow_negative_numbers = true)]
    budget_seconds: Option<f64>,
}

impl BudgetFlags {
    /// The limits as given (checked when the run is set up).
    fn limits(&self) -> rlm::BudgetLimits {
        rlm::BudgetLimits {
            usd: self.budget_usd,
            tokens: self.budget_tokens,
            sub_calls: self.budget_sub_calls,
            seconds: self.budget_seconds,
        }
    }
}

/// The per-step cap on sub-calls of `run`, `serve` and `mcp` (`eval` has none: it measures
/// methods as they are).
#[derive(Args)]
struct SubCallFlags {
    /// Sub-calls one REPL step may make (each prompt of a batch counts): a call past it, or a
    /// whole batch that would pass it, is refused with a sentence telling the model to batch
    /// fewer, larger prompts.
    #[arg(long, value_name = "N", default_value_t = rlm::DEFAULT_MAX_SUB_CALLS_PER_STEP)]
    max_sub_calls_per_step: u64,
}

/// Model flags shared by `run`, `eval run` and `serve`.
#[derive(Args)]
struct ModelFlags {
    /// Root model, `provider/model` (default: RLM_MODEL, else chosen from the API key that is set).
    #[arg(long, env = "RLM_MODEL")]
    model: Option<String>,
    /// Sub-call model (default: the root model).
    #[arg(long, env = "RLM_SUB_MODEL")]
    sub_model: Option<String>,
    /// Base URL of an OpenAI-compatible server (for `compat/...` models).
    #[arg(long, env = "RLM_BASE_URL")]
    base_url: Option<String>,
    /// Context window of a local model, in tokens.
    #[arg(long, default_value_t = 16_384)]
    local_ctx: u32,
    /// CPU threads of a local model (default: cores, at most 4).
    #[arg(long)]
    local_threads: Option<u32>,
    /// System-prompt profile: `auto` (small for local models and models under 10B parameters
    /// by their name, on any provider), `standard` or `small`.
    #[arg(long, env = "RLM_PROMPT_PROFILE", default_value = "auto")]
    prompt_profile: rlm::PromptProfile,
    /// Most tokens of one reply of a hosted or compat/ model (default: the provider's; 4096 for
    /// compat/ servers, so a runaway reply ends there and not at the request timeout).
    #[arg(long, env = "RLM_MAX_TOKENS")]
    max_tokens: Option<u32>,
    /// Sampling temperature of a hosted or compat/ model (default: the provider's; 0 for
    /// compat/ servers).
    #[arg(long, env = "RLM_TEMPERATURE")]
    temperature: Option<f32>,
}

impl ModelFlags {
    /// `--model`, else the model of the key that is set ([`rlm::default_model`]).
    fn root_id(&self) -> Result<String> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        let offline = format!("local/{OFFLINE_MODEL}");
        let (id, is_offline) = rlm::default_model(cfg!(feature = "local").then_some(&*offline))?;
        if is_offline {
            eprintln!(
                "rlm: no API key is set, so this runs offline on {id}, a 0.5B model on the CPU. \
                 A hosted model answers far better: set OPENAI_API_KEY, ANTHROPIC_API_KEY or \
                 GOOGLE_API_KEY (or pass --model provider/model)."
            );
        }
        Ok(id)
    }

    /// The run's models as a [`rlm::RunSpec`] (the root resolved; the rest of the spec default).
    fn spec(&self) -> Result<rlm::RunSpec> {
        Ok(rlm::RunSpec {
            model: Some(self.root_id()?),
            sub_model: self.sub_model.clone(),
            local_context_tokens: Some(self.local_ctx),
            prompt_profile: Some(self.prompt_profile),
            ..rlm::RunSpec::default()
        })
    }

    /// A server's default run: the resolved models, or, when none resolves (no key set), an
    /// empty spec and the reason, which requests that name no model are told.
    fn served_defaults(&self) -> (rlm::RunSpec, Option<String>) {
        match self.spec() {
            Ok(spec) => (spec, None),
            Err(e) => (
                rlm::RunSpec {
                    sub_model: self.sub_model.clone(),
                    local_context_tokens: Some(self.local_ctx),
                    prompt_profile: Some(self.prompt_profile),
                    ..rlm::RunSpec::default()
                },
                Some(format!("{e:#}")),
            ),
        }
    }

    /// Settings of hosted models.
    fn config(&self) -> ModelConfig {
        ModelConfig {
            base_url: self.base_url.clone(),
            params: rlm_llm::SamplingParams {
                max_output_tokens: self.max_tokens,
                temperature: self.temperature,
                ..rlm_llm::SamplingParams::default()
            },
            ..ModelConfig::default()
        }
    }

    /// Settings of local models.
    fn local(&self) -> LocalSettings {
        LocalSettings {
            ctx: self.local_ctx,
            threads: self.local_threads,
        }
    }
}

#[derive(Args)]
struct ReplayArgs {
    /// A trace written by `rlm run --trace`.
    trace: PathBuf,
    /// The context, when the trace did not store it (large contexts).
    #[arg(long)]
    context: Option<PathBuf>,
    /// How to read the context file.
    #[arg(long, value_enum, default_value = "auto")]
    context_format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Auto,
    Text,
    Json,
    Jsonl,
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
        Command::Exec(args) => runtime.block_on(exec::exec(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Replay(args) => runtime.block_on(replay(args)),
        Command::Eval { command } => runtime.block_on(eval::eval(command)),
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::View(args) => runtime.block_on(serve::view(args)),
        Command::Mcp(args) => runtime.block_on(mcp::mcp(*args)),
        #[cfg(feature = "local")]
        Command::FetchModel { name } => fetch_model(&name),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

impl From<Format> for ContextFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Auto => ContextFormat::Auto,
            Format::Text => ContextFormat::Text,
            Format::Json => ContextFormat::Json,
            Format::Jsonl => ContextFormat::Jsonl,
        }
    }
}

fn engine_blocking() -> Result<Arc<SandboxEngine>> {
    Ok(SandboxEngine::load()?)
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let spec = rlm::RunSpec {
        max_iterations: Some(args.max_iterations),
        max_depth: Some(args.max_depth),
        max_output_chars: Some(args.max_output_chars),
        budget: args.budget.limits(),
        sub_calls_per_step: Some(args.sub_calls.max_sub_calls_per_step),
        max_repls: Some(args.max_repls),
        ..args.models.spec()?
    };
    // Bad limits fail before any model loads.
    spec.budget()?;
    let (root_id, sub_id) = spec.models()?;
    let client = LlmClient::builder().concurrency(args.concurrency).build()?;
    let config = args.models.config();
    let local = args.models.local();
    let root = make_model(&client, &root_id, &config, &local).await?;
    let sub = if sub_id == root_id {
        root.clone()
    } else {
        make_model(&client, &sub_id, &config, &local).await?
    };
    let input = ContextInput::load(&args.context, args.context_format.into())?;
    let engine = tokio::task::spawn_blocking(engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let progress = Arc::new(progress::Progress::new());
    let mut builder = spec
        .builder(root, sub)?
        .engine(engine)
        .sub_concurrency(args.concurrency)
        .on_event(progress.clone());
    if let Some(path) = &args.trace {
        let writer = TraceWriter::create(path)
            .with_context(|| format!("creating the trace {}", path.display()))?;
        builder = builder.on_event(writer);
    }
    let rlm = builder.build()?;
    let result = rlm.run(input, &args.query).await?;
    progress.finish();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if let Some(answer) = &result.answer {
        println!("{answer}");
    }
    let u = &result.usage;
    let split: Vec<String> = u
        .by_role
        .iter()
        .map(|(tag, t)| {
            format!(
                "{} d{}: {} calls, {} tokens",
                match tag.role {
                    rlm_llm::CallRole::Root => "root",
                    rlm_llm::CallRole::SubCall => "sub",
                },
                tag.depth,
                t.calls,
                t.usage.total()
            )
        })
        .collect();
    let stop = &result.stop;
    let cost = if u.total.unpriced_calls > 0 {
        format!(
            "${:.4} (+{} unpriced calls)",
            u.total.cost_usd, u.total.unpriced_calls
        )
    } else {
        format!("${:.4}", u.total.cost_usd)
    };
    eprintln!(
        "{stop} · {} iterations · {} tokens ({}) · {cost} · {:.1} s",
        result.iterations,
        u.total.usage.total(),
        split.join("; "),
        result.elapsed.as_secs_f64()
    );
    if let Some(path) = &args.trace {
        eprintln!(
            "trace: {} (replay with `rlm replay {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(ExitCode::from(match result.stop {
        StopReason::Final => EXIT_ANSWERED,
        StopReason::MaxIterations | StopReason::Budget { .. } => EXIT_EXHAUSTED,
        StopReason::Error { .. } => EXIT_ERROR,
    }))
}

async fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let events = rlm::read_trace(&args.trace)?;
    let context = match &args.context {
        Some(p) => Some(ContextInput::load(p, args.context_format.into())?),
        None => None,
    };
    let engine = tokio::task::spawn_blocking(engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let replay = rlm::replay(&events, context, engine).await?;
    println!("{}", replay.result.answer.as_deref().unwrap_or(""));
    if replay.matches() {
        eprintln!(
            "replay reproduced the recorded answer ({} iterations)",
            replay.result.iterations
        );
        Ok(ExitCode::from(EXIT_ANSWERED))
    } else {
        eprintln!(
            "replay differs: recorded {:?}, replayed {:?} ({:?})",
            replay.recorded_answer, replay.result.answer, replay.result.stop
        );
        Ok(ExitCode::from(EXIT_ERROR))
    }
}

/// The offline default model.
const OFFLINE_MODEL: &str = "qwen2.5-coder-0.5b";

/// How local models are loaded.
#[cfg_attr(not(feature = "local"), allow(dead_code))]
struct LocalSettings {
    /// Context window in tokens.
    ctx: u32,
    /// CPU threads (default: cores, at most 4).
    threads: Option<u32>,
}

/// A hosted model through the client, or (with the `local` feature) a local one.
async fn make_model(
    client: &LlmClient,
    id: &str,
    config: &ModelConfig,
    local: &LocalSettings,
) -> Result<Arc<dyn ChatModel>> {
    if rlm::is_local_model(id) {
        #[cfg(feature = "local")]
        {
            let mut options = rlm_local::LocalOptions {
                n_ctx: local.ctx,
                ..Default::default()
            };
            if let Some(t) = local.threads {
                options.threads = t.max(1);
            }
            let id = id.to_string();
            let model =
                tokio::task::spawn_blocking(move || rlm_local::LocalModel::load(&id, options))
                    .await
                    .context("loading the local model")??;
            return Ok(Arc::new(model));
        }
        #[cfg(not(feature = "local"))]
        {
            let _ = local;
            anyhow::bail!(
                "{id}: this rlm was built without the `local` feature (cargo build -p rlm-cli --features local)"
            );
        }
    }
    Ok(Arc::new(client.model_with(id, config.clone())?))
}

#[cfg(feature = "local")]
fn fetch_model(name: &str) -> Result<ExitCode> {
    let name = name.strip_prefix("local/").unwrap_or(name);
    let known = rlm_local::fetch::known(name).with_context(|| {
        format!("unknown model {name:?}; known: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b")
    })?;
    let path = rlm_local::fetch::ensure(known, true)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn help(command: &str) -> String {
        Cli::command()
            .find_subcommand_mut(command)
            .expect(command)
            .render_long_help()
            .to_string()
    }

    /// Paid calls have safe defaults, and `--help` of each front end says what they are.
    #[test]
    fn the_help_of_each_front_end_states_its_sub_call_caps() {
        let per_run = format!(
            "default for `run`, `serve` and `mcp`: {}",
            rlm::DEFAULT_MAX_SUB_CALLS
        );
        let per_step = format!("[default: {}]", rlm::DEFAULT_MAX_SUB_CALLS_PER_STEP);
        for command in ["run", "serve", "mcp"] {
            let text = help(command);
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&per_run), "{command}: {text}");
            assert!(
                text.contains("--max-sub-calls-per-step") && text.contains(&per_step),
                "{command}: {text}"
            );
            assert!(text.contains("--max-repls"), "{command}: {text}");
        }
        let per_run_repls = format!("each run also has at most {}", rlm::DEFAULT_MAX_REPLS);
        for command in ["serve", "mcp"] {
            assert!(help(command).contains(&per_run_repls), "{command}");
        }
    }
}
