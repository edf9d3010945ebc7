//! The runner: plans (task, method) units, skips the ones a results file already holds, runs the
//! rest concurrently with per-task budgets and timeouts, scores them, and appends a record per
//! unit as it finishes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rlm::{
    Budget, BudgetLimit, ContextInput, Event, EventSink, Node, RunSpec, StopReason, TraceWriter,
};
use rlm_llm::{ChatModel, ChatRequest, Message};
use rlm_sandbox::SandboxEngine;
use tracing::Instrument;

use crate::datasets::{Family, Task, generate};
use crate::method::{DIRECT_SYSTEM, Method, MethodKind, direct_prompt, judge_prompt};
use crate::results::{Line, Results, ResultsWriter, RunHeader, Shard, TaskRecord, UnitStop};
use crate::{EvalError, load_jsonl};

/// Where the tasks of a run come from.
#[derive(Debug, Clone)]
pub enum DatasetSpec {
    /// A generated family.
    Generated(Family),
    /// A user JSONL file.
    File(PathBuf),
}

/// One task of the plan; generated tasks are made when they run, so a plan of 1M-token tasks
/// holds no text.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// Task id (unique in the run).
    pub id: String,
    /// Dataset name.
    pub dataset: String,
    /// Requested size in tokens (generated tasks).
    pub size: Option<u64>,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Generated {
        family: Family,
        tokens: u64,
        seed: u64,
    },
    Loaded(Arc<Task>),
}

impl PlannedTask {
    /// The task itself (generated now for generated datasets).
    pub fn task(&self) -> Task {
        match &self.source {
            Source::Generated {
                family,
                tokens,
                seed,
            } => generate(*family, *tokens, *seed),
            Source::Loaded(t) => (**t).clone(),
        }
    }
}

