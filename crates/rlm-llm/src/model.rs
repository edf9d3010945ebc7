//! Naming models: `provider/model`, and where each provider lives.

use std::fmt;
use std::str::FromStr;

use crate::error::LlmError;
use crate::secret::ApiKey;

/// A model provider, and so a wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// OpenAI Chat Completions (`openai/...`).
    OpenAi,
    /// Anthropic Messages (`anthropic/...`).
    Anthropic,
    /// Google Gemini `generateContent` (`gemini/...` or `google/...`).
    Gemini,
    /// Any server speaking OpenAI Chat Completions: vLLM, Ollama, llama.cpp server, OpenRouter,
    /// LM Studio (`compat/...` or `openai-compatible/...`, with a base URL).
    OpenAiCompatible,
}

impl Provider {
    /// The name used in model ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::OpenAiCompatible => "compat",
        }
    }

    /// Environment variables holding the API key, in order of preference.
    pub fn key_vars(self) -> &'static [&'static str] {
        match self {
            Self::OpenAi => &["OPENAI_API_KEY"],
            Self::Anthropic => &["ANTHROPIC_API_KEY"],
            Self::Gemini => &["GOOGLE_API_KEY", "GEMINI_API_KEY"],
            Self::OpenAiCompatible => &["RLM_API_KEY"],
        }
    }

    fn key_hint(self) -> &'static str {
        match self {
            Self::OpenAi => "OPENAI_API_KEY",
            Self::Anthropic => "ANTHROPIC_API_KEY",
            Self::Gemini => "GOOGLE_API_KEY or GEMINI_API_KEY",
            Self::OpenAiCompatible => "RLM_API_KEY",
        }
    }

    /// Environment variable that overrides the base URL.
    pub fn base_url_var(self) -> &'static str {
        match self {
            Self::OpenAi => "OPENAI_BASE_URL",
            Self::Anthropic => "ANTHROPIC_BASE_URL",
            Self::Gemini => "GEMINI_BASE_URL",
            Self::OpenAiCompatible => "RLM_BASE_URL",
        }
    }

    /// The public endpoint (none for OpenAI-compatible servers: the user names one).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => Some("https://api.openai.com/v1"),
            Self::Anthropic => Some("https://api.anthropic.com"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com"),
            Self::OpenAiCompatible => None,
        }
    }

    /// Whether calls without a key are allowed (local servers often need none).
    pub fn key_optional(self) -> bool {
        self == Self::OpenAiCompatible
    }

    /// Find the key in the environment.
    pub fn key_from_env(self) -> Result<Option<ApiKey>, LlmError> {
        for var in self.key_vars() {
            if let Ok(v) = std::env::var(var)
                && !v.trim().is_empty()
            {
                return Ok(Some(ApiKey::new(v.trim())));
            }
        }
        if self.key_optional() {
            Ok(None)
        } else {
            Err(LlmError::MissingKey {
                provider: self.name(),
                var: self.key_hint(),
            })
        }
    }
}

/// A model named `provider/model`, e.g. `openai/gpt-5-mini`, `anthropic/claude-sonnet-4-5`,
/// `gemini/gemini-2.5-flash`, `compat/llama3.1:8b`. The model part may itself contain `/`
/// (`compat/meta-llama/Llama-3.1-8B-Instruct`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId {
    /// The provider.
    pub provider: Provider,
    /// The provider's name for the model.
    pub name: String,
}

impl ModelId {
    /// Build from parts.
    pub fn new(provider: Provider, name: impl Into<String>) -> Self {
        Self {
            provider,
            name: name.into(),
        }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider.name(), self.name)
    }
}

impl FromStr for ModelId {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, LlmError> {
        let bad = |reason: &str| LlmError::BadModel {
            name: s.to_string(),
            reason: reason.into(),
        };
        let (provider, name) = s.trim().split_once('/').ok_or_else(|| {
            bad(
                "expected provider/model, e.g. openai/gpt-5-mini, anthropic/claude-sonnet-4-5, \
                 gemini/gemini-2.5-flash or compat/<model> with a base URL",
            )
        })?;
        let provider = match provider.to_ascii_lowercase().as_str() {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "gemini" | "google" => Provider::Gemini,
            "compat" | "openai-compatible" => Provider::OpenAiCompatible,
            other => {
                return Err(bad(&format!(
                    "unknown provider {other:?}; use openai, anthropic, gemini (or google), or \
                     compat (any OpenAI-compatible server, with --base-url or RLM_BASE_URL)"
                )));
            }
        };
        if name.trim().is_empty() {
            return Err(bad("the model name after the provider is empty"));
        }
        Ok(Self {
            provider,
            name: name.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_provider_slash_model() {
        let id: ModelId = "openai/gpt-5-mini".parse().unwrap();
        assert_eq!(
            (id.provider, id.name.as_str()),
            (Provider::OpenAi, "gpt-5-mini")
        );
        let id: ModelId = "google/gemini-2.5-flash".parse().unwrap();
        assert_eq!(id.to_string(), "gemini/gemini-2.5-flash");
        let id: ModelId = "compat/meta-llama/Llama-3.1-8B".parse().unwrap();
        assert_eq!(id.name, "meta-llama/Llama-3.1-8B");
        assert!(
            "gpt-5"
                .parse::<ModelId>()
                .unwrap_err()
                .to_string()
                .contains("provider/model")
        );
        assert!(
            "foo/bar"
                .parse::<ModelId>()
                .unwrap_err()
                .to_string()
                .contains("unknown provider")
        );
    }
}
