//! Starting a run ([`Registry::launch`]): its models, its run slot, its task and its trace.

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use rlm::{ContextInput, Event, EventSink, RlmError, RunSpec, TraceWriter};

use super::entry::RunEntry;
use super::lock;
use super::registry::Registry;
use super::summary::{RunStatus, Summary};
use crate::{ApiError, AppState, ServeConfig};

struct Sink {
    entry: Arc<RunEntry>,
    trace: Option<Arc<TraceWriter>>,
}

impl EventSink for Sink {
    fn event(&self, event: &Event) {
        self.entry.mark_prepared();
        if let Some(t) = &self.trace {
            t.event(event);
        }
        self.entry.push(event);
    }
}

/// Frees a run's slot and ends it (as cancelled, unless it ended already) when its task ends or
/// is aborted.
struct TaskEnd {
    entry: Arc<RunEntry>,
}

impl Drop for TaskEnd {
    fn drop(&mut self) {
        self.entry.release_slot();
        // The ended task's handle would keep its memory.
        lock(&self.entry.abort).take();
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

/// A request's run settings over the server's defaults, capped by the server's limits, with its
/// root and sub-model ids: a 400 for settings that do not hold, a 403 for a model the server
/// does not allow. Nothing is looked up, opened or downloaded.
pub fn resolve(c: &ServeConfig, spec: RunSpec) -> Result<(RunSpec, String, String), ApiError> {
    let mut spec = spec.or(&c.defaults);
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
    Ok((spec, root_id, sub_id))
}

impl Registry {
    /// Start a run: resolve its models, take a slot (429 when none is free), spawn it.
    pub async fn launch(
        &self,
        state: &Arc<AppState>,
        l: Launch,
    ) -> Result<Arc<RunEntry>, ApiError> {
        let c = &state.config;
        let (spec, root_id, sub_id) = resolve(c, l.spec)?;
        // Take a slot first: a full server refuses before loading models. Every error below
        // gives it back (the guard is dropped).
        let slot = self.try_slot().ok_or_else(|| self.full())?;
        let root = (c.models)(root_id.clone()).await.map_err(ApiError::bad)?;
        let sub = if sub_id == root_id {
            root.clone()
        } else {
            (c.models)(sub_id.clone()).await.map_err(ApiError::bad)?
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
        let rlm = built.map_err(|e| ApiError::bad(e.to_string()))?;
        *lock(&entry.slot) = Some(slot);
        let ending = TaskEnd {
            entry: entry.clone(),
        };
        let run_entry = entry.clone();
        let (context, query) = (l.context, l.query);
        let state = state.clone();
        let task = tokio::spawn(async move {
            let _ending = ending;
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
        if task.is_finished() {
            // It ended already: its handle would keep the finished task's memory.
            lock(&entry.abort).take();
        }
        self.keep(entry.clone());
        Ok(entry)
    }
}
