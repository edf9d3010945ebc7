//! The directories the operator lets MCP clients read, each opened once as a capability
//! ([`cap_std::fs::Dir`]): every file and directory a client names is opened *relative to its
//! root's handle*, and the open itself refuses to leave the root (`openat2(RESOLVE_BENEATH)` on
//! Linux, a component-by-component walk elsewhere). There is no check-then-open by path, so a
//! symlink swapped in between cannot redirect a read outside.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};

use crate::McpError;

/// The allowed roots: canonicalised and opened once at start-up.
#[derive(Debug, Clone)]
pub struct Roots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Canonical paths, in the order given.
    paths: Vec<PathBuf>,
    /// Each root as given (made absolute), for absolute client paths through an alias.
    given: Vec<PathBuf>,
    /// Each root's handle.
    dirs: Vec<Dir>,
}

/// A path a client named, opened inside a root.
pub(crate) struct Opened<T> {
    /// The root's handle.
    pub(crate) root: Dir,
    /// The path relative to the root.
    pub(crate) rel: PathBuf,
    /// What was opened.
    pub(crate) value: T,
}

impl Roots {
    /// Canonicalise and open `dirs`; each must exist and be a directory.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, McpError> {
        let mut inner = Inner {
            paths: Vec::with_capacity(dirs.len()),
            given: Vec::with_capacity(dirs.len()),
            dirs: Vec::with_capacity(dirs.len()),
        };
        for d in dirs {
            let bad = |reason: String| McpError::BadRoot {
                root: d.clone(),
                reason,
            };
            let c = d.canonicalize().map_err(|e| bad(e.to_string()))?;
            if !c.is_dir() {
                return Err(bad("not a directory".into()));
            }
            let dir =
                Dir::open_ambient_dir(&c, ambient_authority()).map_err(|e| bad(e.to_string()))?;
            inner
                .given
                .push(std::path::absolute(d).unwrap_or_else(|_| c.clone()));
            inner.paths.push(c);
            inner.dirs.push(dir);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The canonical roots.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.inner.paths
    }

    /// Open the file a client named, for reading: absolute (under a root), or relative to the
    /// first root under which it exists. Symlinks are followed only while they stay inside the
    /// root; the open never blocks (a FIFO or device opens at once, for the caller to refuse on
    /// its metadata).
    pub(crate) fn open_file(&self, path: &str) -> Result<Opened<File>, McpError> {
        self.open(path, |dir, rel| {
            // A root itself opens as the directory it is, for the caller to refuse as one.
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            dir.open_with(rel, &read_options())
        })
    }

    /// Open the directory a client named (as [`Roots::open_file`]).
    pub(crate) fn open_dir(&self, path: &str) -> Result<Opened<Dir>, McpError> {
        self.open(path, |dir, rel| {
            if rel.as_os_str().is_empty() {
                dir.try_clone()
            } else {
                dir.open_dir(rel)
            }
        })
    }

    fn open<T>(
        &self,
        path: &str,
        open: impl Fn(&Dir, &Path) -> io::Result<T>,
    ) -> Result<Opened<T>, McpError> {
        let inner = &*self.inner;
        if inner.dirs.is_empty() {
            return Err(McpError::NoRoots);
        }
        let given = Path::new(path);
        let candidates: Vec<(usize, PathBuf)> = if given.is_absolute() {
            vec![self.strip_root(given).ok_or_else(|| self.outside(path))?]
        } else {
            (0..inner.dirs.len())
                .map(|i| (i, given.to_path_buf()))
                .collect()
        };
        let mut last_err = None;
        for (i, rel) in candidates {
            match open(&inner.dirs[i], &rel) {
                Ok(value) => {
                    let root = inner.dirs[i].try_clone().map_err(|source| McpError::Io {
                        path: path.into(),
                        source,
                    })?;
                    return Ok(Opened { root, rel, value });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => last_err = Some(e),
                // Leaving the root (a `..` or a symlink out) is refused by the open itself, as
                // "permission denied"; that is reported without saying what lies outside.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(self.outside(path));
                }
                Err(source) => {
                    return Err(McpError::Io {
                        path: path.into(),
                        source,
                    });
                }
            }
        }
        // A path that does not exist is reported as outside when its lexical form leaves the
        // roots, so the error does not reveal what exists elsewhere.
        if given.components().any(|c| c == Component::ParentDir) {
            return Err(self.outside(path));
        }
        Err(McpError::NotFound {
            path: path.to_string(),
            reason: last_err.map_or_else(|| "not found".into(), |e| e.to_string()),
        })
    }

