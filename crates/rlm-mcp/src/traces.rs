//! This server's traces: written, listed and read in a directory of their own for its set of
//! roots, so a session with other roots (or `rlm serve`) never lists or reads them.
//!
//! A trace holds the run's context (inline up to several million characters) and every model
//! reply: what a client read under its roots. Traces live in `<base>/roots-<hash>/`, the hash
//! taken over the canonical roots (in any order); the directory is created 0700 and each trace
//! 0600 ([`TraceWriter`]). `read_trace` opens a name beneath that directory only (a symlink out
//! is refused, a FIFO refused without blocking) and reads no more than it returns.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rlm::TraceWriter;

use crate::roots::read_options;
use crate::{McpError, Roots};

/// Characters `read_trace` returns when the request names no `max_chars`.
pub const DEFAULT_TRACE_CHARS: usize = 100_000;
/// The most characters `read_trace` returns, whatever the request asks.
pub const MAX_TRACE_CHARS: usize = 1_000_000;
/// The most traces `list_traces` lists (the newest).
pub const MAX_LISTED_TRACES: usize = 1_000;

/// The directory under `base` that holds the traces of a server over `roots`:
/// `<base>/roots-<hash of the canonical roots>`, the same for the same roots in any order.
pub fn trace_dir_for(base: &Path, roots: &Roots) -> PathBuf {
    let mut dirs: Vec<&PathBuf> = roots.dirs().iter().collect();
    dirs.sort();
    dirs.dedup();
    let mut hasher = blake3::Hasher::new();
    for d in dirs {
        #[cfg(unix)]
        hasher.update(std::os::unix::ffi::OsStrExt::as_bytes(d.as_os_str()));
        #[cfg(not(unix))]
        hasher.update(d.to_string_lossy().as_bytes());
        hasher.update(&[0]);
    }
    let hex = hasher.finalize().to_hex();
    base.join(format!("roots-{}", &hex[..32]))
}

/// Create the trace directory for `roots` under `base` (owner-only, 0700 on Unix) and give
/// its path.
pub fn prepare_trace_dir(base: &Path, roots: &Roots) -> Result<PathBuf, McpError> {
    let dir = trace_dir_for(base, roots);
    TraceStore { dir: dir.clone() }.ensure_dir()?;
    Ok(dir)
}

/// One server's trace directory.
#[derive(Debug)]
pub(crate) struct TraceStore {
    dir: PathBuf,
}

impl TraceStore {
    /// The store of a server over `roots`, under `base`.
    pub(crate) fn new(base: &Path, roots: &Roots) -> Self {
        Self {
            dir: trace_dir_for(base, roots),
        }
    }

    fn io(&self, source: std::io::Error) -> McpError {
        McpError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    /// Create the directory (and those above it) owner-only, and narrow it if it was not.
    fn ensure_dir(&self) -> Result<(), McpError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir).map_err(|e| self.io(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::symlink_metadata(&self.dir).map_err(|e| self.io(e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    /// A new trace `name` (a plain file name), created 0600.
    pub(crate) fn create(&self, name: &str) -> Result<Arc<TraceWriter>, McpError> {
        check_name(name)?;
        self.ensure_dir()?;
        let path = self.dir.join(name);
        TraceWriter::create(&path).map_err(|source| McpError::Io { path, source })
    }

    /// The traces, newest first (at most [`MAX_LISTED_TRACES`]), as JSON: name, bytes,
    /// modified (Unix seconds).
    pub(crate) fn list(&self) -> Result<serde_json::Value, McpError> {
        let dir = match Dir::open_ambient_dir(&self.dir, ambient_authority()) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(serde_json::json!([]));
            }
            Err(e) => return Err(self.io(e)),
        };
        let mut traces: Vec<(u64, String, u64)> = dir
            .entries()
            .map_err(|e| self.io(e))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                // The entry's own metadata: a symlink is not followed, and not listed.
                let meta = e.metadata().ok()?;
                (check_name(&name).is_ok() && meta.is_file()).then(|| {
                    let modified = meta
                        .modified()
                        .ok()
                        .map(|m| m.into_std())
                        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    (modified, name, meta.len())
                })
            })
            .collect();
        traces.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        traces.truncate(MAX_LISTED_TRACES);
        Ok(serde_json::Value::Array(
            traces
                .into_iter()
                .map(|(modified, name, bytes)| {
                    serde_json::json!({"name": name, "bytes": bytes, "modified": modified})
                })
                .collect(),
        ))
    }

    /// The trace `name`, cut at `max_chars` characters (at most [`MAX_TRACE_CHARS`]): no more
    /// than 4 bytes a character is read.
    pub(crate) fn read(&self, name: &str, max_chars: usize) -> Result<String, McpError> {
        check_name(name)?;
        let max_chars = max_chars.min(MAX_TRACE_CHARS);
        let not_found = |source| McpError::Io {
            path: PathBuf::from(name),
            source,
        };
        let dir = Dir::open_ambient_dir(&self.dir, ambient_authority()).map_err(not_found)?;
        let mut file = dir.open_with(name, &read_options()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                McpError::BadTraceName(name.to_string()) // a symlink out of the directory
            } else {
                not_found(e)
            }
        })?;
        let meta = file.metadata().map_err(not_found)?;
        if !meta.is_file() {
            return Err(McpError::BadTraceName(name.to_string()));
        }
        let most = max_chars.saturating_mul(4) as u64;
        let mut bytes = Vec::new();
        (&mut file)
            .take(most)
            .read_to_end(&mut bytes)
            .map_err(not_found)?;
        let read_whole = (bytes.len() as u64) < most || meta.len() <= bytes.len() as u64;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            // The read may have stopped inside a character.
            Err(e) if e.utf8_error().error_len().is_none() => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(match text.char_indices().nth(max_chars) {
            Some((cut, _)) => format!(
                "{}\n[... cut at {max_chars} characters of a {}-byte trace]",
                &text[..cut],
                meta.len()
            ),
            None if !read_whole => format!(
                "{text}\n[... cut at {max_chars} characters of a {}-byte trace]",
                meta.len()
            ),
            None => text,
        })
    }
}

/// A trace name is a plain `*.jsonl` file name: no separators, not hidden.
fn check_name(name: &str) -> Result<(), McpError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".jsonl")
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(McpError::BadTraceName(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
