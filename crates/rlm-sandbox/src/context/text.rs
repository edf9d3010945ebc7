//! The UTF-8 text of a context document: owned, or mapped read-only from its file.
//!
//! A context read from a large file is mapped, not read: the host then holds no anonymous copy
//! of it. Its pages are the page cache's own (which holds the file anyway once it is read),
//! shared with every process that reads the file and reclaimable under memory pressure, and
//! nothing is copied before the first step. The guest's `str` (when the context loads whole)
//! is then the only private copy.

use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::sync::Arc;

/// Files of at least this many bytes are mapped rather than read (smaller ones cost more to map
/// than to copy).
pub const MAP_MIN_BYTES: u64 = 1 << 20;

/// A context document's text: owned, or a read-only map of a file.
///
/// It derefs to `&str`. Cloning a mapped text is cheap (the map is shared); cloning an owned
/// one copies it, as cloning a `String` does.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Owned(String),
    /// A map of a whole file whose bytes were checked to be UTF-8 when it was made.
    Mapped(Arc<memmap2::Mmap>),
}

impl Text {
    /// Map `file` read-only, if it is a regular file of at least [`MAP_MIN_BYTES`] that holds
    /// valid UTF-8. `Ok(None)`: read it instead (too small, not a regular file, or not UTF-8;
    /// the caller then decodes it lossily).
    ///
    /// The file must not be truncated or rewritten in place while the text is in use (a log
    /// being appended to is fine): the process would see the new bytes, or get `SIGBUS` for
    /// pages cut off the end, as with any memory-mapped file (ripgrep's maps have the same
    /// contract). Replacing the file (write a new one, rename it over the old) is safe: the map
    /// keeps the old file's pages.
    pub fn map_file(file: &File) -> std::io::Result<Option<Self>> {
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() < MAP_MIN_BYTES {
            return Ok(None);
        }
        // SAFETY: the map is read-only and private to this process; the bytes are checked to
        // be UTF-8 below before any `&str` is made of them. The contract above (not truncated
        // or rewritten in place while in use) is the caller's, documented on this function and
        // in the README, as for every memory-mapped file.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        // The text is read from start to end right away (validated here, then indexed).
        let _ = map.advise(memmap2::Advice::Sequential);
        if std::str::from_utf8(&map).is_err() {
            return Ok(None);
        }
        Ok(Some(Self(Repr::Mapped(Arc::new(map)))))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            // SAFETY: checked to be UTF-8 when the map was made (`map_file`), and never
            // written through this map.
            Repr::Mapped(m) => unsafe { std::str::from_utf8_unchecked(m) },
        }
    }

    /// Whether the text is a map of a file (the host holds no copy of its own).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped(_))
    }

    /// The text as an owned `String` (free for an owned text; a mapped one is copied).
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Owned(s) => s,
            Repr::Mapped(_) => self.as_str().to_owned(),
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Repr::Owned(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Repr::Owned(s.to_owned()))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self(Repr::Owned(s.clone()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.into_string()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn a_large_utf8_file_is_mapped_with_its_exact_text() {
        let text = "héllo wörld\n".repeat((MAP_MIN_BYTES as usize) / 10);
        let f = file_with(text.as_bytes());
        let mapped = Text::map_file(f.as_file()).unwrap().expect("mapped");
        assert!(mapped.is_mapped());
        assert_eq!(mapped.as_str(), text);
        assert_eq!(mapped.clone(), Text::from(text.clone()));
        assert_eq!(mapped.into_string(), text);
    }

    #[test]
    fn small_files_and_invalid_utf8_are_left_to_be_read() {
        let small = file_with(b"short text");
        assert!(Text::map_file(small.as_file()).unwrap().is_none());
        let mut bad = vec![b'a'; MAP_MIN_BYTES as usize + 10];
        bad[MAP_MIN_BYTES as usize] = 0xFF;
        let bad = file_with(&bad);
        assert!(Text::map_file(bad.as_file()).unwrap().is_none());
    }
}
