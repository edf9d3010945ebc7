//! Custom tools from Python: host functions that model code in the sandbox calls like ordinary
//! Python functions. The Python half (`rlm_rs._tools.spec`) turns a callable into a name, a
//! description and a JSON schema of its parameters; here that becomes an [`rlm_sandbox::Tool`]
//! whose handler calls the function (keyword arguments, on a thread of the process's tool pool
//! that takes the GIL, see [`crate::pool`]) and sends its result back as JSON.
//!
//! Arguments and results cross as JSON text, read and written by Python's `json` on both sides
//! (the guest's and this one), so every number crosses exactly: integers of any size stay
//! integers.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rlm_sandbox::Tool;

use crate::convert;
use crate::pool::{DEFAULT_THREADS, Pool};

/// The threads that run Python tools, for the whole process.
pub static POOL: Pool = Pool::new("tool", DEFAULT_THREADS, "rlm_rs.set_tool_threads()");

/// Set the size of the pool of threads that run Python tools (see [`crate::pool`]); returns the
/// size before.
#[pyfunction]
pub fn set_tool_threads(threads: usize) -> PyResult<usize> {
    POOL.set_size(threads).map_err(PyValueError::new_err)
}

/// A Python function behind a tool, shared with the garbage collector's view of its owner.
pub type Slot = Arc<Mutex<Option<Py<PyAny>>>>;

/// Tools from what the user gave (`tools=[...]`): callables, `(name, callable)` pairs or
/// `rlm_rs.tool(...)` specs. Returns the tools and the slots of their functions.
pub fn from_python(tools: &Bound<'_, PyAny>) -> PyResult<(Vec<Tool>, Vec<Slot>)> {
    let py = tools.py();
    let spec = py.import("rlm_rs._tools")?.getattr("spec")?;
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for item in tools.try_iter()? {
        let (name, description, parameters, function): (
            String,
            String,
            Bound<'_, PyAny>,
            Py<PyAny>,
        ) = spec.call1((item?,))?.extract()?;
        let schema = convert::py_to_json(&parameters)?;
        let slot: Slot = Arc::new(Mutex::new(Some(function)));
        let held = slot.clone();
        let label = name.clone();
        let tool = Tool::new_text(name, description, schema, move |args| {
            let held = held.clone();
            let name = label.clone();
            async move { POOL.call(move |py| call(py, &held, &name, &args)).await? }
        })
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        out.push(tool);
        slots.push(slot);
    }
    Ok((out, slots))
}

/// Call the tool's function with `args` (a JSON object, as text) as keyword arguments; its
/// result as JSON text.
fn call(py: Python<'_>, slot: &Slot, name: &str, args: &str) -> Result<String, String> {
    let function = slot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|f| f.clone_ref(py))
        .ok_or_else(|| format!("{name} is gone (its owner was collected)"))?;
    let result = (|| -> PyResult<String> {
        let kwargs = convert::json_text_to_py(py, args)?;
        let kwargs = kwargs
            .bind(py)
            .cast::<PyDict>()
            .map_err(PyErr::from)?
            .clone();
        let value = function.call(py, (), Some(&kwargs))?;
        convert::py_to_json_text(value.bind(py))
    })();
    result.map_err(|e| {
        format!(
            "{}: {}",
            e.get_type(py)
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            e.value(py)
        )
    })
}
