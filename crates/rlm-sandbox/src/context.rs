//! The documents a REPL works over, held once on the host.
//!
//! A [`Context`] is a tree of nodes (text, sequence, mapping, JSON scalar) stored in one arena.
//! Text nodes keep their UTF-8 bytes plus a sparse index from character offsets to byte
//! offsets, so every offset the guest sees is in characters (code points), exactly as Python's
//! `str` counts them, whatever the script of the text.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use regex::RegexBuilder;
use serde_json::Value;

use crate::error::SandboxError;
use crate::text::Text;

/// Characters between two entries of a text's character → byte index.
const INDEX_STRIDE: u64 = 4096;
/// Characters of a match's line returned on each side of the match start.
const LINE_CONTEXT_CHARS: u64 = 250;

/// Index of a node inside one [`Context`].
pub(crate) type LocalId = u32;

/// A document (or set of documents) that sandboxes read from.
///
/// Cheap to share: wrap it in an `Arc` and hand the same `Arc` to every sandbox that reads it.
#[derive(Debug)]
pub struct Context {
    nodes: Vec<Node>,
    guest_bytes: u64,
}

/// One node of a context tree.
#[derive(Debug)]
pub(crate) enum Node {
    Text(TextDoc),
    Sequence {
        items: Vec<LocalId>,
        json_chars: u64,
    },
    Mapping {
        entries: Vec<(String, LocalId)>,
        json_chars: u64,
    },
    Scalar {
        value: Value,
        json_chars: u64,
    },
}

/// A context file's content, parsed for its format but not yet indexed.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextData {
    /// A text document (a large file's is mapped, not copied: see [`Text::map_file`]).
    Text(Text),
    /// JSON (a `.json` value, or the list of a `.jsonl` file's lines).
    Json(Value),
}

/// How to read a context file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextFormat {
    /// By extension: `.json` JSON, `.jsonl` JSON Lines, anything else text.
    #[default]
    Auto,
    /// One text document.
    Text,
    /// One JSON value.
    Json,
    /// One JSON value per line, as a list.
    Jsonl,
}

/// Kind of a context, as the system prompt describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextShape {
    /// One text of this many characters.
    Text { chars: u64 },
    /// A list of documents/values; the characters of each text item (0 for non-text items).
    List { item_chars: Vec<u64> },
    /// A JSON object with this many keys.
    Object { keys: u64 },
    /// A JSON scalar.
    Scalar,
}

impl Context {
    /// A single text document.
    pub fn text(text: impl Into<Text>) -> Arc<Self> {
        Self::from_nodes(vec![Node::Text(TextDoc::new(text.into()))])
    }

