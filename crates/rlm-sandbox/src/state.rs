//! Per-REPL host state and the implementation of the sandbox's host imports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::rlm::sandbox::context as wit_ctx;
use crate::bindings::rlm::sandbox::llm as wit_llm;
use crate::bindings::rlm::sandbox::tools as wit_tools;
use crate::context::{Context, LocalId, Node, PathStep, build_regex, search_hits};
use crate::host::ModelHost;
use crate::limits::Limits;
use crate::memory::GuestMemory;
use crate::pipe::CappedPipe;
use crate::seeded::SeededRng;
use crate::tools::Tool;

/// Most match spans one `spans` call returns (1.6 MB here, about 6 MB of Python ints in the
/// guest).
const MAX_SPANS: u32 = 100_001;
/// Longest error message from the model host passed to the guest.
const MAX_ERROR_BYTES: usize = 8 << 10;
/// Number of compiled search patterns kept per REPL.
const REGEX_CACHE: usize = 8;

/// One model call made by a step, with its answer: the journal replays these instead of asking
/// the model again when a REPL is restored.
///
/// Prompts are not kept (a restore serves the answers in the order the calls were made, checking
/// the kind, the model and a batch's size), so the journal holds no copy of what the guest sent,
/// and a prompt that differs on replay (one holding the current time) still gets its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelCall {
    /// `llm_query`.
    Query {
        model: Option<String>,
        result: Result<String, String>,
    },
    /// `llm_batch`.
    Batch {
        model: Option<String>,
        results: Vec<Result<String, String>>,
    },
    /// `rlm_query`.
    Rlm {
        model: Option<String>,
        result: Result<String, String>,
    },
    /// `rlm_batch` (`rlm_query_batched`).
    RlmBatch {
        model: Option<String>,
        results: Vec<Result<String, String>>,
    },
    /// A custom tool call: the tool's name and its result as the guest got it (JSON text), or
    /// the failure. The arguments are not kept, as prompts are not.
    Tool {
        name: String,
        result: Result<String, String>,
    },
}

impl ModelCall {
    /// Bytes of answers this call keeps in the journal.
    pub fn answer_bytes(&self) -> usize {
        let one = |r: &Result<String, String>| r.as_ref().map_or_else(String::len, String::len);
        match self {
            Self::Query { result, .. } | Self::Rlm { result, .. } | Self::Tool { result, .. } => {
                one(result)
            }
            Self::Batch { results, .. } | Self::RlmBatch { results, .. } => {
                results.iter().map(one).sum()
            }
        }
    }
}

/// Whether model calls go to the model (and are recorded) or come from a journal.
#[derive(Debug)]
pub(crate) enum CallLog {
    Record(Vec<ModelCall>),
    Replay(VecDeque<ModelCall>),
    /// No model or tool call may be made (the REPL's state is being saved or restored): each is
    /// refused, and counted.
    Closed,
}

/// The refusal a call gets while the log is [`CallLog::Closed`].
const CLOSED: &str = "no model or tool calls while the REPL's state is saved or restored";

/// What one store holds besides the guest.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: GuestMemory,
    limits: Arc<Limits>,
    contexts: Vec<Arc<Context>>,
    model: Arc<dyn ModelHost>,
    regexes: VecDeque<((String, bool), regex::Regex)>,
    /// Host calls made by the current step.
    pub(crate) calls: u64,
    /// The custom tools model code may call.
    tools: Arc<[Tool]>,
    /// Tool calls made by the current step.
    pub(crate) tool_calls: u64,
    /// `search` calls the current step made, and how many of them matched nothing.
    pub(crate) searches: u32,
    pub(crate) empty_searches: u32,
    /// When the current step must end.
    pub(crate) deadline: Instant,
    pub(crate) log: CallLog,
    /// Held by the search running on a blocking thread (at most one per REPL).
    search_lock: Arc<tokio::sync::Mutex<()>>,
    /// The guest's random streams (shared with the WASI context).
    rngs: [SeededRng; 2],
}

