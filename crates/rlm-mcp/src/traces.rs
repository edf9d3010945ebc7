//! The trace tools: listing the trace directory and reading one trace from it.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::McpError;

/// The `*.jsonl` files in `dir`, newest first, as JSON (name, bytes, modified).
pub(crate) fn list_traces(dir: &Path) -> Result<serde_json::Value, McpError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::json!([])),
        Err(source) => {
            return Err(McpError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut traces: Vec<(u64, String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let meta = e.metadata().ok()?;
            (name.ends_with(".jsonl") && meta.is_file()).then(|| {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                (modified, name, meta.len())
            })
        })
        .collect();
    traces.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    Ok(serde_json::Value::Array(
        traces
            .into_iter()
            .map(|(modified, name, bytes)| {
                serde_json::json!({"name": name, "bytes": bytes, "modified": modified})
            })
            .collect(),
    ))
}

/// The trace `name` (a plain file name in `dir`), cut at `max_chars` characters.
pub(crate) fn read_trace_text(
    dir: &Path,
    name: &str,
    max_chars: usize,
) -> Result<String, McpError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".jsonl")
        && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(McpError::BadTraceName(name.to_string()));
    }
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| McpError::Io {
        path: PathBuf::from(name),
        source,
    })?;
    Ok(match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!(
            "{}\n[... cut at {max_chars} of {} characters]",
            &text[..cut],
            text.chars().count()
        ),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_named_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("c.txt"), "see").unwrap();
        std::fs::write(root.join("t.jsonl"), "{\"a\":1}\n").unwrap();
        assert_eq!(list_traces(&root).unwrap()[0]["name"], "t.jsonl");
        assert_eq!(
            read_trace_text(&root, "t.jsonl", 3).unwrap().lines().next(),
            Some("{\"a")
        );
        for bad in ["../t.jsonl", "c.txt", "/etc/passwd.jsonl", ".jsonl"] {
            assert!(matches!(
                read_trace_text(&root, bad, 10),
                Err(McpError::BadTraceName(_))
            ));
        }
    }
}