    /// A list of text documents.
    pub fn documents<I, S>(docs: I) -> Arc<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nodes = vec![Node::Scalar {
            value: Value::Null,
            json_chars: 0,
        }];
        let mut items = Vec::new();
        let mut json_chars = 2u64;
        for (i, doc) in docs.into_iter().enumerate() {
            let text = TextDoc::new(doc.into());
            json_chars += text.json_chars + u64::from(i > 0);
            items.push(push(&mut nodes, Node::Text(text)));
        }
        nodes[0] = Node::Sequence { items, json_chars };
        Self::from_nodes(nodes)
    }

    /// Parsed JSON: strings become text nodes, arrays sequences, objects mappings.
    pub fn json(value: Value) -> Arc<Self> {
        let mut nodes = vec![Node::Scalar {
            value: Value::Null,
            json_chars: 0,
        }];
        nodes[0] = build_json(&mut nodes, value);
        Self::from_nodes(nodes)
    }

    fn from_nodes(nodes: Vec<Node>) -> Arc<Self> {
        // What CPython needs for each node as a real object (object headers included):
        // a str is 49 bytes + its characters at 1, 2 or 4 bytes each (plus 24 when not
        // ASCII); a list 56 + 8 per item; a dict about 100 per entry plus its key strings;
        // a number or bool about 32.
        let guest_bytes = nodes
            .iter()
            .map(|n| match n {
                Node::Text(t) => {
                    49 + t.chars * u64::from(t.width) + if t.index.is_empty() { 0 } else { 24 }
                }
                Node::Sequence { items, .. } => 56 + 8 * items.len() as u64,
                Node::Mapping { entries, .. } => {
                    232 + entries
                        .iter()
                        .map(|(k, _)| 100 + 49 + k.len() as u64)
                        .sum::<u64>()
                }
                Node::Scalar { .. } => 32,
            })
            .sum();
        Arc::new(Self { nodes, guest_bytes })
    }

    /// Bytes the whole context takes in the guest as real Python objects (an estimate of
    /// CPython's sizes: a text costs 1, 2 or 4 bytes per character, as CPython stores it). The
    /// sandbox sizes a REPL's memory from it (see [`crate::memory`]).
    pub fn guest_bytes(&self) -> u64 {
        self.guest_bytes
    }

    /// Characters of the root as a whole: its text, or its JSON.
    pub fn root_size_chars(&self) -> u64 {
        self.size_chars(0)
    }

    /// Load a context from a file (or standard input for `-`): [`Context::read`], then index it.
    pub fn load(path: &Path, format: ContextFormat) -> Result<Arc<Self>, SandboxError> {
        Ok(match Self::read(path, format)? {
            ContextData::Text(t) => Self::text(t),
            ContextData::Json(v) => Self::json(v),
        })
    }

    /// Read and parse a context file (or standard input for `-`) without indexing it.
    ///
    /// `Auto` picks JSON for `.json`, JSON Lines (a list) for `.jsonl`, text otherwise. Text that
    /// is not valid UTF-8 is decoded lossily (with a warning), so one bad byte loses nothing else.
    /// A regular file of at least [`crate::MAP_MIN_BYTES`] is mapped read-only rather than read
    /// ([`Text::map_file`]): a text then stays the file's own pages (no copy on the host), and
    /// JSON is parsed straight from them.
    pub fn read(path: &Path, format: ContextFormat) -> Result<ContextData, SandboxError> {
        Self::read_with(path, format, true)
    }

    /// [`Context::read`], but always copying the file into memory: for a long-running process
    /// (a server) over files that others may rewrite in place while it works, which a map
    /// would see (or, cut short, fault on).
    pub fn read_copy(path: &Path, format: ContextFormat) -> Result<ContextData, SandboxError> {
        Self::read_with(path, format, false)
    }

    fn read_with(
        path: &Path,
        format: ContextFormat,
        map: bool,
    ) -> Result<ContextData, SandboxError> {
        let io_err = |source| SandboxError::Io {
            action: "reading the context",
            path: path.to_path_buf(),
            source,
        };
        let format = match format {
            ContextFormat::Auto => match path.extension().and_then(|e| e.to_str()) {
                Some("json") => ContextFormat::Json,
                Some("jsonl") => ContextFormat::Jsonl,
                _ => ContextFormat::Text,
            },
            f => f,
        };
        let text: Text = if path == Path::new("-") {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(io_err)?;
            utf8_or_lossy(path, buf).into()
        } else {
            let mut file = std::fs::File::open(path).map_err(io_err)?;
            let mapped = if map {
                Text::map_file(&file).map_err(io_err)?
            } else {
                None
            };
            match mapped {
                Some(mapped) => mapped,
                None => {
                    let mut buf = Vec::new();
                    file.read_to_end(&mut buf).map_err(io_err)?;
                    utf8_or_lossy(path, buf).into()
                }
            }
        };
        let bad_json = |line: Option<usize>, e: serde_json::Error| SandboxError::BadContext {
            path: path.to_path_buf(),
            message: match line {
                Some(n) => format!("line {n} is not valid JSON: {e}"),
                None => format!("not valid JSON: {e}"),
            },
        };
        match format {
            ContextFormat::Json => Ok(ContextData::Json(
                serde_json::from_str(&text).map_err(|e| bad_json(None, e))?,
            )),
            ContextFormat::Jsonl => {
                let mut items = Vec::new();
                for (i, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    items.push(serde_json::from_str(line).map_err(|e| bad_json(Some(i + 1), e))?);
                }
                Ok(ContextData::Json(Value::Array(items)))
            }
            _ => Ok(ContextData::Text(text)),
        }
    }

    /// The shape of the root, for prompts and logs.
    pub fn shape(&self) -> ContextShape {
        match self.root() {
            Node::Text(t) => ContextShape::Text { chars: t.chars },
            Node::Sequence { items, .. } => ContextShape::List {
                item_chars: items
                    .iter()
                    .map(|&id| match self.node(id) {
                        Some(Node::Text(t)) => t.chars,
                        _ => 0,
                    })
                    .collect(),
            },
            Node::Mapping { entries, .. } => ContextShape::Object {
                keys: entries.len() as u64,
            },
            Node::Scalar { .. } => ContextShape::Scalar,
        }
    }

    /// Total characters of text in the whole tree.
    pub fn total_chars(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n {
                Node::Text(t) => t.chars,
                _ => 0,
            })
            .sum()
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn root(&self) -> &Node {
        &self.nodes[0]
    }

    pub(crate) fn node(&self, id: LocalId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// Characters needed to load a node whole: its text, or its JSON.
    pub(crate) fn size_chars(&self, id: LocalId) -> u64 {
        match self.node(id) {
            Some(Node::Text(t)) => t.chars,
            Some(Node::Sequence { json_chars, .. })
            | Some(Node::Mapping { json_chars, .. })
            | Some(Node::Scalar { json_chars, .. }) => *json_chars,
            None => 0,
        }
    }

    /// Serialise a node to JSON, refusing (with `None`) past `max_bytes`.
    pub(crate) fn to_json(&self, id: LocalId, max_bytes: usize) -> Option<String> {
        let mut out = String::new();
        if self.write_json(id, &mut out, max_bytes) {
            Some(out)
        } else {
            None
        }
    }

    fn write_json(&self, id: LocalId, out: &mut String, max: usize) -> bool {
        let Some(node) = self.node(id) else {
            return false;
        };
        match node {
            Node::Text(t) => {
                // serde_json escapes exactly as JSON needs.
                match serde_json::to_string(t.as_str()) {
                    Ok(s) => out.push_str(&s),
                    Err(_) => return false,
                }
            }
            Node::Scalar { value, .. } => out.push_str(&value.to_string()),
            Node::Sequence { items, .. } => {
                out.push('[');
                for (i, &item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if !self.write_json(item, out, max) {
                        return false;
                    }
                }
                out.push(']');
            }
            Node::Mapping { entries, .. } => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if !self.write_json(*v, out, max) {
                        return false;
                    }
                }
                out.push('}');
            }
        }
        out.len() <= max
    }

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

