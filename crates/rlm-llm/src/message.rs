//! Requests and responses, independent of any provider's wire format.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pricing::Price;
use crate::usage::{CallTag, Usage};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user (for the RLM: the query, and REPL outputs fed back).
    User,
    /// The model's earlier replies.
    Assistant,
}

impl Role {
    /// The role's name in chat formats: `system`, `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How hard a reasoning model should think, where the provider supports it (OpenAI
/// `reasoning_effort`, Anthropic extended thinking, Gemini thinking budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// As little as possible.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

impl ReasoningEffort {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    /// A thinking-token budget for providers that take one.
    pub(crate) fn budget_tokens(self) -> u32 {
        match self {
            Self::Minimal => 1024,
            Self::Low => 2048,
            Self::Medium => 8192,
            Self::High => 24576,
        }
    }
}

/// Sampling parameters. `None` leaves the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Most tokens to generate.
    pub max_output_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Reasoning effort, where supported.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Raw provider options, merged into the request body as given (e.g.
    /// `{"top_p": 0.9}` for OpenAI, `{"top_k": 40}` for Anthropic).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SamplingParams {
    /// These parameters, with unset ones taken from `defaults`.
    pub fn or(&self, defaults: &SamplingParams) -> SamplingParams {
        let mut extra = defaults.extra.clone();
        extra.extend(self.extra.clone());
        SamplingParams {
            temperature: self.temperature.or(defaults.temperature),
            max_output_tokens: self.max_output_tokens.or(defaults.max_output_tokens),
            stop: if self.stop.is_empty() {
                defaults.stop.clone()
            } else {
                self.stop.clone()
            },
            reasoning_effort: self.reasoning_effort.or(defaults.reasoning_effort),
            extra,
        }
    }
}

/// One call to a chat model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling parameters for this call (unset ones come from the model's defaults).
    pub params: SamplingParams,
    /// Who makes the call (for usage accounting by role and depth).
    pub tag: CallTag,
    /// Price override for this call.
    pub price: Option<Price>,
}

impl ChatRequest {
    /// A request with these messages and default everything else.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Tag the call's role and depth.
    pub fn tagged(mut self, tag: CallTag) -> Self {
        self.tag = tag;
        self
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It finished (or hit a stop sequence).
    Stop,
    /// It hit the output-token limit.
    Length,
    /// A safety filter stopped it.
    ContentFilter,
    /// Something else, as the provider named it.
    Other(String),
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The text of the answer.
    pub text: String,
    /// Tokens used.
    pub usage: Usage,
    /// The model that answered, as the provider reports it.
    pub model: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Time from the first attempt to the answer (retries included).
    pub latency: Duration,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
    /// Cost in US dollars, when the model has a price.
    pub cost_usd: Option<f64>,
}
