//! The run's custom tools as one RLM's sandbox gets them: each call also reported as an
//! [`Event::ToolCall`] holding a bounded copy of what crossed: arguments cut to
//! [`MAX_EVENT_ARGS_BYTES`] of JSON (their size and hash kept, so a replay still finds each
//! call's result), an error cut to [`MAX_EVENT_ERROR_BYTES`], and no copy of a result larger than
//! the sandbox passes to model code (only the error it got instead).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use serde_json::Value;

use crate::events::{Event, Node};
use crate::tree::Tree;

/// Bytes of JSON of a tool call's arguments that its event keeps; longer arguments are kept as
/// a string: their first bytes and a note of how many there were.
pub const MAX_EVENT_ARGS_BYTES: usize = 4 << 10;

/// Bytes of a tool's error message that its event keeps (the sandbox passes model code at most
/// 8 KiB of it).
pub const MAX_EVENT_ERROR_BYTES: usize = 16 << 10;

impl Tree {
    /// The run's custom tools as one RLM's sandbox gets them: each call also reported as an
    /// [`Event::ToolCall`] from `node`.
    pub(crate) fn node_tools(self: &Arc<Self>, node: &Node) -> Vec<rlm_sandbox::Tool> {
        let cap = usize::try_from(self.config.limits.max_host_string_bytes).unwrap_or(usize::MAX);
        self.config
            .tools
            .iter()
            .map(|tool| {
                let (tree, node, inner) = (self.clone(), node.clone(), tool.clone());
                // A handler of JSON text: the call gets the arguments, and gives its result,
                // exactly as they crossed (integers of any size); the event records values.
                tool.with_text_handler(move |args_json: String| {
                    let (tree, node, inner) = (tree.clone(), node.clone(), inner.clone());
                    async move {
                        let id = tree.next_call_id();
                        let started = Instant::now();
                        let record = ArgsRecord::of(&json_or_text(&args_json));
                        let call = std::panic::AssertUnwindSafe(inner.call_text(args_json));
                        let outcome = call.catch_unwind().await;
                        let result = match &outcome {
                            Ok(r) => recorded_result(r, cap),
                            Err(_) => Err("the tool's handler panicked".to_string()),
                        };
                        tree.events.emit(Event::ToolCall {
                            node,
                            id,
                            name: inner.name().to_string(),
                            args: record.args,
                            args_bytes: record.bytes,
                            args_hash: record.hash,
                            result,
                            ms: started.elapsed().as_secs_f64() * 1e3,
                        });
                        match outcome {
                            Ok(r) => r,
                            // The sandbox reports a panicking handler to model code.
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                })
            })
            .collect()
    }
}

/// A tool call's arguments as its event records them.
struct ArgsRecord {
    args: Value,
    bytes: usize,
    hash: String,
}

impl ArgsRecord {
    /// One pass over the arguments' JSON: its size, its hash and, when it is longer than
    /// [`MAX_EVENT_ARGS_BYTES`], its first bytes (nothing else of it is held).
    fn of(args: &Value) -> Self {
        let mut w = JsonSummary::default();
        // Writing to memory cannot fail, nor can serializing a `Value`.
        let _ = serde_json::to_writer(&mut w, args);
        let hash = w.hash.finalize().to_hex()[..32].to_string();
        if w.bytes <= MAX_EVENT_ARGS_BYTES {
            return Self {
                args: args.clone(),
                bytes: w.bytes,
                hash,
            };
        }
        let head = match std::str::from_utf8(&w.head) {
            Ok(s) => s,
            // Cut inside a character: keep the whole ones.
            Err(e) => std::str::from_utf8(&w.head[..e.valid_up_to()]).unwrap_or_default(),
        };
        Self {
            args: Value::String(format!(
                "{head}… [cut: the arguments are {} bytes of JSON; the trace keeps the first {}]",
                w.bytes,
                head.len()
            )),
            bytes: w.bytes,
            hash,
        }
    }
}

/// The key a replay finds a tool call's recorded result by: the hash of its arguments' JSON
/// (what [`Event::ToolCall`]'s `args_hash` holds).
pub(crate) fn args_key(args: &Value) -> String {
    ArgsRecord::of(args).hash
}

/// Counts, hashes and keeps the first [`MAX_EVENT_ARGS_BYTES`] of what is written to it.
#[derive(Default)]
struct JsonSummary {
    bytes: usize,
    hash: blake3::Hasher,
    head: Vec<u8>,
}

impl Write for JsonSummary {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        self.hash.update(buf);
        let room = MAX_EVENT_ARGS_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON text as a value (a number JSON allows but a `Value` cannot hold, such as `1e400`,
/// leaves the text as a string).
fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// A tool's result (JSON text) as its event records it: a value the sandbox passes to model
/// code (at most `cap` bytes of JSON) in full, as a replay needs it; for a larger one, the error
/// model code got instead; an error cut to [`MAX_EVENT_ERROR_BYTES`].
fn recorded_result(result: &Result<String, String>, cap: usize) -> Result<Value, String> {
    match result {
        Ok(text) => {
            if text.len() <= cap {
                Ok(json_or_text(text))
            } else {
                // What model code got instead, in the sandbox's words (its `run_tool`), so a
                // replay gives it the same error; the replay test in tests/tools.rs fails if
                // the two part.
                Err(format!(
                    "the tool's result is {} bytes of JSON, more than the sandbox passes in one \
                     piece ({cap} bytes); ask the tool for less",
                    text.len()
                ))
            }
        }
        Err(message) if message.len() <= MAX_EVENT_ERROR_BYTES => Err(message.clone()),
        Err(message) => {
            let mut end = MAX_EVENT_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            Err(format!(
                "{}… [cut: the error is {} bytes]",
                &message[..end],
                message.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Arguments of any size are recorded in a few KiB, their hash that of their whole JSON.
    #[test]
    fn long_arguments_are_cut_and_keyed_by_the_hash_of_the_whole() {
        let small = json!({"sku": "A-1"});
        let r = ArgsRecord::of(&small);
        assert_eq!((r.args, r.bytes), (small.clone(), small.to_string().len()));
        assert_eq!(
            r.hash,
            blake3::hash(small.to_string().as_bytes()).to_hex()[..32]
        );
        // 3-byte characters, so the cut falls inside one.
        let big = json!({"text": "€".repeat(1 << 20)});
        let r = ArgsRecord::of(&big);
        let json = big.to_string();
        assert_eq!(r.bytes, json.len());
        assert_eq!(r.hash, blake3::hash(json.as_bytes()).to_hex()[..32]);
        let Value::String(kept) = &r.args else {
            panic!("{:?}", r.args)
        };
        assert!(kept.len() < MAX_EVENT_ARGS_BYTES + 200, "{}", kept.len());
        assert!(kept.starts_with(r#"{"text":"€€"#), "{}", &kept[..20]);
        assert!(
            kept.ends_with(&format!(
                "the arguments are {} bytes of JSON; the trace keeps the first 4095]",
                json.len()
            )),
            "{}",
            &kept[kept.len() - 100..]
        );
        assert_ne!(args_key(&json!({"text": "€"})), r.hash);
    }

    #[test]
    fn a_result_model_code_never_got_and_a_long_error_are_not_kept_whole() {
        let value = json!("x".repeat(10_000));
        assert_eq!(
            recorded_result(&Ok(value.to_string()), 20_000),
            Ok(value.clone())
        );
        let Err(note) = recorded_result(&Ok(value.to_string()), 5_000) else {
            panic!()
        };
        assert_eq!(
            note,
            "the tool's result is 10002 bytes of JSON, more than the sandbox passes in one piece \
             (5000 bytes); ask the tool for less"
        );
        let long = "é".repeat(MAX_EVENT_ERROR_BYTES);
        let Err(cut) = recorded_result(&Err(long.clone()), 0) else {
            panic!()
        };
        assert!(cut.len() < MAX_EVENT_ERROR_BYTES + 100);
        assert!(
            cut.ends_with(&format!("[cut: the error is {} bytes]", long.len())),
            "{cut}"
        );
        assert_eq!(
            recorded_result(&Err("short".into()), 0),
            Err("short".into())
        );
    }
}