    /// The root an absolute path lies under (the deepest, when roots nest) and the path
    /// relative to it, by its words alone (nothing is resolved here; the open checks).
    fn strip_root(&self, p: &Path) -> Option<(usize, PathBuf)> {
        let inner = &*self.inner;
        inner
            .paths
            .iter()
            .enumerate()
            .chain(inner.given.iter().enumerate())
            .filter_map(|(i, r)| Some((i, r, p.strip_prefix(r).ok()?)))
            .max_by_key(|(_, r, _)| r.components().count())
            .map(|(i, _, rel)| (i, rel.to_path_buf()))
    }

    fn outside(&self, path: &str) -> McpError {
        McpError::OutsideRoots {
            path: path.to_string(),
            roots: self
                .inner
                .paths
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Read-only, and never blocking on open: a FIFO with no writer (or a device) opens at once, to
/// be refused on the opened handle's metadata before any read.
pub(crate) fn read_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(o: Opened<File>) -> String {
        io::read_to_string(o.value).unwrap()
    }

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(root.join("b.txt"), "b").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link")).unwrap();
            std::os::unix::fs::symlink("../secret.txt", root.join("rel-link")).unwrap();
            // A symlink that stays inside the root still works.
            std::os::unix::fs::symlink("../b.txt", root.join("sub/inside")).unwrap();
        }
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let canon = root.canonicalize().unwrap();

        assert_eq!(read(roots.open_file("sub/a.txt").unwrap()), "a");
        let abs = canon.join("sub/../sub/a.txt");
        assert_eq!(read(roots.open_file(abs.to_str().unwrap()).unwrap()), "a");
        let given = std::path::absolute(&root).unwrap().join("sub/a.txt");
        assert_eq!(read(roots.open_file(given.to_str().unwrap()).unwrap()), "a");
        #[cfg(unix)]
        assert_eq!(read(roots.open_file("sub/inside").unwrap()), "b");
        for bad in [
            "../secret.txt",
            "sub/../../secret.txt",
            "../nothing-here",
            "..",
        ] {
            assert!(
                matches!(roots.open_file(bad), Err(McpError::OutsideRoots { .. })),
                "{bad}"
            );
            assert!(
                matches!(roots.open_dir(bad), Err(McpError::OutsideRoots { .. })),
                "{bad}"
            );
        }
        let secret = dir.path().join("secret.txt");
        assert!(matches!(
            roots.open_file(secret.to_str().unwrap()),
            Err(McpError::OutsideRoots { .. })
        ));
        #[cfg(unix)]
        for link in ["link", "rel-link"] {
            assert!(
                matches!(roots.open_file(link), Err(McpError::OutsideRoots { .. })),
                "{link}"
            );
        }
        assert!(matches!(
            roots.open_file("missing.txt"),
            Err(McpError::NotFound { .. })
        ));
        assert!(roots.open_dir("sub").is_ok());
        assert!(roots.open_dir("").is_ok());
        assert!(matches!(
            Roots::new(&[dir.path().join("nope")]),
            Err(McpError::BadRoot { .. })
        ));
        assert!(matches!(
            Roots::new(&[]).unwrap().open_file("x"),
            Err(McpError::NoRoots)
        ));
    }
}
