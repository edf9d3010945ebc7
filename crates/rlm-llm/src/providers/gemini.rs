//! Google Gemini `generateContent`.

use serde_json::{Value, json};

use super::{Endpoint, Parsed, WireRequest, join, merge_extra, split_system, u64_at};
use crate::message::{FinishReason, Message, Role, SamplingParams};
use crate::model::ModelId;

pub(super) fn build(
    endpoint: &Endpoint,
    id: &ModelId,
    messages: &[Message],
    params: &SamplingParams,
    stream: bool,
) -> WireRequest {
    let (system, turns) = split_system(messages);
    let contents: Vec<Value> = turns
        .into_iter()
        .map(|(role, text)| {
            let role = if role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            json!({"role": role, "parts": [{"text": text}]})
        })
        .collect();
    let mut body = json!({"contents": contents});
    if let Some(s) = system {
        body["systemInstruction"] = json!({"parts": [{"text": s}]});
    }
    let mut config = serde_json::Map::new();
    if let Some(t) = params.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(n) = params.max_output_tokens {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    if !params.stop.is_empty() {
        config.insert("stopSequences".into(), json!(params.stop));
    }
    if let Some(e) = params.reasoning_effort {
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": e.budget_tokens()}),
        );
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    merge_extra(&mut body, &params.extra);
    let action = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let mut headers = Vec::new();
    // The key goes in a header, never in the URL, so it cannot leak through logged URLs.
    if let Some(key) = &endpoint.key {
        headers.push(("x-goog-api-key", key.expose().to_string()));
    }
    let url = join(
        &endpoint.base_url,
        &format!("v1beta/models/{}:{action}", id.name),
    );
    WireRequest { url, headers, body }
}

fn finish(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_string()),
    }
}

/// Fold one response (or stream chunk) into `out`; returns the text it carried.
fn fold(v: &Value, out: &mut Parsed) -> String {
    if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
        out.model = m.to_string();
    }
    if let Some(u) = v.get("usageMetadata") {
        out.usage.input_tokens = u64_at(u, &["promptTokenCount"]);
        out.usage.output_tokens =
            u64_at(u, &["candidatesTokenCount"]) + u64_at(u, &["thoughtsTokenCount"]);
        out.usage.cached_input_tokens = u64_at(u, &["cachedContentTokenCount"]);
    }
    let mut text = String::new();
    if let Some(c) = v.get("candidates").and_then(|c| c.get(0)) {
        if let Some(parts) = c
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
        {
            for p in parts {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
        }
        if let Some(f) = c.get("finishReason").and_then(Value::as_str) {
            out.finish = Some(finish(f));
        }
    } else if v
        .get("promptFeedback")
        .and_then(|p| p.get("blockReason"))
        .is_some()
    {
        out.finish = Some(FinishReason::ContentFilter);
    }
    out.text.push_str(&text);
    text
}

pub(super) fn parse(body: &Value) -> Result<Parsed, String> {
    if body.get("candidates").is_none() && body.get("promptFeedback").is_none() {
        return Err("no candidates in the response".into());
    }
    let mut out = Parsed::default();
    fold(body, &mut out);
    Ok(out)
}

pub(super) fn stream_event(data: &str, state: &mut Parsed) -> Result<Option<String>, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("bad stream chunk: {e}"))?;
    if v.get("error").is_some() {
        return Err(super::error_message(data));
    }
    let text = fold(&v, state);
    Ok((!text.is_empty()).then_some(text))
}
