//! The `tools` interface: custom tools (host functions the embedding application registers)
//! called by model code, run on the host runtime within the step's time.

use super::HostState;
use super::calls::{CLOSED, ModelCall, ReplayDiverged};
use super::llm::reply;
use crate::bindings::rlm::sandbox::llm as wit_llm;
use crate::bindings::rlm::sandbox::tools as wit_tools;
use crate::tools::Tool;

/// Aborts a spawned tool handler when the call is given up (the step ended or was dropped).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Longest tool name the host looks up (a registered name is at most 64 characters).
const MAX_TOOL_NAME_BYTES: usize = 256;

impl HostState {
    /// The registered tools' names, for messages.
    fn tool_names(&self) -> String {
        if self.tools.is_empty() {
            return "none".to_string();
        }
        self.tools
            .iter()
            .map(Tool::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A custom tool call: from the journal when replaying, else run (and recorded).
    async fn tool_call(
        &mut self,
        name: String,
        args_json: String,
    ) -> wasmtime::Result<Result<String, String>> {
        // Refused the same way on every run, before the journal: nothing of it is kept.
        if name.len() > MAX_TOOL_NAME_BYTES {
            return Ok(Err(format!(
                "no tool has a {}-byte name; the tools are {}",
                name.len(),
                self.tool_names()
            )));
        }
        if self.closed(1) {
            return Ok(Err(CLOSED.to_string()));
        }
        if self.replaying() {
            return match self.replay_next() {
                Some(ModelCall::Tool { name: n, result }) if n == name => Ok(result),
                _ => Err(ReplayDiverged.into()),
            };
        }
        let span = tracing::debug_span!("tool_call", tool = %name, args_bytes = args_json.len());
        let result = tracing::Instrument::instrument(self.run_tool(&name, args_json), span).await;
        // Failures are journaled too, so a replay meets the calls in the same order.
        self.record(ModelCall::Tool {
            name,
            result: result.clone(),
        });
        Ok(result)
    }

    /// Check a tool call and run its handler on the host runtime, within the step's time.
    async fn run_tool(&mut self, name: &str, args_json: String) -> Result<String, String> {
        self.charge(1)?;
        self.tool_calls = self.tool_calls.saturating_add(1);
        if self.tool_calls > self.limits.max_tool_calls_per_step {
            return Err(format!(
                "this step made more than {} tool calls (the sandbox's per-step limit); call \
                 tools less often per step",
                self.limits.max_tool_calls_per_step
            ));
        }
        let Some(tool) = self.tools.iter().find(|t| t.name() == name).cloned() else {
            return Err(format!(
                "no tool named {name:?} (tools: {})",
                self.tool_names()
            ));
        };
        // Checked before parsing: parsed JSON takes up to ~30 times its text in memory.
        if args_json.len() as u64 > self.limits.max_tool_args_bytes {
            return Err(format!(
                "the arguments are {} bytes of JSON, more than a tool call takes ({} bytes); \
                 pass less (a tool that needs a document can be given a part of it)",
                args_json.len(),
                self.limits.max_tool_args_bytes
            ));
        }
        // Parsed as the handler takes it (a value, or only its keys for a handler of JSON text,
        // which then gets every number exactly) and checked against the parameters.
        let call = tool.call_json(args_json)?;
        // Spawned, so a panic in the handler is caught by tokio (not the host); aborted when the
        // step is given up (its deadline drops this future, as for model calls).
        let handle = tokio::spawn(call);
        let _abort = AbortOnDrop(handle.abort_handle());
        let json = match handle.await {
            Ok(Ok(json)) => json,
            Ok(Err(e)) => return Err(self.bounded_error(e)),
            Err(e) if e.is_panic() => {
                tracing::warn!(tool = name, "a tool handler panicked");
                return Err("the tool failed on the host (its handler panicked)".into());
            }
            Err(_) => return Err("the tool's call was cancelled on the host".into()),
        };
        if json.len() > self.cap() {
            return Err(format!(
                "the tool's result is {} bytes of JSON, more than the sandbox passes in one \
                 piece ({} bytes); ask the tool for less",
                json.len(),
                self.cap()
            ));
        }
        Ok(json)
    }
}

impl wit_tools::Host for HostState {
    async fn call_tool(
        &mut self,
        name: String,
        args_json: String,
    ) -> wasmtime::Result<wit_llm::Reply> {
        Ok(reply(self.tool_call(name, args_json).await?))
    }
}
