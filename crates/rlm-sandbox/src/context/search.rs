//! Regular-expression search of a context: below any node, in document order, with character
//! offsets.

use std::sync::atomic::{AtomicBool, Ordering};

use super::pattern::{Pattern, Stopped};
use super::{Context, LocalId, Node, TextDoc};

/// Nodes of a context walked between two looks at the cancel flag.
const NODES_PER_CHECK: usize = 256;

impl Context {
    /// Search the whole context from the host, as `search()` does for model code: up to `max`
    /// matches of `pattern` (Rust regex syntax, refused as the guest's patterns are when it
    /// costs too much), each with its text (up to 200 characters) and line. The error is a
    /// sentence.
    pub fn find_hits(
        &self,
        pattern: &str,
        ignore_case: bool,
        max: usize,
    ) -> Result<Vec<SearchHit>, String> {
        let pattern = Pattern::compile(pattern, ignore_case)?;
        let request = SearchRequest {
            max_results: max,
            max_match_chars: 200,
            max_bytes: 16 << 20,
            range: None,
        };
        search_hits(self, 0, &pattern, request, &AtomicBool::new(false))
            .map_err(|_| "the pattern is too costly to search this context with".to_string())
    }

    /// Regex search below `id`, in document order, calling `emit` for each match until it
    /// returns false (then `Ok(false)`). `range` (characters) limits the search of a text node
    /// `id` to that slice, which is searched as a text of its own (`^` and `\b` see its edges
    /// as a text's edges, as Python's `re` over `text[a:b]` does); it is ignored below other
    /// nodes.
    pub(crate) fn search(
        &self,
        id: LocalId,
        pattern: &Pattern,
        range: Option<(u64, u64)>,
        emit: &mut EmitMatch<'_>,
        cancel: &AtomicBool,
    ) -> Result<bool, Stopped> {
        let mut walk = Walk {
            path: Vec::new(),
            nodes: 0,
            cancel,
        };
        walk.node(self, id, pattern, range, emit)
    }
}

/// The state of one search's walk over a context tree.
struct Walk<'c> {
    path: Vec<PathStep>,
    nodes: usize,
    cancel: &'c AtomicBool,
}

impl Walk<'_> {
    fn node(
        &mut self,
        ctx: &Context,
        id: LocalId,
        pattern: &Pattern,
        range: Option<(u64, u64)>,
        emit: &mut EmitMatch<'_>,
    ) -> Result<bool, Stopped> {
        self.nodes += 1;
        if self.nodes.is_multiple_of(NODES_PER_CHECK) && self.cancel.load(Ordering::Relaxed) {
            return Err(Stopped::Cancelled);
        }
        match ctx.node(id) {
            Some(Node::Text(t)) => {
                let (from, to) = match range {
                    Some((a, b)) => {
                        let b = b.min(t.chars());
                        (t.byte_of(a.min(b)), t.byte_of(b))
                    }
                    None => (0, t.as_str().len()),
                };
                let mut go_on = true;
                pattern.for_each(&t.as_str()[from..to], self.cancel, |s, e| {
                    go_on = emit(&self.path, t, from + s, from + e);
                    go_on
                })?;
                Ok(go_on)
            }
            Some(Node::Sequence { items, .. }) => {
                for (i, &item) in items.iter().enumerate() {
                    self.path.push(PathStep::Index(i as u64));
                    let go_on = self.node(ctx, item, pattern, None, emit);
                    self.path.pop();
                    if !go_on? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Some(Node::Mapping { entries, .. }) => {
                for (k, v) in entries {
                    self.path.push(PathStep::Key(k.clone()));
                    let go_on = self.node(ctx, *v, pattern, None, emit);
                    self.path.pop();
                    if !go_on? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            _ => Ok(true),
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

/// The first `max` matches of `pattern` in text node `id`, as character offsets flat as
/// `[start0, end0, ...]`; `Ok(None)` when the node is not a text.
pub(crate) fn text_spans(
    ctx: &Context,
    id: LocalId,
    pattern: &Pattern,
    max: usize,
    cancel: &AtomicBool,
) -> Result<Option<Vec<u64>>, Stopped> {
    let Some(Node::Text(text)) = ctx.node(id) else {
        return Ok(None);
    };
    let mut spans = Vec::new();
    // Byte offsets become character offsets by counting on from the last match.
    let (mut byte, mut ch) = (0usize, 0u64);
    let mut to_char = |b: usize| {
        ch += text.chars_between(byte, b);
        byte = b;
        ch
    };
    if max > 0 {
        pattern.for_each(text.as_str(), cancel, |s, e| {
            let start = to_char(s);
            let end = to_char(e);
            spans.extend([start, end]);
            spans.len() < 2 * max
        })?;
    }
    Ok(Some(spans))
}

/// What one `search` call asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchRequest {
    /// Hits at most.
    pub max_results: usize,
    /// Characters of each match's text returned at most.
    pub max_match_chars: u64,
    /// Bytes of all hits' strings at most.
    pub max_bytes: usize,
    /// Characters of a text node to search (see [`Context::search`]).
    pub range: Option<(u64, u64)>,
}

/// Search a context below `id`: up to `max_results` hits, whose strings add up to at most
/// `max_bytes`.
pub(crate) fn search_hits(
    ctx: &Context,
    id: LocalId,
    pattern: &Pattern,
    request: SearchRequest,
    cancel: &AtomicBool,
) -> Result<Vec<SearchHit>, Stopped> {
    let SearchRequest {
        max_results,
        max_match_chars,
        max_bytes,
        range,
    } = request;
    let mut hits = Vec::new();
    if max_results == 0 {
        return Ok(hits);
    }
    let mut bytes = 0usize;
    // Matches come in order within one text: convert byte offsets incrementally.
    let mut cursor: Option<(usize, usize, u64)> = None;
    let mut emit = |path: &[PathStep], text: &TextDoc, bs: usize, be: usize| {
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
        hits.len() < max_results
    };
    ctx.search(id, pattern, range, &mut emit, cancel)?;
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_reports_char_offsets_and_paths() {
        let ctx = Context::documents(["ünïcode needle", "plain needle\nnext"]);
        let pattern = Pattern::compile("needle", false).unwrap();
        let request = SearchRequest {
            max_results: 10,
            max_match_chars: 100,
            max_bytes: 1 << 20,
            range: None,
        };
        let hits = search_hits(&ctx, 0, &pattern, request, &AtomicBool::new(false)).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].start, hits[0].end), (8, 14));
        assert_eq!(hits[0].path, vec![PathStep::Index(0)]);
        assert_eq!(hits[1].line, "plain needle");
    }
}
