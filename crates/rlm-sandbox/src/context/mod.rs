//! The documents a REPL works over, held once on the host.
//!
//! A [`Context`] is a tree of nodes (text, sequence, mapping, JSON scalar) stored in one arena,
//! loaded from a file or from values ([`text`]: a document's UTF-8, owned or mapped), its texts
//! indexed by character ([`doc`]) and searched by regular expression ([`search`]). Every offset
//! the guest sees is in characters (code points), exactly as Python's `str` counts them,
//! whatever the script of the text.

mod doc;
mod lease;
mod pattern;
mod search;
mod text;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::SandboxError;

pub use doc::TextDoc;
pub use pattern::MAX_PATTERN_BYTES;
pub(crate) use pattern::{Pattern, Stopped};
pub use search::{PathStep, SearchHit};
pub(crate) use search::{SearchRequest, search_hits, text_spans};
pub use text::{MAP_MIN_BYTES, Text};

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
        /// Indices into `entries` in key order, for lookups in large mappings (empty for small
        /// ones, which are scanned): see [`Node::lookup`].
        by_key: Vec<u32>,
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

    /// [`Context::read`], but always reading the file into memory, never mapping it (a mapped
    /// text is already safe from writers: see [`Text::map_file`]; this is for callers that want
    /// no map and no lease on the file at all).
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
            let by_key = key_order(&entries);
            Node::Mapping {
                entries,
                by_key,
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

/// Mappings with more entries than this are looked up through a key-ordered index.
const SCAN_ENTRIES: usize = 16;

/// The indices of `entries` in key order, when there are more than [`SCAN_ENTRIES`].
fn key_order(entries: &[(String, LocalId)]) -> Vec<u32> {
    if entries.len() <= SCAN_ENTRIES {
        return Vec::new();
    }
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| entries[a as usize].0.cmp(&entries[b as usize].0));
    order
}

impl Node {
    /// The value of `key` in a mapping node (`None` for other nodes): a binary search of a
    /// large mapping's key order, so a lookup costs microseconds whatever the mapping's size.
    pub(crate) fn lookup(&self, key: &str) -> Option<LocalId> {
        let Node::Mapping {
            entries, by_key, ..
        } = self
        else {
            return None;
        };
        if by_key.is_empty() {
            return entries.iter().find(|(k, _)| k == key).map(|(_, id)| *id);
        }
        let at = by_key
            .binary_search_by(|&i| entries[i as usize].0.as_str().cmp(key))
            .ok()?;
        Some(entries[by_key[at] as usize].1)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lookups_find_every_key_of_small_and_large_mappings() {
        for n in [3, SCAN_ENTRIES, SCAN_ENTRIES + 1, 5000] {
            let map: serde_json::Map<String, Value> = (0..n)
                .map(|i| (format!("k{}", (i * 7919) % n), Value::from(i)))
                .collect();
            let ctx = Context::json(Value::Object(map.clone()));
            let root = ctx.node(0).unwrap();
            for (k, v) in &map {
                let id = root.lookup(k).unwrap_or_else(|| panic!("{k} of {n}"));
                assert!(matches!(ctx.node(id), Some(Node::Scalar { value, .. }) if value == v));
            }
            assert_eq!(root.lookup("missing"), None);
            assert_eq!(root.lookup(""), None);
        }
    }
}
