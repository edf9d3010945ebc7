//! The shared wasmtime engine: configuration, the guest component and its precompiled cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

use crate::bindings::SandboxPre;
use crate::error::SandboxError;
use crate::host::HostState;
use crate::memory::MemoryPool;
use crate::warm::WarmPool;

/// Instances the warm pool keeps ready by default.
const DEFAULT_WARM_INSTANCES: usize = 2;

/// File name of the guest component.
pub const GUEST_FILE: &str = "rlm_guest.wasm";
/// Fuel a running step burns between two yields to tokio (about 10 ms of CPU at
/// [`crate::FUEL_PER_CPU_SECOND`]): the granularity at which a step's deadline is checked while
/// the guest computes, and at which other tasks on the same worker thread get to run.
///
/// Deadlines are enforced this way rather than by wasmtime's epoch interruption: each of the
/// two instruments the guest's code (a check at every loop head and call), and on CPU-heavy
/// Python epoch checks on top of fuel cost 8–21 % (`RLM_BENCH_ONLY=fuel just bench`).
pub const FUEL_YIELD_INTERVAL: u64 = crate::limits::FUEL_PER_CPU_SECOND / 100;
/// The wasmtime version this crate is built on (part of the artifact cache key).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The guest component built into this crate (by `build.rs`, from `guest/`).
static EMBEDDED_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rlm_guest.wasm"));
/// BLAKE3 of [`EMBEDDED_GUEST`], computed at build time so a start does not hash 23 MB.
const EMBEDDED_GUEST_BLAKE3: &str = env!("RLM_GUEST_BLAKE3");
/// Compiled guests kept in the cache directory besides the one in use (the most recently
/// used; older ones are deleted when a new one is compiled).
const KEEP_OTHER_ARTIFACTS: usize = 3;

/// Where to find the guest and where to cache its compiled form.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Path of an `rlm_guest.wasm` to run instead of the guest built into this crate. Default:
    /// `RLM_GUEST_WASM` when set, else the built-in guest.
    pub guest: Option<PathBuf>,
    /// Directory of precompiled artifacts. Default: `RLM_CACHE_DIR`, else the user cache
    /// directory (`~/.cache/rlm`).
    pub cache_dir: Option<PathBuf>,
    /// Bytes of guest memory all REPLs of this engine may hold together (see
    /// [`crate::memory`]). Default: [`MemoryPool::default_total`].
    pub memory_budget: Option<u64>,
    /// Instances to keep instantiated and initialised ahead of time, so a new REPL starts by
    /// taking one (see `warm.rs`; each holds about 10 MiB of the memory budget). Default: 2.
    /// 0 turns the warm pool off.
    pub warm_instances: Option<usize>,
    /// Benchmarks only: turn fuel off to measure its overhead. Steps then have no CPU limit and
    /// never yield while the guest computes, so their deadline applies only when they wait on
    /// the host.
    #[doc(hidden)]
    pub unmetered: bool,
}

/// The compiled guest and the wasmtime engine that runs it. Create once per process and share
/// it (`Arc`) between all sandboxes: each sandbox instantiates it in ~1 ms.
pub struct SandboxEngine {
    pub(crate) engine: Engine,
    pub(crate) pre: SandboxPre<HostState>,
    pub(crate) metered: bool,
    pool: Arc<MemoryPool>,
    /// Instances made ahead of time for new REPLs.
    pub(crate) warm: WarmPool,
    guest_path: Option<PathBuf>,
    artifact: PathBuf,
    cache_hit: bool,
}

impl std::fmt::Debug for SandboxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEngine")
            .field("guest_path", &self.guest_path)
            .field("artifact", &self.artifact)
            .field("cache_hit", &self.cache_hit)
            .finish_non_exhaustive()
    }
}

impl SandboxEngine {
    /// Load the guest from its default location (see [`EngineOptions::guest`]).
    pub fn load() -> Result<Arc<Self>, SandboxError> {
        Self::with_options(EngineOptions::default())
    }

    /// Load with explicit options. Compiles the guest on the first use of a given guest and
    /// engine configuration (tens of seconds), then reuses the cached artifact (milliseconds).
    ///
    /// This blocks (file reads, possibly the compilation); from async code call it through
    /// `tokio::task::spawn_blocking`.
    pub fn with_options(options: EngineOptions) -> Result<Arc<Self>, SandboxError> {
        let guest_path = options
            .guest
            .or_else(|| std::env::var_os("RLM_GUEST_WASM").map(PathBuf::from));
        let metered = !options.unmetered;
        let engine =
            Engine::new(&engine_config(metered)).map_err(|e| SandboxError::wasm("engine", e))?;
        let read;
        let (bytes, guest_hash): (&[u8], String) = match &guest_path {
            Some(path) => {
                read = std::fs::read(path).map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => {
                        SandboxError::GuestMissing { path: path.clone() }
                    }
                    _ => SandboxError::Io {
                        action: "reading the guest component",
                        path: path.clone(),
                        source,
                    },
                })?;
                let hash = blake3::hash(&read).to_hex().to_string();
                (&read, hash)
            }
            None => (EMBEDDED_GUEST, EMBEDDED_GUEST_BLAKE3.to_string()),
        };
        let cache_dir = options.cache_dir.unwrap_or_else(default_cache_dir);
        let artifact = cache_dir.join(format!("guest-{}.cwasm", cache_key(&engine, &guest_hash)));
        let (component, cache_hit) = load_or_compile(&engine, bytes, &artifact)?;
        if !cache_hit {
            prune_artifacts(&cache_dir, &artifact);
        }

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::wasm("linking WASI", e))?;
        crate::bindings::Sandbox::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| SandboxError::wasm("linking the sandbox imports", e))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(SandboxPre::new)
            .map_err(|e| SandboxError::wasm("pre-instantiating the guest", e))?;

        let pool = MemoryPool::new(
            options
                .memory_budget
                .unwrap_or_else(MemoryPool::default_total),
        );
        Ok(Arc::new(Self {
            engine,
            pre,
            metered,
            pool,
            warm: WarmPool::new(options.warm_instances.unwrap_or(DEFAULT_WARM_INSTANCES)),
            guest_path,
            artifact,
            cache_hit,
        }))
    }

    /// The memory budget every REPL of this engine is charged to (unless its builder names
    /// another, [`crate::SandboxBuilder::memory_pool`]).
    pub fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

    /// Instances ready for new REPLs now (see [`EngineOptions::warm_instances`]).
    pub fn warm_instances(&self) -> usize {
        self.warm.len()
    }

    /// The guest component file in use; `None` for the guest built into this crate.
    pub fn guest_path(&self) -> Option<&Path> {
        self.guest_path.as_deref()
    }

    /// The precompiled artifact in use.
    pub fn artifact_path(&self) -> &Path {
        &self.artifact
    }

    /// Whether the artifact came from the cache (false: it was compiled by this load).
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }
}

