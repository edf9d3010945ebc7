//! Wire formats: how each provider wants a request and how it answers.

mod anthropic;
mod gemini;
mod openai;

use serde_json::{Map, Value};

use crate::message::{FinishReason, Message, Role, SamplingParams};
use crate::model::{ModelId, Provider};
use crate::secret::ApiKey;
use crate::usage::Usage;

/// Where a model is served.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub base_url: String,
    pub key: Option<ApiKey>,
}

/// An HTTP request ready to send.
pub(crate) struct WireRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// A parsed answer.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub text: String,
    pub usage: Usage,
    pub model: String,
    pub finish: Option<FinishReason>,
}

pub(crate) fn build(
    endpoint: &Endpoint,
    id: &ModelId,
    messages: &[Message],
    params: &SamplingParams,
    stream: bool,
) -> WireRequest {
    match id.provider {
        Provider::OpenAi | Provider::OpenAiCompatible => {
            openai::build(endpoint, id, messages, params, stream)
        }
        Provider::Anthropic => anthropic::build(endpoint, id, messages, params, stream),
        Provider::Gemini => gemini::build(endpoint, id, messages, params, stream),
    }
}

pub(crate) fn parse(provider: Provider, body: &Value) -> Result<Parsed, String> {
    match provider {
        Provider::OpenAi | Provider::OpenAiCompatible => openai::parse(body),
        Provider::Anthropic => anthropic::parse(body),
        Provider::Gemini => gemini::parse(body),
    }
}

/// Fold one server-sent event into `state`; returns the new text, if any.
pub(crate) fn stream_event(
    provider: Provider,
    data: &str,
    state: &mut Parsed,
) -> Result<Option<String>, String> {
    match provider {
        Provider::OpenAi | Provider::OpenAiCompatible => openai::stream_event(data, state),
        Provider::Anthropic => anthropic::stream_event(data, state),
        Provider::Gemini => gemini::stream_event(data, state),
    }
}

/// The provider's own error message from an error body (or the start of the body).
pub(crate) fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        match e {
            Value::String(s) => Some(s.clone()),
            _ => e.get("message").and_then(Value::as_str).map(str::to_string),
        }
    });
    from_json.unwrap_or_else(|| {
        let t = body.trim();
        let cut: String = t.chars().take(300).collect();
        if cut.is_empty() {
            "(empty body)".to_string()
        } else {
            cut
        }
    })
}

/// Join `base` and `path` with exactly one slash.
fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Merge raw options into a request body (top level).
fn merge_extra(body: &mut Value, extra: &Map<String, Value>) {
    if let Value::Object(obj) = body {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
}

/// System messages joined, and the rest with consecutive same-role messages merged (for
/// providers that want alternating turns).
fn split_system(messages: &[Message]) -> (Option<String>, Vec<(Role, String)>) {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut turns: Vec<(Role, String)> = Vec::new();
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match turns.last_mut() {
            Some((role, text)) if *role == m.role => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turns.push((m.role, m.content.clone())),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns)
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}
