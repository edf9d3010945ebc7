//! Errors of the model clients. No error ever contains an API key.

use std::time::Duration;

/// What can go wrong when calling a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The provider's API key is not set.
    #[error("no API key for {provider}: set the environment variable {var}")]
    MissingKey {
        /// Provider name.
        provider: &'static str,
        /// The variable(s) to set.
        var: &'static str,
    },
    /// A model name that cannot be used.
    #[error("invalid model {name:?}: {reason}")]
    BadModel {
        /// The name as given.
        name: String,
        /// What is wrong, and the expected form.
        reason: String,
    },
    /// The provider answered with an HTTP error status.
    #[error("{provider} returned HTTP {status}: {message}")]
    Http {
        /// Provider name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// The provider's own error message (redacted).
        message: String,
        /// Delay the provider asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The request took longer than the per-request timeout.
    #[error("{provider}: no complete answer within the {} s request timeout", .after.as_secs_f64())]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The connection failed or broke.
    #[error("{provider}: connection failed: {message}")]
    Connect {
        /// Provider name.
        provider: &'static str,
        /// Details (redacted).
        message: String,
    },
    /// The response could not be read (truncated JSON, wrong content type, unexpected shape).
    #[error("{provider}: unreadable response: {message}")]
    BadResponse {
        /// Provider name.
        provider: &'static str,
        /// Details (redacted).
        message: String,
    },
    /// Retries ran out.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<LlmError>,
    },
    /// A price table could not be loaded.
    #[error("price table {path}: {message}")]
    Prices {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An error recorded earlier and reproduced (by a replay), with its original message.
    #[error("{0}")]
    Replayed(String),
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl LlmError {
    /// Whether trying again may succeed: 408, 409, 425, 429 and 5xx statuses, timeouts,
    /// connection failures and unreadable (e.g. truncated) responses.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429) || (500..600).contains(status)
            }
            Self::Timeout { .. } | Self::Connect { .. } | Self::BadResponse { .. } => true,
            _ => false,
        }
    }

    /// The delay the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
