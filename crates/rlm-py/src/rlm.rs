//! `RLM`: the engine of the `rlm` crate from Python, set up as `rlm run` sets it up (a
//! [`rlm::RunSpec`] over models made by one [`rlm_llm::LlmClient`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};
use rlm::{BudgetLimits, Event, RunResult, RunSpec, StopReason, TraceWriter};
use rlm_llm::{ApiKey, ChatModel, LlmClient, ModelConfig};

use crate::sandbox::Limits;
use crate::wait::{self, CancelToken};
use crate::{convert, engine, errors};

/// The `provider/model` id of a model name as Python users write it.
///
/// An id with a `/` is used as it is. A bare name goes to the provider whose models are named
/// that way: `gpt-*`, `o1*`, `o3*`, `o4*`, `chatgpt-*` to OpenAI, `claude*` to Anthropic,
/// `gemini*` to Gemini; any other bare name to the OpenAI-compatible server at `base_url` (or
/// `RLM_BASE_URL`) when one is set. Otherwise it is an error that says how to name the model.
#[pyfunction]
#[pyo3(signature = (name, base_url=None))]
pub fn resolve_model(name: &str, base_url: Option<&str>) -> PyResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(errors::ConfigError::new_err("the model name is empty"));
    }
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let lower = name.to_ascii_lowercase();
    let provider = if ["gpt-", "o1", "o3", "o4", "chatgpt-"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        "openai"
    } else if lower.starts_with("claude") {
        "anthropic"
    } else if lower.starts_with("gemini") {
        "gemini"
    } else if base_url.is_some_and(|u| !u.trim().is_empty())
        || std::env::var("RLM_BASE_URL").is_ok_and(|u| !u.trim().is_empty())
    {
        "compat"
    } else {
        return Err(errors::ConfigError::new_err(format!(
            "cannot tell the provider of model {name:?}: name it provider/model (openai/..., \
             anthropic/..., gemini/..., or compat/... with base_url= or RLM_BASE_URL for an \
             OpenAI-compatible server)"
        )));
    };
    Ok(format!("{provider}/{name}"))
}

/// A Recursive Language Model: a root model that answers questions about a context by writing
/// Python in a sandboxed REPL, with sub-calls to a sub-model and recursive sub-RLMs.
#[pyclass(module = "rlm_rs._native", name = "RLM", frozen, subclass)]
pub struct PyRlm {
    spec: RunSpec,
    root: Arc<dyn ChatModel>,
    sub: Arc<dyn ChatModel>,
    concurrency: usize,
    /// Shown to the garbage collector and emptied by it when it breaks a cycle through it.
    on_event: Arc<Mutex<Option<Py<PyAny>>>>,
    /// Custom tools of every sandbox of a run, and the slots of their Python functions.
    tools: Vec<rlm_sandbox::Tool>,
    tool_slots: Vec<crate::tools::Slot>,
    trace: Option<PathBuf>,
    limits: Option<rlm_sandbox::Limits>,
    seed: Option<[u8; 32]>,
    guest: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
}

