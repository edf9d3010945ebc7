//! Runs: starting them, following their events as Server-Sent Events, cancelling, listing, and
//! serving traces.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use rlm::{
    Budget, ContextInput, Event, EventSink, Rlm, RunResult, StopReason, TraceWriter, UsageReport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::{ApiError, AppState};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a run ended, in words a person understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `answered`, `exhausted` (budget or iterations; partial answer), `error` or `cancelled`.
    pub status: String,
    /// The answer (partial when exhausted).
    pub answer: Option<String>,
    /// What happened, for people.
    pub message: String,
    /// The loop's stop reason, when it ran.
    pub stop: Option<StopReason>,
    /// Root iterations.
    pub iterations: u32,
    /// Tokens and cost.
    pub usage: Option<UsageReport>,
    /// Seconds.
    pub elapsed_s: f64,
}

impl Summary {
    fn of(result: &RunResult) -> Self {
        let (status, message) = match &result.stop {
            StopReason::Final => ("answered", "The model gave its final answer.".to_string()),
            StopReason::MaxIterations => (
                "exhausted",
                format!(
                    "The iteration limit ({}) was reached; this is the model's best answer so far.",
                    result.iterations
                ),
            ),
            StopReason::Budget { reason } => (
                "exhausted",
                format!(
                    "Stopped because {reason}. The answer so far is shown; raise the budget to go further."
                ),
            ),
            StopReason::Error { message } => (
                "error",
                format!("A model call failed after its retries: {message}"),
            ),
        };
        Self {
            status: status.into(),
            answer: result.answer.clone(),
            message,
            stop: Some(result.stop.clone()),
            iterations: result.iterations,
            usage: Some(result.usage.clone()),
            elapsed_s: result.elapsed.as_secs_f64(),
        }
    }

    fn failed(status: &str, message: String, elapsed: Duration) -> Self {
        Self {
            status: status.into(),
            answer: None,
            message,
            stop: None,
            iterations: 0,
            usage: None,
            elapsed_s: elapsed.as_secs_f64(),
        }
    }
}

/// What followers of a run receive.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A loop event.
    Event(Box<Event>),
    /// The run ended.
    Done(Arc<Summary>),
}

struct RunState {
    events: Vec<Event>,
    summary: Option<Arc<Summary>>,
}

/// One run (live or finished) or an opened trace.
pub struct RunEntry {
    /// Its id.
    pub id: String,
    /// The question.
    pub query: String,
    /// Root model id.
    pub root_model: String,
    /// Where it came from: `page`, `api` or `trace`.
    pub source: String,
    /// Seconds since the Unix epoch.
    pub started_unix: u64,
    /// Its trace file, if written.
    pub trace: Option<PathBuf>,
    state: Mutex<RunState>,
    tx: broadcast::Sender<Msg>,
    done: watch::Sender<Option<Arc<Summary>>>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
    /// The run slot it holds, released once (by the end of its task or by a cancel).
    slot: Mutex<Option<Arc<AtomicUsize>>>,
    watchers: AtomicUsize,
    cancel_on_disconnect: bool,
    started: Instant,
}

