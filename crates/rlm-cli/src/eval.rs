//! `rlm eval`: run benchmarks (`run`), join shards (`merge`), write reports (`report`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use rlm::RunSpec;
use rlm_eval::Family;
use rlm_eval::method::{Method, MethodKind};
use rlm_eval::report;
use rlm_eval::results::{Results, Shard, TaskRecord};
use rlm_eval::runner::{self, DatasetSpec, Progress, ResolvedMethod, RunOptions};
use rlm_llm::{ChatModel, LlmClient};

use crate::{BudgetFlags, EXIT_ANSWERED, EXIT_ERROR, EXIT_EXHAUSTED, ModelFlags, make_model};

/// `rlm eval` subcommands.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Run datasets × sizes × methods; append one record per task and method to a results file
    /// (re-running resumes it).
    Run(Box<RunArgs>),
    /// Join the results files of a sharded run into one, checking every shard is there.
    Merge(MergeArgs),
    /// Write the report (Markdown, JSON, SVG plot) of one or more results files.
    Report(ReportArgs),
}

/// `rlm eval run`.
#[derive(Args)]
pub struct RunArgs {
    /// Generated datasets: s-niah, oolong, oolong-pairs, multi-hop, or all (repeatable).
    #[arg(long = "dataset", value_delimiter = ',')]
    datasets: Vec<String>,
    /// User datasets: JSONL files with id, context or context_path, question, answer, scorer.
    #[arg(long = "data")]
    data: Vec<PathBuf>,
    /// Context sizes of generated tasks, in tokens (8k, 128k, 1m, ...).
    #[arg(long, value_delimiter = ',', default_value = "8k,32k,128k", value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Generated tasks per dataset and size (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    tasks_per_size: u32,
    /// Methods (repeatable): direct, rlm-d0, rlm, rlm-d2, with options after a colon, e.g.
    /// `direct:window=272000`, `rlm:depth=2,root=openai/gpt-5,sub=openai/gpt-5-mini`.
    #[arg(long = "method", default_values_t = ["direct".to_string(), "rlm-d0".into(), "rlm".into(), "rlm-d2".into()])]
    methods: Vec<String>,
    /// The models of methods that name none (`--model`, `--sub-model`, ...).
    #[command(flatten)]
    models: ModelFlags,
    /// Also ask this model whether each answer is right (reported next to the scorer's score).
    #[arg(long)]
    judge: Option<String>,
    /// The window `direct` assumes (tokens), unless a method sets `window=`.
    #[arg(long, value_parser = parse_size)]
    direct_window: Option<u64>,
    /// Tasks answered at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Model requests in flight at once, all tasks together.
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Root iterations per RLM.
    #[arg(long, default_value_t = 20)]
    max_iterations: u32,
    /// Context window of the sub-model in tokens (how much one sub-call reads).
    #[arg(long, default_value = "128k", value_parser = parse_size)]
    sub_context_tokens: u64,
    /// Per-task budget of RLM methods (`--budget-seconds`: default the task timeout).
    #[command(flatten)]
    budget: BudgetFlags,
    /// Per-task time limit in seconds, any method (0: none).
    #[arg(long, default_value_t = 600.0, allow_negative_numbers = true)]
    task_timeout: f64,
    /// Seed of the generated tasks and of the sandboxes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Answer at most this many (task, method) units (after sharding).
    #[arg(long)]
    limit: Option<usize>,
    /// Do only shard I of N (0-based), e.g. `--shard 2/8`; join shards with `rlm eval merge`.
    #[arg(long)]
    shard: Option<Shard>,
    /// The results file (appended to; units it holds are skipped).
    #[arg(long, default_value = "eval/results.jsonl")]
    out: PathBuf,
    /// Write each unit's trace here (default: `traces/` next to the results file).
    #[arg(long)]
    trace_dir: Option<PathBuf>,
    /// Write no traces.
    #[arg(long)]
    no_traces: bool,
    /// Start over: delete the results file first instead of resuming it.
    #[arg(long)]
    fresh: bool,
}

/// `rlm eval merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// The shards' results files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The merged file (overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Write the merge even if shards or units are missing (exit 0).
    #[arg(long)]
    allow_incomplete: bool,
}

/// `rlm eval report`.
#[derive(Args)]
pub struct ReportArgs {
    /// Results files (later records of a task and method win).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write report.md, report.json and report.svg (default: beside the first input).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail (exit 3) if a method's mean score is below this, e.g. `rlm=0.9` (repeatable).
    #[arg(long = "min-score")]
    min_scores: Vec<String>,
}

