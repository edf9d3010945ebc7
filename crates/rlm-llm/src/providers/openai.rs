//! OpenAI Chat Completions (also any OpenAI-compatible server).

use serde_json::{Value, json};

use super::{Endpoint, Parsed, WireRequest, join, merge_extra, u64_at};
use crate::message::{FinishReason, Message, SamplingParams};
use crate::model::{ModelId, Provider};

pub(super) fn build(
    endpoint: &Endpoint,
    id: &ModelId,
    messages: &[Message],
    params: &SamplingParams,
    stream: bool,
) -> WireRequest {
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| {
            let role = m.role.as_str();
            json!({"role": role, "content": m.content})
        })
        .collect();
    let mut body = json!({"model": id.name, "messages": msgs});
    if let Some(t) = params.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = params.max_output_tokens {
        // OpenAI's own API renamed the field; compatible servers mostly know the old one.
        let field = if id.provider == Provider::OpenAi {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body[field] = json!(n);
    }
    if !params.stop.is_empty() {
        body["stop"] = json!(params.stop);
    }
    if let Some(e) = params.reasoning_effort {
        body["reasoning_effort"] = json!(e.name());
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    merge_extra(&mut body, &params.extra);
    let mut headers = Vec::new();
    if let Some(key) = &endpoint.key {
        headers.push(("authorization", format!("Bearer {}", key.expose())));
    }
    WireRequest {
        url: join(&endpoint.base_url, "chat/completions"),
        headers,
        body,
    }
}

fn finish(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

fn usage(v: &Value, out: &mut Parsed) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        out.usage.input_tokens = u64_at(u, &["prompt_tokens"]);
        out.usage.output_tokens = u64_at(u, &["completion_tokens"]);
        out.usage.cached_input_tokens = u64_at(u, &["prompt_tokens_details", "cached_tokens"]);
    }
}

pub(super) fn parse(body: &Value) -> Result<Parsed, String> {
    let choice = body
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("no choices in the response")?;
    let message = choice
        .get("message")
        .ok_or("no message in the first choice")?;
    let mut out = Parsed {
        text: message
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(finish),
        ..Parsed::default()
    };
    usage(body, &mut out);
    Ok(out)
}

pub(super) fn stream_event(data: &str, state: &mut Parsed) -> Result<Option<String>, String> {
    if data.trim() == "[DONE]" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("bad stream chunk: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(super::error_message(&json!({"error": err}).to_string()));
    }
    if let Some(m) = v.get("model").and_then(Value::as_str) {
        state.model = m.to_string();
    }
    usage(&v, state);
    let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
        return Ok(None);
    };
    if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
        state.finish = Some(finish(f));
    }
    let delta = choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .and_then(Value::as_str);
    Ok(delta.filter(|d| !d.is_empty()).map(|d| {
        state.text.push_str(d);
        d.to_string()
    }))
}