impl RunEntry {
    fn new(
        id: String,
        query: String,
        root_model: String,
        source: &str,
        cancel_on_disconnect: bool,
        trace: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            query,
            root_model,
            source: source.into(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            trace,
            state: Mutex::new(RunState {
                events: Vec::new(),
                summary: None,
            }),
            tx: broadcast::channel(16_384).0,
            done: watch::channel(None).0,
            abort: Mutex::new(None),
            slot: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            cancel_on_disconnect,
            started: Instant::now(),
        })
    }

    fn push(&self, event: &Event) {
        let mut s = lock(&self.state);
        if s.summary.is_some() {
            return;
        }
        s.events.push(event.clone());
        let _ = self.tx.send(Msg::Event(Box::new(event.clone())));
    }

    /// End the run (the first call wins).
    fn finish(&self, summary: Summary) {
        let mut s = lock(&self.state);
        if s.summary.is_some() {
            return;
        }
        let summary = Arc::new(summary);
        s.summary = Some(summary.clone());
        let _ = self.tx.send(Msg::Done(summary.clone()));
        self.done.send_replace(Some(summary));
    }

    /// The summary, once finished.
    pub fn summary(&self) -> Option<Arc<Summary>> {
        lock(&self.state).summary.clone()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.state).events.clone()
    }

    /// Wait for the end.
    pub async fn wait(&self) -> Arc<Summary> {
        let mut rx = self.done.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            if rx.changed().await.is_err() {
                return Arc::new(Summary::failed(
                    "error",
                    "the run vanished".into(),
                    self.started.elapsed(),
                ));
            }
        }
    }

    /// Give back the run slot (once): a cancelled run frees it at once, not when its aborted
    /// task is next dropped.
    fn release_slot(&self) {
        if let Some(active) = lock(&self.slot).take() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Stop the run now; it ends as `cancelled` with what it had.
    pub fn cancel(&self) -> bool {
        let running = self.summary().is_none();
        if let Some(h) = lock(&self.abort).take() {
            h.abort();
        }
        self.release_slot();
        if running {
            self.finish(Summary::failed(
                "cancelled",
                "The run was cancelled.".into(),
                self.started.elapsed(),
            ));
        }
        running
    }

    /// The past events, then live ones, ending with `Done`; following counts as watching.
    pub fn follow(self: &Arc<Self>) -> Follow {
        let s = lock(&self.state);
        let mut backlog: VecDeque<Msg> = s
            .events
            .iter()
            .map(|e| Msg::Event(Box::new(e.clone())))
            .collect();
        if let Some(sum) = &s.summary {
            backlog.push_back(Msg::Done(sum.clone()));
        }
        let rx = self.tx.subscribe();
        drop(s);
        self.watchers.fetch_add(1, Ordering::SeqCst);
        Follow {
            backlog,
            rx,
            guard: WatchGuard(self.clone()),
            ended: false,
        }
    }

    fn info(&self) -> serde_json::Value {
        let summary = self.summary();
        serde_json::json!({
            "id": self.id,
            "query": self.query,
            "root_model": self.root_model,
            "source": self.source,
            "started_unix": self.started_unix,
            "status": summary.as_ref().map_or("running", |s| s.status.as_str()),
            "answer": summary.as_ref().and_then(|s| s.answer.clone()),
            "trace": self.trace.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().to_string()),
        })
    }
}

/// Decrements the watcher count; the last page watcher leaving cancels a page run.
pub struct WatchGuard(Arc<RunEntry>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let entry = self.0.clone();
        if entry.watchers.fetch_sub(1, Ordering::SeqCst) == 1
            && entry.cancel_on_disconnect
            && entry.summary().is_none()
        {
            // A short grace, so a reconnecting page keeps its run.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    if entry.watchers.load(Ordering::SeqCst) == 0 && entry.cancel() {
                        tracing::info!(run = %entry.id, "cancelled: its page went away");
                    }
                });
            }
        }
    }
}

/// A follower's position in a run's stream.
pub struct Follow {
    backlog: VecDeque<Msg>,
    rx: broadcast::Receiver<Msg>,
    guard: WatchGuard,
    ended: bool,
}

