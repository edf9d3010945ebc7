//! Methods: how a task is answered. `direct` gives the context to the model (cut to its window,
//! as the paper's base-model baseline); `rlm` runs a Recursive Language Model at a chosen depth.

use std::str::FromStr;

use rlm::ContextInput;
use serde::{Deserialize, Serialize};

/// The system prompt of the `direct` baseline.
pub const DIRECT_SYSTEM: &str = "Answer the question about the document given between <context> \
and </context>. Reply with the answer only.";

/// The first line of an LLM-judge prompt.
pub const JUDGE_PREFIX: &str = "You are grading an answer to a question against the gold answer.";

/// Tokens of the `direct` window kept for the instructions, the question and the answer.
pub const DIRECT_RESERVE_TOKENS: u64 = 1_000;

/// What a method does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MethodKind {
    /// One call with the context in the prompt, its head kept up to the window.
    Direct {
        /// The model's context window in tokens (the context is cut to fit, at 4 characters a
        /// token).
        window_tokens: u64,
    },
    /// A Recursive Language Model.
    Rlm {
        /// 0: REPL only, no sub-calls; 1: sub-calls; 2+: recursive sub-RLMs.
        max_depth: u32,
    },
}

/// One method of a run: a name (the report's column), what it does, and its models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// Shown in results and reports (`direct`, `rlm-d0`, `rlm`, `rlm-d2` unless named).
    pub name: String,
    /// What it does.
    pub kind: MethodKind,
    /// Root model (`provider/model`); `None`: the run's default.
    pub root: Option<String>,
    /// Sub-call model; `None`: the run's default sub-model, else the root.
    pub sub: Option<String>,
}

/// The window `direct` assumes when none is given.
pub const DEFAULT_WINDOW_TOKENS: u64 = 128_000;

impl FromStr for Method {
    type Err = String;

    /// `direct`, `rlm`, `rlm-d0`, `rlm-d2`, or any of them with options after a colon:
    /// `rlm:depth=2,root=openai/gpt-5,sub=openai/gpt-5-mini,name=big`,
    /// `direct:window=272000`.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (base, options) = spec.split_once(':').unwrap_or((spec, ""));
        let mut kind = match base {
            "direct" => MethodKind::Direct {
                window_tokens: DEFAULT_WINDOW_TOKENS,
            },
            "rlm" => MethodKind::Rlm { max_depth: 1 },
            other => match other.strip_prefix("rlm-d").map(str::parse::<u32>) {
                Some(Ok(d)) => MethodKind::Rlm { max_depth: d },
                _ => {
                    return Err(format!(
                        "unknown method {other:?}: use direct, rlm, rlm-d0, rlm-d2 (options after \
                         a colon, e.g. rlm:depth=2,root=openai/gpt-5)"
                    ));
                }
            },
        };
        let (mut name, mut root, mut sub) = (None, None, None);
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = option
                .split_once('=')
                .ok_or_else(|| format!("method option {option:?} is not key=value"))?;
            let number = |v: &str| {
                v.replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| format!("method option {k}: {v:?} is not a number"))
            };
            match (k, &mut kind) {
                ("name", _) => name = Some(v.to_string()),
                ("root", _) => root = Some(v.to_string()),
                ("sub", _) => sub = Some(v.to_string()),
                ("window", MethodKind::Direct { window_tokens }) => *window_tokens = number(v)?,
                ("depth", MethodKind::Rlm { max_depth }) => {
                    *max_depth = u32::try_from(number(v)?).map_err(|e| e.to_string())?;
                }
                _ => return Err(format!("method {base} has no option {k:?}")),
            }
        }
        let name = name.unwrap_or_else(|| match kind {
            MethodKind::Direct { .. } => "direct".to_string(),
            MethodKind::Rlm { max_depth: 1 } => "rlm".to_string(),
            MethodKind::Rlm { max_depth } => format!("rlm-d{max_depth}"),
        });
        Ok(Method {
            name,
            kind,
            root,
            sub,
        })
    }
}

/// The context as one text, the way `direct` puts it in the prompt.
pub fn context_text(context: &ContextInput) -> String {
    match context {
        ContextInput::Text(t) => t.to_string(),
        ContextInput::Documents(d) => d.join("\n\n"),
        ContextInput::Json(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
    }
}

/// The user message of `direct`: the head of the context that fits in `window_tokens` (minus
/// [`DIRECT_RESERVE_TOKENS`]), and the question. Returns the prompt and whether it was cut.
pub fn direct_prompt(context: &ContextInput, question: &str, window_tokens: u64) -> (String, bool) {
    let text = context_text(context);
    let max_chars = window_tokens.saturating_sub(DIRECT_RESERVE_TOKENS) as usize * 4;
    let total = text.chars().count();
    let body = if total > max_chars {
        let cut = text
            .char_indices()
            .nth(max_chars)
            .map_or(text.len(), |(i, _)| i);
        format!(
            "{}\n[... the rest was cut to fit the window: {max_chars} of {total} characters shown ...]",
            &text[..cut]
        )
    } else {
        text
    };
    (
        format!("<context>\n{body}\n</context>\n\nQuestion: {question}"),
        total > max_chars,
    )
}

/// The prompt that asks a judge model whether `answer` is right.
pub fn judge_prompt(question: &str, gold: &str, answer: &str) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "{JUDGE_PREFIX}\nQuestion: {}\nGold answer: {}\nAnswer: {}\nReply with CORRECT if the answer \
         gives the gold answer (other wording is fine), else INCORRECT. Reply with that one word.",
        one_line(question),
        one_line(gold),
        one_line(answer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_method_specs() {
        let m: Method = "rlm-d2".parse().unwrap();
        assert_eq!(
            (m.name.as_str(), m.kind),
            ("rlm-d2", MethodKind::Rlm { max_depth: 2 })
        );
        let m: Method = "rlm:depth=0,root=compat/qwen:7b,sub=openai/gpt-5-mini"
            .parse()
            .unwrap();
        assert_eq!(m.name, "rlm-d0");
        assert_eq!(m.root.as_deref(), Some("compat/qwen:7b"));
        assert_eq!(m.sub.as_deref(), Some("openai/gpt-5-mini"));
        let m: Method = "direct:window=8_000,name=base".parse().unwrap();
        assert_eq!(
            (m.name.as_str(), m.kind),
            (
                "base",
                MethodKind::Direct {
                    window_tokens: 8000
                }
            )
        );
        assert!(
            "direct:depth=2"
                .parse::<Method>()
                .unwrap_err()
                .contains("no option")
        );
        assert!(
            "rag"
                .parse::<Method>()
                .unwrap_err()
                .contains("unknown method")
        );
    }

    #[test]
    fn direct_cuts_to_the_window() {
        let ctx = ContextInput::Text("é".repeat(10_000).into());
        let (p, cut) = direct_prompt(&ctx, "q?", 1_500);
        assert!(cut);
        assert_eq!(p.matches('é').count(), 2_000);
        assert!(p.contains("2000 of 10000 characters shown"));
        let (p, cut) = direct_prompt(
            &ContextInput::Documents(vec!["a".into(), "b".into()]),
            "q?",
            5_000,
        );
        assert!(!cut && p.starts_with("<context>\na\n\nb\n</context>"));
    }
}