/// `bytes` as text: as they are when valid UTF-8, else with each invalid byte replaced (and a
/// warning naming the file).
fn utf8_or_lossy(path: &Path, bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), "context is not valid UTF-8; invalid bytes replaced");
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })
}

fn push(nodes: &mut Vec<Node>, node: Node) -> LocalId {
    nodes.push(node);
    (nodes.len() - 1) as LocalId
}

/// Build the node for `value`, pushing its descendants into `nodes`.
fn build_json(nodes: &mut Vec<Node>, value: Value) -> Node {
    match value {
        Value::String(s) => Node::Text(TextDoc::new(s)),
        Value::Array(items) => {
            let mut ids = Vec::with_capacity(items.len());
            let mut json_chars = 2u64;
            for (i, item) in items.into_iter().enumerate() {
                let node = build_json(nodes, item);
                json_chars += json_size(&node) + u64::from(i > 0);
                ids.push(push(nodes, node));
            }
            Node::Sequence {
                items: ids,
                json_chars,
            }
        }
        Value::Object(map) => {
            let mut entries = Vec::with_capacity(map.len());
            let mut json_chars = 2u64;
            for (i, (k, v)) in map.into_iter().enumerate() {
                let node = build_json(nodes, v);
                let key_chars = Value::String(k.clone()).to_string().chars().count() as u64;
                json_chars += key_chars + 1 + json_size(&node) + u64::from(i > 0);
                entries.push((k, push(nodes, node)));
            }
            Node::Mapping {
                entries,
                json_chars,
            }
        }
        scalar => {
            let json_chars = scalar.to_string().chars().count() as u64;
            Node::Scalar {
                value: scalar,
                json_chars,
            }
        }
    }
}

