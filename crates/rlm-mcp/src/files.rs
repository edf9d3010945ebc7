//! Reading what a client names: one file, or a directory's text files as documents.
//!
//! Every file is opened through its root's handle (see [`Roots`]), checked on the *opened*
//! handle (a regular file, of a size within the remaining budget) before any byte is read, and
//! read no further than that budget (plus one byte, to see a file that grew or whose size
//! lied). A FIFO or device opens without blocking and is refused; a symlink out of the root is
//! refused by the open.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use rlm::ContextInput;

use crate::roots::read_options;
use crate::{McpError, Roots};

/// The file a client named (inside `roots`, at most `limit` bytes) as a context: `.json` as
/// JSON, `.jsonl` as a list of records, anything else as text (copied, never mapped: the client
/// may rewrite its files while a run reads them).
pub(crate) async fn load_file(
    roots: &Roots,
    path: &str,
    limit: u64,
) -> Result<ContextInput, McpError> {
    let (roots, path) = (roots.clone(), path.to_string());
    tokio::task::spawn_blocking(move || read_file(&roots, &path, limit))
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?
}

/// The directory a client named (inside `roots`) as documents: at most `max_files` files of
/// `limit` bytes together.
pub(crate) async fn load_directory(
    roots: &Roots,
    path: &str,
    limit: u64,
    max_files: usize,
) -> Result<ContextInput, McpError> {
    let (roots, path) = (roots.clone(), path.to_string());
    tokio::task::spawn_blocking(move || {
        read_directory(&roots, &path, limit, max_files).map(ContextInput::Documents)
    })
    .await
    .map_err(|e| McpError::Transport(e.to_string()))?
}

fn read_file(roots: &Roots, path: &str, limit: u64) -> Result<ContextInput, McpError> {
    let opened = roots.open_file(path)?;
    let io_err = |source| McpError::Io {
        path: path.into(),
        source,
    };
    let mut file = opened.value;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(McpError::WrongKind {
            path: path.to_string(),
            reason: if meta.is_dir() {
                "not a file (use ask_directory for a directory)".into()
            } else {
                "not a regular file (a FIFO, socket or device is never read)".into()
            },
        });
    }
    let Some(bytes) = read_within(&mut file, meta.len(), limit).map_err(io_err)? else {
        return Err(McpError::TooLarge {
            what: path.to_string(),
            bytes: meta.len().max(limit + 1),
            limit,
        });
    };
    parse(path, &opened.rel, bytes)
}

/// `file`'s bytes when it holds at most `budget` of them: its `size` (from the opened handle's
/// metadata) is checked first, so nothing is read when it says more; the read stops at
/// `budget + 1` bytes, so a file that grew (or whose size lied) costs no more than that.
fn read_within(file: &mut impl Read, size: u64, budget: u64) -> io::Result<Option<Vec<u8>>> {
    if size > budget {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(budget.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= budget).then_some(buf))
}

/// A file's bytes as a context, by its name's extension.
fn parse(given: &str, name: &Path, bytes: Vec<u8>) -> Result<ContextInput, McpError> {
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                path = given,
                "not valid UTF-8: decoded with replacement characters"
            );
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    let bad = |line: Option<usize>, e: serde_json::Error| McpError::BadContext {
        path: given.to_string(),
        message: match line {
            Some(n) => format!("line {n} is not valid JSON: {e}"),
            None => format!("not valid JSON: {e}"),
        },
    };
    match name.extension().and_then(|e| e.to_str()) {
        Some("json") => Ok(ContextInput::from_json(
            serde_json::from_str(&text).map_err(|e| bad(None, e))?,
        )),
        Some("jsonl") => {
            let mut items = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if !line.trim().is_empty() {
                    items.push(serde_json::from_str(line).map_err(|e| bad(Some(i + 1), e))?);
                }
            }
            Ok(ContextInput::from_json(serde_json::Value::Array(items)))
        }
        _ => Ok(ContextInput::Text(text.into())),
    }
}

/// Whether an error opening an entry found while walking means "skip it": it vanished, or its
/// open was refused (a symlink out of the root, or no permission).
fn skipped(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
    )
}

/// The text files under the directory a client named, as documents headed
/// `==> relative/path <==` (hidden entries, binary files, non-regular files and symlinks
/// leaving the root skipped). Directories are walked through handles: the named one as opened,
/// those below it opened through the root's handle, never following a path out of the root.
fn read_directory(
    roots: &Roots,
    path: &str,
    limit: u64,
    max_files: usize,
) -> Result<Vec<String>, McpError> {
    let opened = roots.open_dir(path)?;
    let io_err = |source| McpError::Io {
        path: path.into(),
        source,
    };
    let too_many = || McpError::TooManyFiles {
        path: path.into(),
        limit: max_files,
    };
    let base = opened.rel.clone();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack: Vec<(PathBuf, Option<Dir>)> = vec![(base.clone(), Some(opened.value))];
    let mut dirs_seen = 0usize;
    while let Some((rel, handle)) = stack.pop() {
        dirs_seen += 1;
        if dirs_seen > max_files {
            return Err(too_many());
        }
        let dir = match handle {
            Some(d) => d,
            None => match opened.root.open_dir(&rel) {
                Ok(d) => d,
                Err(e) if skipped(&e) => continue,
                Err(e) => return Err(io_err(e)),
            },
        };
        for entry in dir.entries().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push((rel.join(&name), None));
            } else if kind.is_file() || kind.is_symlink() {
                // A symlink is followed when opened, only while it stays inside the root.
                files.push(rel.join(&name));
                if files.len() > max_files {
                    return Err(too_many());
                }
            }
        }
    }
    files.sort();
    let mut total = 0u64;
    let mut docs = Vec::with_capacity(files.len());
    for rel in files {
        let mut file = match opened.root.open_with(&rel, &read_options()) {
            Ok(f) => f,
            Err(e) if skipped(&e) => continue,
            Err(e) => return Err(io_err(e)),
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            continue; // a FIFO, socket, device or directory (perhaps swapped in)
        }
        let budget = limit - total;
        let Some(bytes) = read_within(&mut file, meta.len(), budget).map_err(io_err)? else {
            return Err(McpError::TooLarge {
                what: path.to_string(),
                bytes: total.saturating_add(meta.len().max(budget + 1)),
                limit,
            });
        };
        total += bytes.len() as u64;
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // binary
        };
        let shown = rel.strip_prefix(&base).unwrap_or(&rel);
        docs.push(format!("==> {} <==\n{text}", shown.display()));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests;