impl HostState {
    pub(crate) fn new(
        limits: Arc<Limits>,
        contexts: Vec<Arc<Context>>,
        model: Arc<dyn ModelHost>,
        stdout: CappedPipe,
        stderr: CappedPipe,
        seed: &[u8; 32],
        memory: GuestMemory,
    ) -> Self {
        // Closed by construction: no preopened directories, no environment, no arguments, no
        // network, no stdin; stdout/stderr go to capped in-memory pipes.
        let rngs = [
            SeededRng::new(seed, "secure"),
            SeededRng::new(seed, "insecure"),
        ];
        let wasi = WasiCtx::builder()
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .secure_random(rngs[0].clone())
            .insecure_random(rngs[1].clone())
            .insecure_random_seed(u128::from_le_bytes(
                seed[..16].try_into().unwrap_or([0; 16]),
            ))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            memory,
            limits,
            contexts,
            model,
            regexes: VecDeque::new(),
            calls: 0,
            tools: Arc::new([]),
            tool_calls: 0,
            searches: 0,
            empty_searches: 0,
            deadline: Instant::now(),
            log: CallLog::Record(Vec::new()),
            search_lock: Arc::new(tokio::sync::Mutex::new(())),
            rngs,
        }
    }

    /// Where the guest's random streams (secure, insecure) are.
    pub(crate) fn rng_positions(&self) -> [u64; 2] {
        [self.rngs[0].position(), self.rngs[1].position()]
    }

    /// Move the guest's random streams (to where a checkpoint's instance had them).
    pub(crate) fn set_rng_positions(&self, positions: [u64; 2]) {
        self.rngs[0].set_position(positions[0]);
        self.rngs[1].set_position(positions[1]);
    }

    /// Make this store serve another REPL (one taken from the warm pool): its limits, model
    /// host and seed. The random streams go on from the positions they have now, under the new
    /// seed, as a store made for that REPL would have them after the same start.
    pub(crate) fn adopt(
        &mut self,
        limits: Arc<Limits>,
        model: Arc<dyn ModelHost>,
        seed: &[u8; 32],
    ) {
        self.limits = limits;
        self.model = model;
        let [secure, insecure] = self.rng_positions();
        self.rngs[0].reseed(seed, "secure", secure);
        self.rngs[1].reseed(seed, "insecure", insecure);
    }

    pub(crate) fn set_contexts(&mut self, contexts: Vec<Arc<Context>>) {
        self.contexts = contexts;
    }

    pub(crate) fn set_tools(&mut self, tools: Arc<[Tool]>) {
        self.tools = tools;
    }

    /// Context slots the host serves now.
    pub(crate) fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Count one host call (or `n`), refusing past the per-step limit.
    fn charge(&mut self, n: u64) -> Result<(), String> {
        self.calls = self.calls.saturating_add(n);
        if self.calls > self.limits.max_host_calls_per_step {
            return Err(format!(
                "this step made more than {} host calls (the sandbox's per-step limit); do \
                 fewer, larger operations (e.g. search() instead of many small reads)",
                self.limits.max_host_calls_per_step
            ));
        }
        Ok(())
    }

    fn cap(&self) -> usize {
        usize::try_from(self.limits.max_host_string_bytes).unwrap_or(usize::MAX)
    }

    /// Cut an error message from the model host to a size the guest can always take.
    fn bounded_error(&self, msg: String) -> String {
        let limit = (self.cap() / 4).min(MAX_ERROR_BYTES);
        if msg.len() <= limit {
            return msg;
        }
        let mut end = limit;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [error message cut at {limit} bytes]", &msg[..end])
    }

    /// Refuse a string bigger than the host string cap.
    fn bounded(&self, what: &str, s: String) -> Result<String, String> {
        if s.len() > self.cap() {
            return Err(format!(
                "{what} is {} bytes, more than the sandbox passes in one piece ({} bytes); ask \
                 for less (a smaller slice, fewer results)",
                s.len(),
                self.cap()
            ));
        }
        Ok(s)
    }

    fn resolve(&self, node: u64) -> Result<(&Context, LocalId), String> {
        let slot = (node >> 32) as usize;
        let local = (node & 0xFFFF_FFFF) as LocalId;
        let ctx = self
            .contexts
            .get(slot)
            .ok_or_else(|| format!("no context node {node}"))?;
        ctx.node(local)
            .ok_or_else(|| format!("no context node {node}"))?;
        Ok((ctx, local))
    }

    /// The context holding `node`, shared (for work off the async workers), and the node's id.
    fn shared(&self, node: u64) -> Result<(Arc<Context>, LocalId), String> {
        let (_, local) = self.resolve(node)?;
        Ok((self.contexts[(node >> 32) as usize].clone(), local))
    }

    /// Run `work` on a blocking thread, so the async workers go on, within the step's remaining
    /// time, one such work per REPL at a time (work given up on must finish, or see its cancel
    /// flag, before the next starts). `None` when the time ran out: `work`'s cancel flag is then
    /// set. A thread that failed is an error naming `what`.
    fn off_the_workers<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<Option<T>, String>> + Send + 'static {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let lock = self.search_lock.clone();
        async move {
            let cancel = Arc::new(AtomicBool::new(false));
            let flag = cancel.clone();
            let job = async move {
                let guard = lock.lock_owned().await;
                tokio::task::spawn_blocking(move || {
                    let _one_at_a_time = guard;
                    work(&flag)
                })
                .await
            };
            match tokio::time::timeout(remaining, job).await {
                Ok(Ok(done)) => Ok(Some(done)),
                Ok(Err(e)) => Err(format!("{what} failed on the host: {e}")),
                Err(_) => {
                    cancel.store(true, Ordering::Relaxed);
                    Ok(None)
                }
            }
        }
    }

    fn text(&self, node: u64) -> Result<&crate::context::TextDoc, String> {
        let (ctx, local) = self.resolve(node)?;
        match ctx.node(local) {
            Some(Node::Text(t)) => Ok(t),
            _ => Err(format!("context node {node} is not text")),
        }
    }

    fn regex(&mut self, pattern: &str, ignore_case: bool) -> Result<regex::Regex, String> {
        let key = (pattern.to_string(), ignore_case);
        if let Some((_, re)) = self.regexes.iter().find(|(k, _)| *k == key) {
            return Ok(re.clone());
        }
        let re = build_regex(pattern, ignore_case)?;
        if self.regexes.len() >= REGEX_CACHE {
            self.regexes.pop_front();
        }
        self.regexes.push_back((key, re.clone()));
        Ok(re)
    }

    fn replay_next(&mut self) -> Option<ModelCall> {
        match &mut self.log {
            CallLog::Replay(q) => q.pop_front(),
            CallLog::Record(_) | CallLog::Closed => None,
        }
    }

    fn record(&mut self, call: ModelCall) {
        if let CallLog::Record(v) = &mut self.log {
            v.push(call);
        }
    }

    fn replaying(&self) -> bool {
        matches!(self.log, CallLog::Replay(_))
    }

    /// Whether calls are refused now (counting this one, or these `n`).
    fn closed(&mut self, n: u64) -> bool {
        let closed = matches!(self.log, CallLog::Closed);
        if closed {
            self.calls = self.calls.saturating_add(n);
        }
        closed
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_ctx::Host for HostState {
    fn root(&mut self, slot: u32) -> Result<u64, String> {
        self.charge(1)?;
        if (slot as usize) < self.contexts.len() {
            Ok(u64::from(slot) << 32)
        } else {
            Err(format!("no context in slot {slot}"))
        }
    }

    fn info(&mut self, node: u64) -> Result<wit_ctx::NodeInfo, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let (kind, len) = match ctx.node(local) {
            Some(Node::Text(t)) => (wit_ctx::NodeKind::Text, t.chars()),
            Some(Node::Sequence { items, .. }) => (wit_ctx::NodeKind::Sequence, items.len() as u64),
            Some(Node::Mapping { entries, .. }) => {
                (wit_ctx::NodeKind::Mapping, entries.len() as u64)
            }
            _ => (wit_ctx::NodeKind::Scalar, 0),
        };
        Ok(wit_ctx::NodeInfo {
            kind,
            len,
            size_chars: ctx.size_chars(local),
        })
    }

    fn child(&mut self, node: u64, index: u64) -> Result<u64, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let child = match ctx.node(local) {
            Some(Node::Sequence { items, .. }) => items.get(index as usize).copied(),
            Some(Node::Mapping { entries, .. }) => entries.get(index as usize).map(|e| e.1),
            _ => return Err(format!("context node {node} has no items")),
        };
        let child = child.ok_or_else(|| format!("index {index} out of range"))?;
        Ok((node & !0xFFFF_FFFF) | u64::from(child))
    }

    fn keys(&mut self, node: u64, start: u64, count: u32) -> Result<Vec<String>, String> {
        self.charge(1)?;
        let cap = self.cap();
        let (ctx, local) = self.resolve(node)?;
        let Some(Node::Mapping { entries, .. }) = ctx.node(local) else {
            return Err(format!("context node {node} is not a mapping"));
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (k, _) in entries.iter().skip(start as usize).take(count as usize) {
            bytes += k.len() + 8;
            if bytes > cap {
                break;
            }
            out.push(k.clone());
        }
        Ok(out)
    }

    fn lookup(&mut self, node: u64, key: String) -> Result<Option<u64>, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let Some(Node::Mapping { entries, .. }) = ctx.node(local) else {
            return Err(format!("context node {node} is not a mapping"));
        };
        Ok(entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, id)| (node & !0xFFFF_FFFF) | u64::from(*id)))
    }

    fn to_json(&mut self, node: u64) -> Result<String, String> {
        self.charge(1)?;
        let cap = self.cap();
        let (ctx, local) = self.resolve(node)?;
        ctx.to_json(local, cap).ok_or_else(|| {
            format!(
                "this part of the context is larger than the sandbox passes in one piece ({cap} \
                 bytes); index into it instead"
            )
        })
    }

    fn read(&mut self, node: u64, start: u64, end: u64) -> Result<String, String> {
        self.charge(1)?;
        let cap = self.cap();
        if end.saturating_sub(start) > cap as u64 {
            return Err(format!(
                "refused to read {} characters at once: the sandbox passes at most {cap} bytes \
                 per piece; read smaller slices",
                end - start
            ));
        }
        let text = self.text(node)?;
        let s = text.slice(start, end).to_string();
        self.bounded("this slice", s)
    }

    fn find(
        &mut self,
        node: u64,
        needle: String,
        start: u64,
        end: u64,
        reverse: bool,
    ) -> Result<i64, String> {
        self.charge(1)?;
        let text = self.text(node)?;
        Ok(text
            .find(&needle, start, end, reverse)
            .map_or(-1, |p| p as i64))
    }

    fn count(&mut self, node: u64, needle: String, start: u64, end: u64) -> Result<u64, String> {
        self.charge(1)?;
        Ok(self.text(node)?.count(&needle, start, end))
    }

    async fn search(
        &mut self,
        node: u64,
        pattern: String,
        options: wit_ctx::SearchOptions,
    ) -> Result<Vec<wit_ctx::SearchMatch>, String> {
        self.charge(1)?;
        let re = self.regex(&pattern, options.ignore_case)?;
        let max = options.max_results.min(self.limits.max_search_results) as usize;
        let cap = self.cap();
        let (ctx, local) = self.shared(node)?;
        // A character is at most 4 bytes: keep any one match well inside the string cap.
        let max_chars = u64::from(options.max_match_chars).min(cap as u64 / 8);
        let work =
            move |cancel: &AtomicBool| search_hits(&ctx, local, &re, max, max_chars, cap, cancel);
        let hits = match self.off_the_workers("the search", work).await? {
            Some(hits) => {
                self.searches = self.searches.saturating_add(1);
                if hits.is_empty() {
                    self.empty_searches = self.empty_searches.saturating_add(1);
                }
                hits
            }
            None => {
                return Err(format!(
                    "search() did not finish within the step's time limit ({:.1} s); search \
                     a smaller part of the context or use a simpler pattern",
                    self.limits.step_timeout.as_secs_f64()
                ));
            }
        };
        Ok(hits
            .into_iter()
            .map(|h| wit_ctx::SearchMatch {
                path: h
                    .path
                    .into_iter()
                    .map(|p| match p {
                        PathStep::Index(i) => wit_ctx::PathStep::Index(i),
                        PathStep::Key(k) => wit_ctx::PathStep::Key(k),
                    })
                    .collect(),
                start: h.start,
                end: h.end,
                text: h.text,
                line: h.line,
            })
            .collect())
    }

    async fn spans(
        &mut self,
        node: u64,
        pattern: String,
        max: u32,
    ) -> Result<Option<Vec<u64>>, String> {
        self.charge(1)?;
        self.text(node)?;
        let re = self.regex(&pattern, false)?;
        let max = max.min(MAX_SPANS) as usize;
        let (ctx, local) = self.shared(node)?;
        let work =
            move |cancel: &AtomicBool| crate::context::text_spans(&ctx, local, &re, max, cancel);
        match self.off_the_workers("the sweep", work).await? {
            Some(spans) => Ok(spans),
            None => Err("the sweep did not finish within the step's time limit".into()),
        }
    }

    async fn alphabet(&mut self, node: u64) -> Result<Option<String>, String> {
        self.charge(1)?;
        self.text(node)?;
        let (ctx, local) = self.shared(node)?;
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        // The first call reads the whole text once: off the async workers.
        let work = tokio::task::spawn_blocking(move || match ctx.node(local) {
            Some(Node::Text(text)) => text.alphabet().map(str::to_string),
            _ => None,
        });
        match tokio::time::timeout(remaining, work).await {
            Ok(Ok(alphabet)) => Ok(alphabet),
            Ok(Err(e)) => Err(format!(
                "reading the text's characters failed on the host: {e}"
            )),
            Err(_) => Err("reading the text's characters did not finish in time".into()),
        }
    }
}