fn json_size(node: &Node) -> u64 {
    match node {
        Node::Text(t) => t.json_chars,
        Node::Sequence { json_chars, .. }
        | Node::Mapping { json_chars, .. }
        | Node::Scalar { json_chars, .. } => *json_chars,
    }
}

/// A text with character-offset access.
#[derive(Debug)]
pub struct TextDoc {
    text: Text,
    chars: u64,
    /// Characters of its JSON string form (for load-size decisions).
    json_chars: u64,
    /// Byte offset of every `INDEX_STRIDE`-th character; empty when the text is ASCII.
    index: Vec<u64>,
    /// Bytes per character of the text as a CPython str: 1 (Latin-1), 2 (BMP) or 4.
    width: u8,
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
    fn new(text: impl Into<Text>) -> Self {
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
        self.alphabet
            .get_or_init(|| {
                // ASCII in a table, the rest in a set (most characters of most texts are ASCII).
                let mut ascii = [false; 128];
                let mut other = std::collections::BTreeSet::new();
                if self.is_ascii() {
                    for &b in self.text.as_bytes() {
                        ascii[usize::from(b)] = true;
                    }
                } else {
                    for ch in self.text.chars() {
                        match u8::try_from(ch) {
                            Ok(b) if b < 128 => ascii[usize::from(b)] = true,
                            _ => {
                                if other.insert(ch) && other.len() > MAX_ALPHABET {
                                    return None;
                                }
                            }
                        }
                    }
                }
                let alphabet: String = (0u8..128)
                    .filter(|&b| ascii[usize::from(b)])
                    .map(char::from)
                    .chain(other)
                    .collect();
                (alphabet.chars().count() <= MAX_ALPHABET).then_some(alphabet)
            })
            .as_deref()
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

    /// Character offset of `needle` within characters `start..end`.
    pub fn find(&self, needle: &str, start: u64, end: u64, reverse: bool) -> Option<u64> {
        let end = end.min(self.chars);
        if start > end {
            return None;
        }
        let (bs, be) = (self.byte_of(start), self.byte_of(end));
        let hay = &self.text[bs..be];
        let hit = if reverse {
            hay.rfind(needle)
        } else {
            hay.find(needle)
        }?;
        Some(start + self.chars_between(bs, bs + hit))
    }

    /// Non-overlapping occurrences of `needle` in characters `start..end` (Python semantics for
    /// an empty needle: one more than the characters in the range).
    pub fn count(&self, needle: &str, start: u64, end: u64) -> u64 {
        let end = end.min(self.chars);
        if start > end {
            return 0;
        }
        if needle.is_empty() {
            return end - start + 1;
        }
        self.slice(start, end).matches(needle).count() as u64
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
        assert_eq!(t.find("𝄞", 0, u64::MAX, false), pos);
        assert_eq!(t.char_of(t.byte_of(5000)), 5000);
    }

    #[test]
    fn count_and_find_follow_python() {
        let t = TextDoc::new("aaaa");
        assert_eq!(t.count("aa", 0, 4), 2);
        assert_eq!(t.count("", 0, 4), 5);
        assert_eq!(t.find("", 2, 4, false), Some(2));
        assert_eq!(t.find("", 0, 4, true), Some(4));
        assert_eq!(t.find("b", 0, 4, false), None);
    }

    #[test]
    fn json_tree_keeps_root_at_zero() {
        let ctx = Context::json(serde_json::json!({"a": ["x", "yy"], "b": 3}));
        assert!(matches!(ctx.node(0), Some(Node::Mapping { .. })));
        let json = ctx.to_json(0, 1 << 20).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, serde_json::json!({"a": ["x", "yy"], "b": 3}));
        assert_eq!(ctx.size_chars(0), json.chars().count() as u64);
    }

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
