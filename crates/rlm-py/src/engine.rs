//! One sandbox engine per guest file and cache directory, shared by every sandbox and run of the
//! process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use pyo3::prelude::*;
use rlm_sandbox::{EngineOptions, SandboxEngine};

use crate::errors;

type Key = (Option<PathBuf>, Option<PathBuf>);

static ENGINES: OnceLock<Mutex<HashMap<Key, Arc<SandboxEngine>>>> = OnceLock::new();
static DEFAULT_GUEST: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Use `path` as the guest component when a sandbox or run names none (the Python package calls
/// this with the guest it ships; without it, rlm's usual search applies: `RLM_GUEST_WASM`, then
/// the workspace's `target/guest/`).
#[pyfunction]
pub fn set_default_guest(path: Option<PathBuf>) {
    *DEFAULT_GUEST.lock().unwrap_or_else(PoisonError::into_inner) = path;
}

/// The engine for `guest` (default: the wheel's own guest, passed in by the Python package)
/// and `cache_dir` (default: rlm's cache directory). Loading compiles the guest once per guest
/// build and machine (tens of seconds, cached on disk); the GIL is released meanwhile.
pub fn engine(
    py: Python<'_>,
    guest: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> PyResult<Arc<SandboxEngine>> {
    let guest = guest.or_else(|| {
        DEFAULT_GUEST
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    });
    let key = (guest.clone(), cache_dir.clone());
    let engines = ENGINES.get_or_init(Default::default);
    if let Some(e) = engines
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(e.clone());
    }
    let loaded = py
        .detach(|| {
            SandboxEngine::with_options(EngineOptions {
                guest,
                cache_dir,
                ..EngineOptions::default()
            })
        })
        .map_err(errors::sandbox)?;
    let mut map = engines.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(map.entry(key).or_insert(loaded).clone())
}

/// Facts about the engine that `guest`/`cache_dir` name (loading it if needed): where the guest
/// and its compiled artifact are, and whether the artifact came from the cache.
#[pyfunction]
#[pyo3(signature = (guest=None, cache_dir=None))]
pub fn engine_info(
    py: Python<'_>,
    guest: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> PyResult<HashMap<&'static str, String>> {
    let e = engine(py, guest, cache_dir)?;
    Ok(HashMap::from([
        (
            "guest",
            e.guest_path()
                .map_or_else(|| "embedded".to_string(), |p| p.display().to_string()),
        ),
        ("artifact", e.artifact_path().display().to_string()),
        ("cache_hit", e.cache_hit().to_string()),
    ]))
}
