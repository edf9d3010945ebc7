//! Anthropic Messages.

use serde_json::{Value, json};

use super::{Endpoint, Parsed, WireRequest, join, merge_extra, split_system, u64_at};
use crate::message::{FinishReason, Message, Role, SamplingParams};
use crate::model::ModelId;

/// The API version header Anthropic requires.
const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is mandatory in this API; used when the caller sets none.
const DEFAULT_MAX_TOKENS: u32 = 8192;

pub(super) fn build(
    endpoint: &Endpoint,
    id: &ModelId,
    messages: &[Message],
    params: &SamplingParams,
    stream: bool,
) -> WireRequest {
    let (system, turns) = split_system(messages);
    let msgs: Vec<Value> = turns
        .into_iter()
        .map(|(role, text)| {
            let role = if role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": text})
        })
        .collect();
    let mut max_tokens = params.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({"model": id.name, "messages": msgs});
    if let Some(s) = system {
        body["system"] = json!(s);
    }
    if let Some(t) = params.temperature {
        body["temperature"] = json!(t);
    }
    if !params.stop.is_empty() {
        body["stop_sequences"] = json!(params.stop);
    }
    if let Some(e) = params.reasoning_effort {
        let budget = e.budget_tokens();
        max_tokens = max_tokens.max(budget + 1024);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
    }
    body["max_tokens"] = json!(max_tokens);
    if stream {
        body["stream"] = json!(true);
    }
    merge_extra(&mut body, &params.extra);
    let mut headers = vec![("anthropic-version", API_VERSION.to_string())];
    if let Some(key) = &endpoint.key {
        headers.push(("x-api-key", key.expose().to_string()));
    }
    WireRequest {
        url: join(&endpoint.base_url, "v1/messages"),
        headers,
        body,
    }
}

fn finish(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// Anthropic counts cache reads and writes apart from `input_tokens`; ours includes them.
fn usage(u: &Value, out: &mut Parsed) {
    let read = u64_at(u, &["cache_read_input_tokens"]);
    let write = u64_at(u, &["cache_creation_input_tokens"]);
    let input = u64_at(u, &["input_tokens"]);
    if input + read + write > 0 {
        out.usage.input_tokens = input + read + write;
        out.usage.cached_input_tokens = read;
    }
    if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
        out.usage.output_tokens = o;
    }
}

pub(super) fn parse(body: &Value) -> Result<Parsed, String> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no content in the response")?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let mut out = Parsed {
        text,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish: body.get("stop_reason").and_then(Value::as_str).map(finish),
        ..Parsed::default()
    };
    if let Some(u) = body.get("usage") {
        usage(u, &mut out);
    }
    Ok(out)
}

pub(super) fn stream_event(data: &str, state: &mut Parsed) -> Result<Option<String>, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("bad stream event: {e}"))?;
    match v.get("type").and_then(Value::as_str).unwrap_or_default() {
        "message_start" => {
            if let Some(m) = v.get("message") {
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    state.model = model.to_string();
                }
                if let Some(u) = m.get("usage") {
                    usage(u, state);
                }
            }
            Ok(None)
        }
        "content_block_delta" => {
            let delta = v.get("delta");
            let is_text =
                delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta");
            let text = delta.and_then(|d| d.get("text")).and_then(Value::as_str);
            Ok(text.filter(|_| is_text).map(|t| {
                state.text.push_str(t);
                t.to_string()
            }))
        }
        "message_delta" => {
            if let Some(r) = v
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .and_then(Value::as_str)
            {
                state.finish = Some(finish(r));
            }
            if let Some(u) = v.get("usage") {
                usage(u, state);
            }
            Ok(None)
        }
        "error" => Err(super::error_message(data)),
        _ => Ok(None),
    }
}
