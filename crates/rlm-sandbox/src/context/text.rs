//! The UTF-8 text of a context document: owned, or mapped read-only from its file.
//!
//! A context read from a large file is mapped, not read: the host then holds no anonymous copy
//! of it. Its pages are the page cache's own (which holds the file anyway once it is read),
//! shared with every process that reads the file and reclaimable under memory pressure, and
//! nothing is copied before the first step. The guest's `str` (when the context loads whole)
//! is then the only private copy. The map is taken under a lease (see `lease.rs`), so the text
//! stays the file as it was, whatever is done to the file while the text is in use.

use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::sync::Arc;

use super::lease::Guarded;

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
    /// A map of a whole file whose bytes were checked to be UTF-8 when it was made, and are
    /// kept as they were (see `lease.rs`).
    Mapped(Arc<Guarded>),
}

impl Text {
    /// Map `file` (opened read-only) if it is a regular file of at least [`MAP_MIN_BYTES`]
    /// that holds valid UTF-8 and can be leased. `Ok(None)`: read it instead (too small, not
    /// a regular file, not UTF-8, or not leasable: open for writing elsewhere, owned by
    /// someone else, on a filesystem without leases, or not Linux; the caller then reads it,
    /// decoding it lossily).
    ///
    /// The text is the file as it was when it was mapped, for as long as the text lives: a
    /// write in place or a truncation of the file waits until the process has put a private
    /// copy of the bytes in the map's place (see `lease.rs`), and a file replaced by a rename
    /// keeps its old pages anyway.
    pub fn map_file(file: &File) -> std::io::Result<Option<Self>> {
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() < MAP_MIN_BYTES {
            return Ok(None);
        }
        let Some(map) = Guarded::map(file)? else {
            return Ok(None);
        };
        // The text is read from start to end right away (validated here, then indexed).
        if std::str::from_utf8(map.bytes()).is_err() {
            return Ok(None);
        }
        Ok(Some(Self(Repr::Mapped(Arc::new(map)))))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            // SAFETY: checked to be UTF-8 when the map was made (`map_file`), and the bytes
            // never change after (the lease: see `lease.rs`).
            Repr::Mapped(m) => unsafe { std::str::from_utf8_unchecked(m.bytes()) },
        }
    }

    /// Whether the text is a map of a file (the host holds no copy of its own).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped(_))
    }

    /// Whether the text is a map that still shows the file's own pages: false once the file
    /// was opened for writing or truncated and the process put a private copy of the text in
    /// the map's place.
    pub fn is_file_pages(&self) -> bool {
        matches!(&self.0, Repr::Mapped(m) if m.is_file_pages())
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
        let (mapped, _path) = mapped(&text);
        assert!(mapped.is_mapped());
        assert_eq!(mapped.as_str(), text);
        assert_eq!(mapped.clone(), Text::from(text.clone()));
        assert_eq!(mapped.into_string(), text);
    }

    /// A text mapped from a file, and the file (by path) for another "process" to change.
    fn mapped(text: &str) -> (Text, tempfile::TempPath) {
        // Closed for writing first: a file open for writing cannot be leased.
        let path = file_with(text.as_bytes()).into_temp_path();
        let mapped = Text::map_file(&File::open(&path).unwrap())
            .unwrap()
            .expect("mapped under a lease");
        assert!(mapped.is_file_pages());
        (mapped, path)
    }

    #[test]
    fn a_file_truncated_while_mapped_leaves_the_text_whole() {
        // Without the lease, reading the pages cut off the file raises SIGBUS: the test process
        // dies.
        let text = "línea de texto\n".repeat(MAP_MIN_BYTES as usize / 8);
        let (mapped, path) = mapped(&text);
        // `truncate` waits until the text is a private copy.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(mapped.is_mapped() && !mapped.is_file_pages());
        assert_eq!(mapped.as_str(), text);
    }

    #[test]
    fn a_file_rewritten_in_place_while_mapped_keeps_its_text() {
        use std::io::{Seek, SeekFrom};
        let text = "abc".repeat(MAP_MIN_BYTES as usize / 2);
        let (mapped, path) = mapped(&text);
        let clone = mapped.clone();
        // A multi-byte character written over ASCII: the map would split it.
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(1)).unwrap();
        f.write_all("é".as_bytes()).unwrap();
        drop(f);
        assert!(std::fs::read(&path).unwrap().starts_with("aé".as_bytes()));
        assert_eq!(mapped.as_str(), text);
        assert_eq!(clone.as_str(), text);
        // Dropping the texts releases nothing twice.
        drop(mapped);
        drop(clone);
    }

    #[test]
    fn a_file_open_for_writing_elsewhere_is_read_not_mapped() {
        let f = file_with("x".repeat(MAP_MIN_BYTES as usize).as_bytes());
        let _writer = std::fs::OpenOptions::new()
            .append(true)
            .open(f.path())
            .unwrap();
        assert!(
            Text::map_file(&File::open(f.path()).unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn small_files_and_invalid_utf8_are_left_to_be_read() {
        let small = file_with(b"short text");
        assert!(Text::map_file(small.as_file()).unwrap().is_none());
        let mut bad = vec![b'a'; MAP_MIN_BYTES as usize + 10];
        bad[MAP_MIN_BYTES as usize] = 0xFF;
        let bad = file_with(&bad).into_temp_path();
        assert!(
            Text::map_file(&File::open(&bad).unwrap())
                .unwrap()
                .is_none()
        );
    }
}
