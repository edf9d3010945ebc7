//! `Sandbox`: the REPL on its own, with no model needed. Python code runs in rlm's
//! wasmtime-hosted CPython guest, under fuel, memory and time limits; `llm_query` in the guest
//! calls a Python function of the host when one is given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};
use rlm_sandbox::{Limits as RustLimits, ModelHost, Sandbox as RustSandbox, StepResult};
use tokio::sync::Mutex;

use crate::pool::Pool;
use crate::{convert, engine, errors, wait};

/// The limits every step of a sandbox runs under. Each has a safe default (`Limits()`).
#[pyclass(module = "rlm_rs._native", name = "Limits", from_py_object)]
#[derive(Clone)]
pub struct Limits {
    pub inner: RustLimits,
}

#[pymethods]
impl Limits {
    /// Limits with every field at its default, except those given.
    ///
    /// `cpu_seconds` sets the fuel from a CPU-time budget (`fuel_per_step` wins when both are
    /// given); `step_timeout` is in seconds.
    #[new]
    #[pyo3(signature = (*, fuel_per_step=None, cpu_seconds=None, memory_bytes=None,
        max_memory_bytes=None, step_timeout=None, max_output_bytes=None,
        max_host_calls_per_step=None, max_search_results=None, max_journal_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fuel_per_step: Option<u64>,
        cpu_seconds: Option<f64>,
        memory_bytes: Option<u64>,
        max_memory_bytes: Option<u64>,
        step_timeout: Option<f64>,
        max_output_bytes: Option<u64>,
        max_host_calls_per_step: Option<u64>,
        max_search_results: Option<u32>,
        max_journal_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let mut l = RustLimits::default();
        if let Some(s) = cpu_seconds {
            l.fuel_per_step = RustLimits::fuel_for(seconds(s, "cpu_seconds")?);
        }
        if let Some(f) = fuel_per_step {
            l.fuel_per_step = f;
        }
        if let Some(m) = memory_bytes {
            l.memory_bytes = m;
        }
        if let Some(m) = max_memory_bytes {
            l.max_memory_bytes = m;
        }
        if let Some(t) = step_timeout {
            l.step_timeout = seconds(t, "step_timeout")?;
        }
        if let Some(b) = max_output_bytes {
            l.max_output_bytes = b;
        }
        if let Some(n) = max_host_calls_per_step {
            l.max_host_calls_per_step = n;
        }
        if let Some(n) = max_search_results {
            l.max_search_results = n;
        }
        if let Some(n) = max_journal_bytes {
            l.max_journal_bytes = n;
        }
        l.validate().map_err(errors::sandbox)?;
        Ok(Self { inner: l })
    }

    /// Fuel (about one unit per wasm instruction) a step may burn.
    #[getter]
    fn fuel_per_step(&self) -> u64 {
        self.inner.fuel_per_step
    }
    /// Bytes of linear memory a REPL may grow to, before its contexts.
    #[getter]
    fn memory_bytes(&self) -> u64 {
        self.inner.memory_bytes
    }
    /// The most linear memory a REPL may have, contexts included.
    #[getter]
    fn max_memory_bytes(&self) -> u64 {
        self.inner.max_memory_bytes
    }
    /// Wall-clock seconds a step may take, waiting on host calls included.
    #[getter]
    fn step_timeout(&self) -> f64 {
        self.inner.step_timeout.as_secs_f64()
    }
    /// Bytes of stdout (and of stderr) kept per step.
    #[getter]
    fn max_output_bytes(&self) -> u64 {
        self.inner.max_output_bytes
    }
    /// Host calls (context reads, searches, model calls) a step may make.
    #[getter]
    fn max_host_calls_per_step(&self) -> u64 {
        self.inner.max_host_calls_per_step
    }
    /// Matches one `search()` call returns at most.
    #[getter]
    fn max_search_results(&self) -> u32 {
        self.inner.max_search_results
    }
    /// Bytes of step code and model answers kept to restore the REPL after a stopped step.
    #[getter]
    fn max_journal_bytes(&self) -> u64 {
        self.inner.max_journal_bytes
    }

    fn __repr__(&self) -> String {
        format!(
            "Limits(fuel_per_step={}, memory_bytes={}, max_memory_bytes={}, step_timeout={}, \
             max_output_bytes={}, max_host_calls_per_step={}, max_search_results={}, \
             max_journal_bytes={})",
            self.inner.fuel_per_step,
            self.inner.memory_bytes,
            self.inner.max_memory_bytes,
            self.inner.step_timeout.as_secs_f64(),
            self.inner.max_output_bytes,
            self.inner.max_host_calls_per_step,
            self.inner.max_search_results,
            self.inner.max_journal_bytes
        )
    }
}