/// The tasks of a run: every generated family at every size, `per_size` seeds each (from
/// `seed` on), then every task of every user file.
pub fn plan(
    datasets: &[DatasetSpec],
    sizes: &[u64],
    per_size: u32,
    seed: u64,
) -> Result<Vec<PlannedTask>, EvalError> {
    let mut out = Vec::new();
    for d in datasets {
        match d {
            DatasetSpec::Generated(family) => {
                for &tokens in sizes {
                    for k in 0..u64::from(per_size) {
                        let seed = seed + k;
                        out.push(PlannedTask {
                            id: format!("{}-{tokens}-{seed}", family.name()),
                            dataset: family.name().to_string(),
                            size: Some(tokens),
                            source: Source::Generated {
                                family: *family,
                                tokens,
                                seed,
                            },
                        });
                    }
                }
            }
            DatasetSpec::File(path) => {
                let name = path
                    .file_stem()
                    .map_or("user".into(), |s| s.to_string_lossy().to_string());
                for t in load_jsonl(path)? {
                    out.push(PlannedTask {
                        id: format!("{name}/{}", t.id),
                        dataset: name.clone(),
                        size: None,
                        source: Source::Loaded(Arc::new(t)),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A method with its models resolved.
#[derive(Clone)]
pub struct ResolvedMethod {
    /// The method.
    pub method: Method,
    /// Its root model.
    pub root: Arc<dyn ChatModel>,
    /// Its sub-model.
    pub sub: Arc<dyn ChatModel>,
    /// Its setup as the front end resolved it: the root and sub-model ids (a local root gets
    /// the small-model setup, see [`RunSpec::builder`]) and a local model's window. The run's
    /// options give its iterations, sub-model window and budget.
    pub spec: RunSpec,
}

/// Settings of a run that apply to every unit.
#[derive(Clone)]
pub struct RunOptions {
    /// Units in flight at once.
    pub concurrency: usize,
    /// Per-task budget of RLM methods (its `max_time` is also the task timeout).
    pub budget: Budget,
    /// Hard limit per unit (any method); a unit past it is recorded as `timeout`.
    pub task_timeout: Option<Duration>,
    /// Root iterations per RLM.
    pub max_iterations: u32,
    /// Context window of the sub-model in tokens (how much one sub-call may read).
    pub sub_context_tokens: u64,
    /// Write each unit's trace here.
    pub trace_dir: Option<PathBuf>,
    /// Ask this model whether each answer is right, besides the scorer.
    pub judge: Option<Arc<dyn ChatModel>>,
    /// Seed of the plan (also seeds each sandbox).
    pub seed: u64,
    /// Only this shard of the units.
    pub shard: Option<Shard>,
    /// At most this many units (after sharding).
    pub limit: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            budget: Budget::default(),
            task_timeout: Some(Duration::from_secs(600)),
            max_iterations: 20,
            sub_context_tokens: 128_000,
            trace_dir: None,
            judge: None,
            seed: 0,
            shard: None,
            limit: None,
        }
    }
}

/// Told about a run's progress (the CLI draws a bar with it).
pub trait Progress: Send + Sync {
    /// The run starts: `todo` units to do, `done` already in the results file.
    fn start(&self, todo: usize, done: usize);
    /// One unit finished.
    fn finished(&self, record: &TaskRecord);
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Units planned for this shard.
    pub planned: usize,
    /// Units skipped because the results file had them.
    pub resumed: usize,
    /// Units run now.
    pub ran: usize,
    /// Mean score of the units run now.
    pub mean_score: f64,
    /// Units that ended in an error.
    pub errors: usize,
}

/// Hash of what makes two shards parts of one run.
fn config_hash(
    units: &[(usize, usize)],
    plan: &[PlannedTask],
    methods: &[ResolvedMethod],
    o: &RunOptions,
) -> String {
    let mut h = blake3::Hasher::new();
    for (t, m) in units {
        h.update(plan[*t].id.as_bytes());
        h.update(b"\0");
        h.update(methods[*m].method.name.as_bytes());
        h.update(b"\n");
    }
    for m in methods {
        h.update(
            serde_json::to_string(&m.method)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(m.root.id().as_bytes());
        h.update(m.sub.id().as_bytes());
    }
    h.update(
        serde_json::to_string(&o.budget)
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update(
        format!(
            "{}:{}:{:?}",
            o.max_iterations, o.sub_context_tokens, o.task_timeout
        )
        .as_bytes(),
    );
    h.finalize().to_hex()[..16].to_string()
}

/// Run the plan with every method, appending to `results` (units it already holds are skipped,
/// except errors, which are retried).
pub async fn run(
    plan: &[PlannedTask],
    methods: &[ResolvedMethod],
    engine: Arc<SandboxEngine>,
    options: &RunOptions,
    results: &Path,
    progress: Arc<dyn Progress>,
) -> Result<RunSummary, EvalError> {
    // Units, task-major; the whole run's units decide the config hash, the shard's its work.
    let all: Vec<(usize, usize)> = (0..plan.len())
        .flat_map(|t| (0..methods.len()).map(move |m| (t, m)))
        .collect();
    let config = config_hash(&all, plan, methods, options);
    let mut mine: Vec<(usize, usize)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            options
                .shard
                .is_none_or(|s| *i as u64 % u64::from(s.count) == u64::from(s.index))
        })
        .map(|(_, u)| *u)
        .collect();
    if let Some(limit) = options.limit {
        mine.truncate(limit);
    }
    let done: BTreeSet<(String, String)> = if results.exists() {
        Results::read(results)?
            .latest()
            .into_iter()
            .filter(|r| !r.is_error())
            .map(|r| r.key())
            .collect()
    } else {
        BTreeSet::new()
    };
    let todo: Vec<(usize, usize)> = mine
        .iter()
        .copied()
        .filter(|&(t, m)| !done.contains(&(plan[t].id.clone(), methods[m].method.name.clone())))
        .collect();
    let mut writer = ResultsWriter::open(results)?;
    writer.write(&Line::Run(RunHeader {
        config,
        shard: options.shard,
        planned: mine.len(),
        methods: methods.iter().map(|m| m.method.name.clone()).collect(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))?;
    progress.start(todo.len(), mine.len() - todo.len());
    let mut summary = RunSummary {
        planned: mine.len(),
        resumed: mine.len() - todo.len(),
        ..RunSummary::default()
    };
    let mut stream = futures::stream::iter(todo.into_iter().map(|(t, m)| {
        let task = plan[t].clone();
        let method = methods[m].clone();
        let engine = engine.clone();
        let options = options.clone();
        tokio::spawn(async move { run_unit(&task, &method, engine, &options).await })
    }))
    .buffer_unordered(options.concurrency.max(1));
    let mut total_score = 0.0;
    while let Some(joined) = stream.next().await {
        let record = joined.map_err(|e| EvalError::Bad {
            path: results.display().to_string(),
            line: 0,
            message: format!("a task panicked: {e}"),
        })?;
        writer.write(&Line::Task(Box::new(record.clone())))?;
        summary.ran += 1;
        summary.errors += usize::from(record.is_error());
        total_score += record.score;
        progress.finished(&record);
    }
    summary.mean_score = if summary.ran > 0 {
        total_score / summary.ran as f64
    } else {
        0.0
    };
    Ok(summary)
}

/// A file name from a task id, method and root model (no path separators), so runs of other
/// models or methods into the same directory never overwrite each other.
fn trace_name(task: &str, method: &str, model: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}.{}.{}.jsonl", clean(task), clean(method), clean(model))
}

/// Answer one task with one method and score it.
pub async fn run_unit(
    planned: &PlannedTask,
    method: &ResolvedMethod,
    engine: Arc<SandboxEngine>,
    options: &RunOptions,
) -> TaskRecord {
    let span = tracing::info_span!("eval_task", task = %planned.id, method = %method.method.name);
    async {
        let mut task = planned.task();
        let trace_path = options.trace_dir.as_ref().map(|d| {
            d.join(trace_name(
                &planned.id,
                &method.method.name,
                &method.root.id(),
            ))
        });
        let trace = trace_path.as_ref().and_then(|p| {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::remove_file(p);
            match TraceWriter::create(p) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot write the trace");
                    None
                }
            }
        });
        let mut record = TaskRecord {
            task_id: planned.id.clone(),
            dataset: planned.dataset.clone(),
            size: planned.size,
            context_tokens: task.context_tokens,
            method: method.method.name.clone(),
            root_model: method.root.id(),
            sub_model: None,
            question: task.question.clone(),
            gold: task.answer.clone(),
            answer: None,
            score: 0.0,
            judge: None,
            stop: UnitStop::Error,
            detail: None,
            iterations: 0,
            calls: 0,
            sub_calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            unpriced_calls: 0,
            latency_s: 0.0,
            truncated: None,
            trace: trace
                .as_ref()
                .and(trace_path.map(|p| p.display().to_string())),
            shard: options.shard,
        };
        let started = Instant::now();
        match method.method.kind {
            MethodKind::Direct { window_tokens } => {
                direct(&task, method, window_tokens, options, trace, &mut record).await;
            }
            MethodKind::Rlm { max_depth } => {
                rlm_method(
                    &mut task,
                    method,
                    max_depth,
                    engine,
                    options,
                    trace,
                    &mut record,
                )
                .await;
            }
        }
        record.latency_s = started.elapsed().as_secs_f64();
        if let Some(answer) = &record.answer {
            record.score = task.scorer.score(answer, &task.answer);
            if let Some(judge) = &options.judge {
                let prompt = judge_prompt(&task.question, &task.answer, answer);
                record.judge = match judge
                    .chat(ChatRequest::new(vec![Message::user(prompt)]))
                    .await
                {
                    Ok(r) => Some(f64::from(
                        r.text.to_uppercase().contains("CORRECT")
                            && !r.text.to_uppercase().contains("INCORRECT"),
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "the judge failed");
                        None
                    }
                };
            }
        }
        record
    }
    .instrument(span)
    .await
}

async fn with_timeout<T>(limit: Option<Duration>, f: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(d) => tokio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

async fn direct(
    task: &Task,
    method: &ResolvedMethod,
    window_tokens: u64,
    options: &RunOptions,
    trace: Option<Arc<TraceWriter>>,
    record: &mut TaskRecord,
) {
    let (prompt, truncated) = direct_prompt(&task.context, &task.question, window_tokens);
    record.truncated = Some(truncated);
    record.iterations = 1;
    let node = Node {
        rlm: "root".into(),
        depth: 0,
    };
    let emit = |e: Event| {
        if let Some(t) = &trace {
            t.event(&e);
        }
    };
    emit(Event::RunStarted {
        node: node.clone(),
        query: task.question.clone(),
        settings: None,
        context: None,
    });
    let request = ChatRequest::new(vec![Message::system(DIRECT_SYSTEM), Message::user(prompt)]);
    let started = Instant::now();
    let stop = match with_timeout(options.task_timeout, method.root.chat(request)).await {
        None => {
            record.stop = UnitStop::Timeout;
            record.detail = Some(format!(
                "no answer within {:?}",
                options.task_timeout.unwrap_or_default()
            ));
            StopReason::Error {
                message: "timeout".into(),
            }
        }
        Some(Err(e)) => {
            record.stop = UnitStop::Error;
            record.detail = Some(e.to_string());
            StopReason::Error {
                message: e.to_string(),
            }
        }
        Some(Ok(r)) => {
            record.calls = 1;
            record.input_tokens = r.usage.input_tokens;
            record.output_tokens = r.usage.output_tokens;
            match r.cost_usd {
                Some(c) => record.cost_usd = c,
                None => record.unpriced_calls = 1,
            }
            emit(Event::ModelReply {
                node: node.clone(),
                iteration: 1,
                text: r.text.clone(),
                model: method.root.id(),
                request_hash: String::new(),
                usage: r.usage,
                cost_usd: r.cost_usd,
                ms: started.elapsed().as_secs_f64() * 1e3,
            });
            record.answer = Some(r.text.trim().to_string());
            record.stop = UnitStop::Final;
            StopReason::Final
        }
    };
    emit(Event::FinalAnswer {
        node,
        answer: record.answer.clone(),
        stop,
    });
}

/// How an RLM unit ended, from the run's stop reason (by its type, never its wording): a spent
/// time budget is a timeout, any other spent budget a budget stop.
fn unit_stop(stop: StopReason) -> (UnitStop, Option<String>) {
    match stop {
        StopReason::Final => (UnitStop::Final, None),
        StopReason::MaxIterations => (UnitStop::MaxIterations, None),
        StopReason::Budget {
            limit: Some(BudgetLimit::Time),
            reason,
        } => (UnitStop::Timeout, Some(reason)),
        StopReason::Budget { reason, .. } => (UnitStop::Budget, Some(reason)),
        StopReason::Error { message } => (UnitStop::Error, Some(message)),
    }
}

/// A stable 32-byte seed for one unit's sandboxes.
fn unit_seed(seed: u64, task: &str, method: &str) -> [u8; 32] {
    *blake3::hash(format!("{seed}\0{task}\0{method}").as_bytes()).as_bytes()
}

/// Run an RLM on `task`, which gives up its context to the run (no copy of the text).
async fn rlm_method(
    task: &mut Task,
    method: &ResolvedMethod,
    max_depth: u32,
    engine: Arc<SandboxEngine>,
    options: &RunOptions,
    trace: Option<Arc<TraceWriter>>,
    record: &mut TaskRecord,
) {
    record.sub_model = Some(method.sub.id());
    let context = std::mem::replace(&mut task.context, ContextInput::Text(String::new().into()));
    let mut budget = options.budget.clone();
    if budget.max_time.is_none() {
        budget.max_time = options.task_timeout;
    }
    let spec = RunSpec {
        max_depth: Some(max_depth),
        max_iterations: Some(options.max_iterations),
        sub_model_context_tokens: Some(options.sub_context_tokens),
        ..method.spec.clone()
    };
    let built = spec
        .builder(method.root.clone(), method.sub.clone())
        .map_err(rlm::RlmError::from)
        .and_then(|b| {
            let b = b.budget(budget).engine(engine).seed(unit_seed(
                options.seed,
                &task.id,
                &method.method.name,
            ));
            match trace {
                Some(t) => b.on_event(t),
                None => b,
            }
            .build()
        });
    let rlm = match built {
        Ok(r) => r,
        Err(e) => {
            record.stop = UnitStop::Error;
            record.detail = Some(e.to_string());
            return;
        }
    };
    // The budget's clock stops the loop between steps; this stops a stuck call too.
    let hard = options
        .task_timeout
        .map(|d| d.saturating_add(Duration::from_secs(30)));
    match with_timeout(hard, rlm.run(context, &task.question)).await {
        None => {
            record.stop = UnitStop::Timeout;
            record.detail = Some(format!("no answer within {:?}", hard.unwrap_or_default()));
        }
        Some(Err(e)) => {
            record.stop = UnitStop::Error;
            record.detail = Some(e.to_string());
        }
        Some(Ok(result)) => {
            let total = &result.usage.total;
            record.answer = result.answer.clone();
            record.iterations = result.iterations;
            record.calls = total.calls;
            record.sub_calls = result
                .events
                .iter()
                .filter(|e| matches!(e, Event::SubCallFinished { .. }))
                .count() as u64;
            record.input_tokens = total.usage.input_tokens;
            record.output_tokens = total.usage.output_tokens;
            record.cost_usd = total.cost_usd;
            record.unpriced_calls = total.unpriced_calls;
            (record.stop, record.detail) = unit_stop(result.stop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome follows the limit that ran out, whatever its message says.
    #[test]
    fn a_unit_stop_follows_the_limit_not_the_message() {
        let budget = |limit, reason: &str| StopReason::Budget {
            limit: Some(limit),
            reason: reason.into(),
        };
        assert_eq!(
            unit_stop(budget(BudgetLimit::Time, "the clock ran out")).0,
            UnitStop::Timeout
        );
        assert_eq!(
            unit_stop(budget(
                BudgetLimit::Tokens,
                "the time budget words in a token stop"
            ))
            .0,
            UnitStop::Budget
        );
        assert_eq!(
            unit_stop(StopReason::Error {
                message: "the time budget".into()
            })
            .0,
            UnitStop::Error
        );
    }

    /// Two models' (or methods') traces of the same task get different names, safe for a path.
    #[test]
    fn trace_names_differ_by_model_and_method() {
        let a = trace_name("s-niah/4k/0", "rlm", "local/qwen2.5-coder-1.5b");
        let b = trace_name("s-niah/4k/0", "rlm", "compat/qwen2.5-coder-1.5b");
        let c = trace_name("s-niah/4k/0", "direct", "local/qwen2.5-coder-1.5b");
        assert!(a != b && a != c && b != c, "{a} {b} {c}");
        assert_eq!(a, "s-niah_4k_0.rlm.local_qwen2.5-coder-1.5b.jsonl");
    }
}
