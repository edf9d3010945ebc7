//! The RLM as an OpenAI chat model: `POST /v1/chat/completions` and `GET /v1/models`.
//!
//! The rule for what is context and what is the question:
//! - the **question** is the text of the last `user` message;
//! - the **context** is the text of every message before it (any role), in order, joined by
//!   blank lines;
//! - if there is nothing before it, a last user message of several paragraphs is split at its
//!   last blank line: everything before is the context, the last paragraph the question (a
//!   single paragraph is the question over an empty context).
//!
//! The model is `rlm` (the server's default root model) or `rlm:<provider/model>`.

pub mod request;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rlm::{ContextInput, Event, RunSpec};

use crate::runs::launch::resolve;
use crate::runs::{Launch, Msg, RunEntry, RunStatus, Summary};
use crate::{ApiError, AppState, body};
pub use request::{InMessage, split_conversation};

/// The models this endpoint serves.
pub async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut data =
        vec![serde_json::json!({"id": "rlm", "object": "model", "created": 0, "owned_by": "rlm"})];
    for m in s.config.model_list() {
        data.push(serde_json::json!({"id": format!("rlm:{m}"), "object": "model", "created": 0, "owned_by": "rlm"}));
    }
    Json(serde_json::json!({"object": "list", "data": data}))
}

/// Cancels an API run when its client goes away before the answer.
struct CancelOnDrop(Arc<RunEntry>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.0.summary().is_none() {
            self.0.cancel();
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage_json(sum: &Summary) -> serde_json::Value {
    let (i, o) = sum.usage.as_ref().map_or((0, 0), |u| {
        (u.total.usage.input_tokens, u.total.usage.output_tokens)
    });
    serde_json::json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o})
}

fn finish_reason(sum: &Summary) -> &'static str {
    if sum.status == RunStatus::Answered {
        "stop"
    } else {
        "length"
    }
}

/// A line of progress for a stream.
fn progress_line(e: &Event) -> Option<String> {
    Some(match e {
        Event::Iteration { node, n } => format!("[{}] iteration {n}\n", node.rlm),
        Event::CodeExecuted {
            node, error, ms, ..
        } => match error {
            Some(err) => format!(
                "[{}] code ran in {ms:.0} ms: {}\n",
                node.rlm,
                err.lines().last().unwrap_or("")
            ),
            None => format!("[{}] code ran in {ms:.0} ms\n", node.rlm),
        },
        Event::SubCallFinished {
            node,
            kind,
            ms,
            usage,
            ..
        } => {
            format!(
                "[{}] {kind} done in {ms:.0} ms ({} tokens)\n",
                node.rlm,
                usage.total()
            )
        }
        Event::BudgetExceeded { reason, .. } => format!("budget: {reason}\n"),
        _ => return None,
    })
}

/// Answer a chat completion with an RLM run. Refused while every run slot is taken (429) before
/// the body is read; an unknown (404) or refused (403) model before the conversation is parsed
/// ([`request`]).
pub async fn chat_completions(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    s.runs.check_free()?;
    let body = body::read(&s.body, req).await?;
    let state = s.clone();
    let (head, spec, context, query) = body::parse(body, move |b| {
        let head = request::head(&b.bytes)?;
        let root = match head.model.as_str() {
            "rlm" => None,
            m => match m.strip_prefix("rlm:") {
                Some(id) if !id.is_empty() => Some(id.to_string()),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "unknown model {:?}: use \"rlm\" or \"rlm:<provider/model>\"",
                            head.model
                        ),
                    ));
                }
            },
        };
        let spec = RunSpec {
            model: root,
            ..RunSpec::default()
        };
        resolve(&state.config, spec.clone())?;
        let messages = request::messages(&b.bytes)?;
        drop(b);
        let (context, query) = split_conversation(&messages).map_err(ApiError::bad)?;
        Ok((head, spec, context, query))
    })
    .await?;
    let entry = s
        .runs
        .launch(
            &s,
            Launch {
                context: ContextInput::Text(context.into()),
                query,
                spec,
                source: "api",
                cancel_on_disconnect: false,
            },
        )
        .await?;
    let id = format!("chatcmpl-rlm-{}", entry.id);
    let model = head.model;
    let created = now();
    if !head.stream {
        let guard = CancelOnDrop(entry.clone());
        let sum = entry.wait().await;
        drop(guard);
        if sum.answer.is_none() {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, sum.message.clone()));
        }
        return Ok(Json(serde_json::json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": sum.answer},
                "finish_reason": finish_reason(&sum),
            }],
            "usage": usage_json(&sum),
            "rlm": {"run": entry.id, "status": sum.status, "message": sum.message, "iterations": sum.iterations,
                    "cost_usd": sum.usage.as_ref().map(|u| u.total.cost_usd)},
        }))
        .into_response());
    }
    let chunk =
        move |delta: serde_json::Value, finish: Option<&str>, usage: Option<serde_json::Value>| {
            let mut c = serde_json::json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            if let Some(u) = usage {
                c["usage"] = u;
            }
            SseEvent::default().data(c.to_string())
        };
    let follow = entry.follow();
    let state = (follow, CancelOnDrop(entry), 0u8, chunk);
    let stream = futures::stream::unfold(state, |(mut follow, guard, phase, chunk)| async move {
        match phase {
            0 => {
                let ev = chunk(
                    serde_json::json!({"role": "assistant", "content": ""}),
                    None,
                    None,
                );
                Some((Ok::<_, Infallible>(ev), (follow, guard, 1, chunk)))
            }
            1 => loop {
                match follow.next().await {
                    Some(Msg::Event(e)) => {
                        if let Some(line) = progress_line(&e) {
                            let ev =
                                chunk(serde_json::json!({"reasoning_content": line}), None, None);
                            return Some((Ok(ev), (follow, guard, 1, chunk)));
                        }
                    }
                    Some(Msg::Done(sum)) => {
                        let text = sum
                            .answer
                            .clone()
                            .unwrap_or_else(|| format!("(no answer) {}", sum.message));
                        let ev = chunk(serde_json::json!({"content": text}), None, None);
                        // Phase 2 sends the finish chunk; keep the summary in a fresh follow-up.
                        return Some((
                            Ok(ev),
                            (
                                follow,
                                guard,
                                2 + u8::from(sum.status != RunStatus::Answered),
                                chunk,
                            ),
                        ));
                    }
                    None => return None,
                }
            },
            2 | 3 => {
                let sum = guard.0.summary();
                let usage = sum.as_ref().map(|s| usage_json(s));
                let reason = if phase == 2 { "stop" } else { "length" };
                let ev = chunk(serde_json::json!({}), Some(reason), usage);
                Some((Ok(ev), (follow, guard, 4, chunk)))
            }
            4 => Some((
                Ok(SseEvent::default().data("[DONE]")),
                (follow, guard, 5, chunk),
            )),
            _ => None,
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
