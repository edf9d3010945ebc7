//! A text document as the host serves it: its UTF-8 plus a sparse index from character offsets
//! to byte offsets, and the text operations the guest's `str` methods need, in characters.

use std::sync::atomic::{AtomicBool, Ordering};

use memchr::memmem;

use super::pattern::{Stopped, WINDOW_BYTES};
use super::text::Text;

/// Characters between two entries of a text's character → byte index.
const INDEX_STRIDE: u64 = 4096;
/// Characters of a match's line returned on each side of the match start.
const LINE_CONTEXT_CHARS: u64 = 250;

/// A text with character-offset access.
#[derive(Debug)]
pub struct TextDoc {
    pub(super) text: Text,
    pub(super) chars: u64,
    /// Characters of its JSON string form (for load-size decisions).
    pub(super) json_chars: u64,
    /// Byte offset of every `INDEX_STRIDE`-th character; empty when the text is ASCII.
    pub(super) index: Vec<u64>,
    /// Bytes per character of the text as a CPython str: 1 (Latin-1), 2 (BMP) or 4.
    pub(super) width: u8,
    /// Its distinct characters, found when first asked for (see [`TextDoc::alphabet`]).
    alphabet: std::sync::OnceLock<Option<String>>,
}

/// Most distinct characters [`TextDoc::alphabet`] reports.
pub const MAX_ALPHABET: usize = 4096;

/// Texts of at least this many bytes have their JSON escapes counted on several threads.
const PARALLEL_COUNT_BYTES: usize = 32 << 20;

/// Characters JSON escaping adds to `bytes`: one for `"`, `\\` and the control characters
/// with a short escape (`\n`, `\r`, `\t`, `\b`, `\f`), five for the other control characters
/// (`\u00XX`). A large text is counted in parts on the machine's cores (a 1 GB context: 0.26 s
/// on one core of the reference machine).
fn json_escapes(bytes: &[u8]) -> u64 {
    let threads = if bytes.len() < PARALLEL_COUNT_BYTES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    json_escapes_in_parts(bytes, threads)
}

/// [`json_escapes`] over `parts` parts of `bytes`, all but the first on threads of their own (a
/// part whose thread cannot start is counted on the calling thread).
fn json_escapes_in_parts(bytes: &[u8], parts: usize) -> u64 {
    if parts <= 1 || bytes.is_empty() {
        return json_escapes_one(bytes);
    }
    let mut pieces = bytes.chunks(bytes.len().div_ceil(parts));
    let first = pieces.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let counting: Vec<_> = pieces
            .map(|piece| {
                let thread = std::thread::Builder::new()
                    .name("rlm-index".into())
                    .spawn_scoped(scope, move || json_escapes_one(piece));
                (piece, thread)
            })
            .collect();
        let mut total = json_escapes_one(first);
        for (piece, thread) in counting {
            total += match thread {
                Ok(handle) => handle.join().unwrap_or_else(|_| json_escapes_one(piece)),
                Err(_) => json_escapes_one(piece),
            };
        }
        total
    })
}

/// [`json_escapes`] on the calling thread: counted in blocks of 255 bytes into byte-wide
/// counters, without branches, so the compiler vectorises it (several times faster than a
/// byte-by-byte branching loop).
fn json_escapes_one(bytes: &[u8]) -> u64 {
    let mut total = 0u64;
    for block in bytes.chunks(255) {
        let (mut any, mut long) = (0u8, 0u8);
        for &b in block {
            let control = b < 0x20;
            any += (control | (b == b'"') | (b == b'\\')) as u8;
            long +=
                (control & (b != b'\n') & (b != b'\r') & (b != b'\t') & (b != 8) & (b != 12)) as u8;
        }
        total += u64::from(any) + 4 * u64::from(long);
    }
    total
}

impl TextDoc {
    pub(super) fn new(text: impl Into<Text>) -> Self {
        let text = text.into();
        let bytes = text.as_bytes();
        let escapes = json_escapes(bytes);
        if text.is_ascii() {
            let chars = bytes.len() as u64;
            return Self {
                text,
                chars,
                json_chars: chars + 2 + escapes,
                index: Vec::new(),
                width: 1,
                alphabet: std::sync::OnceLock::new(),
            };
        }
        let mut index = Vec::with_capacity(bytes.len() / INDEX_STRIDE as usize + 1);
        let mut chars = 0u64;
        let mut width = 1u8;
        for (i, &b) in bytes.iter().enumerate() {
            // A lead byte tells the code point's range: C2/C3 lead U+0080..U+00FF (Latin-1),
            // up to EF the rest of the BMP, F0 and above the astral planes.
            if b >= 0xF0 {
                width = 4;
            } else if b >= 0xC4 && width < 2 {
                width = 2;
            }
            if (b & 0xC0) != 0x80 {
                if chars.is_multiple_of(INDEX_STRIDE) {
                    index.push(i as u64);
                }
                chars += 1;
            }
        }
        Self {
            text,
            chars,
            json_chars: chars + 2 + escapes,
            index,
            width,
            alphabet: std::sync::OnceLock::new(),
        }
    }

