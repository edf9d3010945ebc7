//! Search patterns from the guest, compiled within bounds and scanned in pieces.
//!
//! A pattern is a string the guest controls, and compiling it is host work: it is refused above
//! [`MAX_PATTERN_BYTES`] before it is parsed, its syntax tree is checked for what translating it
//! would cost (Unicode classes) before it is translated, and the compiled program and its caches
//! have fixed limits. A scan of a long text checks a cancel flag as it goes (every
//! [`WINDOW_BYTES`] or so), so host work stops soon after the step that asked for it.
//!
//! How a long text is cut without changing any match: most patterns cannot match some ASCII
//! byte (`.` never matches `\n`, `\w+` never a space); a match that starts before such a byte
//! ends at or before it, so the text is searched a window at a time, each window ending at one.
//! A pattern with a bounded match length is searched in windows that overlap by that length.
//! Any other pattern (say `(?s).*` or `[^x]+`) runs on a lazy DFA stepped here a byte at a time,
//! its start found by the reverse DFA the same way; look-around at a window's edges sees the
//! real neighbouring bytes, so every match is the one a whole-text search gives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use regex_automata::hybrid::{self, LazyStateID};
use regex_automata::meta;
use regex_automata::nfa::thompson;
use regex_automata::util::iter::Searcher;
use regex_automata::util::syntax;
use regex_automata::{Input, Match, MatchError};
use regex_syntax::ast::{self, Ast, ClassSetItem};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Longest pattern the host compiles, in bytes. Real model code's patterns are a few hundred
/// bytes; the parser's syntax tree takes about 200 bytes per byte of pattern.
pub const MAX_PATTERN_BYTES: usize = 64 << 10;

/// Unicode classes (`\w`, `\p{L}`, `[^a]`, ...) one pattern may hold: each becomes up to about
/// 16 KiB of ranges when translated, so 2,048 of them bound that to 32 MiB.
const MAX_UNICODE_CLASSES: usize = 2048;

/// Deepest nesting of groups and repetitions.
const NEST_LIMIT: u32 = 100;

/// Bytes of one compiled program (the NFA), and of one lazy DFA's cache.
const PROGRAM_BYTES: usize = 8 << 20;
const DFA_CACHE_BYTES: usize = 8 << 20;

/// Bytes searched between two looks at the cancel flag (a window). At the slowest engine (the
/// PikeVM, about 10 MB/s for a complex pattern) a window is a few milliseconds of work.
pub(crate) const WINDOW_BYTES: usize = 64 << 10;

/// How far past a window's nominal end the scan looks for a byte the pattern cannot match.
const BREAK_LOOKAHEAD: usize = 1 << 20;

/// Longest match length for which overlapping windows are used.
const MAX_OVERLAP: usize = 1 << 20;

/// Why a scan ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Its cancel flag was set (the step's time ran out).
    Cancelled,
    /// The pattern needs the lazy DFA for this text, and the DFA cannot run it (a Unicode word
    /// boundary over non-ASCII text).
    TooCostly,
}

/// A compiled search pattern (see the module doc).
pub(crate) struct Pattern {
    re: meta::Regex,
    /// One search cache, so the memory a pattern holds is known (one search runs at a time per
    /// REPL).
    cache: Mutex<meta::Cache>,
    /// `breaks[b]`: no match can contain ASCII byte `b`.
    breaks: [bool; 128],
    /// Longest match in bytes, when bounded (and not too long to overlap windows by).
    max_len: Option<usize>,
    /// The forward and reverse lazy DFAs, built when a text first needs them.
    stepper: OnceLock<Option<Stepper>>,
    pattern: String,
    ignore_case: bool,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("pattern", &self.pattern)
            .field("ignore_case", &self.ignore_case)
            .finish_non_exhaustive()
    }
}