impl Follow {
    /// The next message, `None` after `Done`.
    pub async fn next(&mut self) -> Option<Msg> {
        if self.ended {
            return None;
        }
        let msg = match self.backlog.pop_front() {
            Some(m) => m,
            None => loop {
                match self.rx.recv().await {
                    Ok(m) => break m,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(run = %self.guard.0.id, skipped = n, "a slow follower missed events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        if matches!(msg, Msg::Done(_)) {
            self.ended = true;
        }
        Some(msg)
    }
}

struct Sink {
    entry: Arc<RunEntry>,
    trace: Option<Arc<TraceWriter>>,
}

impl EventSink for Sink {
    fn event(&self, event: &Event) {
        if let Some(t) = &self.trace {
            t.event(event);
        }
        self.entry.push(event);
    }
}

/// Every run the server knows, newest last.
pub struct Registry {
    runs: Mutex<Vec<Arc<RunEntry>>>,
    active: Arc<AtomicUsize>,
    max_active: usize,
    next: AtomicU64,
}

/// Frees a run slot when the run's task ends (or is aborted).
struct Slot {
    entry: Arc<RunEntry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.entry.release_slot();
        self.entry.finish(Summary::failed(
            "cancelled",
            "The run was cancelled.".into(),
            self.entry.started.elapsed(),
        ));
    }
}

/// What a run is asked to do.
pub struct Launch {
    /// The context.
    pub context: ContextInput,
    /// The question.
    pub query: String,
    /// Root model id (else the server's default).
    pub model: Option<String>,
    /// Sub-model id.
    pub sub_model: Option<String>,
    /// Iterations.
    pub max_iterations: Option<u32>,
    /// Depth.
    pub max_depth: Option<u32>,
    /// Budget (fields left `None` take the server's).
    pub budget: Budget,
    /// `page` or `api`.
    pub source: &'static str,
    /// Cancel when the last follower leaves.
    pub cancel_on_disconnect: bool,
}

impl Registry {
    /// An empty registry allowing `max_active` runs at once.
    pub fn new(max_active: usize) -> Self {
        Self {
            runs: Mutex::new(Vec::new()),
            active: Arc::new(AtomicUsize::new(0)),
            max_active: max_active.max(1),
            next: AtomicU64::new(1),
        }
    }

    fn new_id(&self) -> String {
        format!("r{}", self.next.fetch_add(1, Ordering::SeqCst))
    }

    /// A run by id.
    pub fn get(&self, id: &str) -> Option<Arc<RunEntry>> {
        lock(&self.runs).iter().find(|r| r.id == id).cloned()
    }

    /// Add a finished run from a trace's events (for `rlm view`); returns its id.
    pub fn add_trace(&self, name: &str, events: Vec<Event>) -> String {
        let (query, root_model) = events
            .iter()
            .find_map(|e| match e {
                Event::RunStarted {
                    node,
                    query,
                    settings,
                    ..
                } if node.depth == 0 => Some((
                    query.clone(),
                    settings
                        .as_ref()
                        .map_or(String::new(), |s| s.root_model.clone()),
                )),
                _ => None,
            })
            .unwrap_or_default();
        let answer = events.iter().rev().find_map(|e| match e {
            Event::FinalAnswer { node, answer, stop } if node.depth == 0 => {
                Some((answer.clone(), stop.clone()))
            }
            _ => None,
        });
        let entry = RunEntry::new(self.new_id(), query, root_model, "trace", false, None);
        for e in &events {
            entry.push(e);
        }
        entry.finish(Summary {
            status: "trace".into(),
            answer: answer.as_ref().and_then(|a| a.0.clone()),
            message: format!("Opened from the trace {name}."),
            stop: answer.map(|a| a.1),
            iterations: 0,
            usage: None,
            elapsed_s: 0.0,
        });
        let id = entry.id.clone();
        lock(&self.runs).push(entry);
        id
    }

    /// Start a run: resolve its models, take a slot (429 when none is free), spawn it.
    pub async fn launch(
        &self,
        state: &Arc<AppState>,
        l: Launch,
    ) -> Result<Arc<RunEntry>, ApiError> {
        let c = &state.config;
        let root_id = l
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| c.defaults.model.clone())
            .ok_or_else(|| {
                ApiError::bad(
                    c.no_model_reason
                        .clone()
                        .unwrap_or_else(|| "no model given: pick one (provider/model)".into()),
                )
            })?;
        let sub_id = l
            .sub_model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| c.defaults.sub_model.clone())
            .unwrap_or_else(|| root_id.clone());
        // Take a slot first: a full server refuses before loading models.
        let taken = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_active).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} runs are already running, the most this server allows (--max-runs); wait for one to finish or cancel one",
                    self.max_active
                ),
            ));
        }
        let release = || {
            self.active.fetch_sub(1, Ordering::SeqCst);
        };
        let root = match (c.models)(root_id.clone()).await {
            Ok(m) => m,
            Err(e) => {
                release();
                return Err(ApiError::bad(e));
            }
        };
        let sub = if sub_id == root_id {
            root.clone()
        } else {
            match (c.models)(sub_id.clone()).await {
                Ok(m) => m,
                Err(e) => {
                    release();
                    return Err(ApiError::bad(e));
                }
            }
        };
        let id = self.new_id();
        let trace_path = c
            .trace_dir
            .as_ref()
            .map(|d| d.join(format!("run-{}-{id}.jsonl", std::process::id())));
        let trace = trace_path.as_ref().and_then(|p| {
            let _ = std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")));
            TraceWriter::create(p)
                .map_err(
                    |e| tracing::warn!(path = %p.display(), error = %e, "cannot write the trace"),
                )
                .ok()
        });
        let entry = RunEntry::new(
            id,
            l.query.clone(),
            root_id,
            l.source,
            l.cancel_on_disconnect,
            trace.as_ref().and(trace_path),
        );
        let d = &c.defaults;
        let budget = Budget {
            max_sub_calls: l.budget.max_sub_calls.or(d.budget.max_sub_calls),
            max_tokens: l.budget.max_tokens.or(d.budget.max_tokens),
            max_usd: l.budget.max_usd.or(d.budget.max_usd),
            max_time: l.budget.max_time.or(d.budget.max_time),
        };
        let built = Rlm::builder(root)
            .sub_model(sub)
            .engine(c.engine.clone())
            .max_iterations(l.max_iterations.unwrap_or(d.max_iterations).clamp(1, 200))
            .max_depth(l.max_depth.unwrap_or(d.max_depth).min(8))
            .budget(budget)
            .on_event(Arc::new(Sink {
                entry: entry.clone(),
                trace,
            }))
            .build();
        let rlm = match built {
            Ok(r) => r,
            Err(e) => {
                release();
                return Err(ApiError::bad(e.to_string()));
            }
        };
        *lock(&entry.slot) = Some(self.active.clone());
        let slot = Slot {
            entry: entry.clone(),
        };
        let run_entry = entry.clone();
        let (context, query) = (l.context, l.query);
        let task = tokio::spawn(async move {
            let _slot = slot;
            let summary = match rlm.run(context, &query).await {
                Ok(result) => Summary::of(&result),
                Err(e) => Summary::failed(
                    "error",
                    format!("The run could not start: {e}"),
                    run_entry.started.elapsed(),
                ),
            };
            run_entry.finish(summary);
        });
        *lock(&entry.abort) = Some(task.abort_handle());
        lock(&self.runs).push(entry.clone());
        Ok(entry)
    }
}