    /// The distinct characters of the text in code point order, or `None` when there are more
    /// than `MAX_ALPHABET` (4,096). One pass over the text, the first time only.
    pub fn alphabet(&self) -> Option<&str> {
        self.alphabet_within(&AtomicBool::new(false)).ok().flatten()
    }

    /// [`TextDoc::alphabet`], giving up when `cancel` is set (looked at every
    /// [`WINDOW_BYTES`]); a pass given up on is not kept.
    pub(crate) fn alphabet_within(&self, cancel: &AtomicBool) -> Result<Option<&str>, Stopped> {
        if let Some(done) = self.alphabet.get() {
            return Ok(done.as_deref());
        }
        // ASCII in a table, the rest in a set (most characters of most texts are ASCII).
        let mut ascii = [false; 128];
        let mut other = std::collections::BTreeSet::new();
        let mut found = Some(());
        for piece in windows(&self.text) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Cancelled);
            }
            if piece.is_ascii() {
                for &b in piece.as_bytes() {
                    ascii[usize::from(b)] = true;
                }
                continue;
            }
            for ch in piece.chars() {
                match u8::try_from(ch) {
                    Ok(b) if b < 128 => ascii[usize::from(b)] = true,
                    _ => {
                        if other.insert(ch) && other.len() > MAX_ALPHABET {
                            found = None;
                        }
                    }
                }
            }
            if found.is_none() {
                break;
            }
        }
        let alphabet = found.and_then(|()| {
            let alphabet: String = (0u8..128)
                .filter(|&b| ascii[usize::from(b)])
                .map(char::from)
                .chain(other)
                .collect();
            (alphabet.chars().count() <= MAX_ALPHABET).then_some(alphabet)
        });
        Ok(self.alphabet.get_or_init(|| alphabet).as_deref())
    }

    /// Whether every character is ASCII (then byte offsets are character offsets).
    pub fn is_ascii(&self) -> bool {
        // Only an ASCII text is indexed without a table of character offsets.
        self.index.is_empty()
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Length in characters.
    pub fn chars(&self) -> u64 {
        self.chars
    }

    /// Byte offset of character `ch` (clamped to the end).
    pub fn byte_of(&self, ch: u64) -> usize {
        if ch >= self.chars {
            return self.text.len();
        }
        if self.index.is_empty() {
            return ch as usize;
        }
        let block = (ch / INDEX_STRIDE) as usize;
        let mut byte = self.index[block] as usize;
        let mut left = ch % INDEX_STRIDE;
        let bytes = self.text.as_bytes();
        while left > 0 {
            byte += 1;
            while byte < bytes.len() && (bytes[byte] & 0xC0) == 0x80 {
                byte += 1;
            }
            left -= 1;
        }
        byte
    }

    /// Character offset of byte `byte` (which must be a character boundary).
    pub fn char_of(&self, byte: usize) -> u64 {
        if self.index.is_empty() {
            return byte as u64;
        }
        let block = self
            .index
            .partition_point(|&b| b as usize <= byte)
            .saturating_sub(1);
        block as u64 * INDEX_STRIDE + self.chars_between(self.index[block] as usize, byte)
    }

    /// Characters in bytes `a..b` (both character boundaries).
    pub fn chars_between(&self, a: usize, b: usize) -> u64 {
        if self.index.is_empty() {
            return (b - a) as u64;
        }
        self.text.as_bytes()[a..b]
            .iter()
            .filter(|&&x| (x & 0xC0) != 0x80)
            .count() as u64
    }

    /// Characters `start..end` (clamped).
    pub fn slice(&self, start: u64, end: u64) -> &str {
        let end = end.min(self.chars);
        let start = start.min(end);
        &self.text[self.byte_of(start)..self.byte_of(end)]
    }

    /// Character offset of `needle` within characters `start..end` (the first, or the last
    /// when `reverse`), looking at `cancel` every [`SUBSTRING_WINDOW`].
    pub(crate) fn find(
        &self,
        needle: &str,
        start: u64,
        end: u64,
        reverse: bool,
        cancel: &AtomicBool,
    ) -> Result<Option<u64>, Stopped> {
        let end = end.min(self.chars);
        if start > end {
            return Ok(None);
        }
        let (bs, be) = (self.byte_of(start), self.byte_of(end));
        let bytes = self.text.as_bytes();
        // A match that starts in a window ends within `needle.len()` bytes after it. (Matches
        // of UTF-8 in UTF-8 start on character boundaries, so the windows need not.)
        let reach = needle.len().saturating_sub(1);
        let hit = if reverse {
            let finder = memmem::FinderRev::new(needle);
            let mut hi = be;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Stopped::Cancelled);
                }
                let lo = hi.saturating_sub(SUBSTRING_WINDOW).max(bs);
                let top = hi.saturating_add(reach).min(be);
                if let Some(i) = finder.rfind(&bytes[lo..top]) {
                    break Some(lo + i);
                }
                if lo == bs {
                    break None;
                }
                hi = lo;
            }
        } else {
            let finder = memmem::Finder::new(needle);
            let mut lo = bs;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Stopped::Cancelled);
                }
                let hi = lo.saturating_add(SUBSTRING_WINDOW).min(be);
                let top = hi.saturating_add(reach).min(be);
                if let Some(i) = finder.find(&bytes[lo..top]) {
                    break Some(lo + i);
                }
                if hi >= be {
                    break None;
                }
                lo = hi;
            }
        };
        Ok(hit.map(|b| start + self.chars_between(bs, b)))
    }

    /// Non-overlapping occurrences of `needle` in characters `start..end` (Python semantics for
    /// an empty needle: one more than the characters in the range), looking at `cancel` every
    /// [`SUBSTRING_WINDOW`].
    pub(crate) fn count(
        &self,
        needle: &str,
        start: u64,
        end: u64,
        cancel: &AtomicBool,
    ) -> Result<u64, Stopped> {
        let end = end.min(self.chars);
        if start > end {
            return Ok(0);
        }
        if needle.is_empty() {
            return Ok(end - start + 1);
        }
        let (bs, be) = (self.byte_of(start), self.byte_of(end));
        let bytes = self.text.as_bytes();
        let finder = memmem::Finder::new(needle);
        let reach = needle.len() - 1;
        let (mut count, mut at) = (0u64, bs);
        while at < be {
            if cancel.load(Ordering::Relaxed) {
                return Err(Stopped::Cancelled);
            }
            // The matches that start before `hi`, then on from where the last one ended.
            let hi = at.saturating_add(SUBSTRING_WINDOW).min(be);
            let top = hi.saturating_add(reach).min(be);
            let mut next = hi;
            let mut from = at;
            while let Some(i) = finder.find(&bytes[from..top]) {
                if from + i >= hi {
                    break;
                }
                count += 1;
                from += i + needle.len();
                next = next.max(from);
            }
            at = next;
        }
        Ok(count)
    }

    /// The line around character `at`: up to 250 characters on each side, stopping at line ends.
    pub fn line_around(&self, at: u64) -> String {
        let lo = at.saturating_sub(LINE_CONTEXT_CHARS);
        let hi = (at + LINE_CONTEXT_CHARS).min(self.chars);
        let (blo, bat, bhi) = (self.byte_of(lo), self.byte_of(at), self.byte_of(hi));
        let before = &self.text[blo..bat];
        let after = &self.text[bat..bhi];
        let from = before.rfind('\n').map_or(blo, |i| blo + i + 1);
        let to = after.find('\n').map_or(bhi, |i| bat + i);
        self.text[from..to].trim_end_matches('\r').to_string()
    }
}

