//! Custom tools: named host functions that model code calls like Python functions.
//!
//! An embedder registers [`Tool`]s with [`SandboxBuilder::tool`](crate::SandboxBuilder::tool)
//! (or `RlmBuilder::tool` in the `rlm` crate). Each becomes a Python function of that name in the
//! REPL: positional arguments map onto the parameters in the order of the schema's
//! `properties`, keyword arguments by name; the arguments cross to the host as one JSON object,
//! the handler's result crosses back as JSON and reaches model code as Python values. A failure
//! (the handler's `Err`, a panic, arguments that do not fit the schema, a cap) raises
//! `ToolError` in model code and never crashes the host.
//!
//! A handler takes and returns either [`Value`]s ([`Tool::new`]: integers exact within 64 bits,
//! longer ones become floats) or the JSON text itself ([`Tool::new_text`]: every number crosses
//! exactly as written, e.g. for a handler in another language).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

/// The future a tool's handler returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'static>>;

/// The future a [`Tool::new_text`] handler returns: its result as JSON text.
pub type ToolTextFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'static>>;

/// What answers a tool's calls.
enum Handler {
    /// Takes and returns JSON values.
    Value(Box<dyn Fn(Value) -> ToolFuture + Send + Sync + 'static>),
    /// Takes and returns JSON text, as it crossed.
    Text(Box<dyn Fn(String) -> ToolTextFuture + Send + Sync + 'static>),
}

/// Why a tool cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The name is not a Python identifier the REPL can bind.
    #[error(
        "invalid tool name {name:?}: {reason}. Tool names must be Python identifiers that do \
         not start with '_' and shadow none of the REPL's names, Python keywords or builtins"
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The parameter schema is not a JSON-schema object with usable `properties`.
    #[error("tool {name}: invalid parameter schema: {reason}")]
    InvalidSchema {
        /// The tool.
        name: String,
        /// What is wrong with the schema.
        reason: String,
    },
    /// Two tools have the same name.
    #[error("two tools are named {0:?}: tool names must be unique")]
    Duplicate(String),
}

/// A named host function that model code calls like a Python function (the official rlm's
/// `custom_tools`, DSPy's `tools=[...]`).
///
/// A tool has a name (its Python name), a description (shown to the model in the system prompt
/// and as the function's docstring), a JSON schema of its parameters (an object schema:
/// `properties`, in the order positional arguments map onto them, and `required`), and an async
/// handler that takes the arguments as a JSON object and returns a JSON result or an error
/// sentence for the model. Cloning is cheap (the handler is shared).
///
/// ```
/// use rlm_sandbox::Tool;
/// use serde_json::json;
///
/// let weather = Tool::new(
///     "get_weather",
///     "The current temperature in a city, in degrees Celsius.",
///     json!({
///         "type": "object",
///         "properties": {"city": {"type": "string"}},
///         "required": ["city"],
///     }),
///     |args| async move {
///         let city = args["city"].as_str().ok_or("city must be a string")?;
///         Ok(json!({"city": city, "celsius": 21}))
///     },
/// )?;
/// assert_eq!(weather.params(), ["city"]);
/// // Model code: `get_weather("Paris")["celsius"]` or `get_weather(city="Paris")`.
/// # Ok::<(), rlm_sandbox::ToolError>(())
/// ```
#[derive(Clone)]
pub struct Tool {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    description: String,
    schema: Value,
    params: Vec<String>,
    required: Vec<String>,
    open: bool,
    handler: Handler,
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.inner.name)
            .field("params", &self.inner.params)
            .finish_non_exhaustive()
    }
}

