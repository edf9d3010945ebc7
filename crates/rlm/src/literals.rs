//! Whether an answer is a literal of the prompts' worked examples: what a small model copies
//! instead of answering (a 0.5B model answered `2`, from an example's "2 matches", and `A-`, the
//! example's blood type). The evaluation harness counts such answers per dataset, so a prompt
//! change that invites copying shows.
//!
//! The literals are read from the prompts themselves, so they follow every change to them: the
//! answers the examples give (`FINAL(...)`) and the outputs they show (the lines after "The
//! output is:"), in every profile, with sub-calls on and off, and the note that shows a
//! placeholder answer's fix.

use std::sync::OnceLock;

use rlm_sandbox::ContextShape;

use crate::prompt::{self, PromptFacts, PromptProfile};

/// Answers that no example can be blamed for: a yes or a no is an answer to many questions.
const NOT_COPIES: &[&str] = &["yes", "no", "true", "false"];

/// Whether `answer` (trimmed, a final `.` and case ignored) is one of the prompts' example
/// answers, or words an example's output shows (whole words: `A-`, `Rosa Diaz`, `2`).
pub fn is_prompt_literal(answer: &str) -> bool {
    let answer = normalise(answer);
    if answer.is_empty() || NOT_COPIES.contains(&answer.as_str()) {
        return false;
    }
    let examples = examples();
    examples.answers.contains(&answer)
        || examples
            .outputs
            .iter()
            .any(|line| holds_phrase(line, &answer))
}

/// The literals of the prompts' examples.
struct Examples {
    /// What the examples put in `FINAL(...)`, normalised.
    answers: Vec<String>,
    /// The lines the examples show as outputs, normalised.
    outputs: Vec<String>,
}

fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let mut texts = vec![prompt::placeholder_final("the answer")];
        for profile in [PromptProfile::Standard, PromptProfile::Small] {
            for sub_calls in [false, true] {
                let facts = PromptFacts {
                    shape: ContextShape::Text { chars: 1 },
                    extra_contexts: Vec::new(),
                    lazy_contexts: Vec::new(),
                    sub_model_chars: 1,
                    sub_calls,
                    recursive: sub_calls,
                    max_output_chars: 1,
                    max_iterations: 1,
                    tools: Vec::new(),
                };
                texts.push(prompt::system_prompt_for(profile, &facts));
            }
        }
        let mut answers = Vec::new();
        let mut outputs = Vec::new();
        for text in &texts {
            let mut rest = text.as_str();
            while let Some(at) = rest.find("FINAL(") {
                rest = &rest[at + "FINAL(".len()..];
                if let Some(end) = rest.find(')') {
                    answers.push(normalise(&rest[..end]));
                }
            }
            let mut in_output = false;
            for line in text.lines() {
                if line.trim_end().ends_with("The output is:") {
                    in_output = true;
                } else if line.starts_with("You reply") || line.trim().is_empty() {
                    in_output = false;
                } else if in_output {
                    outputs.push(normalise(line));
                }
            }
        }
        answers.retain(|a| !a.is_empty());
        Examples { answers, outputs }
    })
}

/// Trimmed, lower-cased, without a final `.`.
fn normalise(s: &str) -> String {
    s.trim().trim_end_matches('.').trim().to_lowercase()
}

/// Whether `phrase` is in `line` as whole words (not inside a longer word or number).
fn holds_phrase(line: &str, phrase: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    line.match_indices(phrase).any(|(i, _)| {
        !word(line[..i].chars().next_back()) && !word(line[i + phrase.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_literals_are_found_and_nothing_else() {
        for copied in [
            "A-",
            "a-",
            "31",
            "2",
            "1",
            "Rosa Diaz",
            "nurse",
            "1990",
            " 31. ",
        ] {
            assert!(is_prompt_literal(copied), "{copied:?}");
        }
        for answer in [
            "sulfamethoxazole-trimethoprim caused a rash",
            "SYN-0042-7781",
            "3",
            "12",
            "Ros",
            "yes",
            "",
        ] {
            assert!(!is_prompt_literal(answer), "{answer:?}");
        }
    }
}