impl Pattern {
    /// Compile `pattern` (Rust regex syntax), refusing what would cost the host too much
    /// before that work starts. The error is a sentence for the model.
    pub(crate) fn compile(pattern: &str, ignore_case: bool) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "the pattern is {} bytes; the host compiles patterns of up to {} KiB. Search for \
                 a shorter pattern (or several, one at a time)",
                pattern.len(),
                MAX_PATTERN_BYTES >> 10
            ));
        }
        let invalid = |e: &dyn std::fmt::Display| {
            format!(
                "invalid search pattern (Rust regex syntax; no look-around or back-references): {e}"
            )
        };
        let tree = ast::parse::ParserBuilder::new()
            .nest_limit(NEST_LIMIT)
            .build()
            .parse(pattern)
            .map_err(|e| invalid(&e))?;
        let classes = ast::visit(&tree, UnicodeClasses::default()).unwrap_or(usize::MAX);
        if classes > MAX_UNICODE_CLASSES {
            return Err(format!(
                "the pattern has {classes} Unicode classes (such as \\w, \\d, \\p{{..}}, [^..]); \
                 the host compiles patterns with up to {MAX_UNICODE_CLASSES}"
            ));
        }
        let hir = regex_syntax::hir::translate::TranslatorBuilder::new()
            .case_insensitive(ignore_case)
            .build()
            .translate(pattern, &tree)
            .map_err(|e| invalid(&e))?;
        drop(tree);
        let re = meta::Builder::new()
            .configure(
                meta::Config::new()
                    .nfa_size_limit(Some(PROGRAM_BYTES))
                    .onepass_size_limit(Some(PROGRAM_BYTES))
                    .dfa_size_limit(Some(PROGRAM_BYTES))
                    .hybrid_cache_capacity(DFA_CACHE_BYTES),
            )
            .build_from_hir(&hir)
            .map_err(|e| invalid(&e))?;
        let breaks = unmatchable_ascii(&hir);
        let max_len = hir.properties().maximum_len().filter(|&n| n <= MAX_OVERLAP);
        drop(hir);
        let cache = Mutex::new(re.create_cache());
        Ok(Self {
            re,
            cache,
            breaks,
            max_len,
            stepper: OnceLock::new(),
            pattern: pattern.to_string(),
            ignore_case,
        })
    }

    /// Heap bytes the pattern holds: its programs and caches (a cache in use by a search counts
    /// at its limit). Never waits for a search.
    pub(crate) fn memory_usage(&self) -> usize {
        // A forward and a reverse lazy DFA cache at most, plus the smaller engines' caches.
        const IN_USE: usize = 2 * DFA_CACHE_BYTES + PROGRAM_BYTES;
        let cache = self.cache.try_lock().map_or(IN_USE, |c| c.memory_usage());
        let stepper = match self.stepper.get() {
            Some(Some(s)) => {
                s.re.forward().memory_usage()
                    + s.re.reverse().memory_usage()
                    + s.cache.try_lock().map_or(IN_USE, |c| c.memory_usage())
            }
            _ => 0,
        };
        self.re.memory_usage() + cache + stepper + self.pattern.len()
    }

    /// Every match in `hay` in order, leftmost-first and non-overlapping (as `find_iter`), as
    /// byte spans passed to `emit` until it returns false.
    pub(crate) fn for_each(
        &self,
        hay: &str,
        cancel: &AtomicBool,
        mut emit: impl FnMut(usize, usize) -> bool,
    ) -> Result<(), Stopped> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stopped = None;
        let mut searcher = Searcher::new(Input::new(hay));
        loop {
            let found = searcher.try_advance(|input| {
                if input.is_done() {
                    return Ok(None);
                }
                self.find(&mut cache, hay, input.start(), cancel)
                    .map_err(|why| {
                        stopped = Some(why);
                        MatchError::gave_up(input.start())
                    })
            });
            match found {
                Ok(Some(m)) => {
                    if !emit(m.start(), m.end()) {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(stopped.unwrap_or(Stopped::TooCostly)),
            }
        }
    }

    /// The leftmost-first match that starts at or after `at`.
    fn find(
        &self,
        cache: &mut meta::Cache,
        hay: &str,
        mut at: usize,
        cancel: &AtomicBool,
    ) -> Result<Option<Match>, Stopped> {
        let n = hay.len();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Cancelled);
            }
            if n - at <= 2 * WINDOW_BYTES {
                return Ok(self.re.search_with(cache, &Input::new(hay).span(at..n)));
            }
            let nominal = ceil_char_boundary(hay, at + WINDOW_BYTES);
            if let Some(cut) = self.break_at_or_after(hay.as_bytes(), nominal) {
                // A match that starts before `cut` cannot contain it: it ends at or before it.
                match self.re.search_with(cache, &Input::new(hay).span(at..cut)) {
                    Some(m) => return Ok(Some(m)),
                    None => at = cut,
                }
            } else if let Some(longest) = self.max_len {
                // A match that starts before `nominal` ends within `longest` bytes of it.
                let end = ceil_char_boundary(hay, nominal.saturating_add(longest).min(n));
                match self.re.search_with(cache, &Input::new(hay).span(at..end)) {
                    Some(m) if m.start() < nominal => return Ok(Some(m)),
                    _ => at = nominal,
                }
            } else {
                return self.step(hay, at, cancel);
            }
        }
    }

    /// The first byte at or after `from` (within [`BREAK_LOOKAHEAD`]) that no match can
    /// contain.
    fn break_at_or_after(&self, hay: &[u8], from: usize) -> Option<usize> {
        if !self.breaks.contains(&true) {
            return None;
        }
        let end = from.saturating_add(BREAK_LOOKAHEAD).min(hay.len());
        hay.get(from..end)?
            .iter()
            .position(|&b| b < 128 && self.breaks[usize::from(b)])
            .map(|i| from + i)
    }

    /// The leftmost-first match at or after `at`, by stepping the lazy DFAs (forward to its
    /// end, then backward to its start), looking at the cancel flag as it goes.
    fn step(&self, hay: &str, at: usize, cancel: &AtomicBool) -> Result<Option<Match>, Stopped> {
        let stepper = self
            .stepper
            .get_or_init(|| Stepper::build(&self.pattern, self.ignore_case))
            .as_ref()
            .ok_or(Stopped::TooCostly)?;
        let mut cache = stepper.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (fwd, rev) = cache.as_parts_mut();
        let Some(end) = stepper.end(fwd, hay.as_bytes(), at, cancel)? else {
            return Ok(None);
        };
        let start = stepper
            .start(rev, hay.as_bytes(), at, end, cancel)?
            .ok_or(Stopped::TooCostly)?;
        Ok(Some(Match::must(0, start..end)))
    }
}