/// Run an `rlm eval` subcommand.
pub async fn eval(command: EvalCommand) -> Result<ExitCode> {
    match command {
        EvalCommand::Run(args) => run(*args).await,
        EvalCommand::Merge(args) => merge(&args),
        EvalCommand::Report(args) => report(&args),
    }
}

/// `8k` → 8000, `1m` → 1000000, `1.5m` → 1500000, `4096` → 4096.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase().replace('_', "");
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        _ => (t.as_str(), 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected tokens like 8k, 128k, 1m"))?;
    if v <= 0.0 || !v.is_finite() {
        return Err(format!("size {s:?} must be positive"));
    }
    Ok((v * mult).round() as u64)
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let mut datasets = Vec::new();
    let names = if args.datasets.is_empty() && args.data.is_empty() {
        vec!["all".to_string()]
    } else {
        args.datasets.clone()
    };
    for n in &names {
        if n == "all" {
            datasets.extend(Family::ALL.map(DatasetSpec::Generated));
        } else {
            datasets.push(DatasetSpec::Generated(
                n.parse::<Family>().map_err(anyhow::Error::msg)?,
            ));
        }
    }
    datasets.extend(args.data.iter().cloned().map(DatasetSpec::File));
    let sizes = args.sizes.clone();
    let mut methods = args
        .methods
        .iter()
        .map(|m| m.parse::<Method>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    if let Some(w) = args.direct_window {
        for m in &mut methods {
            if let MethodKind::Direct { window_tokens } = &mut m.kind
                && *window_tokens == rlm_eval::method::DEFAULT_WINDOW_TOKENS
            {
                *window_tokens = w;
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &methods {
        if !seen.insert(&m.name) {
            bail!(
                "two methods are named {:?}: give one a name=... option",
                m.name
            );
        }
    }
    let plan = runner::plan(&datasets, &sizes, args.tasks_per_size.max(1), args.seed)?;
    if plan.is_empty() {
        bail!("nothing to run: no datasets, sizes or tasks");
    }

    // Resolve every model once; methods share them (and the client's request limit).
    let default_root = args.models.root_id()?;
    let client = LlmClient::builder().concurrency(args.requests).build()?;
    let config = args.models.config();
    let local = args.models.local();
    let mut models: HashMap<String, Arc<dyn ChatModel>> = HashMap::new();
    let mut get = async |id: &str| -> Result<Arc<dyn ChatModel>> {
        if let Some(m) = models.get(id) {
            return Ok(m.clone());
        }
        let m = make_model(&client, id, &config, &local).await?;
        models.insert(id.to_string(), m.clone());
        Ok(m)
    };
    let mut resolved = Vec::new();
    for m in methods {
        let root_id = m.root.clone().unwrap_or_else(|| default_root.clone());
        let sub_id = m
            .sub
            .clone()
            .or_else(|| args.models.sub_model.clone())
            .unwrap_or_else(|| root_id.clone());
        resolved.push(ResolvedMethod {
            root: get(&root_id).await?,
            sub: get(&sub_id).await?,
            spec: RunSpec {
                model: Some(root_id),
                sub_model: Some(sub_id),
                local_context_tokens: Some(args.models.local_ctx),
                prompt_profile: Some(args.models.prompt_profile),
                ..RunSpec::default()
            },
            method: m,
        });
    }
    // Limits are checked before anything runs: one rule for every budget.
    let budget = args.budget.limits().to_budget()?;
    let task_timeout = (args.task_timeout != 0.0)
        .then(|| rlm::seconds_limit(args.task_timeout))
        .transpose()
        .context("--task-timeout")?;
    let judge = match &args.judge {
        Some(j) => Some(get(j).await?),
        None => None,
    };

    if args.fresh && args.out.exists() {
        std::fs::remove_file(&args.out)
            .with_context(|| format!("removing {}", args.out.display()))?;
    }
    let trace_dir = (!args.no_traces).then(|| {
        args.trace_dir
            .clone()
            .unwrap_or_else(|| args.out.parent().unwrap_or(Path::new(".")).join("traces"))
    });
    let options = RunOptions {
        concurrency: args.concurrency.max(1),
        budget,
        task_timeout,
        max_iterations: args.max_iterations,
        sub_context_tokens: args.sub_context_tokens,
        trace_dir,
        judge,
        seed: args.seed,
        shard: args.shard,
        limit: args.limit,
    };
    let engine = tokio::task::spawn_blocking(crate::engine_blocking)
        .await
        .context("loading the sandbox engine")??;
    let bar = Arc::new(Bar::new());
    let summary = runner::run(&plan, &resolved, engine, &options, &args.out, bar.clone()).await?;
    bar.finish();
    eprintln!(
        "{} units planned{}: {} resumed from {}, {} run now (mean score {:.3}, {} errors)",
        summary.planned,
        args.shard
            .map_or(String::new(), |s| format!(" for shard {s}")),
        summary.resumed,
        args.out.display(),
        summary.ran,
        summary.mean_score,
        summary.errors
    );
    eprintln!("report: rlm eval report {}", args.out.display());
    Ok(ExitCode::from(if summary.errors > 0 {
        EXIT_ERROR
    } else {
        EXIT_ANSWERED
    }))
}

/// The progress bar: units done, running accuracy and cost.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    totals: Mutex<(usize, f64, f64)>,
}

impl Bar {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} · {msg} · {elapsed} (eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            totals: Mutex::new((0, 0.0, 0.0)),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, todo: usize, done: usize) {
        match &self.bar {
            Some(b) => b.set_length(todo as u64),
            None => eprintln!("eval: {todo} to run, {done} already in the results file"),
        }
    }

    fn finished(&self, r: &TaskRecord) {
        let mut t = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        t.0 += 1;
        t.1 += r.score;
        t.2 += r.cost_usd;
        let msg = format!("accuracy {:.1}% · ${:.4}", 100.0 * t.1 / t.0 as f64, t.2);
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.inc(1);
            }
            None => eprintln!(
                "[{}] {} {}: score {:.2} ({}) · {msg}",
                t.0, r.task_id, r.method, r.score, r.stop
            ),
        }
    }
}

