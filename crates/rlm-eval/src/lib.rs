//! Evaluation of rlm on the paper's benchmark families and on users' own data: the library
//! behind `rlm eval`.
//!
//! [`datasets`] makes seeded tasks with exact gold answers (S-NIAH, OOLONG-style aggregation,
//! OOLONG-Pairs-style pair sets, multi-hop over a document collection) at any context size, and
//! [`load_jsonl`] reads users' datasets; [`Scorer`] compares answers with gold ones. [`method`]
//! defines how a task is answered (`direct` with the context cut to the window, or an RLM at
//! depth 0, 1 or 2), [`runner`] runs a plan concurrently with per-task budgets, resumes from
//! and appends to a [`results`] file, and splits a run into shards that [`results::merge`]
//! joins; [`report`] turns results into Markdown, JSON and an SVG plot.
//!
//! The product has no model of its own: a scripted test model that runs the whole harness
//! without a hosted one lives with the test helpers (`rlm_testkit::scripted`, served by the
//! dev-only `rlm-mock`).

pub mod datasets;
pub mod method;
pub mod report;
pub mod results;
pub mod runner;
mod score;

use std::io::BufRead;
use std::path::Path;

pub use datasets::{Family, Task, generate};
pub use score::{Scorer, first_number, normalize, pairs};

/// Errors loading a user dataset.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}, line {line}: {message}")]
    Bad {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(serde::Deserialize)]
struct Line {
    id: Option<String>,
    context: Option<serde_json::Value>,
    context_path: Option<String>,
    question: String,
    answer: serde_json::Value,
    scorer: Option<Scorer>,
}

/// Load a user dataset: one JSON object per line with `id`, `context` (text, list or JSON) or
/// `context_path` (relative to the dataset file), `question`, `answer` and optionally `scorer`
/// (`{"kind": "exact" | "contains" | "set_f1"}` or `{"kind": "numeric", "tolerance": 0.05}`;
/// default `contains`).
pub fn load_jsonl(path: &Path) -> Result<Vec<Task>, EvalError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
        path: p.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut tasks = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io {
            path: p.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| EvalError::Bad {
            path: p.clone(),
            line: i + 1,
            message,
        };
        let l: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let context = match (l.context, l.context_path) {
            (Some(c), _) => rlm::ContextInput::from_json(c),
            (None, Some(cp)) => {
                let full = base.join(&cp);
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| bad(format!("context_path {}: {e}", full.display())))?;
                rlm::ContextInput::Text(text.into())
            }
            (None, None) => return Err(bad("needs `context` or `context_path`".into())),
        };
        let answer = match l.answer {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let context_tokens = rlm::ContextInput::to_json(&context).to_string().len() as u64 / 4;
        tasks.push(Task {
            id: l.id.unwrap_or_else(|| format!("line-{}", i + 1)),
            family: None,
            context,
            question: l.question,
            answer,
            scorer: l.scorer.unwrap_or(Scorer::Contains),
            context_tokens,
        });
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_user_jsonl() {
        let dir = std::env::temp_dir().join(format!("rlm-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("doc.txt"), "The capital is Valmora.").unwrap();
        let f = dir.join("set.jsonl");
        std::fs::write(
            &f,
            "{\"id\": \"a\", \"context\": \"x = 3\", \"question\": \"x?\", \"answer\": 3, \"scorer\": {\"kind\": \"numeric\", \"tolerance\": 0.0}}\n\n{\"context_path\": \"doc.txt\", \"question\": \"capital?\", \"answer\": \"Valmora\"}\n",
        )
        .unwrap();
        let tasks = load_jsonl(&f).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            (tasks[0].answer.as_str(), tasks[0].scorer),
            ("3", Scorer::Numeric { tolerance: 0.0 })
        );
        assert_eq!(
            (tasks[1].id.as_str(), tasks[1].scorer),
            ("line-3", Scorer::Contains)
        );
        std::fs::write(&f, "{\"question\": \"q\", \"answer\": \"a\"}\n").unwrap();
        assert!(
            load_jsonl(&f)
                .unwrap_err()
                .to_string()
                .contains("line 1: needs `context`")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
