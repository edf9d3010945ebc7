//! The module's exception types and the mapping of Rust errors onto them.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    _native,
    RlmError,
    PyException,
    "Base class of rlm_rs errors: a run or sandbox that could not start or go on."
);
create_exception!(
    _native,
    SandboxError,
    RlmError,
    "The sandbox could not start or continue (the guest is missing, memory budget, ...)."
);
create_exception!(
    _native,
    ConfigError,
    RlmError,
    "An unusable setting: a model id, a key, a limit or a budget."
);
create_exception!(
    _native,
    Cancelled,
    RlmError,
    "The run was cancelled (CancelToken.cancel(), or its asyncio task was cancelled)."
);

/// A sandbox error as a Python exception.
pub fn sandbox(e: rlm_sandbox::SandboxError) -> PyErr {
    match e {
        rlm_sandbox::SandboxError::InvalidLimits(m) => PyValueError::new_err(m),
        other => SandboxError::new_err(other.to_string()),
    }
}

/// An engine error as a Python exception.
pub fn rlm(e: rlm::RlmError) -> PyErr {
    match e {
        rlm::RlmError::Sandbox(s) => sandbox(s),
        rlm::RlmError::Config(m) => ConfigError::new_err(m),
        rlm::RlmError::Setup(s) => ConfigError::new_err(s.to_string()),
    }
}

/// A model-client error (bad id, missing key) as a Python exception.
pub fn llm(e: rlm_llm::LlmError) -> PyErr {
    ConfigError::new_err(e.to_string())
}

/// Register the exception types on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RlmError", py.get_type::<RlmError>())?;
    m.add("SandboxError", py.get_type::<SandboxError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    Ok(())
}
