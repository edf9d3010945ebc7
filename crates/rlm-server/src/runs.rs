//! Runs: starting them, following their events as Server-Sent Events, cancelling, listing, and
//! serving traces.
//!
//! Memory is bounded ([`Retention`]): each run keeps at most a number of events and bytes, with
//! every string field cut to a length (the trace file has everything), and only the newest
//! finished runs stay in memory. An older run has moved out to the trace directory: asking for it
//! reads its trace file back.

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
    BudgetLimits, ContextInput, Event, EventSink, RlmError, RunResult, RunSpec, StopReason,
    TraceWriter, UsageReport,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::{ApiError, AppState};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How much of its runs the server keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs kept in memory; older ones are read back from their trace files.
    pub finished_runs: usize,
    /// Bytes (of JSON) of all finished runs kept in memory together.
    pub finished_bytes: usize,
    /// Events kept per run; later ones still reach live followers and the trace file.
    pub events_per_run: usize,
    /// Bytes (of JSON) of the events kept per run.
    pub bytes_per_run: usize,
    /// Longest string kept in an event, a question or a message, in bytes.
    pub field_bytes: usize,
    /// Longest answer kept (and served), in bytes.
    pub answer_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            finished_runs: 100,
            finished_bytes: 128 << 20,
            events_per_run: 5_000,
            bytes_per_run: 8 << 20,
            field_bytes: 64 << 10,
            answer_bytes: 1 << 20,
        }
    }
}

/// Cut `s` to at most `max` bytes (at a character boundary), saying how much was cut.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let more = s.len() - end;
    s.truncate(end);
    s.push_str(&format!(
        "… [{more} more bytes not kept by the server; the trace file has them all]"
    ));
}

fn cut_strings(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) => cut(s, max),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, max)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut_strings(x, max)),
        _ => {}
    }
}

/// `x` with every string in it cut to `max` bytes, and the size of its JSON.
fn capped<T: Serialize + DeserializeOwned + Clone>(x: &T, max: usize) -> (T, usize) {
    let Ok(mut v) = serde_json::to_value(x) else {
        return (x.clone(), 0);
    };
    // A run's context is in its trace; the page never shows it.
    if let Some(ctx) = v.get_mut("context").and_then(|c| c.as_object_mut()) {
        ctx.remove("inline");
    }
    cut_strings(&mut v, max);
    let size = serde_json::to_string(&v).map_or(0, |j| j.len());
    match serde_json::from_value(v) {
        Ok(kept) => (kept, size),
        Err(_) => (x.clone(), size),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The model gave its final answer.
    Answered,
    /// The budget or the iterations ran out (the answer is partial).
    Exhausted,
    /// The run failed.
    Error,
    /// The run was cancelled.
    Cancelled,
    /// A trace opened for viewing.
    Trace,
}

impl RunStatus {
    /// The name the API and the page use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Exhausted => "exhausted",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Trace => "trace",
        }
    }
}