impl Tool {
    /// A tool named `name` (a Python identifier), described by `description`, taking the
    /// parameters of the JSON schema `parameters` (`{"type": "object", "properties": {...},
    /// "required": [...]}`; `null` or `{}` for none), answered by `handler`.
    ///
    /// The handler runs on the host's tokio runtime while the calling step waits (within the
    /// step's time limit). Its `Err` reaches model code as a `ToolError` with that message.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Result<Self, ToolError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let handler = Handler::Value(Box::new(move |args| Box::pin(handler(args))));
        Self::with(name.into(), description.into(), parameters, handler)
    }

    /// A tool like [`Tool::new`] whose handler takes the arguments as JSON text (an object, as
    /// model code's `json.dumps` wrote it, checked against the parameters) and answers JSON
    /// text, which model code reads with `json.loads`. Numbers cross exactly as written, where a
    /// [`Value`] turns integers beyond 64 bits into floats: for a handler that parses JSON
    /// itself (another language's). An answer that is not JSON raises `ToolError` in model code.
    pub fn new_text<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Result<Self, ToolError>
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let handler = Handler::Text(Box::new(move |args| Box::pin(handler(args))));
        Self::with(name.into(), description.into(), parameters, handler)
    }

    fn with(
        name: String,
        description: String,
        parameters: Value,
        handler: Handler,
    ) -> Result<Self, ToolError> {
        check_name(&name)?;
        let (schema, params, required, open) = parse_schema(&name, parameters)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                description,
                schema,
                params,
                required,
                open,
                handler,
            }),
        })
    }

    /// The same tool (name, description, parameters) with another handler, e.g. one that
    /// wraps this tool's [`Tool::call`] to observe calls.
    pub fn with_handler<F, Fut>(&self, handler: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.with_handler_of(Handler::Value(Box::new(move |args| {
            Box::pin(handler(args))
        })))
    }

    /// The same tool with a handler of JSON text (as [`Tool::new_text`]'s), e.g. one that wraps
    /// this tool's [`Tool::call_text`] to observe calls with every number as it was written.
    pub fn with_text_handler<F, Fut>(&self, handler: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.with_handler_of(Handler::Text(Box::new(move |args| Box::pin(handler(args)))))
    }

    fn with_handler_of(&self, handler: Handler) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                name: i.name.clone(),
                description: i.description.clone(),
                schema: i.schema.clone(),
                params: i.params.clone(),
                required: i.required.clone(),
                open: i.open,
                handler,
            }),
        }
    }

    /// Its Python name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What it does.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// The JSON schema of its parameters (an object schema).
    pub fn parameters(&self) -> &Value {
        &self.inner.schema
    }

    /// Its parameter names, in the order positional arguments map onto them.
    pub fn params(&self) -> &[String] {
        &self.inner.params
    }

    /// The parameters that must be given.
    pub fn required(&self) -> &[String] {
        &self.inner.required
    }

    /// A Python-style signature for prompts: `get_weather(city, unit=None)`.
    pub fn signature(&self) -> String {
        let parts: Vec<String> = self
            .inner
            .params
            .iter()
            .map(|p| {
                if self.inner.required.contains(p) {
                    p.clone()
                } else {
                    format!("{p}=None")
                }
            })
            .collect();
        format!("{}({})", self.inner.name, parts.join(", "))
    }

    /// Run the handler on `args` (no checks; the sandbox checks arguments first).
    pub fn call(&self, args: Value) -> ToolFuture {
        match &self.inner.handler {
            Handler::Value(handler) => handler(args),
            Handler::Text(handler) => {
                let answer = handler(args.to_string());
                Box::pin(async move {
                    let text = answer.await?;
                    serde_json::from_str(&text)
                        .map_err(|e| format!("the tool's result is not JSON: {e}"))
                })
            }
        }
    }

    /// Run the handler on the arguments as JSON text (no checks), answering JSON text: both
    /// exactly as written for a [`Tool::new_text`] handler; a [`Value`] handler gets the text
    /// parsed (an error if it is not JSON) and its result written.
    pub fn call_text(&self, args_json: String) -> ToolTextFuture {
        match &self.inner.handler {
            Handler::Text(handler) => handler(args_json),
            Handler::Value(handler) => match serde_json::from_str(&args_json) {
                Ok(args) => {
                    let answer = handler(args);
                    Box::pin(async move { Ok(answer.await?.to_string()) })
                }
                Err(e) => {
                    let e = format!("the arguments are not valid JSON: {e}");
                    Box::pin(async move { Err(e) })
                }
            },
        }
    }

    /// Parse the JSON text `args_json` as the handler takes it, check it against the parameters
    /// and start the handler; its result comes as JSON text. An error is for the model.
    pub(crate) fn call_json(&self, args_json: String) -> Result<ToolTextFuture, String> {
        let invalid = |e: serde_json::Error| format!("the arguments are not valid JSON: {e}");
        match &self.inner.handler {
            Handler::Value(handler) => {
                let args: Value = serde_json::from_str(&args_json).map_err(invalid)?;
                drop(args_json);
                self.check_args(&args)?;
                let answer = handler(args);
                Ok(Box::pin(async move { Ok(answer.await?.to_string()) }))
            }
            Handler::Text(handler) => {
                // Only the keys are kept: the values stay text, whatever their numbers.
                let Keys(keys) = serde_json::from_str(&args_json).map_err(invalid)?;
                self.check_keys(keys.as_deref())?;
                Ok(handler(args_json))
            }
        }
    }

    /// Check `args` against the parameters: a JSON object with every required parameter and,
    /// unless the schema allows `additionalProperties`, no other. The error is for the model.
    pub fn check_args(&self, args: &Value) -> Result<(), String> {
        let keys = args
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>());
        self.check_keys(keys.as_deref())
    }

    /// [`Tool::check_args`] on the keys of the arguments (`None`: they are not an object).
    fn check_keys(&self, keys: Option<&[String]>) -> Result<(), String> {
        let Some(keys) = keys else {
            return Err("the arguments must be a JSON object".into());
        };
        let missing: Vec<&str> = self
            .inner
            .required
            .iter()
            .filter(|p| !keys.contains(p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing required argument(s) {}; call it as {}",
                missing.join(", "),
                self.signature()
            ));
        }
        if !self.inner.open
            && let Some(extra) = keys.iter().find(|k| !self.inner.params.contains(k))
        {
            return Err(format!(
                "unexpected argument {extra:?}; call it as {}",
                self.signature()
            ));
        }
        Ok(())
    }
}

