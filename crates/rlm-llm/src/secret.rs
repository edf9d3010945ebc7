//! API keys that never print, and redaction of key-like text in provider messages.

use std::fmt;
use std::sync::OnceLock;

/// An API key. `Debug` and `Display` print `***`; only the HTTP layer reads the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Remove `key` and anything that looks like an API key from `text`.
pub(crate) fn redact(text: &str, key: Option<&ApiKey>) -> String {
    static KEYLIKE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let mut out = match key {
        Some(k) if k.0.len() >= 4 => text.replace(k.expose(), "***"),
        _ => text.to_string(),
    };
    if let Some(re) = KEYLIKE
        .get_or_init(|| regex::Regex::new(r"(sk-ant-|sk-|AIza|key-)[A-Za-z0-9_\-\*\.]{6,}").ok())
    {
        out = re.replace_all(&out, "$1***").into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let k = ApiKey::new("sk-secret-value-123");
        assert_eq!(format!("{k} {k:?}"), "*** ApiKey(***)");
        let msg = redact(
            "Incorrect API key provided: sk-secret-value-123 and AIzaSyABCDEF123",
            Some(&k),
        );
        assert!(
            !msg.contains("secret") && !msg.contains("SyABCDEF"),
            "{msg}"
        );
    }
}
