//! Reading the root model's reply: fenced code blocks and `FINAL(...)` / `FINAL_VAR(...)`.

use std::sync::OnceLock;

use regex::Regex;

/// Tags of fenced blocks that are run (models use several).
const RUN_TAGS: &[&str] = &["repl", "python", "py", "python3"];

/// A final answer written in the reply text (outside code blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextFinal {
    /// `FINAL(answer)`: the text between the parentheses.
    Answer(String),
    /// `FINAL_VAR(name)`: a REPL variable's name.
    Var(String),
}

/// What a reply contains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedReply {
    /// The code of every block tagged `repl`/`python`, in order.
    pub code_blocks: Vec<String>,
    /// A final answer in the text, if any.
    pub final_answer: Option<TextFinal>,
    /// The reply without its runnable blocks, trimmed (other fenced blocks keep their text,
    /// without the fences).
    pub prose: String,
}

fn fence() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?ms)^[ \t]*(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*(`{3,}|~{3,})[ \t]*$")
            .expect("fence pattern is valid")
    })
}

/// Split a reply into its runnable code blocks, its final answer and its prose.
pub fn parse_reply(reply: &str) -> ParsedReply {
    let mut code_blocks = Vec::new();
    // Text outside every fenced block (where FINAL is looked for) and the prose.
    let mut outside = String::new();
    // `outside` plus the bodies of blocks that are not run: small models fence their answer
    // (`FINAL(5)` in a bare ``` block), and a block that is not run cannot call FINAL itself.
    let mut not_run = String::new();
    let mut prose = String::new();
    let mut last = 0;
    for cap in fence().captures_iter(reply) {
        let (Some(all), Some(open), Some(close)) = (cap.get(0), cap.get(1), cap.get(4)) else {
            continue;
        };
        // The closing fence must match the opening one.
        if open.as_str().chars().next() != close.as_str().chars().next() {
            continue;
        }
        outside.push_str(&reply[last..all.start()]);
        not_run.push_str(&reply[last..all.start()]);
        prose.push_str(&reply[last..all.start()]);
        last = all.end();
        let tag = cap.get(2).map_or("", |m| m.as_str()).to_ascii_lowercase();
        let body = cap.get(3).map_or("", |m| m.as_str());
        if RUN_TAGS.contains(&tag.as_str()) {
            code_blocks.push(body.to_string());
        } else {
            not_run.push_str(body);
            not_run.push('\n');
            prose.push_str(body);
        }
    }
    outside.push_str(&reply[last..]);
    not_run.push_str(&reply[last..]);
    prose.push_str(&reply[last..]);
    ParsedReply {
        code_blocks,
        final_answer: find_final(&not_run).or_else(|| answer_line(&outside)),
        prose: prose.trim().to_string(),
    }
}

/// Find `FINAL(...)` (balanced parentheses, quotes respected, may span lines) or
/// `FINAL_VAR(name)` in text.
pub fn find_final(text: &str) -> Option<TextFinal> {
    let mut search_from = 0;
    while let Some(pos) = text[search_from..].find("FINAL") {
        let start = search_from + pos;
        search_from = start + 5;
        // Must be a whole word.
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[start + 5..];
        let (is_var, after) = match rest.strip_prefix("_VAR") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let after_ws = after.trim_start_matches([' ', '\t']);
        let Some(inner) = after_ws.strip_prefix('(') else {
            continue;
        };
        let Some(body) = balanced(inner) else {
            continue;
        };
        let body = body.trim();
        return Some(if is_var {
            TextFinal::Var(unquote(body).to_string())
        } else {
            TextFinal::Answer(answer_of_dict(unquote(body)).to_string())
        });
    }
    None
}

/// The text up to the parenthesis that closes an already-open one. Quotes are respected first;
/// if that finds no close (an apostrophe in prose opens a "quote" that never ends), parentheses
/// are counted alone.
fn balanced(s: &str) -> Option<&str> {
    close_paren(s, true).or_else(|| close_paren(s, false))
}

