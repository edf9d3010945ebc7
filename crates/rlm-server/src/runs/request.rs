//! `POST /api/runs` bodies, parsed into typed structures in two passes over the bytes read: the
//! small fields first (models, limits, budget), so a refusal (400, 403) costs no copy of the
//! document; then the question and the document. A JSON document is checked for its number of
//! values before it is built (the tree of a JSON value takes many times its text).

use std::cell::Cell;

use axum::http::StatusCode;
use rlm::{BudgetLimits, ContextInput, RunSpec};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::launch::resolve;
use crate::body::Bounded;
use crate::{ApiError, ServeConfig};

/// Most values (strings, numbers, arrays, objects...) a JSON document may hold.
pub const MAX_JSON_VALUES: usize = 1_000_000;

/// The small fields of a `POST /api/runs` body (everything else is skipped, not copied).
#[derive(Debug, Deserialize)]
struct Head {
    model: Option<String>,
    sub_model: Option<String>,
    max_iterations: Option<u32>,
    max_depth: Option<u32>,
    budget_usd: Option<f64>,
    budget_tokens: Option<u64>,
    budget_sub_calls: Option<u64>,
    budget_seconds: Option<f64>,
}

/// `POST /api/runs` body.
#[derive(Debug, Deserialize)]
pub struct StartRun {
    /// The document (text; `context_json` true: JSON).
    #[serde(default)]
    pub context: Option<String>,
    /// Parse `context` as JSON.
    #[serde(default)]
    pub context_json: bool,
    /// Use the server's sample document.
    #[serde(default)]
    pub sample: bool,
    /// The question.
    pub query: String,
    /// Cancel when nobody follows the run any more (the page sets it).
    #[serde(default)]
    pub cancel_on_disconnect: bool,
}

/// A start request, checked: what to launch.
pub struct Checked {
    /// The document.
    pub context: ContextInput,
    /// The question.
    pub query: String,
    /// The request's settings (checked against the server's by [`resolve`]).
    pub spec: RunSpec,
    /// Cancel when nobody follows the run any more.
    pub cancel_on_disconnect: bool,
}

fn not_json(e: &serde_json::Error) -> ApiError {
    ApiError::bad(format!(
        "the request body is not the JSON this route takes: {e}"
    ))
}

/// Parse and check a `POST /api/runs` body (on a blocking thread: see [`crate::body::parse`]).
pub fn parse(config: &ServeConfig, body: Bounded) -> Result<Checked, ApiError> {
    let head: Head = serde_json::from_slice(&body.bytes).map_err(|e| not_json(&e))?;
    let spec = RunSpec {
        model: head.model,
        sub_model: head.sub_model,
        max_iterations: head.max_iterations,
        max_depth: head.max_depth,
        budget: BudgetLimits {
            usd: head.budget_usd,
            tokens: head.budget_tokens,
            sub_calls: head.budget_sub_calls,
            seconds: head.budget_seconds,
        },
        ..RunSpec::default()
    };
    resolve(config, spec.clone())?;
    let b: StartRun = serde_json::from_slice(&body.bytes).map_err(|e| not_json(&e))?;
    drop(body);
    if b.query.trim().is_empty() {
        return Err(ApiError::bad("the question is empty: type one"));
    }
    let context = if b.sample {
        let (_, text) = config
            .sample
            .as_ref()
            .ok_or_else(|| ApiError::bad("this server has no sample document"))?;
        ContextInput::Text(text.clone().into())
    } else {
        let text = b.context.unwrap_or_default();
        if text.is_empty() {
            return Err(ApiError::bad(
                "the document is empty: paste or upload one, or pick the sample",
            ));
        }
        if b.context_json {
            json_context(&text)?
        } else {
            ContextInput::Text(text.into())
        }
    };
    Ok(Checked {
        context,
        query: b.query,
        spec,
        cancel_on_disconnect: b.cancel_on_disconnect,
    })
}

/// A JSON document as a context: its values counted first (nothing built), then parsed.
fn json_context(text: &str) -> Result<ContextInput, ApiError> {
    let counted = Cell::new(0);
    let mut de = serde_json::Deserializer::from_str(text);
    let checked = Count {
        n: &counted,
        max: MAX_JSON_VALUES,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = checked {
        if counted.get() > MAX_JSON_VALUES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the JSON document holds more than {MAX_JSON_VALUES} values, the most this \
                     server builds into a tree; send it as text (untick JSON)"
                ),
            ));
        }
        return Err(ApiError::bad(format!(
            "the document is not valid JSON: {e}"
        )));
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad(format!("the document is not valid JSON: {e}")))?;
    Ok(ContextInput::from_json(v))
}

/// Counts a JSON document's values without keeping any; an error past `max`.
#[derive(Clone, Copy)]
struct Count<'a> {
    n: &'a Cell<usize>,
    max: usize,
}

impl Count<'_> {
    fn one<E: de::Error>(self) -> Result<(), E> {
        self.n.set(self.n.get() + 1);
        if self.n.get() > self.max {
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.one()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.one()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.one()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.one()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.one()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.one()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.one()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.one()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.one()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.one()?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_are_counted_before_they_are_built() {
        let ok = json_context(r#"{"a": [1, 2, {"b": "c"}], "d": null}"#).unwrap();
        assert!(matches!(ok, ContextInput::Json(_)));
        let dense = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES));
        assert_eq!(
            json_context(&dense).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let keys = format!(
            "{{{}\"z\": 0}}",
            (0..MAX_JSON_VALUES / 2)
                .map(|i| format!("\"k{i}\":0,"))
                .collect::<String>()
        );
        assert_eq!(
            json_context(&keys).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "keys count"
        );
        for bad in ["[1,", "{\"a\" 1}", "[1] 2", ""] {
            assert_eq!(
                json_context(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