/// Bytes a substring search (`find`, `count`) scans between two looks at its cancel flag: a
/// fraction of a millisecond at memchr's speed.
const SUBSTRING_WINDOW: usize = 1 << 20;

/// `text` in pieces of about [`WINDOW_BYTES`], cut at character boundaries.
fn windows(text: &str) -> impl Iterator<Item = &str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        (at < text.len()).then(|| {
            let end = ceil_char_boundary(text, at + WINDOW_BYTES);
            let piece = &text[at..end];
            at = end;
            piece
        })
    })
}

/// The smallest character boundary of `s` at or after `i` (or its length).
pub(crate) fn ceil_char_boundary(s: &str, i: usize) -> usize {
    (i.min(s.len())..=s.len())
        .find(|&j| s.is_char_boundary(j))
        .unwrap_or(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_size_counts_every_escape_across_blocks() {
        // Every ASCII byte, at every offset of a 255-byte block, plus non-ASCII text.
        let all: String = (0u8..128).map(char::from).collect();
        for text in [
            all.repeat(9),
            format!("{}\u{1}\"\\\n", "x".repeat(254)),
            format!("é{}\u{1f}", all.repeat(3)),
            String::new(),
        ] {
            let json = serde_json::to_string(&text).unwrap();
            let escapes = (json.chars().count() - text.chars().count() - 2) as u64;
            for parts in [2, 3, 7] {
                assert_eq!(json_escapes_in_parts(text.as_bytes(), parts), escapes);
            }
            let doc = TextDoc::new(text);
            assert_eq!(doc.json_chars, json.chars().count() as u64);
        }
    }

    #[test]
    fn the_alphabet_holds_each_character_once_in_code_point_order() {
        assert_eq!(TextDoc::new("banana\n").alphabet(), Some("\nabn"));
        assert_eq!(
            TextDoc::new("Straße, café; 日本 ß é").alphabet(),
            Some(" ,;Sacefrtßé日本")
        );
        let many: String = (0x4E00u32..0x4E00 + MAX_ALPHABET as u32 + 1)
            .filter_map(char::from_u32)
            .collect();
        assert_eq!(TextDoc::new(many.clone()).alphabet(), None);
        assert!(TextDoc::new(many[3..].to_string()).alphabet().is_some());
    }

    #[test]
    fn unicode_offsets_match_code_points() {
        let s = "héllo wörld 日本語 𝄞 done ".repeat(500);
        let t = TextDoc::new(s.clone());
        let chars: Vec<char> = s.chars().collect();
        assert_eq!(t.chars(), chars.len() as u64);
        for (a, b) in [
            (0, 5),
            (3, 20),
            (4095, 4099),
            (4096, 8200),
            (100, chars.len()),
        ] {
            let want: String = chars[a..b].iter().collect();
            assert_eq!(t.slice(a as u64, b as u64), want);
        }
        let pos = s.find("𝄞").map(|b| s[..b].chars().count() as u64);
        assert_eq!(
            t.find("𝄞", 0, u64::MAX, false, &AtomicBool::new(false)),
            Ok(pos)
        );
        assert_eq!(t.char_of(t.byte_of(5000)), 5000);
    }

    #[test]
    fn count_and_find_follow_python() {
        let go = AtomicBool::new(false);
        let t = TextDoc::new("aaaa");
        assert_eq!(t.count("aa", 0, 4, &go), Ok(2));
        assert_eq!(t.count("", 0, 4, &go), Ok(5));
        assert_eq!(t.find("", 2, 4, false, &go), Ok(Some(2)));
        assert_eq!(t.find("", 0, 4, true, &go), Ok(Some(4)));
        assert_eq!(t.find("b", 0, 4, false, &go), Ok(None));
    }

    #[test]
    fn count_and_find_across_windows_agree_with_str_and_stop_when_cancelled() {
        // Runs of the needle's letters straddle every window edge; characters of 1 to 4 bytes.
        let unit = "aaé日ab🙂a";
        let text = unit.repeat(3 * SUBSTRING_WINDOW / unit.len() + 7);
        let t = TextDoc::new(text.as_str());
        let go = AtomicBool::new(false);
        let chars = text.chars().count() as u64;
        for needle in ["a", "aa", "aaé", "é日ab🙂", "🙂aaa", "b🙂aaé日", "zz"] {
            assert_eq!(
                t.count(needle, 0, chars, &go),
                Ok(text.matches(needle).count() as u64)
            );
            let first = text.find(needle).map(|b| text[..b].chars().count() as u64);
            let last = text.rfind(needle).map(|b| text[..b].chars().count() as u64);
            assert_eq!(t.find(needle, 0, chars, false, &go), Ok(first), "{needle}");
            assert_eq!(t.find(needle, 0, chars, true, &go), Ok(last), "{needle}");
            // A range that starts and ends inside runs.
            let (a, b) = (3, chars - 5);
            let part: String = text.chars().skip(3).take((b - a) as usize).collect();
            assert_eq!(
                t.count(needle, a, b, &go),
                Ok(part.matches(needle).count() as u64)
            );
        }
        let stop = AtomicBool::new(true);
        assert_eq!(t.count("zz", 0, chars, &stop), Err(Stopped::Cancelled));
        assert_eq!(t.find("zz", 0, chars, true, &stop), Err(Stopped::Cancelled));
        assert_eq!(t.alphabet_within(&stop), Err(Stopped::Cancelled));
        assert_eq!(t.alphabet(), Some("ab\u{e9}\u{65e5}\u{1f642}"));
    }
}
