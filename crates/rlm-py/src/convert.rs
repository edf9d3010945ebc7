//! Python values to and from JSON, through Python's own `json` module (so every value Python's
//! `json.dumps` accepts is accepted, with its rules), and Python contexts to rlm's.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

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
    json_text_to_py(py, &value.to_string())
}

/// A Python value as JSON text, by `json.dumps` (so integers of any size are written exactly);
/// `TypeError` for what is not plain JSON (NaN and infinities included).
pub fn py_to_json_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = value.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    py.import("json")?
        .call_method("dumps", (value,), Some(&kwargs))
        .and_then(|text| text.extract())
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "the value is not plain JSON ({}); use str, int, float, bool, None, list and dict",
                e.value(py)
            ))
        })
}

/// JSON text as Python objects, by `json.loads` (integers of any size stay exact).
pub fn json_text_to_py(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
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
