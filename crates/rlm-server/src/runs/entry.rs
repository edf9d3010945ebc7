//! One run in the registry ([`RunEntry`]): its kept events and summary, its live followers
//! ([`Follow`]), and cancelling it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rlm::Event;
use tokio::sync::{broadcast, watch};

use super::lock;
use super::registry::RunSlot;
use super::retention::{Retention, capped, cut};
use super::summary::{RunStatus, Summary};

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
    /// Its task, until the task ends.
    pub(super) abort: Mutex<Option<tokio::task::AbortHandle>>,
    /// Its first event came: the context was copied and hashed (see [`RunEntry::cancel`]).
    prepared: AtomicBool,
    /// A cancel was asked for.
    cancelled: AtomicBool,
    /// Bumped when the run slot is given back.
    freed: watch::Sender<u64>,
    /// The run slot it holds, released once (by the end of its task or by a cancel).
    pub(super) slot: Mutex<Option<RunSlot>>,
    watchers: AtomicUsize,
    pub(super) cancel_on_disconnect: bool,
    pub(super) started: Instant,
    pub(super) retention: Retention,
}

impl RunEntry {
    pub(super) fn new(
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
            prepared: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            freed: watch::channel(0).0,
            slot: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            cancel_on_disconnect,
            started: Instant::now(),
            retention,
        })
    }

    /// Keep an event (within the run's caps) and send it to live followers.
    pub(super) fn push(&self, event: &Event) {
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
    pub(super) fn finish(&self, summary: Summary) {
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
    }

    /// Bytes kept for this run (JSON size of its events and summary), and whether it ended.
    pub(super) fn kept(&self) -> (usize, bool) {
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

    /// Give back the run slot (once).
    pub(super) fn release_slot(&self) {
        if lock(&self.slot).take().is_some() {
            self.freed.send_modify(|n| *n += 1);
        }
    }

    /// Wait until the run holds no run slot (at once for a run that holds none).
    pub async fn slot_freed(&self) {
        let mut rx = self.freed.subscribe();
        while lock(&self.slot).is_some() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stop the run's task and give back its slot.
    fn stop_task(&self) {
        if let Some(h) = lock(&self.abort).take() {
            h.abort();
        }
        self.release_slot();
    }

    /// The run's first event came, so the blocking work before it (the copy and hash of the
    /// context) is over: a cancel that was waiting for that stops the task now.
    pub(super) fn mark_prepared(&self) {
        if !self.prepared.swap(true, Ordering::SeqCst) && self.cancelled.load(Ordering::SeqCst) {
            self.stop_task();
        }
    }

    /// Stop the run now; it ends as `cancelled` with what it had.
    ///
    /// Before its first event, a run is copying and hashing its context on a blocking thread
    /// (inside `rlm`), which cannot be stopped from outside: the run shows as cancelled at once,
    /// but its task is stopped at its first event (or its end), and until then it keeps its run
    /// slot, so that work still counts against the run cap. After, the slot frees at once.
    pub fn cancel(&self) -> bool {
        let running = self.summary().is_none();
        self.cancelled.store(true, Ordering::SeqCst);
        if self.prepared.load(Ordering::SeqCst) {
            self.stop_task();
        }
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

    pub(super) fn info(&self) -> serde_json::Value {
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
    pub(super) rx: Option<broadcast::Receiver<Msg>>,
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
