//! The runs the server keeps in memory ([`Registry`]): ids, trace names, retention.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use rlm::Event;

use super::entry::RunEntry;
use super::lock;
use super::retention::Retention;
use super::summary::{RunStatus, Summary};
use crate::ApiError;

/// One of the server's run slots, given back when dropped.
pub(super) struct RunSlot(Arc<AtomicUsize>);

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The runs the server keeps in memory, newest last: every running run, and the newest finished
/// ones within the [`Retention`].
pub struct Registry {
    runs: Mutex<VecDeque<Arc<RunEntry>>>,
    active: Arc<AtomicUsize>,
    max_active: usize,
    next: AtomicU64,
    pub(super) retention: Retention,
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

    /// Take a run slot, if one is free.
    pub(super) fn try_slot(&self) -> Option<RunSlot> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_active).then_some(n + 1)
            })
            .ok()
            .map(|_| RunSlot(self.active.clone()))
    }

    /// A 429 when no run slot is free now (checked again when one is taken).
    pub fn check_free(&self) -> Result<(), ApiError> {
        if self.active.load(Ordering::SeqCst) >= self.max_active {
            return Err(self.full());
        }
        Ok(())
    }

    /// The refusal when no run slot is free.
    pub(super) fn full(&self) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} runs are already running, the most this server allows (--max-runs); wait for one to finish or cancel one",
                self.max_active
            ),
        )
    }

    pub(super) fn new_id(&self) -> String {
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
    pub(super) fn keep(&self, entry: Arc<RunEntry>) {
        lock(&self.runs).push_back(entry);
        self.trim();
    }

    /// Let the oldest finished runs go while more are kept than the retention allows (they
    /// remain as trace files). Running runs always stay.
    pub(super) fn trim(&self) {
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
}