fn seconds(s: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what} must be a positive number of seconds, not {s}"
            ))
        })
}

/// What one step produced.
#[pyclass(module = "rlm_rs._native", name = "StepResult", frozen)]
pub struct PyStepResult {
    /// Captured stdout (up to the output limit).
    #[pyo3(get)]
    stdout: String,
    /// Captured stderr (up to the output limit).
    #[pyo3(get)]
    stderr: String,
    /// The exception as a traceback, or the limit that stopped the step; `None` when it ran.
    #[pyo3(get)]
    error: Option<String>,
    /// The final answer, when the step called `FINAL`, `FINAL_VAR` or `SUBMIT`.
    #[pyo3(get)]
    r#final: Option<String>,
    /// Fuel the step burned.
    #[pyo3(get)]
    fuel: u64,
    /// Wall-clock milliseconds of the step (not counting recovery).
    #[pyo3(get)]
    ms: f64,
    /// The limit that stopped the step: "fuel", "deadline", "stack" or "crash"; else `None`.
    #[pyo3(get)]
    limit: Option<&'static str>,
    /// Host calls the step made.
    #[pyo3(get)]
    host_calls: u64,
    /// The step was stopped and the REPL restored to its state before the step.
    #[pyo3(get)]
    restored: bool,
    /// The step was stopped and the REPL could not be restored: it started afresh.
    #[pyo3(get)]
    reset: bool,
    /// Milliseconds spent rebuilding the REPL after a stopped step.
    #[pyo3(get)]
    recovery_ms: f64,
    /// Earlier steps re-run while the REPL was rebuilt (those after its checkpoint).
    #[pyo3(get)]
    replayed: u64,
    /// The REPL was rebuilt from a checkpoint of its state.
    #[pyo3(get)]
    from_checkpoint: bool,
    /// Milliseconds spent saving the REPL's state after the step (0 when not saved).
    #[pyo3(get)]
    checkpoint_ms: f64,
    /// Bytes of stdout that were not kept.
    #[pyo3(get)]
    stdout_dropped: u64,
    /// Bytes of stderr that were not kept.
    #[pyo3(get)]
    stderr_dropped: u64,
}

impl From<StepResult> for PyStepResult {
    fn from(s: StepResult) -> Self {
        Self {
            stdout: s.stdout,
            stderr: s.stderr,
            error: s.error,
            r#final: s.final_answer,
            fuel: s.fuel,
            ms: s.elapsed.as_secs_f64() * 1e3,
            limit: s.limit.map(|l| match l {
                rlm_sandbox::LimitHit::Fuel => "fuel",
                rlm_sandbox::LimitHit::Deadline => "deadline",
                rlm_sandbox::LimitHit::Stack => "stack",
                rlm_sandbox::LimitHit::Crash => "crash",
            }),
            host_calls: s.host_calls,
            restored: s.restored,
            reset: s.reset,
            recovery_ms: s.recovery.as_secs_f64() * 1e3,
            replayed: s.replayed,
            from_checkpoint: s.from_checkpoint,
            checkpoint_ms: s.checkpoint.as_secs_f64() * 1e3,
            stdout_dropped: s.stdout_dropped,
            stderr_dropped: s.stderr_dropped,
        }
    }
}

#[pymethods]
impl PyStepResult {
    /// True when the step ran without an exception and no limit stopped it.
    #[getter]
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "StepResult(stdout={}, error={}, final={}, fuel={}, ms={:.2}, limit={}, restored={})",
            py_str(&cut(&self.stdout)),
            py_opt(self.error.as_deref()),
            py_opt(self.r#final.as_deref()),
            self.fuel,
            self.ms,
            py_opt(self.limit),
            if self.restored { "True" } else { "False" }
        )
    }
}

/// A str as Python shows it (enough for a repr: quotes and escapes as JSON writes them).
fn py_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn py_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "None".to_string(), |s| py_str(&cut(s)))
}