fn engine_config(metered: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(metered);
    config.memory_init_cow(true);
    config.cranelift_opt_level(OptLevel::Speed);
    config.parallel_compilation(true);
    config
}

/// The cache key: the guest's hash plus everything in the engine that makes artifacts
/// incompatible (wasmtime version, fuel, epoch, memory settings, target).
fn cache_key(engine: &Engine, guest_hash: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    WASMTIME_VERSION.hash(&mut h);
    format!("{}-{:016x}", &guest_hash[..32], h.finish())
}

fn load_or_compile(
    engine: &Engine,
    bytes: &[u8],
    artifact: &Path,
) -> Result<(Component, bool), SandboxError> {
    if artifact.exists() {
        // SAFETY: the file is one this function wrote with `precompile_component` for an engine
        // with the same compatibility hash (it is in the file name); wasmtime also checks the
        // header and refuses an artifact from an incompatible engine.
        match unsafe { Component::deserialize_file(engine, artifact) } {
            Ok(c) => return Ok((c, true)),
            Err(e) => tracing::warn!(path = %artifact.display(), error = %e,
                "cached guest artifact unusable; recompiling"),
        }
    }
    tracing::info!(path = %artifact.display(),
        "compiling the sandbox guest (once per guest build; takes tens of seconds)");
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| SandboxError::wasm("compiling the guest", e))?;
    if let Some(dir) = artifact.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SandboxError::Io {
            action: "creating the artifact cache directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = artifact.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, &compiled)
        .and_then(|()| std::fs::rename(&tmp, artifact))
        .map_err(|source| SandboxError::Io {
            action: "writing the compiled guest",
            path: artifact.to_path_buf(),
            source,
        })?;
    // SAFETY: written just above by `precompile_component` of this very engine.
    let component = unsafe { Component::deserialize_file(engine, artifact) }
        .map_err(|e| SandboxError::wasm("loading the compiled guest", e))?;
    Ok((component, false))
}

/// Delete compiled guests of other guest builds but the [`KEEP_OTHER_ARTIFACTS`] most recently
/// modified, and leftovers of interrupted compilations. Best effort: a file another process
/// still maps stays readable to it (Unix), and failures are only logged.
fn prune_artifacts(cache_dir: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let mut others = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path == current || !name.starts_with("guest-") {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if name.ends_with(".cwasm") {
            others.push((modified, path));
        } else if name.contains(".tmp.")
            && modified
                .elapsed()
                .is_ok_and(|age| age > Duration::from_secs(3600))
        {
            remove_logged(&path);
        }
    }
    others.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in others.iter().skip(KEEP_OTHER_ARTIFACTS) {
        remove_logged(path);
    }
}

fn remove_logged(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "deleted an old compiled guest"),
        Err(e) => tracing::warn!(path = %path.display(), error = %e,
            "could not delete an old compiled guest"),
    }
}

/// rlm's cache directory: `RLM_CACHE_DIR`, else the user cache directory's `rlm` (e.g.
/// `~/.cache/rlm`). The compiled guest lives here; other parts of rlm keep their files under it.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("RLM_CACHE_DIR") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("rlm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn pruning_keeps_the_current_artifact_and_the_newest_others() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let make = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            let f = std::fs::File::create(&path).unwrap();
            f.set_modified(now - Duration::from_secs(age_s)).unwrap();
            path
        };
        // The one in use is the oldest file: it must stay anyway.
        let current = make("guest-current.cwasm", 10_000);
        let others: Vec<PathBuf> = (0..6)
            .map(|i| make(&format!("guest-old{i}.cwasm"), 100 * (i + 1)))
            .collect();
        let stale_tmp = make("guest-x.cwasm.tmp.123", 7200);
        let fresh_tmp = make("guest-y.cwasm.tmp.456", 5);
        let unrelated = make("models.json", 99_999);

        prune_artifacts(dir.path(), &current);

        assert!(current.exists());
        for (i, p) in others.iter().enumerate() {
            assert_eq!(p.exists(), i < KEEP_OTHER_ARTIFACTS, "{}", p.display());
        }
        assert!(
            !stale_tmp.exists(),
            "an interrupted compilation's leftover goes"
        );
        assert!(
            fresh_tmp.exists(),
            "a compilation in progress is left alone"
        );
        assert!(unrelated.exists(), "only compiled guests are pruned");
    }

    #[test]
    fn the_embedded_guest_hash_is_the_hash_of_the_embedded_guest() {
        assert_eq!(
            blake3::hash(EMBEDDED_GUEST).to_hex().as_str(),
            EMBEDDED_GUEST_BLAKE3
        );
    }
}