/// `POST /api/runs` body.
#[derive(Debug, Deserialize)]
pub struct StartRun {
    /// The document (text; `context_json` true: JSON).
    #[serde(default)]
    pub context: Option<String>,
    /// Parse `context` as JSON.
    #[serde(default)]
    pub context_json: bool,
    /// Use the server's sample document.
    #[serde(default)]
    pub sample: bool,
    /// The question.
    pub query: String,
    /// Root model.
    pub model: Option<String>,
    /// Sub-model.
    pub sub_model: Option<String>,
    /// Iterations.
    pub max_iterations: Option<u32>,
    /// Depth.
    pub max_depth: Option<u32>,
    /// Dollars.
    pub budget_usd: Option<f64>,
    /// Tokens.
    pub budget_tokens: Option<u64>,
    /// Sub-calls.
    pub budget_sub_calls: Option<u64>,
    /// Seconds.
    pub budget_seconds: Option<f64>,
    /// Cancel when nobody follows the run any more (the page sets it).
    #[serde(default)]
    pub cancel_on_disconnect: bool,
}

/// Start a run.
pub async fn start(
    State(s): State<Arc<AppState>>,
    Json(b): Json<StartRun>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if b.query.trim().is_empty() {
        return Err(ApiError::bad("the question is empty: type one"));
    }
    let context = if b.sample {
        let (_, text) = s
            .config
            .sample
            .as_ref()
            .ok_or_else(|| ApiError::bad("this server has no sample document"))?;
        ContextInput::Text(text.clone())
    } else {
        let text = b.context.unwrap_or_default();
        if text.is_empty() {
            return Err(ApiError::bad(
                "the document is empty: paste or upload one, or pick the sample",
            ));
        }
        if b.context_json {
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::bad(format!("the document is not valid JSON: {e}")))?;
            ContextInput::from_json(v)
        } else {
            ContextInput::Text(text)
        }
    };
    let positive = |x: Option<f64>, what: &str| -> Result<Option<f64>, ApiError> {
        match x {
            Some(v) if !(v > 0.0 && v.is_finite()) => {
                Err(ApiError::bad(format!("{what} must be a positive number")))
            }
            other => Ok(other),
        }
    };
    let budget = Budget {
        max_sub_calls: b.budget_sub_calls,
        max_tokens: b.budget_tokens,
        max_usd: positive(b.budget_usd, "the cost budget")?,
        max_time: positive(b.budget_seconds, "the time budget")?.map(Duration::from_secs_f64),
    };
    let entry = s
        .runs
        .launch(
            &s,
            Launch {
                context,
                query: b.query,
                model: b.model,
                sub_model: b.sub_model,
                max_iterations: b.max_iterations,
                max_depth: b.max_depth,
                budget,
                source: "page",
                cancel_on_disconnect: b.cancel_on_disconnect,
            },
        )
        .await?;
    Ok(Json(entry.info()))
}

