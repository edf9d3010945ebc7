//! Noticing when the root model repeats itself: the same code printing the same output, or
//! the same reply word for word.
//!
//! A model that decodes greedily (most local models, and hosted ones at temperature 0) gives
//! the same reply to the same conversation, so once it re-sends a block whose output it has
//! already seen, nothing can change by itself. The loop uses [`Repeats`] to tell the model so
//! and to ask for a sampled (not greedy) reply next. Only repetition is looked at, never what
//! the question or the output says.

use std::collections::HashMap;

/// A step that repeated an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repeat {
    /// The iteration that first ran this code with this output.
    pub first_iteration: u32,
    /// How many times it has run with this output, this time included (2 or more).
    pub times: u32,
}

/// What one RLM has run and replied so far, as hashes (a few dozen bytes per step).
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    /// Code (normalised) → (first iteration, hash of its last output, times run with it).
    steps: HashMap<blake3::Hash, (u32, blake3::Hash, u32)>,
    /// Reply text → (the iteration that first sent it, times sent).
    replies: HashMap<blake3::Hash, (u32, u32)>,
}

impl Repeats {
    /// Record that `code` printed `output` in `iteration`; if the same code printed the same
    /// output before, say when and how often. Code that prints something new (the REPL's state
    /// changed) starts counting afresh.
    pub(crate) fn step(&mut self, code: &str, output: &str, iteration: u32) -> Option<Repeat> {
        let out = blake3::hash(output.as_bytes());
        let entry = self
            .steps
            .entry(blake3::hash(normalise(code).as_bytes()))
            .or_insert((iteration, out, 0));
        if entry.1 != out {
            *entry = (iteration, out, 0);
        }
        entry.2 += 1;
        (entry.2 > 1).then_some(Repeat {
            first_iteration: entry.0,
            times: entry.2,
        })
    }

    /// Record a reply; if the same text was sent before, when first and how often.
    pub(crate) fn reply(&mut self, text: &str, iteration: u32) -> Option<Repeat> {
        let entry = self
            .replies
            .entry(blake3::hash(text.trim().as_bytes()))
            .or_insert((iteration, 0));
        entry.1 += 1;
        (entry.1 > 1).then_some(Repeat {
            first_iteration: entry.0,
            times: entry.1,
        })
    }
}

/// Code with trailing spaces, blank lines and surrounding whitespace removed: two blocks that
/// differ only there run the same way.
fn normalise(code: &str) -> String {
    code.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_code_and_output_is_a_repeat() {
        let mut r = Repeats::default();
        assert_eq!(r.step("print(1)", "1", 1), None);
        assert_eq!(
            r.step("print(1)  \n\n", "1", 2),
            Some(Repeat {
                first_iteration: 1,
                times: 2
            })
        );
        assert_eq!(
            r.step("print(1)", "1", 5),
            Some(Repeat {
                first_iteration: 1,
                times: 3
            })
        );
    }

    #[test]
    fn new_output_or_new_code_is_not_a_repeat() {
        let mut r = Repeats::default();
        assert_eq!(r.step("x += 1; print(x)", "1", 1), None);
        assert_eq!(r.step("x += 1; print(x)", "2", 2), None);
        assert_eq!(r.step("print(x)", "2", 3), None);
        assert_eq!(
            r.step("x += 1; print(x)", "2", 4),
            Some(Repeat {
                first_iteration: 2,
                times: 2
            })
        );
    }

    #[test]
    fn identical_replies_are_noticed() {
        let mut r = Repeats::default();
        assert_eq!(r.reply("look", 1), None);
        assert_eq!(r.reply("other", 2), None);
        let again = |first_iteration, times| {
            Some(Repeat {
                first_iteration,
                times,
            })
        };
        assert_eq!(r.reply(" look\n", 3), again(1, 2));
        assert_eq!(r.reply("look", 4), again(1, 3));
    }
}