/// A forward (leftmost-first) and a reverse (anchored, longest) lazy DFA for one pattern.
struct Stepper {
    re: hybrid::regex::Regex,
    cache: Mutex<hybrid::regex::Cache>,
}

impl Stepper {
    fn build(pattern: &str, ignore_case: bool) -> Option<Self> {
        let re = hybrid::regex::Builder::new()
            .syntax(syntax::Config::new().case_insensitive(ignore_case))
            .thompson(thompson::Config::new().nfa_size_limit(Some(PROGRAM_BYTES)))
            .dfa(
                hybrid::dfa::Config::new()
                    .cache_capacity(DFA_CACHE_BYTES)
                    .skip_cache_capacity_check(true)
                    .unicode_word_boundary(true),
            )
            .build(pattern)
            .ok()?;
        let cache = Mutex::new(re.create_cache());
        Some(Self { re, cache })
    }

    /// Where the leftmost-first match at or after `at` ends.
    fn end(
        &self,
        cache: &mut hybrid::dfa::Cache,
        hay: &[u8],
        at: usize,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>, Stopped> {
        let dfa = self.re.forward();
        let input = Input::new(hay).span(at..hay.len());
        let costly = |_| Stopped::TooCostly;
        let mut sid = dfa.start_state_forward(cache, &input).map_err(costly)?;
        let mut end = None;
        for (i, &b) in hay.iter().enumerate().skip(at) {
            if (i - at) % WINDOW_BYTES == WINDOW_BYTES - 1 && cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Cancelled);
            }
            sid = dfa
                .next_state(cache, sid, b)
                .map_err(|_| Stopped::TooCostly)?;
            // Matches show one byte late: a match state after byte `i` means a match ends at `i`.
            match classify(sid) {
                Step::Go => {}
                Step::Match => end = Some(i),
                Step::Dead => return Ok(end),
                Step::Quit => return Err(Stopped::TooCostly),
            }
        }
        sid = dfa
            .next_eoi_state(cache, sid)
            .map_err(|_| Stopped::TooCostly)?;
        if sid.is_match() {
            end = Some(hay.len());
        }
        Ok(end)
    }

    /// Where the match that ends at `end` starts (the leftmost start at or after `at`).
    fn start(
        &self,
        cache: &mut hybrid::dfa::Cache,
        hay: &[u8],
        at: usize,
        end: usize,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>, Stopped> {
        let dfa = self.re.reverse();
        let input = Input::new(hay)
            .span(at..end)
            .anchored(regex_automata::Anchored::Yes);
        let mut sid = dfa
            .start_state_reverse(cache, &input)
            .map_err(|_| Stopped::TooCostly)?;
        let mut start = None;
        for i in (at..end).rev() {
            if (end - i).is_multiple_of(WINDOW_BYTES) && cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Cancelled);
            }
            sid = dfa
                .next_state(cache, sid, hay[i])
                .map_err(|_| Stopped::TooCostly)?;
            // Reverse matches show one byte late too: a match starts at `i + 1`.
            match classify(sid) {
                Step::Go => {}
                Step::Match => start = Some(i + 1),
                Step::Dead => return Ok(start),
                Step::Quit => return Err(Stopped::TooCostly),
            }
        }
        // The byte before the span (or the text's start) settles look-behind.
        sid = match at.checked_sub(1) {
            Some(before) => dfa.next_state(cache, sid, hay[before]),
            None => dfa.next_eoi_state(cache, sid),
        }
        .map_err(|_| Stopped::TooCostly)?;
        match classify(sid) {
            Step::Match => Ok(Some(at)),
            Step::Quit => Err(Stopped::TooCostly),
            Step::Go | Step::Dead => Ok(start),
        }
    }
}