fn cut(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A handler slot shared by the host (which calls it) and the Python object (which shows it to
/// the garbage collector, and empties it when the collector breaks a cycle through it).
type Handler = Arc<std::sync::Mutex<Option<Py<PyAny>>>>;

/// Answers the guest's `llm_query`/`rlm_query` with Python functions of the host. Each call
/// runs on a thread of [`HANDLER_POOL`] that takes the GIL (a handler that never returns holds
/// one of its threads, nothing more); a raised exception reaches the guest as an
/// `"Error: ..."` string.
pub struct PyModelHost {
    llm: Handler,
    rlm: Handler,
}

impl PyModelHost {
    fn new(llm: Handler, rlm: Handler) -> Self {
        Self { llm, rlm }
    }
}

fn handler(slot: Option<Py<PyAny>>) -> Handler {
    Arc::new(std::sync::Mutex::new(slot))
}

/// The threads that run `llm_query` / `rlm_query` handlers, for the whole process: more than
/// the tools' pool, as `llm_batch` asks for every prompt of a batch at once (the rest wait).
pub static HANDLER_POOL: Pool = Pool::new(
    "model handler",
    DEFAULT_HANDLER_THREADS,
    "rlm_rs.set_handler_threads()",
);

/// Threads of [`HANDLER_POOL`] by default.
pub const DEFAULT_HANDLER_THREADS: usize = 64;

/// Set the size of the pool of threads that run `llm_query` / `rlm_query` handlers (see
/// [`crate::pool`]); returns the size before.
#[pyfunction]
pub fn set_handler_threads(threads: usize) -> PyResult<usize> {
    HANDLER_POOL
        .set_size(threads)
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

async fn call_handler(
    slots: Vec<Handler>,
    which: &'static str,
    prompt: String,
    model: Option<String>,
) -> Result<String, String> {
    HANDLER_POOL
        .call(move |py| {
            let handler = slots.iter().find_map(|slot| {
                slot.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map(|h| h.clone_ref(py))
            });
            let Some(handler) = handler else {
                return Err(format!(
                    "{which} has no handler in this sandbox: pass llm_query=... to Sandbox() to \
                     answer it"
                ));
            };
            let called = match &model {
                None => handler.call1(py, (prompt,)),
                Some(m) => {
                    let kwargs = PyDict::new(py);
                    kwargs
                        .set_item("model", m)
                        .and_then(|()| handler.call(py, (prompt,), Some(&kwargs)))
                }
            };
            called
                .and_then(|r| {
                    let r = r.bind(py);
                    match r.extract::<String>() {
                        Ok(s) => Ok(s),
                        Err(_) => Ok(r.str()?.to_string()),
                    }
                })
                .map_err(|e| format!("{which} failed: {}", e.value(py)))
        })
        .await?
}

#[async_trait]
impl ModelHost for PyModelHost {
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        call_handler(vec![self.llm.clone()], "llm_query", prompt, model).await
    }

    async fn rlm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        // Without a handler of its own, rlm_query is a plain sub-call (as at the RLM's depth limit).
        let slots = vec![self.rlm.clone(), self.llm.clone()];
        call_handler(slots, "rlm_query", prompt, model).await
    }
}

/// A persistent, sandboxed Python REPL.
#[pyclass(module = "rlm_rs._native", name = "Sandbox", frozen)]
pub struct PySandbox {
    inner: Arc<Mutex<RustSandbox>>,
    /// The Python functions the sandbox calls (llm_query, rlm_query, tools).
    handlers: Vec<Handler>,
}

#[pymethods]
impl PySandbox {
    /// Start a REPL. `context` (str, list or dict) is bound to `context`; `llm_query(prompt,
    /// model=None) -> str` answers the guest's `llm_query`/`llm_batch` (and `rlm_query`, unless
    /// `rlm_query` is given); `tools` are Python functions model code calls by name (callables,
    /// `(name, callable)` pairs or `rlm_rs.tool(...)` specs); `limits` are the step limits; `seed` (32 bytes) fixes the guest's
    /// randomness; `guest`/`cache_dir` override the guest component and its compile cache.
    #[new]
    #[pyo3(signature = (context=None, *, llm_query=None, rlm_query=None, tools=None, limits=None,
        seed=None, guest=None, cache_dir=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        context: Option<&Bound<'_, PyAny>>,
        llm_query: Option<Py<PyAny>>,
        rlm_query: Option<Py<PyAny>>,
        tools: Option<&Bound<'_, PyAny>>,
        limits: Option<Limits>,
        seed: Option<Vec<u8>>,
        guest: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let engine = engine::engine(py, guest, cache_dir)?;
        let mut handlers = vec![handler(llm_query), handler(rlm_query)];
        let host = PyModelHost::new(handlers[0].clone(), handlers[1].clone());
        let mut builder = RustSandbox::builder(engine)
            .limits(limits.map(|l| l.inner).unwrap_or_default())
            .model(Arc::new(host));
        if let Some(tools) = tools {
            let (tools, slots) = crate::tools::from_python(tools)?;
            builder = builder.tools(tools);
            handlers.extend(slots);
        }
        if let Some(ctx) = context {
            builder = builder.context(convert::context(ctx)?.into_context());
        }
        if let Some(seed) = seed {
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| PyValueError::new_err("seed must be exactly 32 bytes"))?;
            builder = builder.seed(seed);
        }
        let sandbox =
            wait::wait(py, builder.build(), None, None, None)?.map_err(errors::sandbox)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(sandbox)),
            handlers,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for slot in &self.handlers {
            // A slot in use by a call right now is skipped (the collector must not block).
            if let Ok(held) = slot.try_lock()
                && let Some(h) = held.as_ref()
            {
                visit.call(h)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        for slot in &self.handlers {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// Run one step of Python code; variables persist between steps. Exceptions and limits of
    /// the step are reported in the result (`error`, `limit`), never raised. Ctrl-C stops the
    /// step and raises `KeyboardInterrupt`; the REPL is then restored to its state before it.
    fn exec(&self, py: Python<'_>, code: String) -> PyResult<PyStepResult> {
        let sb = self.inner.clone();
        let run = wait::wait(
            py,
            async move { sb.lock().await.exec(&code).await },
            None,
            None,
            None,
        );
        match run {
            Ok(step) => Ok(step.map_err(errors::sandbox)?.into()),
            Err(interrupt) => {
                // The step was dropped mid-way. Its instance is not re-entered as it is: the next
                // call into it fails and the sandbox restores the REPL from its journal. Do that
                // now, so the next step the caller runs starts from the state before this one.
                let sb = self.inner.clone();
                let restored = wait::wait(
                    py,
                    async move { sb.lock().await.exec("pass").await },
                    None,
                    None,
                    None,
                );
                match restored {
                    Ok(Ok(_)) => Err(interrupt),
                    Ok(Err(e)) => Err(errors::sandbox(e)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Bind the Python name `name` to `value` (anything `json.dumps` accepts). Kept across
    /// restores.
    fn define(&self, py: Python<'_>, name: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !is_identifier(&name) {
            return Err(PyValueError::new_err(format!(
                "{name:?} is not a Python identifier"
            )));
        }
        let value = convert::py_to_json(value)?;
        let sb = self.inner.clone();
        wait::wait(
            py,
            async move { sb.lock().await.define(&name, value).await },
            None,
            None,
            None,
        )?
        .map_err(errors::sandbox)
    }

    /// Add another context (str, list or dict); returns the name it is bound to (`context`
    /// for the first, then `context_1`, ...). Large contexts stay on the host and load lazily.
    fn add_context(&self, py: Python<'_>, context: &Bound<'_, PyAny>) -> PyResult<String> {
        let ctx = convert::context(context)?.into_context();
        let sb = self.inner.clone();
        wait::wait(
            py,
            async move { sb.lock().await.add_context(ctx).await },
            None,
            None,
            None,
        )?
        .map_err(errors::sandbox)
    }

    /// Steps run so far.
    #[getter]
    fn steps(&self, py: Python<'_>) -> PyResult<u64> {
        let sb = self.inner.clone();
        wait::wait(py, async move { sb.lock().await.steps() }, None, None, None)
    }

    /// The seed of the guest's randomness (32 bytes; pass it as `seed=` to reproduce).
    #[getter]
    fn seed(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let sb = self.inner.clone();
        wait::wait(
            py,
            async move { sb.lock().await.seed().to_vec() },
            None,
            None,
            None,
        )
    }

    /// Bytes of linear memory the REPL holds now.
    #[getter]
    fn memory_held(&self, py: Python<'_>) -> PyResult<u64> {
        let sb = self.inner.clone();
        wait::wait(
            py,
            async move { sb.lock().await.memory_held() },
            None,
            None,
            None,
        )
    }

    /// The limits in force.
    #[getter]
    fn limits(&self, py: Python<'_>) -> PyResult<Limits> {
        let sb = self.inner.clone();
        let inner = wait::wait(
            py,
            async move { sb.lock().await.limits().clone() },
            None,
            None,
            None,
        )?;
        Ok(Limits { inner })
    }
}

/// Whether `s` is a plain Python identifier (ASCII rules, enough for variable names).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}