fn close_paren(s: &str, respect_quotes: bool) -> Option<&str> {
    let mut depth = 1usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' if respect_quotes => quote = Some(c),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A line such as `Final answer: 42` or `**FINAL ANSWER:** 42` (as small models write it when
/// they forget the parentheses): the rest of that line.
fn answer_line(text: &str) -> Option<TextFinal> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(
            r"(?im)^[ \t#>*_]*final[ _]answer[ \t*_]*(?:is)?[ \t]*[:=][ \t*_]*(.+?)[ \t*_]*$",
        )
        .expect("answer line pattern is valid")
    });
    let caps = re.captures(text)?;
    let answer = unquote(caps.get(1)?.as_str().trim());
    (!answer.is_empty()).then(|| TextFinal::Answer(answer_of_dict(answer).to_string()))
}

/// The text of an answer written as a one-entry dict, `{"content": "..."}` or
/// `{'answer': '...'}` (as the REPL's `answer` dict is shaped), else the answer as given.
fn answer_of_dict(s: &str) -> &str {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r#"(?s)^\{\s*["'](?:content|answer)["']\s*:\s*(?:"(.*)"|'(.*)')\s*\}$"#)
            .expect("answer dict pattern is valid")
    });
    re.captures(s.trim())
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map_or(s, |m| m.as_str())
}

/// Whether a final answer is the prompt's placeholder copied as it is (`FINAL(your answer)`,
/// `FINAL(...)`), which small models do, rather than an answer.
pub fn is_placeholder(answer: &str) -> bool {
    let words: String = answer
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    matches!(
        words.as_str(),
        "" | "answer"
            | "the answer"
            | "your answer"
            | "final answer"
            | "your final answer"
            | "the final answer"
            | "holding that answer"
            | "that answer"
    )
}

