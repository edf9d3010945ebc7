//! Python bindings of rlm, the native half of the `rlm_rs` package (built by maturin into an
//! abi3 wheel, `just wheel`): the sandboxed REPL on its own (`Sandbox`), the RLM engine (`RLM`,
//! `RunResult`) and what the Python half builds on (`CancelToken`, `resolve_model`, the
//! exception types). The Python half (`python/rlm_rs`) adds the original project's
//! `RecursiveLanguageModel`, `RLM.arun` and a DSPy interpreter.
//!
//! Rust work runs on one tokio runtime per process; Python threads wait on it with the GIL
//! released and wake every 50 ms to deliver events and to notice Ctrl-C (see `wait`).

mod convert;
mod engine;
mod errors;
mod pool;
mod rlm;
mod sandbox;
mod tools;
mod wait;

use pyo3::prelude::*;

/// The native module `rlm_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<sandbox::PySandbox>()?;
    m.add_class::<sandbox::PyStepResult>()?;
    m.add_class::<sandbox::Limits>()?;
    m.add_class::<rlm::PyRlm>()?;
    m.add_class::<rlm::PyRunResult>()?;
    m.add_class::<wait::CancelToken>()?;
    m.add_function(wrap_pyfunction!(rlm::resolve_model, m)?)?;
    m.add_function(wrap_pyfunction!(engine::engine_info, m)?)?;
    m.add_function(wrap_pyfunction!(engine::set_default_guest, m)?)?;
    m.add_function(wrap_pyfunction!(tools::set_tool_threads, m)?)?;
    m.add_function(wrap_pyfunction!(sandbox::set_handler_threads, m)?)?;
    m.add("CallAbandoned", m.py().get_type::<pool::CallAbandoned>())?;
    m.add("WASMTIME_VERSION", rlm_sandbox::WASMTIME_VERSION)?;
    errors::register(m)?;
    Ok(())
}