fn merge(args: &MergeArgs) -> Result<ExitCode> {
    let m = rlm_eval::results::merge(&args.inputs, &args.out)?;
    eprintln!(
        "merged {} records into {} ({} shards expected{})",
        m.records,
        args.out.display(),
        m.shard_count,
        if m.errors > 0 {
            format!(", {} ended in errors", m.errors)
        } else {
            String::new()
        }
    );
    if !m.complete() {
        eprintln!(
            "incomplete: missing shards {:?}, {} planned units without a record",
            m.missing_shards, m.missing_units
        );
        if !args.allow_incomplete {
            return Ok(ExitCode::from(EXIT_EXHAUSTED));
        }
    }
    Ok(ExitCode::from(EXIT_ANSWERED))
}

fn report(args: &ReportArgs) -> Result<ExitCode> {
    let results = Results::read_all(&args.inputs)?;
    if results.bad_lines > 0 {
        eprintln!(
            "warning: skipped {} unreadable lines (a run killed mid-write leaves one)",
            results.bad_lines
        );
    }
    let records = results.latest();
    if records.is_empty() {
        bail!("no task records in {:?}", args.inputs);
    }
    let mut order: Vec<String> = Vec::new();
    for m in results.headers.iter().flat_map(|h| &h.methods) {
        if !order.contains(m) {
            order.push(m.clone());
        }
    }
    let r = report::build(&records, &order);
    let dir = args.out.clone().unwrap_or_else(|| {
        args.inputs[0]
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = r.markdown();
    for (name, text) in [
        ("report.md", md.clone()),
        ("report.json", serde_json::to_string_pretty(&r)?),
        ("report.svg", r.svg()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{md}");
    eprintln!(
        "wrote {0}/report.md, {0}/report.json, {0}/report.svg",
        dir.display()
    );
    let mut failed = false;
    for spec in &args.min_scores {
        let (method, min) = spec
            .split_once('=')
            .and_then(|(m, s)| Some((m, s.parse::<f64>().ok()?)))
            .with_context(|| format!("--min-score {spec:?}: expected METHOD=SCORE"))?;
        let scores: Vec<f64> = records
            .iter()
            .filter(|r| r.method == method)
            .map(|r| r.score)
            .collect();
        if scores.is_empty() {
            bail!("--min-score {spec:?}: no results for method {method:?}");
        }
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        if mean < min {
            eprintln!(
                "FAIL: {method} scored {mean:.3} < {min} over {} tasks",
                scores.len()
            );
            failed = true;
        } else {
            eprintln!(
                "ok: {method} scored {mean:.3} >= {min} over {} tasks",
                scores.len()
            );
        }
    }
    Ok(ExitCode::from(if failed {
        EXIT_EXHAUSTED
    } else {
        EXIT_ANSWERED
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8k").unwrap(), 8_000);
        assert_eq!(parse_size("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_size("4096").unwrap(), 4_096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
