//! Whether a small model's final answer comes from what its run printed.
//!
//! Small models (0.5B–1.5B) copy: asked for a record number after a search printed it, a 0.5B
//! model answered `A-`, the blood type in its prompt's worked example; asked about a drug
//! allergy, it answered `2` (from the example's "2 matches"). An answer written in the reply
//! (`FINAL(...)`, not computed by code) whose words appear in none of the run's outputs and
//! are not the question's own is questioned once, with the question and the latest output,
//! before it is accepted: the second answer is taken whatever it is.

use std::collections::HashSet;

/// Bytes of printed output kept to check answers against (the outputs of one run's steps are
/// capped already; this bounds a long run).
const MAX_SEEN_BYTES: usize = 1 << 20;

/// Words that say nothing about where an answer came from.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "answer", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it",
    "its", "of", "on", "or", "the", "their", "this", "to", "was", "were", "with",
];

/// Answers that no output can show (a yes or no): never questioned.
const UNCHECKABLE: &[&str] = &["yes", "no", "true", "false"];

/// The words the run's outputs printed, to check final answers against.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    words: HashSet<String>,
    bytes: usize,
}

impl Seen {
    /// Take in one step's output (as the model was shown it). Lines that count matches
    /// ("3 matches") and the REPL's own notes about a search ("search: ...") say nothing about
    /// the document: a count printed there is not a fact an answer can rest on.
    pub(crate) fn add(&mut self, output: &str) {
        if self.bytes >= MAX_SEEN_BYTES {
            return;
        }
        let take = floor_boundary(output, MAX_SEEN_BYTES - self.bytes);
        self.bytes += take.len();
        for line in take.lines().filter(|l| !is_scaffold(l)) {
            self.words.extend(whole_words(line));
        }
    }

    /// How far `answer` (written by the model, not computed) rests on what the run printed: see
    /// [`Grounding`]. A yes or no, and answers with no words, cannot be checked and count as
    /// grounded.
    pub(crate) fn grounding(&self, answer: &str, question: &str) -> Grounding {
        let all: Vec<String> = words(answer).collect();
        if all.is_empty() || all.iter().all(|w| UNCHECKABLE.contains(&w.as_str())) {
            return Grounding::Grounded;
        }
        let asked: HashSet<String> = words(question).collect();
        let own: Vec<&String> = all
            .iter()
            .filter(|w| !asked.contains(*w) && !STOPWORDS.contains(&w.as_str()))
            .collect();
        // Nothing but the question's words: not an answer to it.
        if !own.iter().any(|w| self.words.contains(*w)) {
            return Grounding::Not;
        }
        let numbers_printed = own
            .iter()
            .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
            .all(|w| self.words.contains(*w));
        if numbers_printed {
            Grounding::Grounded
        } else {
            Grounding::Partly
        }
    }
}

/// How far a final answer rests on what the run printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grounding {
    /// Some word of the answer that is not the question's own was printed, and so was every
    /// number of it.
    Grounded,
    /// Some word was printed, but a number of the answer never was: a count or a date copied
    /// from elsewhere, or a number written out ("2" for "two").
    Partly,
    /// None of the answer's own words was printed.
    Not,
}

/// Whether `line` is a count of matches or a note of the REPL's `search()`, not the document's
/// text.
fn is_scaffold(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("search: ")
        || line.split_once(' ').is_some_and(|(n, rest)| {
            n.bytes().all(|b| b.is_ascii_digit()) && matches!(rest.trim(), "matches" | "match")
        })
}

/// The words of one printed line, less the pieces of words a cut left at `...` (a snippet's
/// edges: `...hyroidism` is not a word the document printed).
fn whole_words(line: &str) -> Vec<String> {
    let pieces: Vec<&str> = line.split("...").collect();
    let last = pieces.len() - 1;
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let mut ws: Vec<String> = words(piece).collect();
        if i < last && piece.ends_with(char::is_alphanumeric) {
            ws.pop();
        }
        if i > 0 && piece.starts_with(char::is_alphanumeric) && !ws.is_empty() {
            ws.remove(0);
        }
        out.extend(ws);
    }
    out
}

/// The lower-cased words (runs of letters and digits) of `text`.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn floor_boundary(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(outputs: &[&str]) -> Seen {
        let mut s = Seen::default();
        for o in outputs {
            s.add(o);
        }
        s
    }

    #[test]
    fn answers_copied_from_elsewhere_are_not_grounded() {
        use Grounding::*;
        let s = seen(&[
            "1 matches\n...Never smoked. New drug allergy recorded: sulfamethoxazole-trimethoprim \
             caused a widespread itchy rash within two days of starting it...",
        ]);
        let q = "Which new drug allergy was recorded for the patient, and what did the drug cause?";
        let g = |a: &str| s.grounding(a, q);
        assert_eq!(g("2"), Not, "a number from the prompt's example");
        assert_eq!(g("A-"), Not, "the example's blood type");
        assert_eq!(g("The new drug allergy"), Not, "only the question's words");
        assert_eq!(
            g("1"),
            Not,
            "a count of matches is not a fact of the document"
        );
        assert_eq!(
            g("sulfamethoxazole-trimethoprim, which caused a rash"),
            Grounded
        );
        assert_eq!(g("It caused an itchy RASH."), Grounded);
        assert_eq!(g("a rash within 2 days"), Partly, "a number never printed");
        for unchecked in ["yes", "No.", ""] {
            assert_eq!(g(unchecked), Grounded);
        }
        let s = seen(&["search: no match for 'X' as written; 1 ignoring case\n0 matches"]);
        assert_eq!(s.grounding("0", q), Not);
        assert_eq!(s.grounding("1", q), Not);
        let s = seen(&["items: 31\n31 yes"]);
        assert_eq!(
            s.grounding("31", q),
            Grounded,
            "a number the code computed and printed"
        );
        let s = seen(&["...hyroidism. Sex: female. Visit 12 and two days...x"]);
        assert_eq!(
            s.grounding("hyroidism", q),
            Not,
            "a word cut by a snippet's edge"
        );
        assert_eq!(s.grounding("female", q), Grounded);
        assert_eq!(s.grounding("Visit 12", q), Grounded);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let mut s = Seen::default();
        let big = "é word ".repeat(MAX_SEEN_BYTES);
        s.add(&big);
        s.add("later");
        assert!(s.bytes <= MAX_SEEN_BYTES);
        assert!(!s.words.contains("later"));
    }
}