/// Strip one pair of matching quotes (including triple quotes) around a whole answer.
fn unquote(s: &str) -> &str {
    for q in ["\"\"\"", "'''", "\"", "'"] {
        if s.len() >= 2 * q.len() && s.starts_with(q) && s.ends_with(q) {
            return &s[q.len()..s.len() - q.len()];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tagged_blocks_in_order() {
        let reply = "Let me look.\n```repl\nprint(len(context))\n```\nthen\n```python\nx = 1\n```\n```\nnot run\n```\n~~~py\ny = 2\n~~~\n";
        let p = parse_reply(reply);
        assert_eq!(
            p.code_blocks,
            vec!["print(len(context))\n", "x = 1\n", "y = 2\n"]
        );
        assert_eq!(p.final_answer, None);
        assert!(
            p.prose.starts_with("Let me look.") && p.prose.contains("not run"),
            "{}",
            p.prose
        );
        assert!(
            !p.prose.contains("print(len") && !p.prose.contains("```"),
            "{}",
            p.prose
        );
    }

    #[test]
    fn final_answer_lines_and_answer_dicts_are_accepted() {
        for (reply, answer) in [
            ("I found it.\nFinal answer: 59975", "59975"),
            ("**FINAL ANSWER:** \"Paris\"", "Paris"),
            ("## Final Answer: the code is 12", "the code is 12"),
            ("final_answer = 'blue'", "blue"),
            (
                "FINAL({\"content\": \"New drug allergy to penicillin\"})",
                "New drug allergy to penicillin",
            ),
            ("FINAL({'answer': 'x y'})", "x y"),
        ] {
            assert_eq!(
                parse_reply(reply).final_answer,
                Some(TextFinal::Answer(answer.into())),
                "{reply}"
            );
        }
        // FINAL(...) wins over an answer line; prose that merely mentions answers is not one.
        assert_eq!(
            parse_reply("Final answer: a\nFINAL(b)").final_answer,
            Some(TextFinal::Answer("b".into()))
        );
        for reply in [
            "The final answer depends on the data.",
            "Final answer:   ",
            "{\"content\": 1}",
        ] {
            assert_eq!(parse_reply(reply).final_answer, None, "{reply}");
        }
        assert_eq!(
            find_final("FINAL({'content': 'a', 'extra': 1})"),
            Some(TextFinal::Answer("{'content': 'a', 'extra': 1}".into()))
        );
    }

    #[test]
    fn copied_placeholders_are_not_answers() {
        for p in [
            "your answer",
            "...",
            "<answer>",
            "The Answer",
            " your  final answer ",
            "…",
        ] {
            assert!(is_placeholder(p), "{p}");
        }
        for a in ["59975", "A-", "no answer", "answer: 42", "penicillin"] {
            assert!(!is_placeholder(a), "{a}");
        }
    }

    #[test]
    fn final_with_nested_parentheses_and_lines() {
        let p =
            parse_reply("Done.\nFINAL(The answer is 42 (forty-two), see f(x)\nand more)\nthanks");
        assert_eq!(
            p.final_answer,
            Some(TextFinal::Answer(
                "The answer is 42 (forty-two), see f(x)\nand more".into()
            ))
        );
        assert_eq!(
            find_final("FINAL(\"quoted ) paren\")"),
            Some(TextFinal::Answer("quoted ) paren".into()))
        );
        assert_eq!(
            find_final("FINAL(it's done (really))"),
            Some(TextFinal::Answer("it's done (really)".into()))
        );
        assert_eq!(
            find_final("FINAL_VAR(result)"),
            Some(TextFinal::Var("result".into()))
        );
        assert_eq!(
            find_final("FINAL_VAR('result')"),
            Some(TextFinal::Var("result".into()))
        );
        assert_eq!(find_final("MY_FINAL(x)"), None);
        assert_eq!(find_final("FINAL( unclosed"), None);
    }

    /// Replies are whatever a model writes: any text parses without a panic, blocks are pieces
    /// of the reply, and a FINAL found is in the reply.
    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Text made of the pieces that matter to the parser, in any order.
        fn replyish() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("```".to_string()),
                Just("~~~".to_string()),
                Just("```repl\n".to_string()),
                Just("```python\n".to_string()),
                Just("FINAL(".to_string()),
                Just("FINAL_VAR(".to_string()),
                Just(")".to_string()),
                Just("(".to_string()),
                Just("\"".to_string()),
                Just("'".to_string()),
                Just("\\".to_string()),
                Just("\n".to_string()),
                "\\PC{0,12}",
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn any_reply_parses(reply in replyish()) {
                let p = parse_reply(&reply);
                for block in &p.code_blocks {
                    prop_assert!(reply.contains(block.as_str()));
                }
                // A FINAL is looked for in the text around the runnable blocks, so its answer may
                // join text from both sides of a block: it is made of the reply's characters only.
                if let Some(TextFinal::Answer(a) | TextFinal::Var(a)) = p.final_answer {
                    prop_assert!(a.chars().all(|c| reply.contains(c)));
                }
            }

            #[test]
            fn any_text_finds_final_or_nothing(text in "\\PC{0,200}") {
                let _ = find_final(&text);
                let _ = parse_reply(&text);
            }

            /// A FINAL with balanced, quote-free text is found whole, wherever it stands.
            #[test]
            fn a_plain_final_is_found(
                before in "[a-z .,\n]{0,40}",
                answer in "[A-Za-z0-9 ,.-]{1,40}",
            ) {
                let found = find_final(&format!("{before}\nFINAL({answer})\nthanks"));
                prop_assert_eq!(found, Some(TextFinal::Answer(answer.trim().to_string())));
            }
        }
    }

    #[test]
    fn final_inside_code_is_not_a_text_final() {
        let p = parse_reply("```repl\nFINAL(x)\n```");
        assert_eq!(p.final_answer, None);
        assert_eq!(p.code_blocks, vec!["FINAL(x)\n"]);
    }

    #[test]
    fn final_in_a_block_that_is_not_run_is_the_answer() {
        // As the 1.5B model wrote it, over and over, when it was not taken.
        for reply in [
            "```\nFINAL(5)\n```",
            "```text\nFINAL(5)\n```",
            "Done.\n```\nFINAL(5)\n```",
        ] {
            let p = parse_reply(reply);
            assert_eq!(
                p.final_answer,
                Some(TextFinal::Answer("5".into())),
                "{reply}"
            );
            assert!(p.code_blocks.is_empty());
        }
    }
}