/// How a run ended, in words a person understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `answered`, `exhausted` (budget or iterations; partial answer), `error` or `cancelled`.
    pub status: RunStatus,
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
            StopReason::Final => (
                RunStatus::Answered,
                "The model gave its final answer.".to_string(),
            ),
            StopReason::MaxIterations => (
                RunStatus::Exhausted,
                format!(
                    "The iteration limit ({}) was reached; this is the model's best answer so far.",
                    result.iterations
                ),
            ),
            StopReason::Budget { reason, .. } => (
                RunStatus::Exhausted,
                format!(
                    "Stopped because {reason}. The answer so far is shown; raise the budget to go further."
                ),
            ),
            StopReason::Error { message } => (
                RunStatus::Error,
                format!("A model call failed after its retries: {message}"),
            ),
        };
        Self {
            status,
            answer: result.answer.clone(),
            message,
            stop: Some(result.stop.clone()),
            iterations: result.iterations,
            usage: Some(result.usage.clone()),
            elapsed_s: result.elapsed.as_secs_f64(),
        }
    }

    /// A copy within the retention's field sizes.
    fn capped(&self, r: &Retention) -> Self {
        let mut s = self.clone();
        if let Some(a) = &mut s.answer {
            cut(a, r.answer_bytes);
        }
        cut(&mut s.message, r.field_bytes);
        s.stop = s.stop.map(|stop| capped(&stop, r.field_bytes).0);
        s
    }

    /// What a trace says of how its run ended.
    fn of_trace(events: &[Event], status: Option<RunStatus>, message: String) -> Self {
        let last = events.iter().rev().find_map(|e| match e {
            Event::FinalAnswer { node, answer, stop } if node.depth == 0 => {
                Some((answer.clone(), stop.clone()))
            }
            _ => None,
        });
        let derived = match last.as_ref().map(|l| &l.1) {
            Some(StopReason::Final) => RunStatus::Answered,
            Some(StopReason::MaxIterations | StopReason::Budget { .. }) => RunStatus::Exhausted,
            Some(StopReason::Error { .. }) => RunStatus::Error,
            None => RunStatus::Cancelled,
        };
        Self {
            status: status.unwrap_or(derived),
            answer: last.as_ref().and_then(|a| a.0.clone()),
            message,
            stop: last.map(|a| a.1),
            iterations: events
                .iter()
                .filter_map(|e| match e {
                    Event::Iteration { node, n } if node.depth == 0 => Some(*n),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            usage: None,
            elapsed_s: 0.0,
        }
    }

    fn failed(status: RunStatus, message: String, elapsed: Duration) -> Self {
        Self {
            status,
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
    /// A loop event (its strings cut to the retention's field size).
    Event(Arc<Event>),
    /// The run ended.
    Done(Arc<Summary>),
}

struct RunState {
    /// The events kept (within the retention's caps).
    events: Vec<Arc<Event>>,
    /// Their size as JSON, plus the summary's.
    bytes: usize,
    /// Events not kept because the run's caps were reached.
    dropped: u64,
    summary: Option<Arc<Summary>>,
    /// Live followers' channel, dropped when the run ends (its buffer is large).
    tx: Option<broadcast::Sender<Msg>>,
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
    done: watch::Sender<Option<Arc<Summary>>>,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
    /// The run slot it holds, released once (by the end of its task or by a cancel).
    slot: Mutex<Option<Arc<AtomicUsize>>>,
    watchers: AtomicUsize,
    cancel_on_disconnect: bool,
    started: Instant,
    retention: Retention,
}

impl RunEntry {
    fn new(
        id: String,
        mut query: String,
        root_model: String,
        source: &str,
        cancel_on_disconnect: bool,
        trace: Option<PathBuf>,
        retention: Retention,
    ) -> Arc<Self> {
        cut(&mut query, retention.field_bytes);
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
                bytes: 0,
                dropped: 0,
                summary: None,
                tx: Some(broadcast::channel(16_384).0),
            }),
            done: watch::channel(None).0,
            abort: Mutex::new(None),
            slot: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            cancel_on_disconnect,
            started: Instant::now(),
            retention,
        })
    }

    /// Keep an event (within the run's caps) and send it to live followers.
    fn push(&self, event: &Event) {
        let r = &self.retention;
        let (event, size) = capped(event, r.field_bytes);
        let event = Arc::new(event);
        let mut s = lock(&self.state);
        if s.summary.is_some() {
            return;
        }
        if s.events.len() < r.events_per_run && s.bytes + size <= r.bytes_per_run {
            s.events.push(event.clone());
            s.bytes += size;
        } else {
            s.dropped += 1;
        }
        if let Some(tx) = &s.tx {
            let _ = tx.send(Msg::Event(event));
        }
    }

    /// End the run (the first call wins).
    fn finish(&self, summary: Summary) {
        let summary = Arc::new(summary.capped(&self.retention));
        let mut s = lock(&self.state);
        if s.summary.is_some() {
            return;
        }
        s.bytes += serde_json::to_string(&*summary).map_or(0, |j| j.len());
        s.summary = Some(summary.clone());
        if let Some(tx) = s.tx.take() {
            let _ = tx.send(Msg::Done(summary.clone()));
        }
        drop(s);
        self.done.send_replace(Some(summary));
        // The finished task's handle would keep its memory.
        lock(&self.abort).take();
    }

    /// Bytes kept for this run (JSON size of its events and summary), and whether it ended.
    fn kept(&self) -> (usize, bool) {
        let s = lock(&self.state);
        (s.bytes + self.query.len(), s.summary.is_some())
    }

    /// The summary, once finished.
    pub fn summary(&self) -> Option<Arc<Summary>> {
        lock(&self.state).summary.clone()
    }

    /// Every event kept so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        lock(&self.state).events.clone()
    }

    /// How many events were not kept (the run's caps were reached).
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
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
                    RunStatus::Error,
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
        let handle = lock(&self.abort).take();
        if let Some(h) = handle {
            h.abort();
        }
        self.release_slot();
        if running {
            self.finish(Summary::failed(
                RunStatus::Cancelled,
                "The run was cancelled.".into(),
                self.started.elapsed(),
            ));
        }
        running
    }

    /// The past events, then live ones, ending with `Done`; following counts as watching.
    pub fn follow(self: &Arc<Self>) -> Follow {
        let s = lock(&self.state);
        let mut backlog: VecDeque<Msg> = s.events.iter().cloned().map(Msg::Event).collect();
        if let Some(sum) = &s.summary {
            backlog.push_back(Msg::Done(sum.clone()));
        }
        let rx = s.tx.as_ref().map(broadcast::Sender::subscribe);
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
            "events_dropped": self.dropped(),
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
    /// `None` once the run had ended when following began (the backlog has it all).
    rx: Option<broadcast::Receiver<Msg>>,
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
                let Some(rx) = &mut self.rx else {
                    return None;
                };
                match rx.recv().await {
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

/// The runs the server keeps in memory, newest last: every running run, and the newest finished
/// ones within the [`Retention`].
pub struct Registry {
    runs: Mutex<VecDeque<Arc<RunEntry>>>,
    active: Arc<AtomicUsize>,
    max_active: usize,
    next: AtomicU64,
    retention: Retention,
}

/// Frees a run slot when the run's task ends (or is aborted).
struct Slot {
    entry: Arc<RunEntry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.entry.release_slot();
        self.entry.finish(Summary::failed(
            RunStatus::Cancelled,
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
    /// Models, limits and budget the request gave (what it leaves unset takes the server's
    /// defaults).
    pub spec: RunSpec,
    /// `page` or `api`.
    pub source: &'static str,
    /// Cancel when the last follower leaves.
    pub cancel_on_disconnect: bool,
}

impl Registry {
    /// An empty registry allowing `max_active` runs at once and keeping what `retention` says.
    pub fn new(max_active: usize, retention: Retention) -> Self {
        Self {
            runs: Mutex::new(VecDeque::new()),
            active: Arc::new(AtomicUsize::new(0)),
            max_active: max_active.max(1),
            next: AtomicU64::new(1),
            retention,
        }
    }

    fn new_id(&self) -> String {
        format!("r{}", self.next.fetch_add(1, Ordering::SeqCst))
    }

    /// The name of run `id`'s trace file in the trace directory; `None` for a name that is not
    /// a run id.
    pub fn trace_name(id: &str) -> Option<String> {
        id.strip_prefix('r')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| format!("run-{}-{id}.jsonl", std::process::id()))
    }

    /// A run in memory, by id.
    pub fn get(&self, id: &str) -> Option<Arc<RunEntry>> {
        lock(&self.runs).iter().find(|r| r.id == id).cloned()
    }

    /// The runs in memory, newest first.
    pub fn list(&self) -> Vec<Arc<RunEntry>> {
        lock(&self.runs).iter().rev().cloned().collect()
    }

    /// A finished run made from a trace's events (not kept: see [`Registry::add_trace`]).
    /// `status` is the one to show, or `None` to say how the traced run ended.
    pub fn from_trace(
        &self,
        id: String,
        events: &[Event],
        status: Option<RunStatus>,
        message: String,
    ) -> Arc<RunEntry> {
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
        let entry = RunEntry::new(id, query, root_model, "trace", false, None, self.retention);
        for e in events {
            entry.push(e);
        }
        entry.finish(Summary::of_trace(events, status, message));
        entry
    }

    /// Add a finished run from a trace's events (for `rlm view`); returns its id.
    pub fn add_trace(&self, name: &str, events: Vec<Event>) -> String {
        let entry = self.from_trace(
            self.new_id(),
            &events,
            Some(RunStatus::Trace),
            format!("Opened from the trace {name}."),
        );
        let id = entry.id.clone();
        self.keep(entry);
        id
    }

    /// Add a run, then [`Registry::trim`].
    fn keep(&self, entry: Arc<RunEntry>) {
        lock(&self.runs).push_back(entry);
        self.trim();
    }

    /// Let the oldest finished runs go while more are kept than the retention allows (they
    /// remain as trace files). Running runs always stay.
    fn trim(&self) {
        let r = &self.retention;
        let mut runs = lock(&self.runs);
        let kept: Vec<(usize, bool)> = runs.iter().map(|e| e.kept()).collect();
        let (mut count, mut bytes) = kept
            .iter()
            .filter(|k| k.1)
            .fold((0, 0), |(c, b), k| (c + 1, b + k.0));
        let mut gone = Vec::new();
        for (i, (size, finished)) in kept.into_iter().enumerate() {
            if count <= r.finished_runs && bytes <= r.finished_bytes {
                break;
            }
            if finished {
                count -= 1;
                bytes -= size;
                gone.push(i);
            }
        }
        for j in gone.into_iter().rev() {
            runs.remove(j);
        }
    }

    /// Start a run: resolve its models, take a slot (429 when none is free), spawn it.
    pub async fn launch(
        &self,
        state: &Arc<AppState>,
        l: Launch,
    ) -> Result<Arc<RunEntry>, ApiError> {
        let c = &state.config;
        let mut spec = l.spec.or(&c.defaults);
        if spec.model.is_none()
            && let Some(reason) = &c.no_model_reason
        {
            return Err(ApiError::bad(reason.clone()));
        }
        let (root_id, sub_id) = spec.models().map_err(|e| ApiError::bad(e.to_string()))?;
        // A request's settings are capped by the server's.
        spec.max_iterations = Some(spec.max_iterations.unwrap_or(20).clamp(1, 200));
        spec.max_depth = Some(spec.max_depth.unwrap_or(1).min(8));
        spec.budget().map_err(|e| ApiError::bad(e.to_string()))?;
        for id in [&root_id, &sub_id] {
            if !c.allows_model(id) {
                let list = c.model_list();
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "the model {id:?} is not allowed on this server (it allows {}); its operator \
                         can allow more with `rlm serve --allow-model ID`",
                        if list.is_empty() {
                            "none".to_string()
                        } else {
                            list.join(", ")
                        }
                    ),
                ));
            }
        }
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
            .zip(Self::trace_name(&id))
            .map(|(d, name)| d.join(name));
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
            self.retention,
        );
        let built = spec
            .builder(root, sub)
            .map_err(RlmError::from)
            .and_then(|b| {
                b.engine(c.engine.clone())
                    .on_event(Arc::new(Sink {
                        entry: entry.clone(),
                        trace,
                    }))
                    .build()
            });
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
        let state = state.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let summary = match rlm.run(context, &query).await {
                Ok(result) => Summary::of(&result),
                Err(e) => Summary::failed(
                    RunStatus::Error,
                    format!("The run could not start: {e}"),
                    run_entry.started.elapsed(),
                ),
            };
            run_entry.finish(summary);
            state.runs.trim();
        });
        *lock(&entry.abort) = Some(task.abort_handle());
        if entry.summary().is_some() {
            // It ended already: its handle would keep the finished task's memory.
            lock(&entry.abort).take();
        }
        self.keep(entry.clone());
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
        ContextInput::Text(text.clone().into())
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
            ContextInput::Text(text.into())
        }
    };
    let spec = RunSpec {
        model: b.model,
        sub_model: b.sub_model,
        max_iterations: b.max_iterations,
        max_depth: b.max_depth,
        budget: BudgetLimits {
            usd: b.budget_usd,
            tokens: b.budget_tokens,
            sub_calls: b.budget_sub_calls,
            seconds: b.budget_seconds,
        },
        ..RunSpec::default()
    };
    let entry = s
        .runs
        .launch(
            &s,
            Launch {
                context,
                query: b.query,
                spec,
                source: "page",
                cancel_on_disconnect: b.cancel_on_disconnect,
            },
        )
        .await?;
    Ok(Json(entry.info()))
}

