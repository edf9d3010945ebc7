//! The directories the operator lets MCP clients read, and the checks every path goes through.

use std::path::{Path, PathBuf};

use crate::McpError;

/// The allowed roots, canonicalised (symlinks and `..` resolved) once at start-up.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<PathBuf>,
}

impl Roots {
    /// Canonicalise `dirs`; each must exist and be a directory.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, McpError> {
        let mut roots = Vec::with_capacity(dirs.len());
        for d in dirs {
            let c = d.canonicalize().map_err(|e| McpError::BadRoot {
                root: d.clone(),
                reason: e.to_string(),
            })?;
            if !c.is_dir() {
                return Err(McpError::BadRoot {
                    root: d.clone(),
                    reason: "not a directory".into(),
                });
            }
            roots.push(c);
        }
        Ok(Self { roots })
    }

    /// The canonical roots.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Whether the canonical path `p` lies inside a root.
    pub fn contains(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// Resolve a path a client gave: absolute, or relative to the first root under which it
    /// exists. The result is canonical (symlinks and `..` resolved) and inside a root, else
    /// [`McpError::OutsideRoots`] (or [`McpError::NotFound`]).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, McpError> {
        if self.roots.is_empty() {
            return Err(McpError::NoRoots);
        }
        let given = Path::new(path);
        let candidates: Vec<PathBuf> = if given.is_absolute() {
            vec![given.to_path_buf()]
        } else {
            self.roots.iter().map(|r| r.join(given)).collect()
        };
        let mut last_err = None;
        for c in candidates {
            match c.canonicalize() {
                Ok(canon) if self.contains(&canon) => return Ok(canon),
                Ok(_) => {
                    return Err(self.outside(path));
                }
                Err(e) => last_err = Some(e),
            }
        }
        // A path that does not exist is reported as outside when its lexical form leaves the
        // roots, so the error does not reveal what exists elsewhere.
        if given.is_absolute() && !self.contains(given)
            || given
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(self.outside(path));
        }
        Err(McpError::NotFound {
            path: path.to_string(),
            reason: last_err.map_or_else(|| "not found".into(), |e| e.to_string()),
        })
    }

    fn outside(&self, path: &str) -> McpError {
        McpError::OutsideRoots {
            path: path.to_string(),
            roots: self
                .roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link")).unwrap();
        let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
        let canon = root.canonicalize().unwrap();

        assert_eq!(roots.resolve("sub/a.txt").unwrap(), canon.join("sub/a.txt"));
        let abs = canon.join("sub/../sub/a.txt");
        assert_eq!(
            roots.resolve(abs.to_str().unwrap()).unwrap(),
            canon.join("sub/a.txt")
        );
        for bad in ["../secret.txt", "sub/../../secret.txt", "../nothing-here"] {
            assert!(
                matches!(roots.resolve(bad), Err(McpError::OutsideRoots { .. })),
                "{bad}"
            );
        }
        let secret = dir.path().join("secret.txt");
        assert!(matches!(
            roots.resolve(secret.to_str().unwrap()),
            Err(McpError::OutsideRoots { .. })
        ));
        #[cfg(unix)]
        assert!(matches!(
            roots.resolve("link"),
            Err(McpError::OutsideRoots { .. })
        ));
        assert!(matches!(
            roots.resolve("missing.txt"),
            Err(McpError::NotFound { .. })
        ));
        assert!(matches!(
            Roots::new(&[dir.path().join("nope")]),
            Err(McpError::BadRoot { .. })
        ));
        assert!(matches!(
            Roots::new(&[]).unwrap().resolve("x"),
            Err(McpError::NoRoots)
        ));
    }
}
