//! Regular-expression search of a context: below any node, in document order, with character
//! offsets.

use std::sync::atomic::{AtomicBool, Ordering};

use regex::RegexBuilder;

use super::{Context, LocalId, Node, TextDoc};

impl Context {
    /// Regex search below `id`, in document order, calling `emit` for each match until it
    /// returns false.
    pub(crate) fn search(
        &self,
        id: LocalId,
        re: &regex::Regex,
        path: &mut Vec<PathStep>,
        emit: &mut EmitMatch<'_>,
    ) -> bool {
        match self.node(id) {
            Some(Node::Text(t)) => {
                for m in re.find_iter(t.as_str()) {
                    if !emit(path, t, m.start(), m.end()) {
                        return false;
                    }
                }
                true
            }
            Some(Node::Sequence { items, .. }) => {
                for (i, &item) in items.iter().enumerate() {
                    path.push(PathStep::Index(i as u64));
                    let go_on = self.search(item, re, path, emit);
                    path.pop();
                    if !go_on {
                        return false;
                    }
                }
                true
            }
            Some(Node::Mapping { entries, .. }) => {
                for (k, v) in entries {
                    path.push(PathStep::Key(k.clone()));
                    let go_on = self.search(*v, re, path, emit);
                    path.pop();
                    if !go_on {
                        return false;
                    }
                }
                true
            }
            _ => true,
        }
    }
}

/// Receives each match of a search: (path, text, start byte, end byte); returns whether to go on.
pub(crate) type EmitMatch<'a> = dyn FnMut(&[PathStep], &TextDoc, usize, usize) -> bool + 'a;

/// One step of the path from a searched node to a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// An index into a sequence.
    Index(u64),
    /// A key of a mapping.
    Key(String),
}

/// One regex match, with character offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// Path from the searched node to the text the match is in.
    pub path: Vec<PathStep>,
    /// Character offset of the match start in its text.
    pub start: u64,
    /// Character offset just past the match.
    pub end: u64,
    /// The matched text, cut to the requested length.
    pub text: String,
    /// The line around the match start (at most ~500 characters).
    pub line: String,
}

/// Build a regex with the sandbox's safety limits (bounded compiled size).
pub(crate) fn build_regex(pattern: &str, ignore_case: bool) -> Result<regex::Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        // Explicit bounds on what one pattern may cost: its compiled program and the lazy DFA
        // cache (each REPL keeps a few compiled patterns).
        .size_limit(8 << 20)
        .dfa_size_limit(8 << 20)
        .build()
        .map_err(|e| {
            format!(
                "invalid search pattern (Rust regex syntax; no look-around or back-references): {e}"
            )
        })
}

/// The first `max` matches of `re` in text node `id`, as character offsets flat as
/// `[start0, end0, ...]`; `None` when the node is not a text or `cancel` was set.
pub(crate) fn text_spans(
    ctx: &Context,
    id: LocalId,
    re: &regex::Regex,
    max: usize,
    cancel: &AtomicBool,
) -> Option<Vec<u64>> {
    let Some(Node::Text(text)) = ctx.node(id) else {
        return None;
    };
    let mut spans = Vec::new();
    // Byte offsets become character offsets by counting on from the last match.
    let (mut byte, mut ch) = (0usize, 0u64);
    let mut to_char = |b: usize| {
        ch += text.chars_between(byte, b);
        byte = b;
        ch
    };
    for (i, m) in re.find_iter(text.as_str()).take(max).enumerate() {
        if i % 1024 == 1023 && cancel.load(Ordering::Relaxed) {
            return None;
        }
        let start = to_char(m.start());
        let end = to_char(m.end());
        spans.extend([start, end]);
    }
    Some(spans)
}

/// Search a context below `id`: up to `max_results` hits, whose strings add up to at most
/// `max_bytes`.
pub(crate) fn search_hits(
    ctx: &Context,
    id: LocalId,
    re: &regex::Regex,
    max_results: usize,
    max_match_chars: u64,
    max_bytes: usize,
    cancel: &AtomicBool,
) -> Vec<SearchHit> {
    let mut hits = Vec::new();
    let mut bytes = 0usize;
    let mut path = Vec::new();
    // Matches come in order within one text: convert byte offsets incrementally.
    let mut cursor: Option<(usize, usize, u64)> = None;
    ctx.search(id, re, &mut path, &mut |path, text, bs, be| {
        if hits.len() >= max_results || cancel.load(Ordering::Relaxed) {
            return false;
        }
        let key = text as *const TextDoc as usize;
        let (start, end) = match cursor {
            Some((k, b, c)) if k == key && b <= bs => {
                let start = c + text.chars_between(b, bs);
                (start, start + text.chars_between(bs, be))
            }
            _ => {
                let start = text.char_of(bs);
                (start, start + text.chars_between(bs, be))
            }
        };
        cursor = Some((key, bs, start));
        let cut = text.byte_of((start + max_match_chars).min(end));
        let matched = text.as_str()[bs..cut.max(bs)].to_string();
        let line = text.line_around(start);
        // Everything that crosses into the guest counts: the path's keys too.
        let path_bytes: usize = path
            .iter()
            .map(|p| match p {
                PathStep::Key(k) => k.len() + 16,
                PathStep::Index(_) => 16,
            })
            .sum();
        bytes += matched.len() + line.len() + path_bytes + 64;
        if bytes > max_bytes {
            return false;
        }
        hits.push(SearchHit {
            path: path.to_vec(),
            start,
            end,
            text: matched,
            line,
        });
        true
    });
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_reports_char_offsets_and_paths() {
        let ctx = Context::documents(["ünïcode needle", "plain needle\nnext"]);
        let re = build_regex("needle", false).unwrap();
        let hits = search_hits(&ctx, 0, &re, 10, 100, 1 << 20, &AtomicBool::new(false));
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].start, hits[0].end), (8, 14));
        assert_eq!(hits[0].path, vec![PathStep::Index(0)]);
        assert_eq!(hits[1].line, "plain needle");
    }
}
