//! Python values to and from JSON, through Python's own `json` module (so every value Python's
//! `json.dumps` accepts is accepted, with its rules), and Python contexts to rlm's.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// A Python value as JSON (`json.dumps` rules; `TypeError` for what it cannot encode).
pub fn py_to_json(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let py = value.py();
    let text: String = py
        .import("json")?
        .call_method1("dumps", (value,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| {
        PyTypeError::new_err(format!(
            "the value is not plain JSON ({e}); use str, int, float, bool, None, list and dict"
        ))
    })
}

/// JSON as Python objects (dicts, lists, str, int, float, bool, None).
pub fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let text = value.to_string();
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A context given from Python: a `str` is one text, a list of `str` is documents, any other
/// list or dict is JSON.
pub fn context(value: &Bound<'_, PyAny>) -> PyResult<rlm::ContextInput> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(rlm::ContextInput::Text(s.to_cow()?.into_owned().into()));
    }
    Ok(rlm::ContextInput::from_json(py_to_json(value)?))
}