/// A run in memory, or one that has moved out to its trace file.
fn find(s: &AppState, id: &str) -> Result<Arc<RunEntry>, ApiError> {
    if let Some(entry) = s.runs.get(id) {
        return Ok(entry);
    }
    let moved = s
        .config
        .trace_dir
        .as_ref()
        .zip(Registry::trace_name(id))
        .map(|(dir, name)| (dir.join(&name), name))
        .filter(|(path, _)| path.is_file());
    let Some((path, name)) = moved else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} (older runs are in the trace directory, when it is written)"),
        ));
    };
    let events = rlm::read_trace(&path).map_err(|e| ApiError::bad(e.to_string()))?;
    let mut entry = s.runs.from_trace(
        id.to_string(),
        &events,
        None,
        format!("This run is no longer in the server's memory; it is shown from its trace {name}."),
    );
    if let Some(e) = Arc::get_mut(&mut entry) {
        e.trace = Some(path);
    }
    Ok(entry)
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
    s.runs.trim();
    Ok(Json(
        serde_json::json!({"id": id, "cancelled": was_running}),
    ))
}

/// Every run, newest first.
pub async fn list(State(s): State<Arc<AppState>>) -> Json<Vec<serde_json::Value>> {
    Json(s.runs.list().iter().map(|r| r.info()).collect())
}

