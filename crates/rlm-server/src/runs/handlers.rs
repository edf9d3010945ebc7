//! The run and trace routes: start, follow (Server-Sent Events), cancel, list, read.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use rlm::Event;

use super::entry::{Msg, RunEntry};
use super::launch::Launch;
use super::registry::Registry;
use super::request;
use crate::{ApiError, AppState, body};

/// Start a run: refused while every run slot is taken (429) before the body is read; the body
/// is read bounded ([`crate::body`]) and checked ([`request::parse`]) before anything is built.
pub async fn start(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.runs.check_free()?;
    let body = body::read(&s.body, req).await?;
    let state = s.clone();
    let r = body::parse(body, move |b| request::parse(&state.config, b)).await?;
    let entry = s
        .runs
        .launch(
            &s,
            Launch {
                context: r.context,
                query: r.query,
                spec: r.spec,
                source: "page",
                cancel_on_disconnect: r.cancel_on_disconnect,
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

/// Follow a run: `event: rlm` for each loop event, then `event: done` with the summary. At most
/// `max_event_streams` streams are open at once (429 past it), so followers cannot hold every
/// connection the server allows.
pub async fn events(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let permit = s.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} run event streams are open, the most this server allows; close one (another \
                 tab following a run) or retry later",
                s.config.max_event_streams
            ),
        )
    })?;
    let follow = find(&s, &id)?.follow();
    let stream = futures::stream::unfold((follow, permit), |(mut f, permit)| async move {
        let msg = f.next().await?;
        let ev = match msg {
            Msg::Event(e) => SseEvent::default().event("rlm").json_data(&*e),
            Msg::Done(sum) => SseEvent::default().event("done").json_data(&*sum),
        }
        .unwrap_or_else(|e| SseEvent::default().event("error").data(e.to_string()));
        Some((Ok(ev), (f, permit)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// Cancel a run; the answer comes once it has stopped (within 30 s).
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let entry = find(&s, &id)?;
    let was_running = entry.cancel();
    // Answer once the run is stopped and its slot free (a run still copying its context ends
    // that first: see `RunEntry::cancel`), so a run started next is not refused for it.
    let _ = tokio::time::timeout(Duration::from_secs(30), entry.slot_freed()).await;
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