fn find(s: &AppState, id: &str) -> Result<Arc<RunEntry>, ApiError> {
    s.runs.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} (runs are kept until the server stops)"),
        )
    })
}

/// Follow a run: `event: rlm` for each loop event, then `event: done` with the summary.
pub async fn events(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let follow = find(&s, &id)?.follow();
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let msg = f.next().await?;
        let ev = match msg {
            Msg::Event(e) => SseEvent::default().event("rlm").json_data(&*e),
            Msg::Done(sum) => SseEvent::default().event("done").json_data(&*sum),
        }
        .unwrap_or_else(|e| SseEvent::default().event("error").data(e.to_string()));
        Some((Ok(ev), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// Cancel a run.
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let entry = find(&s, &id)?;
    let was_running = entry.cancel();
    Ok(Json(
        serde_json::json!({"id": id, "cancelled": was_running}),
    ))
}

/// Every run, newest first.
pub async fn list(State(s): State<Arc<AppState>>) -> Json<Vec<serde_json::Value>> {
    let runs = lock(&s.runs.runs).clone();
    Json(runs.iter().rev().map(|r| r.info()).collect())
}

/// One run with its events and summary.
pub async fn get_run(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let entry = find(&s, &id)?;
    let mut v = entry.info();
    v["events"] = serde_json::to_value(entry.events()).unwrap_or_default();
    v["summary"] = serde_json::to_value(entry.summary().as_deref()).unwrap_or_default();
    Ok(Json(v))
}

fn trace_dir(s: &AppState) -> Result<&Path, ApiError> {
    s.config.trace_dir.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server has no trace directory (--trace-dir)",
        )
    })
}

/// The trace files in the trace directory.
pub async fn list_traces(
    State(s): State<Arc<AppState>>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let dir = trace_dir(&s)?;
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".jsonl") && e.file_type().is_ok_and(|t| t.is_file()) {
                let size = e.metadata().map_or(0, |m| m.len());
                out.push(serde_json::json!({"name": name, "bytes": size}));
            }
        }
    }
    out.sort_by(|a, b| b["name"].as_str().cmp(&a["name"].as_str()));
    Ok(Json(out))
}

/// A trace file's events, by plain file name inside the trace directory only.
pub async fn get_trace(
    State(s): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dir = trace_dir(&s)?;
    let plain = !name.is_empty()
        && name.ends_with(".jsonl")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !plain {
        return Err(ApiError::bad(
            "a trace is named by its plain file name (letters, digits, - _ .), ending in .jsonl",
        ));
    }
    let path = dir.join(&name);
    let inside = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.parent() == Some(d.as_path()),
        _ => false,
    };
    if !inside {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no trace {name:?}"),
        ));
    }
    let events = rlm::read_trace(&path).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(Json(serde_json::json!({"name": name, "events": events})))
}