/// One run with its events and summary.
pub async fn get_run(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let entry = find(&s, &id)?;
    let mut v = entry.info();
    let kept = entry.events();
    let events: Vec<&Event> = kept.iter().map(|e| &**e).collect();
    v["events"] = serde_json::to_value(events).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use rlm::Node;

    use super::*;

    fn code(n: u32, output: String) -> Event {
        Event::CodeExecuted {
            node: Node {
                rlm: "root".into(),
                depth: 0,
            },
            iteration: n,
            code: "print(1)".into(),
            output,
            error: Some("E".repeat(50_000)),
            final_answer: None,
            fuel: 1,
            ms: 1.0,
            restored: false,
            reset: false,
        }
    }

    fn small() -> Retention {
        Retention {
            finished_runs: 2,
            finished_bytes: usize::MAX,
            events_per_run: 3,
            bytes_per_run: usize::MAX,
            field_bytes: 100,
            answer_bytes: 200,
        }
    }

    fn entry(id: &str, r: Retention) -> Arc<RunEntry> {
        RunEntry::new(
            id.into(),
            "q".repeat(1000),
            "m".into(),
            "api",
            false,
            None,
            r,
        )
    }

    fn done(answer: &str) -> Summary {
        Summary {
            status: RunStatus::Answered,
            answer: Some(answer.into()),
            message: "M".repeat(10_000),
            stop: Some(StopReason::Error {
                message: "S".repeat(10_000),
            }),
            iterations: 1,
            usage: None,
            elapsed_s: 0.0,
        }
    }

    #[tokio::test]
    async fn a_run_keeps_a_bounded_number_of_events_with_cut_fields() {
        let e = entry("r1", small());
        let mut live = e.follow();
        for n in 0..10 {
            e.push(&code(n, "x".repeat(1 << 20)));
        }
        e.finish(done(&"A".repeat(10_000)));
        assert_eq!((e.events().len(), e.dropped()), (3, 7));
        for ev in e.events() {
            let Event::CodeExecuted { output, error, .. } = &*ev else {
                panic!("{ev:?}")
            };
            assert!(
                output.len() < 200 && output.contains("trace file"),
                "{output}"
            );
            assert!(error.as_ref().unwrap().len() < 200);
        }
        assert!(e.query.len() < 200);
        let sum = e.summary().unwrap();
        assert!(sum.answer.as_ref().unwrap().len() < 300 && sum.message.len() < 200);
        assert!(matches!(&sum.stop, Some(StopReason::Error { message }) if message.len() < 200));
        let (bytes, finished) = e.kept();
        assert!(finished && bytes < 4_000, "{bytes} bytes kept");
        // A live follower saw every event (cut), then the end.
        let mut seen = 0;
        while let Some(m) = live.next().await {
            if let Msg::Event(_) = m {
                seen += 1;
            }
        }
        assert_eq!(seen, 10);
        // Following the finished run replays what was kept.
        let mut later = e.follow();
        assert!(
            later.rx.is_none(),
            "the live channel is gone once the run ended"
        );
        let mut replayed = 0;
        while later.next().await.is_some() {
            replayed += 1;
        }
        assert_eq!(replayed, 4);
    }

    #[test]
    fn a_run_keeps_a_bounded_number_of_bytes() {
        let r = Retention {
            events_per_run: usize::MAX,
            bytes_per_run: 1_000,
            ..small()
        };
        let e = entry("r1", r);
        for n in 0..100 {
            e.push(&code(n, "y".repeat(50)));
        }
        let (bytes, _) = e.kept();
        assert!(bytes <= 1_000 + e.query.len(), "{bytes}");
        assert!(!e.events().is_empty() && e.dropped() > 90);
    }

    #[test]
    fn only_the_newest_finished_runs_stay() {
        let reg = Registry::new(4, small());
        let running: Vec<_> = (0..3)
            .map(|i| entry(&format!("live{i}"), small()))
            .collect();
        for r in &running {
            reg.keep(r.clone());
        }
        for i in 0..6 {
            let e = entry(&format!("r{i}"), small());
            e.finish(done("a"));
            reg.keep(e);
        }
        let ids: Vec<String> = reg.list().iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, ["r5", "r4", "live2", "live1", "live0"]);
        // A byte budget lets runs go too.
        let reg = Registry::new(
            4,
            Retention {
                finished_runs: 100,
                finished_bytes: 5_000,
                ..small()
            },
        );
        for i in 0..50 {
            let e = entry(&format!("r{i}"), small());
            e.finish(done("a"));
            reg.keep(e);
        }
        let kept = reg.list();
        let bytes: usize = kept.iter().map(|e| e.kept().0).sum();
        assert!(
            bytes <= 5_000 && kept.len() < 50 && !kept.is_empty(),
            "{bytes}"
        );
        assert_eq!(kept[0].id, "r49");
    }

    /// A stand-in for an in-process local model: it answers at once.
    struct TinyLocal;

    #[async_trait::async_trait]
    impl rlm_llm::ChatModel for TinyLocal {
        fn id(&self) -> String {
            "local/tiny".into()
        }

        async fn chat(
            &self,
            _request: rlm_llm::ChatRequest,
        ) -> Result<rlm_llm::ChatResponse, rlm_llm::LlmError> {
            Ok(rlm_llm::ChatResponse {
                text: "FINAL(ok)".into(),
                usage: rlm_llm::Usage::default(),
                model: self.id(),
                finish_reason: rlm_llm::FinishReason::Stop,
                latency: Duration::ZERO,
                attempts: 1,
                cost_usd: None,
            })
        }
    }

    /// The server sets runs up as the CLI and eval do ([`RunSpec::builder`]): a local root model
    /// gets the small-model prompt and output size.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_local_model_gets_the_small_model_setup_on_the_server_too() {
        let engine = rlm_sandbox::SandboxEngine::load().expect("guest (just guest)");
        let config = crate::ServeConfig {
            defaults: RunSpec {
                model: Some("local/tiny".into()),
                max_iterations: Some(3),
                ..RunSpec::default()
            },
            no_model_reason: None,
            models: Arc::new(|_id| {
                Box::pin(async { Ok(Arc::new(TinyLocal) as Arc<dyn rlm_llm::ChatModel>) })
            }),
            engine,
            api_key: None,
            max_body_bytes: 1 << 20,
            max_runs: 1,
            trace_dir: None,
            sample: None,
            allow_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 4,
            retention: Retention::default(),
            allowed_models: Vec::new(),
        };
        let state = Arc::new(AppState {
            config,
            runs: Registry::new(1, Retention::default()),
            hosts: crate::guard::HostCheck::new([127, 0, 0, 1].into(), &[]),
        });
        let entry = state
            .runs
            .launch(
                &state,
                Launch {
                    context: ContextInput::Text("doc".into()),
                    query: "q".into(),
                    spec: RunSpec::default(),
                    source: "api",
                    cancel_on_disconnect: false,
                },
            )
            .await
            .unwrap();
        let summary = entry.wait().await;
        assert_eq!(summary.status, RunStatus::Answered, "{summary:?}");
        let settings = entry
            .events()
            .iter()
            .find_map(|e| match &**e {
                Event::RunStarted {
                    settings: Some(s), ..
                } => Some(s.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.profile, rlm::PromptProfile::Small);
        assert!(settings.max_output_chars <= rlm::SMALL_MODEL_OUTPUT_CHARS);
        assert_eq!(settings.max_iterations, 3);
    }

    #[test]
    fn trace_names_are_only_made_from_run_ids() {
        assert!(Registry::trace_name("r12").unwrap().ends_with("-r12.jsonl"));
        for bad in ["r", "12", "r1/../x", "r-1", "r1.jsonl", "../r1"] {
            assert_eq!(Registry::trace_name(bad), None, "{bad}");
        }
    }
}