#[pymethods]
impl PyRlm {
    /// Set up an RLM. `model`/`sub_model` are `provider/model` ids (a bare name resolves as
    /// [`resolve_model`] says; no model: chosen from the API key that is set); `base_url` and
    /// `api_key` reach an OpenAI-compatible server (`compat/...`) or override a provider's;
    /// `tools` are Python functions model code calls by name in every REPL of the run (the
    /// system prompt lists them; each call is a `tool_call` event).
    #[new]
    #[pyo3(signature = (model=None, *, sub_model=None, base_url=None, api_key=None,
        max_iterations=None, max_depth=None, max_output_chars=None, sub_model_context_tokens=None,
        budget_usd=None, budget_tokens=None, budget_sub_calls=None, budget_seconds=None,
        concurrency=16, on_event=None, tools=None, trace=None, limits=None, seed=None, guest=None,
        cache_dir=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: Option<String>,
        sub_model: Option<String>,
        base_url: Option<String>,
        api_key: Option<String>,
        max_iterations: Option<u32>,
        max_depth: Option<u32>,
        max_output_chars: Option<usize>,
        sub_model_context_tokens: Option<u64>,
        budget_usd: Option<f64>,
        budget_tokens: Option<u64>,
        budget_sub_calls: Option<u64>,
        budget_seconds: Option<f64>,
        concurrency: usize,
        on_event: Option<Py<PyAny>>,
        tools: Option<&Bound<'_, PyAny>>,
        trace: Option<PathBuf>,
        limits: Option<Limits>,
        seed: Option<Vec<u8>>,
        guest: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let root_id = match model {
            Some(m) => resolve_model(&m, base_url.as_deref())?,
            None => {
                rlm::default_model(None)
                    .map_err(|e| errors::ConfigError::new_err(e.to_string()))?
                    .0
            }
        };
        let sub_id = sub_model
            .map(|m| resolve_model(&m, base_url.as_deref()))
            .transpose()?;
        let spec = RunSpec {
            model: Some(root_id),
            sub_model: sub_id,
            max_iterations,
            max_depth,
            max_output_chars,
            sub_model_context_tokens,
            budget: BudgetLimits {
                usd: budget_usd,
                tokens: budget_tokens,
                sub_calls: budget_sub_calls,
                seconds: budget_seconds,
            },
            ..RunSpec::default()
        };
        // Bad limits and ids fail here, before any run.
        spec.budget()
            .map_err(|e| errors::ConfigError::new_err(e.to_string()))?;
        let (root_id, sub_id) = spec
            .models()
            .map_err(|e| errors::ConfigError::new_err(e.to_string()))?;
        if concurrency == 0 {
            return Err(errors::ConfigError::new_err(
                "concurrency must be at least 1",
            ));
        }
        let client = LlmClient::builder()
            .concurrency(concurrency)
            .build()
            .map_err(errors::llm)?;
        let config = ModelConfig {
            base_url,
            api_key: api_key.map(|k| ApiKey::new(k.trim())),
            ..ModelConfig::default()
        };
        let make = |id: &str| -> PyResult<Arc<dyn ChatModel>> {
            if rlm::is_local_model(id) {
                return Err(errors::ConfigError::new_err(format!(
                    "{id}: local models are not in the Python package; run them with the rlm \
                     command, or serve the model over an OpenAI-compatible API (compat/...)"
                )));
            }
            Ok(Arc::new(
                client.model_with(id, config.clone()).map_err(errors::llm)?,
            ))
        };
        let root = make(&root_id)?;
        let sub = if sub_id == root_id {
            root.clone()
        } else {
            make(&sub_id)?
        };
        let seed = seed
            .map(|s| {
                <[u8; 32]>::try_from(s)
                    .map_err(|_| pyo3::exceptions::PyValueError::new_err("seed must be 32 bytes"))
            })
            .transpose()?;
        let (tools, tool_slots) = match tools {
            Some(t) => crate::tools::from_python(t)?,
            None => (Vec::new(), Vec::new()),
        };
        Ok(Self {
            spec,
            root,
            sub,
            concurrency,
            on_event: Arc::new(Mutex::new(on_event)),
            tools,
            tool_slots,
            trace,
            limits: limits.map(|l| l.inner),
            seed,
            guest,
            cache_dir,
        })
    }

    /// The root model's id.
    #[getter]
    fn model(&self) -> String {
        self.root.id().to_string()
    }

    /// The sub-call model's id.
    #[getter]
    fn sub_model(&self) -> String {
        self.sub.id().to_string()
    }

    /// Answer `query` about `context` (str, list of str, or any JSON-like list/dict). Blocks
    /// with the GIL released; Ctrl-C stops the run (`KeyboardInterrupt`), as does
    /// `cancel.cancel()` from another thread (`rlm_rs.Cancelled`). Events go to `on_event`, on
    /// this thread, as they happen; an exception it raises stops the run and propagates.
    #[pyo3(signature = (context, query, *, cancel=None))]
    fn run(
        &self,
        py: Python<'_>,
        context: &Bound<'_, PyAny>,
        query: String,
        cancel: Option<CancelToken>,
    ) -> PyResult<PyRunResult> {
        let input = convert::context(context)?;
        let engine = engine::engine(py, self.guest.clone(), self.cache_dir.clone())?;
        let mut builder = self
            .spec
            .builder(self.root.clone(), self.sub.clone())
            .map_err(|e| errors::ConfigError::new_err(e.to_string()))?
            .engine(engine)
            .sub_concurrency(self.concurrency)
            .tools(self.tools.iter().cloned());
        if let Some(l) = &self.limits {
            builder = builder.limits(l.clone());
        }
        if let Some(s) = self.seed {
            builder = builder.seed(s);
        }
        let on_event = self
            .on_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|cb| cb.clone_ref(py));
        let channel = if on_event.is_some() {
            let (chan, rx) = wait::event_channel();
            let sink = chan.clone();
            builder = builder.on_event(Arc::new(move |e: &Event| {
                if let Ok(v) = serde_json::to_value(e) {
                    sink.send(v);
                }
            }));
            Some((chan, rx))
        } else {
            None
        };
        if let Some(path) = &self.trace {
            let writer = TraceWriter::create(path).map_err(|e| {
                errors::ConfigError::new_err(format!(
                    "cannot create the trace {}: {e}",
                    path.display()
                ))
            })?;
            builder = builder.on_event(writer);
        }
        let rlm = builder.build().map_err(errors::rlm)?;
        let result = wait::wait(
            py,
            async move { rlm.run(input, &query).await },
            channel,
            on_event.as_ref(),
            cancel.as_ref(),
        )?
        .map_err(errors::rlm)?;
        Ok(PyRunResult::new(result))
    }

    fn __repr__(&self) -> String {
        format!(
            "RLM(model={:?}, sub_model={:?})",
            self.model(),
            self.sub_model()
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for slot in std::iter::once(&self.on_event).chain(&self.tool_slots) {
            if let Ok(held) = slot.try_lock()
                && let Some(f) = held.as_ref()
            {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        for slot in std::iter::once(&self.on_event).chain(&self.tool_slots) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// The outcome of a run.
#[pyclass(module = "rlm_rs._native", name = "RunResult", frozen)]
pub struct PyRunResult {
    /// The answer (a partial one when the run stopped early), or `None`.
    #[pyo3(get)]
    answer: Option<String>,
    /// Why the run stopped: "final", "max_iterations", "budget" or "error".
    #[pyo3(get)]
    stop: &'static str,
    /// What stopped it, for people (the budget that ran out, the error); `None` for "final".
    #[pyo3(get)]
    stop_message: Option<String>,
    /// Iterations of the root RLM.
    #[pyo3(get)]
    iterations: u32,
    /// Wall-clock seconds.
    #[pyo3(get)]
    elapsed: f64,
    usage: serde_json::Value,
    events: serde_json::Value,
}

impl PyRunResult {
    fn new(r: RunResult) -> Self {
        let (stop, stop_message) = match &r.stop {
            StopReason::Final => ("final", None),
            StopReason::MaxIterations => ("max_iterations", None),
            StopReason::Budget { reason, .. } => ("budget", Some(reason.clone())),
            StopReason::Error { message } => ("error", Some(message.clone())),
        };
        let totals = |t: &rlm_llm::UsageTotals| {
            serde_json::json!({
                "calls": t.calls,
                "input_tokens": t.usage.input_tokens,
                "output_tokens": t.usage.output_tokens,
                "cached_input_tokens": t.usage.cached_input_tokens,
                "cost_usd": t.cost_usd,
                "unpriced_calls": t.unpriced_calls,
            })
        };
        let u = &r.usage;
        let usage = serde_json::json!({
            "total": totals(&u.total),
            "by_model": u.by_model.iter().map(|(m, t)| (m.clone(), totals(t))).collect::<serde_json::Map<_, _>>(),
            "by_role": u.by_role.iter().map(|(tag, t)| {
                let mut v = totals(t);
                v["role"] = serde_json::json!(match tag.role {
                    rlm_llm::CallRole::Root => "root",
                    rlm_llm::CallRole::SubCall => "sub_call",
                });
                v["depth"] = serde_json::json!(tag.depth);
                v
            }).collect::<Vec<_>>(),
        });
        Self {
            answer: r.answer,
            stop,
            stop_message,
            iterations: r.iterations,
            elapsed: r.elapsed.as_secs_f64(),
            usage,
            events: serde_json::to_value(&r.events).unwrap_or_default(),
        }
    }
}

#[pymethods]
impl PyRunResult {
    /// Tokens and dollars: `{"total": {...}, "by_model": {id: {...}}, "by_role": [{"role",
    /// "depth", ...}]}`, each with calls, input/output/cached tokens, cost_usd, unpriced_calls.
    #[getter]
    fn usage(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::json_to_py(py, &self.usage)
    }

    /// Dollars the run cost (priced calls only).
    #[getter]
    fn cost_usd(&self) -> f64 {
        self.usage["total"]["cost_usd"].as_f64().unwrap_or(0.0)
    }

    /// Every event of the run, in order, as dicts (the trace).
    #[getter]
    fn events(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        convert::json_to_py(py, &self.events)
    }

    fn __repr__(&self) -> String {
        let answer = self.answer.as_ref().map_or_else(
            || "None".to_string(),
            |a| serde_json::Value::String(a.clone()).to_string(),
        );
        format!(
            "RunResult(answer={answer}, stop={:?}, iterations={}, cost_usd={:.4}, elapsed={:.2})",
            self.stop,
            self.iterations,
            self.cost_usd(),
            self.elapsed
        )
    }
}