/// What a lazy DFA state means for a scan.
enum Step {
    Go,
    Match,
    Dead,
    Quit,
}

fn classify(sid: LazyStateID) -> Step {
    if !sid.is_tagged() || sid.is_start() {
        Step::Go
    } else if sid.is_match() {
        Step::Match
    } else if sid.is_dead() {
        Step::Dead
    } else if sid.is_quit() {
        Step::Quit
    } else {
        // `next_state` computes unknown transitions: an unknown state never comes back.
        Step::Go
    }
}

/// The smallest character boundary of `s` at or after `i` (or its length).
fn ceil_char_boundary(s: &str, i: usize) -> usize {
    (i.min(s.len())..=s.len())
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(s.len())
}

/// The ASCII bytes that no match of `hir` can contain: those outside every literal and class it
/// holds (look-around consumes nothing).
fn unmatchable_ascii(hir: &Hir) -> [bool; 128] {
    let mut seen = [false; 128];
    let mut stack = vec![hir];
    while let Some(h) = stack.pop() {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(lit) => {
                for &b in lit.0.iter().filter(|b| b.is_ascii()) {
                    seen[usize::from(b)] = true;
                }
            }
            HirKind::Class(Class::Unicode(c)) => {
                for r in c.iter() {
                    for ch in r.start()..=r.end().min('\x7f') {
                        seen[ch as usize] = true;
                    }
                }
            }
            HirKind::Class(Class::Bytes(c)) => {
                for r in c.iter() {
                    for b in r.start()..=r.end().min(0x7f) {
                        seen[usize::from(b)] = true;
                    }
                }
            }
            HirKind::Repetition(r) => stack.push(&r.sub),
            HirKind::Capture(c) => stack.push(&c.sub),
            HirKind::Concat(hs) | HirKind::Alternation(hs) => stack.extend(hs),
        }
    }
    seen.map(|s| !s)
}

/// Counts the Unicode classes of a syntax tree (what translating it costs most).
#[derive(Default)]
struct UnicodeClasses(usize);

impl ast::Visitor for UnicodeClasses {
    type Output = usize;
    type Err = ();

