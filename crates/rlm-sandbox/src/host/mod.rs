//! The host side of the sandbox's imports, laid out like the WIT (`guest/wit/sandbox.wit`):
//! one store's state ([`HostState`]) here, and one module per interface it implements —
//! [`context`] (reads and searches of the contexts), [`llm`] (model calls, answered by the
//! embedding application's [`ModelHost`]) and [`tools`] (custom tools) — with [`calls`], the
//! record of model and tool calls that the journal replays. Each interface bounds what the guest
//! sends before any work starts.

mod calls;
mod context;
mod llm;
mod tools;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::context::Context;
use crate::limits::Limits;
use crate::memory::GuestMemory;
use crate::pipe::CappedPipe;
use crate::seeded::SeededRng;
use crate::tools::Tool;

pub use calls::ModelCall;
pub(crate) use calls::{CallLog, ReplayDiverged};
pub use llm::{ModelHost, NoModel};

/// Longest error message from the model host passed to the guest.
const MAX_ERROR_BYTES: usize = 8 << 10;

/// What one store holds besides the guest.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: GuestMemory,
    limits: Arc<Limits>,
    contexts: Vec<Arc<Context>>,
    model: Arc<dyn ModelHost>,
    /// Compiled search patterns (and refused ones), bounded.
    patterns: context::PatternCache,
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
        let patterns = context::PatternCache::new(memory.pool().clone());
        Self {
            wasi,
            table: ResourceTable::new(),
            memory,
            limits,
            contexts,
            model,
            patterns,
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