/// The keys of a JSON value that is an object (`None` for any other value), its values skipped
/// unparsed (numbers of any length included).
struct Keys(Option<Vec<String>>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                    keys.push(k);
                }
                Ok(Keys(Some(keys)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Keys(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys(None))
            }
            fn visit_unit<E>(self) -> Result<Keys, E> {
                Ok(Keys(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Names the REPL binds itself (its functions, modules bound from the start, `answer`, the
/// names the RLM loop defines): a tool may not shadow them.
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "llm_query", "llm_batch", "llm_query_batched", "rlm_query", "rlm_batch",
    "rlm_query_batched", "search", "FINAL", "FINAL_VAR", "SUBMIT", "SHOW_VARS", "LazyText",
    "LazyList", "LazyDict", "LazyPieces", "ToolError", "answer", "context", "query", "question",
    // Modules bound in the REPL from the start (PREBOUND in the guest).
    "re", "json", "math", "collections", "itertools", "functools", "statistics", "string",
    "textwrap", "datetime", "random", "heapq", "bisect", "difflib", "csv", "io", "time",
    "hashlib", "base64", "unicodedata", "operator", "copy", "pprint", "typing",
];

/// The guest Python's keywords and soft keywords.
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "case", "class",
    "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
    "if", "import", "in", "is", "lambda", "match", "nonlocal", "not", "or", "pass", "raise",
    "return", "try", "while", "with", "yield",
];

/// The guest Python's builtins that do not start with `_` (a test checks the list against the
/// guest).
#[rustfmt::skip]
const BUILTINS: &[&str] = &[
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException",
    "BaseExceptionGroup", "BlockingIOError", "BrokenPipeError", "BufferError", "BytesWarning",
    "ChildProcessError", "ConnectionAbortedError", "ConnectionError", "ConnectionRefusedError",
    "ConnectionResetError", "DeprecationWarning", "EOFError", "Ellipsis", "EncodingWarning",
    "EnvironmentError", "Exception", "ExceptionGroup", "FileExistsError", "FileNotFoundError",
    "FloatingPointError", "FutureWarning", "GeneratorExit", "IOError", "ImportError",
    "ImportWarning", "IndentationError", "IndexError", "InterruptedError", "IsADirectoryError",
    "KeyError", "KeyboardInterrupt", "LookupError", "MemoryError", "ModuleNotFoundError",
    "NameError", "NotADirectoryError", "NotImplemented", "NotImplementedError", "OSError",
    "OverflowError", "PendingDeprecationWarning", "PermissionError", "ProcessLookupError",
    "PythonFinalizationError",
    "RecursionError", "ReferenceError", "ResourceWarning", "RuntimeError", "RuntimeWarning",
    "StopAsyncIteration", "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError",
    "SystemExit", "TabError", "TimeoutError", "TypeError", "UnboundLocalError",
    "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError", "UnicodeTranslateError",
    "UnicodeWarning", "UserWarning", "ValueError", "Warning", "ZeroDivisionError", "abs",
    "aiter", "all", "anext", "any", "ascii", "bin", "bool", "breakpoint", "bytearray", "bytes",
    "callable", "chr", "classmethod", "compile", "complex", "copyright", "credits", "delattr",
    "dict", "dir", "divmod", "enumerate", "eval", "exec", "exit", "filter", "float", "format",
    "frozenset", "getattr", "globals", "hasattr", "hash", "help", "hex", "id", "input", "int",
    "isinstance", "issubclass", "iter", "len", "license", "list", "locals", "map", "max",
    "memoryview", "min", "next", "object", "oct", "open", "ord", "pow", "print", "property",
    "quit", "range", "repr", "reversed", "round", "set", "setattr", "slice", "sorted",
    "staticmethod", "str", "sum", "super", "tuple", "type", "vars", "zip",
];

/// Longest tool name accepted.
const MAX_NAME_CHARS: usize = 64;

fn check_name(name: &str) -> Result<(), ToolError> {
    let bad = |reason: &str| {
        Err(ToolError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return bad("it is empty");
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return bad("it is longer than 64 characters");
    }
    // ASCII identifiers only: Python normalises non-ASCII names (NFKC), which would let two
    // different tool names bind one Python name.
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return bad(
            "it is not an ASCII Python identifier (letters, digits, '_'; no leading digit)",
        );
    }
    if first == '_' {
        return bad("names starting with '_' are the REPL's own");
    }
    if KEYWORDS.contains(&name) {
        return bad("it is a Python keyword");
    }
    if BUILTINS.contains(&name) {
        return bad("it would shadow a Python builtin");
    }
    if RESERVED.contains(&name) || is_context_name(name) {
        return bad("it would shadow one of the REPL's own names");
    }
    Ok(())
}

/// `context_0`, `context_1`, ...: the names of context slots.
fn is_context_name(name: &str) -> bool {
    name.strip_prefix("context_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

type Parsed = (Value, Vec<String>, Vec<String>, bool);

fn parse_schema(name: &str, schema: Value) -> Result<Parsed, ToolError> {
    let bad = |reason: String| ToolError::InvalidSchema {
        name: name.to_string(),
        reason,
    };
    let schema = match schema {
        Value::Null => serde_json::json!({"type": "object", "properties": {}}),
        Value::Object(_) => schema,
        other => {
            return Err(bad(format!(
                "expected a JSON object schema ({{\"type\": \"object\", \"properties\": ...}}), \
                 got {other}"
            )));
        }
    };
    if let Some(t) = schema.get("type")
        && t != "object"
    {
        return Err(bad(format!("its \"type\" must be \"object\", not {t}")));
    }
    let params: Vec<String> = match schema.get("properties") {
        None => Vec::new(),
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        Some(other) => {
            return Err(bad(format!(
                "\"properties\" must be an object, not {other}"
            )));
        }
    };
    for p in &params {
        let ok = p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !KEYWORDS.contains(&p.as_str());
        if !ok {
            return Err(bad(format!(
                "parameter {p:?} is not a Python identifier, so model code cannot pass it by name"
            )));
        }
    }
    let required: Vec<String> = match schema.get("required") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(r) if params.iter().any(|p| p == r) => out.push(r.to_string()),
                    _ => {
                        return Err(bad(format!(
                            "\"required\" lists {item}, which is not one of its properties"
                        )));
                    }
                }
            }
            out
        }
        Some(other) => return Err(bad(format!("\"required\" must be an array, not {other}"))),
    };
    let open = match schema.get("additionalProperties") {
        None | Some(Value::Bool(false)) => false,
        Some(_) => true,
    };
    Ok((schema, params, required, open))
}

/// Check a set of tools for duplicate names.
pub(crate) fn check_unique(tools: &[Tool]) -> Result<(), ToolError> {
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|u| u.name() == t.name()) {
            return Err(ToolError::Duplicate(t.name().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, schema: Value) -> Result<Tool, ToolError> {
        Tool::new(name, "test", schema, |_| async { Ok(Value::Null) })
    }

    #[test]
    fn names_must_be_free_python_identifiers() {
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "_private",
            "for",
            "match",
            "print",
            "len",
            "open",
            "llm_query",
            "FINAL",
            "SUBMIT",
            "search",
            "context",
            "context_3",
            "answer",
            "re",
            "json",
            "query",
            "ToolError",
            "SHOW_VARS",
            "naïve",
        ] {
            assert!(
                matches!(tool(bad, Value::Null), Err(ToolError::InvalidName { .. })),
                "{bad:?} was accepted"
            );
        }
        for good in ["get_weather", "lookup2", "Calc", "context_x", "contexts"] {
            tool(good, Value::Null).unwrap();
        }
    }

    #[test]
    fn schema_gives_params_in_order_and_required() {
        let t = tool(
            "f",
            json!({"type": "object", "properties": {"b": {}, "a": {}, "c": {}},
                   "required": ["a"]}),
        )
        .unwrap();
        assert_eq!(t.params(), ["b", "a", "c"]);
        assert_eq!(t.required(), ["a"]);
        assert_eq!(t.signature(), "f(b=None, a, c=None)");
        assert!(t.check_args(&json!({"a": 1})).is_ok());
        assert!(
            t.check_args(&json!({"b": 1}))
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            t.check_args(&json!({"a": 1, "z": 2}))
                .unwrap_err()
                .contains("unexpected")
        );
        assert!(t.check_args(&json!([1])).is_err());
    }

    #[test]
    fn bad_schemas_are_refused() {
        for bad in [
            json!("x"),
            json!({"type": "string"}),
            json!({"properties": []}),
            json!({"properties": {"a-b": {}}}),
            json!({"properties": {"a": {}}, "required": ["b"]}),
            json!({"properties": {"a": {}}, "required": "a"}),
        ] {
            assert!(
                matches!(tool("f", bad.clone()), Err(ToolError::InvalidSchema { .. })),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let a = tool("a", Value::Null).unwrap();
        let b = tool("b", Value::Null).unwrap();
        assert!(check_unique(&[a.clone(), b.clone()]).is_ok());
        assert_eq!(
            check_unique(&[a.clone(), b, a]),
            Err(ToolError::Duplicate("a".into()))
        );
    }
}
