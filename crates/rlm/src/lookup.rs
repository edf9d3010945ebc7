//! The lines of the document that hold the question's words, for small models whose searches
//! found nothing.
//!
//! A 0.5B model searches for the question's own phrase ("patient's date of birth") and, when
//! the document writes it otherwise ("Date of birth: ..."), runs the same search again until it
//! gives up or guesses; advice does not change what it does. So after a step whose searches all
//! matched nothing, the loop looks itself: the lines with the question's distinctive words, in
//! any order (words the document never uses left out first, then the most frequent ones, one at
//! a time, until some line holds all that are left), shown to the model with the question.
//! Each line comes with the Markdown heading it is under, if any (`## Visit 173: 2009-03-18`):
//! "when" and "who" questions are often answered there, not on the line itself.

use rlm_sandbox::{Context, SearchHit};

/// Lines shown at most.
const MAX_LINES: usize = 6;
/// Words kept from a question at most (the longest first).
const MAX_WORDS: usize = 6;
/// Words in any order are tried up to this many (their orders as alternatives); more are tried
/// in the question's order.
const MAX_PERMUTED: usize = 3;
/// Occurrences counted at most when ranking the words, and headings read at most.
const COUNT_CAP: usize = 10_000;
/// Characters of a heading kept.
const HEADING_CHARS: usize = 120;

/// Words of a question that say nothing about where its answer is.
const QUESTION_WORDS: &[&str] = &[
    "a", "about", "after", "all", "an", "and", "any", "are", "as", "at", "be", "been", "before",
    "by", "can", "could", "did", "do", "does", "for", "from", "give", "had", "has", "have", "how",
    "in", "is", "it", "its", "long", "many", "much", "of", "often", "on", "or", "should", "that",
    "the", "their", "them", "there", "these", "they", "this", "those", "to", "was", "were", "what",
    "when", "where", "which", "who", "whom", "whose", "why", "will", "with", "would",
];

/// The distinctive words of `question`, lower-cased: no question or filler words, no
/// possessive `'s`, at least three characters, at most [`MAX_WORDS`] (the longest).
pub(crate) fn key_words(question: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for w in question
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .map(|w| w.trim_matches('-').to_lowercase())
    {
        if w.chars().count() >= 3 && !QUESTION_WORDS.contains(&w.as_str()) && !words.contains(&w) {
            words.push(w);
        }
    }
    if words.len() > MAX_WORDS {
        let mut by_length = words.clone();
        by_length.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        by_length.truncate(MAX_WORDS);
        words.retain(|w| by_length.contains(w));
    }
    words
}

/// The lines of `context` that hold `words` (see the module doc), and the words they hold;
/// `None` when no line holds even one of them.
pub(crate) fn lines_with(
    context: &Context,
    words: &[String],
) -> Option<(Vec<String>, Vec<String>)> {
    let count = |w: &str| {
        context
            .find_hits(&word_pattern(w), true, COUNT_CAP)
            .map_or(0, |h| h.len())
    };
    let mut counted: Vec<(String, usize)> = words
        .iter()
        .map(|w| (w.clone(), count(w)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let weights: Vec<(String, f64)> = counted
        .iter()
        .map(|(w, n)| (w.clone(), 1.0 / *n as f64))
        .collect();
    let headings = context
        .find_hits(r"(?m)^#{1,6}[ \t].*", false, COUNT_CAP)
        .unwrap_or_default();
    while !counted.is_empty() {
        let ws: Vec<String> = counted.iter().map(|(w, _)| w.clone()).collect();
        if let Ok(hits) = context.find_hits(&all_of(&ws), true, MAX_LINES * 4) {
            let mut found: Vec<(Option<String>, String)> = Vec::new();
            for h in hits {
                let line = h.line.trim().to_string();
                let heading = heading_of(&headings, &h).filter(|_| !line.starts_with('#'));
                if !line.is_empty() && !found.iter().any(|(_, l)| *l == line) {
                    found.push((heading, line));
                }
                if found.len() == MAX_LINES {
                    break;
                }
            }
            let lines = best_sentences(&found, &weights);
            if !lines.is_empty() {
                return Some((ws, lines));
            }
        }
        // Leave out the most frequent word (the first of equals in the question's order).
        let most = counted
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, n))| (*n, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)?;
        counted.remove(most);
    }
    None
}

/// The lines, each cut to its sentences that matter most: a sentence scores the sum of the
/// weights of the question's words it holds (rarer words weigh more), and sentences scoring
/// under half the best are left out (`Sleep averages six hours..., longer on weekends` beside
/// `...regular walking, at least thirty minutes a day` when asked how long to walk each day);
/// what is left of a line is joined with ` ... `, after its heading.
fn best_sentences(found: &[(Option<String>, String)], weights: &[(String, f64)]) -> Vec<String> {
    let scored: Vec<Vec<(f64, &str)>> = found
        .iter()
        .map(|(_, line)| {
            sentences(line)
                .map(|s| (score(s, weights), s))
                .collect::<Vec<_>>()
        })
        .collect();
    let best = scored
        .iter()
        .flatten()
        .map(|(score, _)| *score)
        .fold(0.0, f64::max);
    let mut out = Vec::new();
    for ((heading, _), sentences) in found.iter().zip(&scored) {
        let kept: Vec<&str> = sentences
            .iter()
            .filter(|(score, _)| *score > 0.0 && *score >= best / 2.0)
            .map(|(_, s)| *s)
            .collect();
        if kept.is_empty() {
            continue;
        }
        let text = kept.join(" ... ");
        let line = match heading {
            Some(heading) => format!("[{heading}] {text}"),
            None => text,
        };
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// The sentences of `line`: cut after `.`, `?` or `!` followed by a space.
fn sentences(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest
            .char_indices()
            .zip(rest.chars().skip(1))
            .find(|((_, c), next)| matches!(c, '.' | '?' | '!') && next.is_whitespace())
            .map_or(rest.len(), |((i, _), _)| i + 1);
        let (sentence, after) = rest.split_at(cut);
        rest = after.trim_start();
        Some(sentence.trim())
    })
    .filter(|s| !s.is_empty())
}

