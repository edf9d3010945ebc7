//! Reading what a client names: one file, or a directory's text files as documents.

use std::path::Path;

use rlm::ContextInput;
use rlm_sandbox::ContextFormat;

use crate::{McpError, Roots};

/// The file a client named (inside `roots`, at most `limit` bytes) as a context.
pub(crate) async fn load_file(
    roots: &Roots,
    path: &str,
    limit: u64,
) -> Result<ContextInput, McpError> {
    let canon = roots.resolve(path)?;
    let given = path.to_string();
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&canon).map_err(|source| McpError::Io {
            path: canon.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(McpError::WrongKind {
                path: given,
                reason: "not a file (use ask_directory for a directory)".into(),
            });
        }
        if meta.len() > limit {
            return Err(McpError::TooLarge {
                what: given,
                bytes: meta.len(),
                limit,
            });
        }
        // Copied, not mapped: the client may rewrite its files while a run reads them,
        // and a map would see the edit (or fault, if the file is cut short).
        Ok(ContextInput::load_copy(&canon, ContextFormat::Auto)?)
    })
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
    let canon = roots.resolve(path)?;
    if !canon.is_dir() {
        return Err(McpError::WrongKind {
            path: path.to_string(),
            reason: "not a directory (use ask_file for a file)".into(),
        });
    }
    let roots = roots.clone();
    tokio::task::spawn_blocking(move || {
        let docs = read_directory(&canon, &roots, limit, max_files)?;
        Ok(ContextInput::Documents(docs))
    })
    .await
    .map_err(|e| McpError::Transport(e.to_string()))?
}

/// The text files under `dir` as documents, each headed `==> relative/path <==`.
fn read_directory(
    dir: &Path,
    roots: &Roots,
    limit: u64,
    max_files: usize,
) -> Result<Vec<String>, McpError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| McpError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| McpError::Io {
                path: d.clone(),
                source,
            })?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.push(path);
            } else if kind.is_symlink() {
                // Followed only to files that stay inside the roots.
                if let Ok(target) = path.canonicalize()
                    && roots.contains(&target)
                    && target.is_file()
                {
                    files.push(path);
                }
            }
            if files.len() > max_files {
                return Err(McpError::TooManyFiles {
                    path: dir.to_path_buf(),
                    limit: max_files,
                });
            }
        }
    }
    files.sort();
    let mut total = 0u64;
    let mut docs = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(&f).map_err(|source| McpError::Io {
            path: f.clone(),
            source,
        })?;
        total += bytes.len() as u64;
        if total > limit {
            return Err(McpError::TooLarge {
                what: dir.display().to_string(),
                bytes: total,
                limit,
            });
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // binary
        };
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        docs.push(format!("==> {} <==\n{text}", rel.display()));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_become_documents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/.git")).unwrap();
        std::fs::write(root.join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::write(root.join("src/.git/x"), "hidden").unwrap();
        std::fs::write(root.join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(root.join("c.txt"), "see").unwrap();
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let docs = read_directory(&root, &roots, 1 << 20, 100).unwrap();
        assert_eq!(docs, ["==> c.txt <==\nsee", "==> src/a.rs <==\nfn a() {}"]);
        assert!(matches!(
            read_directory(&root, &roots, 4, 100),
            Err(McpError::TooLarge { .. })
        ));
        assert!(matches!(
            read_directory(&root, &roots, 1 << 20, 1),
            Err(McpError::TooManyFiles { .. })
        ));
    }
}
