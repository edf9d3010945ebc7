//! The document(s) a run works over, as the caller gives them.

use std::sync::Arc;

use rlm_sandbox::{Context, SandboxError, Text};

/// The document(s) a run works over.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextInput {
    /// One text (a large file's is mapped, not copied: see [`rlm_sandbox::Text`]).
    Text(Text),
    /// A list of documents.
    Documents(Vec<String>),
    /// Parsed JSON.
    Json(serde_json::Value),
}

impl From<String> for ContextInput {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&str> for ContextInput {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

impl From<Text> for ContextInput {
    fn from(t: Text) -> Self {
        Self::Text(t)
    }
}

impl From<Vec<String>> for ContextInput {
    fn from(v: Vec<String>) -> Self {
        Self::Documents(v)
    }
}

impl From<serde_json::Value> for ContextInput {
    fn from(v: serde_json::Value) -> Self {
        Self::Json(v)
    }
}

impl ContextInput {
    /// Read a context file (or `-` for stdin): `.json` as JSON (a list of strings becomes
    /// documents), `.jsonl` as a list, anything else as text; see [`Context::read`].
    pub fn load(
        path: &std::path::Path,
        format: rlm_sandbox::ContextFormat,
    ) -> Result<Self, SandboxError> {
        Ok(Self::from_data(Context::read(path, format)?))
    }

    /// [`ContextInput::load`], always reading the file into memory, never mapping it (see
    /// [`Context::read_copy`]).
    pub fn load_copy(
        path: &std::path::Path,
        format: rlm_sandbox::ContextFormat,
    ) -> Result<Self, SandboxError> {
        Ok(Self::from_data(Context::read_copy(path, format)?))
    }

    fn from_data(data: rlm_sandbox::ContextData) -> Self {
        match data {
            rlm_sandbox::ContextData::Text(t) => Self::Text(t),
            rlm_sandbox::ContextData::Json(v) => Self::from_json(v),
        }
    }

    /// The sandbox's form of this context, consuming the input (no copy of the text).
    pub fn into_context(self) -> Arc<Context> {
        match self {
            Self::Text(s) => Context::text(s),
            Self::Documents(d) => Context::documents(d),
            Self::Json(v) => Context::json(v),
        }
    }

    /// The sandbox's form of this context (an owned text is copied; a mapped one is shared).
    pub fn to_context(&self) -> Arc<Context> {
        match self {
            Self::Text(s) => Context::text(s.clone()),
            Self::Documents(d) => Context::documents(d.clone()),
            Self::Json(v) => Context::json(v.clone()),
        }
    }

    /// The JSON form (what a trace stores).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(s) => serde_json::Value::String(s.to_string()),
            Self::Documents(d) => serde_json::json!(d),
            Self::Json(v) => v.clone(),
        }
    }

    /// Back from the JSON form: a string is a text, a list of strings documents, else JSON.
    pub fn from_json(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::String(s) => Self::Text(s.into()),
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => {
                Self::Documents(
                    items
                        .into_iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                )
            }
            other => Self::Json(other),
        }
    }
}