/// A single call's outcome as the guest takes it.
fn reply(r: Result<String, String>) -> wit_llm::Reply {
    match r {
        Ok(a) => wit_llm::Reply::Answer(a),
        Err(e) => wit_llm::Reply::Failure(e),
    }
}

/// One refusal for a whole batch: the reason in the first slot, a short pointer to it in the
/// others (so a refusal costs the same whatever the batch's size).
fn refuse_all(n: usize, reason: String) -> Vec<Result<String, String>> {
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        out.push(Err(reason));
    }
    out.resize(n, Err("refused (see the first answer)".into()));
    out
}

/// Error raised (as a trap) when a restored REPL asks for a different model call than the one
/// the journal recorded: the replay cannot be trusted, so the REPL is reset instead.
#[derive(Debug, thiserror::Error)]
#[error("replay diverged from the journal at a model call")]
pub(crate) struct ReplayDiverged;

/// The two single-prompt model calls.
#[derive(Debug, Clone, Copy)]
enum Single {
    Llm,
    Rlm,
}

impl HostState {
    /// `llm_query` or `rlm_query`: from the journal when replaying, else from the model host
    /// (recorded, and bounded by the host string cap).
    async fn single_call(
        &mut self,
        kind: Single,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<Result<String, String>> {
        if self.closed(1) {
            return Ok(Err(CLOSED.to_string()));
        }
        if self.replaying() {
            return match (kind, self.replay_next()) {
                (Single::Llm, Some(ModelCall::Query { model: m, result }))
                | (Single::Rlm, Some(ModelCall::Rlm { model: m, result }))
                    if m == model =>
                {
                    Ok(result)
                }
                _ => Err(ReplayDiverged.into()),
            };
        }
        if let Err(e) = self.charge(1) {
            // Refusals are journaled too, so a replay meets the calls in the same order.
            self.record(match kind {
                Single::Llm => ModelCall::Query {
                    model,
                    result: Err(e.clone()),
                },
                Single::Rlm => ModelCall::Rlm {
                    model,
                    result: Err(e.clone()),
                },
            });
            return Ok(Err(e));
        }
        let host = self.model.clone();
        let (name, what) = match kind {
            Single::Llm => ("llm_query", "the model's answer"),
            Single::Rlm => ("rlm_query", "the sub-RLM's answer"),
        };
        let span = tracing::debug_span!("sub_call", kind = name, chars = prompt.len());
        let call = async {
            match kind {
                Single::Llm => host.llm_query(prompt.clone(), model.clone()).await,
                Single::Rlm => host.rlm_query(prompt.clone(), model.clone()).await,
            }
        };
        let answer = tracing::Instrument::instrument(call, span).await;
        let result = answer
            .map_err(|e| self.bounded_error(e))
            .and_then(|a| self.bounded(what, a));
        let result_copy = result.clone();
        self.record(match kind {
            Single::Llm => ModelCall::Query {
                model,
                result: result_copy,
            },
            Single::Rlm => ModelCall::Rlm {
                model,
                result: result_copy,
            },
        });
        Ok(result)
    }
}

impl HostState {
    /// `llm_batch` or `rlm_batch`: from the journal when replaying, else from the model host
    /// (recorded; each answer and their total bounded by the host string cap).
    async fn batch_call(
        &mut self,
        kind: Single,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        if self.closed(prompts.len() as u64) {
            return Ok(refuse_all(prompts.len(), CLOSED.to_string()));
        }
        if self.replaying() {
            return match (kind, self.replay_next()) {
                (Single::Llm, Some(ModelCall::Batch { model: m, results }))
                | (Single::Rlm, Some(ModelCall::RlmBatch { model: m, results }))
                    if m == model && results.len() == prompts.len() =>
                {
                    Ok(results)
                }
                _ => Err(ReplayDiverged.into()),
            };
        }
        if let Err(e) = self.charge(prompts.len() as u64) {
            let results = refuse_all(prompts.len(), e);
            self.record(match kind {
                Single::Llm => ModelCall::Batch {
                    model,
                    results: results.clone(),
                },
                Single::Rlm => ModelCall::RlmBatch {
                    model,
                    results: results.clone(),
                },
            });
            return Ok(results);
        }
        let name = match kind {
            Single::Llm => "llm_batch",
            Single::Rlm => "rlm_batch",
        };
        let span = tracing::debug_span!("sub_call", kind = name, n = prompts.len());
        let host = self.model.clone();
        let call = async {
            match kind {
                Single::Llm => host.llm_batch(prompts.clone(), model.clone()).await,
                Single::Rlm => host.rlm_batch(prompts.clone(), model.clone()).await,
            }
        };
        let answers = tracing::Instrument::instrument(call, span).await;
        let mut results: Vec<Result<String, String>> = answers
            .into_iter()
            .map(|r| {
                r.map_err(|e| self.bounded_error(e))
                    .and_then(|a| self.bounded("the model's answer", a))
            })
            .collect();
        // A host that returned the wrong number of answers must not shift them.
        results.resize(
            prompts.len(),
            Err("the model host returned no answer".into()),
        );
        let total: usize = results
            .iter()
            .map(|r| r.as_ref().map_or_else(String::len, String::len))
            .sum();
        if total > self.cap() {
            let msg = format!(
                "the batch's answers add up to {total} bytes, more than the sandbox passes at \
                 once ({} bytes); use smaller batches",
                self.cap()
            );
            results = refuse_all(prompts.len(), msg);
        }
        let results_copy = results.clone();
        self.record(match kind {
            Single::Llm => ModelCall::Batch {
                model,
                results: results_copy,
            },
            Single::Rlm => ModelCall::RlmBatch {
                model,
                results: results_copy,
            },
        });
        Ok(results)
    }
}

impl wit_llm::Host for HostState {
    async fn llm_query(
        &mut self,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<wit_llm::Reply> {
        Ok(reply(self.single_call(Single::Llm, prompt, model).await?))
    }

    async fn llm_batch(
        &mut self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        self.batch_call(Single::Llm, prompts, model).await
    }

    async fn rlm_batch(
        &mut self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        self.batch_call(Single::Rlm, prompts, model).await
    }

    async fn rlm_query(
        &mut self,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<wit_llm::Reply> {
        Ok(reply(self.single_call(Single::Rlm, prompt, model).await?))
    }
}

/// Aborts a spawned tool handler when the call is given up (the step ended or was dropped).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HostState {
    /// A custom tool call: from the journal when replaying, else run (and recorded).
    async fn tool_call(
        &mut self,
        name: String,
        args_json: String,
    ) -> wasmtime::Result<Result<String, String>> {
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
            let known: Vec<&str> = self.tools.iter().map(Tool::name).collect();
            return Err(format!(
                "no tool named {:?} (tools: {})",
                self.bounded_error(name.to_string()),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if args_json.len() > self.cap() {
            return Err(format!(
                "the arguments are {} bytes of JSON, more than the sandbox passes in one piece \
                 ({} bytes); pass less",
                args_json.len(),
                self.cap()
            ));
        }
        let args: serde_json::Value = serde_json::from_str(&args_json)
            .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
        drop(args_json);
        tool.check_args(&args)?;
        // Spawned, so a panic in the handler is caught by tokio (not the host); aborted when the
        // step is given up (its deadline drops this future, as for model calls).
        let handle = tokio::spawn(tool.call(args));
        let _abort = AbortOnDrop(handle.abort_handle());
        let value = match handle.await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => return Err(self.bounded_error(e)),
            Err(e) if e.is_panic() => {
                tracing::warn!(tool = name, "a tool handler panicked");
                return Err("the tool failed on the host (its handler panicked)".into());
            }
            Err(_) => return Err("the tool's call was cancelled on the host".into()),
        };
        let json = value.to_string();
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