/// The summed weights of the words that start a word of `sentence` (ignoring case).
fn score(sentence: &str, weights: &[(String, f64)]) -> f64 {
    let lower = sentence.to_lowercase();
    weights
        .iter()
        .filter(|(w, _)| {
            lower.match_indices(w.as_str()).any(|(i, _)| {
                !lower[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric)
            })
        })
        .map(|(_, weight)| weight)
        .sum()
}

/// The last heading before `hit` in the same text, cut to [`HEADING_CHARS`].
fn heading_of(headings: &[SearchHit], hit: &SearchHit) -> Option<String> {
    let heading = headings
        .iter()
        .rev()
        .find(|h| h.path == hit.path && h.start <= hit.start)?;
    Some(heading.text.trim().chars().take(HEADING_CHARS).collect())
}

/// A word at the start of a word (so `antibiotic` finds `antibiotics`).
fn word_pattern(word: &str) -> String {
    format!(r"\b{}", regex::escape(word))
}

/// All of `words` on one line, in any order (up to [`MAX_PERMUTED`] words).
fn all_of(words: &[String]) -> String {
    let parts: Vec<String> = words.iter().map(|w| word_pattern(w)).collect();
    if parts.len() > MAX_PERMUTED {
        return parts.join(".*");
    }
    let mut orders = Vec::new();
    permutations(&parts, &mut Vec::new(), &mut orders);
    orders.join("|")
}

fn permutations(left: &[String], taken: &mut Vec<String>, out: &mut Vec<String>) {
    if left.is_empty() {
        out.push(format!("(?:{})", taken.join(".*")));
        return;
    }
    for i in 0..left.len() {
        let mut rest = left.to_vec();
        let w = rest.remove(i);
        taken.push(w);
        permutations(&rest, taken, out);
        taken.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Record\n- Name: Jordan Avery Blake\n- Date of birth: 1968-05-21\n\
                       - Record number: SYN-0042-7781\n- Primary care: Riverside Community Clinic\n\
                       ## Visit 1\n- Notes: the patient came in. Patient asked about travel.\n\
                       - Notes: patient care reviewed; preventive care.\n";

    fn lines(q: &str) -> Vec<String> {
        let ctx = Context::text(DOC);
        lines_with(&ctx, &key_words(q))
            .map(|(_, l)| l)
            .unwrap_or_default()
    }

    #[test]
    fn the_question_words_that_matter_find_their_line() {
        assert_eq!(
            key_words("What is the patient's date of birth?"),
            ["patient", "date", "birth"]
        );
        assert_eq!(
            lines("What is the patient's date of birth?"),
            ["[# Record] - Date of birth: 1968-05-21"]
        );
        assert_eq!(
            lines("Which clinic provides the patient's primary care?"),
            ["[# Record] - Primary care: Riverside Community Clinic"]
        );
        assert_eq!(
            lines("What is the patient's record number?"),
            ["[# Record] - Record number: SYN-0042-7781"]
        );
        assert_eq!(
            lines("What is the patient's full name?"),
            ["[# Record] - Name: Jordan Avery Blake"]
        );
        assert_eq!(
            lines("When did the patient ask about travel?"),
            ["[## Visit 1] Patient asked about travel."]
        );
        assert!(lines("Which spaceship landed?").is_empty());
        // Of a line, the sentences with the question's rarer words.
        assert_eq!(
            lines("What did the patient ask about travel?"),
            ["[## Visit 1] Patient asked about travel."]
        );
    }

    #[test]
    fn lines_are_cut_to_their_sentences_that_matter() {
        let doc = "- Notes: Sleep averages six hours per night on weekdays, longer on weekends. \
                   Discussed regular walking, at least thirty minutes a day. The patient came.\n\
                   - Notes: The patient sleeps longer on weekends.\n";
        let ctx = Context::text(doc);
        let q = "How long should the patient walk each day?";
        let (_, lines) = lines_with(&ctx, &key_words(q)).unwrap();
        assert_eq!(
            lines,
            ["Discussed regular walking, at least thirty minutes a day."]
        );
        let parts: Vec<&str> = sentences("A. B? C! D.E end").collect();
        assert_eq!(parts, ["A.", "B?", "C!", "D.E end"]);
    }

    #[test]
    fn many_words_keep_the_longest_and_patterns_stay_small() {
        let words = key_words("alpha beta gamma delta epsilon zeta theta iota kappa lambda");
        assert_eq!(words.len(), MAX_WORDS);
        assert!(all_of(&words[..3]).matches('|').count() == 5);
        assert!(!all_of(&words).contains('|'));
    }
}