    fn finish(self) -> Result<usize, ()> {
        Ok(self.0)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
        if matches!(
            ast,
            Ast::ClassUnicode(_) | Ast::ClassPerl(_) | Ast::ClassBracketed(_)
        ) {
            self.0 += 1;
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), ()> {
        if matches!(
            item,
            ClassSetItem::Unicode(_)
                | ClassSetItem::Perl(_)
                | ClassSetItem::Bracketed(_)
                | ClassSetItem::Range(_)
        ) {
            self.0 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &Pattern, hay: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        p.for_each(hay, &AtomicBool::new(false), |s, e| {
            out.push((s, e));
            true
        })
        .unwrap();
        out
    }

    fn reference(pattern: &str, ignore_case: bool, hay: &str) -> Vec<(usize, usize)> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .build()
            .unwrap()
            .find_iter(hay)
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    /// A long text whose matches straddle window edges in every way: long lines, a line
    /// without breaks, non-ASCII characters and long runs.
    fn long_text() -> String {
        let mut s = String::new();
        for i in 0..900 {
            s.push_str(&format!("line {i}: Grüße, née Ünal — the key is {i}; "));
            if i % 7 == 0 {
                s.push_str(&"x".repeat(3000 + i));
            }
            if i % 50 == 0 {
                s.push_str(&" ".repeat(70_000));
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn windows_and_steps_find_what_a_whole_text_search_finds() {
        let text = long_text();
        assert!(text.len() > 8 * WINDOW_BYTES);
        for (pattern, ic) in [
            (r"key is \d+", false),
            (r"KEY IS \d+", true),
            (r"\bx+\b", false),
            (r"\s+", false),
            (r"(?s)line 1\d\d:.*?key", false),
            (r"(?s).", false),
            (r"[^;]+", false),
            (r"x{2,5}|\w+", false),
            (r"\d{3}", false),
            (r"(?m)^line \d+$", false),
            (r"(?m)^", false),
            (r"", false),
            (r"ü|é", true),
            (r"[\s\S]{1,300}", false),
            (r"(?s)x.{0,300}", false),
        ] {
            let p = Pattern::compile(pattern, ic).unwrap();
            assert_eq!(all(&p, &text), reference(pattern, ic, &text), "{pattern}");
        }
    }

    #[test]
    fn a_pattern_without_a_break_byte_is_stepped_and_can_be_cancelled() {
        let p = Pattern::compile(r"(?s)q.*z", false).unwrap();
        assert!(!p.breaks.contains(&true) && p.max_len.is_none());
        let text = "a".repeat(8 * WINDOW_BYTES) + "q" + &"b".repeat(3 * WINDOW_BYTES) + "z!";
        assert_eq!(all(&p, &text), reference(r"(?s)q.*z", false, &text));
        let cancel = AtomicBool::new(true);
        assert_eq!(
            p.for_each(&text, &cancel, |_, _| true),
            Err(Stopped::Cancelled)
        );
    }

    #[test]
    fn a_unicode_word_boundary_over_non_ascii_text_without_breaks_is_too_costly() {
        let p = Pattern::compile(r"(?s)\bq.*", false).unwrap();
        let text = "é".repeat(4 * WINDOW_BYTES) + " q";
        assert_eq!(
            p.for_each(&text, &AtomicBool::new(false), |_, _| true),
            Err(Stopped::TooCostly)
        );
    }

    #[test]
    fn patterns_are_bounded_before_they_are_parsed() {
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert!(
            Pattern::compile(&long, false)
                .unwrap_err()
                .contains("64 KiB")
        );
        let classes = r"\w".repeat(MAX_UNICODE_CLASSES + 1);
        assert!(
            Pattern::compile(&classes, false)
                .unwrap_err()
                .contains("Unicode classes")
        );
        let nested = "(".repeat(200) + &")".repeat(200);
        assert!(Pattern::compile(&nested, false).is_err());
        assert!(Pattern::compile("a{1000}{1000}", false).is_err());
        assert!(Pattern::compile(r"\w{3}", false).is_ok());
    }

    #[test]
    fn break_bytes_are_what_no_match_contains() {
        let p = Pattern::compile(r"\w+", false).unwrap();
        assert!(p.breaks[usize::from(b' ')] && p.breaks[usize::from(b'\n')]);
        assert!(!p.breaks[usize::from(b'a')] && !p.breaks[usize::from(b'_')]);
        let p = Pattern::compile(r"(?i)k", false).unwrap();
        assert!(!p.breaks[usize::from(b'K')]);
        let p = Pattern::compile(r"[\s\S]", false).unwrap();
        assert!(!p.breaks.contains(&true));
    }
}
