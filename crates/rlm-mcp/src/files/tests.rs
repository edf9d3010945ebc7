//! What a client names is hostile: files swapped for symlinks or FIFOs while they are read,
//! sizes that lie, sparse giants. Nothing outside the roots is read, nothing hangs, nothing is
//! read past the limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A root (`<tmp>/root`) and a secret file beside it (`<tmp>/secret.txt`).
struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    secret: PathBuf,
    roots: Roots,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let secret = base.join("secret.txt");
    std::fs::write(&secret, "SECRET outside the root").unwrap();
    let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
    Setup {
        _dir: dir,
        root,
        secret,
        roots,
    }
}

fn texts(input: &ContextInput) -> Vec<String> {
    match input {
        ContextInput::Text(t) => vec![t.to_string()],
        ContextInput::Documents(d) => d.clone(),
        ContextInput::Json(v) => vec![v.to_string()],
    }
}

/// Runs `swap` in a loop on another thread until the guard drops.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(mut swap: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                swap();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn directories_become_documents() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("src/.git")).unwrap();
    std::fs::write(root.join("src/a.rs"), "fn a() {}").unwrap();
    std::fs::write(root.join("src/.git/x"), "hidden").unwrap();
    std::fs::write(root.join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(root.join("c.txt"), "see").unwrap();
    let roots = Roots::new(std::slice::from_ref(&root)).unwrap();
    let load = |limit, max_files| block_on(load_directory(&roots, ".", limit, max_files));
    assert_eq!(
        texts(&load(1 << 20, 100).unwrap()),
        ["==> c.txt <==\nsee", "==> src/a.rs <==\nfn a() {}"]
    );
    assert!(matches!(load(4, 100), Err(McpError::TooLarge { .. })));
    assert!(matches!(
        load(1 << 20, 1),
        Err(McpError::TooManyFiles { .. })
    ));
    // Directories count too: a deep tree of empty ones is not walked without end.
    std::fs::create_dir_all(root.join("d/d/d/d/d/d")).unwrap();
    assert!(matches!(
        block_on(load_directory(&roots, "d", 1 << 20, 3)),
        Err(McpError::TooManyFiles { .. })
    ));
    // The root named as a file is refused as a directory.
    let whole = root.display().to_string();
    assert!(matches!(
        block_on(load_file(&roots, &whole, 1 << 20)),
        Err(McpError::WrongKind { .. })
    ));
}

/// A thread swaps `race.txt` between a file inside the root and a symlink to a file outside it
/// (another swaps `sub/` for a symlink to a directory outside) while `ask_file` and
/// `ask_directory` read them again and again: nothing outside is ever read.
#[cfg(unix)]
#[test]
fn a_symlink_swapped_in_never_reads_outside_the_roots() {
    let s = setup();
    let (root, secret) = (s.root.clone(), s.secret.clone());
    let _swapper = Swapper::start(move || {
        let race = root.join("race.txt");
        std::fs::write(root.join(".plain"), "inside").unwrap();
        std::fs::rename(root.join(".plain"), &race).unwrap();
        let _ = std::fs::remove_file(root.join(".link"));
        std::os::unix::fs::symlink(&secret, root.join(".link")).unwrap();
        std::fs::rename(root.join(".link"), &race).unwrap();
    });
    // And `sub/` between a directory inside the root and a symlink to one outside.
    let outside_dir = s.secret.with_file_name("outside");
    std::fs::create_dir_all(&outside_dir).unwrap();
    std::fs::write(
        outside_dir.join("deep.txt"),
        "SECRET in a directory outside",
    )
    .unwrap();
    std::fs::create_dir_all(s.root.join("sub")).unwrap();
    std::fs::write(s.root.join("sub/deep.txt"), "inside, deeper").unwrap();
    let root = s.root.clone();
    let _dir_swapper = Swapper::start(move || {
        let sub = root.join("sub");
        std::fs::rename(&sub, root.join(".sub")).unwrap();
        std::os::unix::fs::symlink(&outside_dir, &sub).unwrap();
        std::fs::remove_file(&sub).unwrap();
        std::fs::rename(root.join(".sub"), &sub).unwrap();
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let absolute = s.root.join("race.txt").display().to_string();
    let mut read_inside = 0;
    for i in 0..3000 {
        let path = if i % 2 == 0 { "race.txt" } else { &absolute };
        let loaded = [
            rt.block_on(load_file(&s.roots, path, 1 << 20)),
            rt.block_on(load_directory(&s.roots, ".", 1 << 20, 100)),
            rt.block_on(load_file(&s.roots, "sub/deep.txt", 1 << 20)),
            rt.block_on(load_directory(&s.roots, "sub", 1 << 20, 100)),
        ];
        for input in loaded.iter().flatten() {
            for t in texts(input) {
                assert!(!t.contains("SECRET"), "read outside the root: {t}");
                read_inside += usize::from(t.contains("inside"));
            }
        }
    }
    assert!(read_inside > 0, "the file inside the root was never read");
}

/// A thread swaps `pipe.txt` between a regular file and a FIFO (with no writer, so opening it
/// to read would block): every read ends, with the file or an error.
#[cfg(unix)]
#[test]
fn a_fifo_swapped_in_is_refused_without_hanging() {
    let s = setup();
    let fifo = s.root.join(".fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let root = s.root.clone();
    let _swapper = Swapper::start(move || {
        let pipe = root.join("pipe.txt");
        std::fs::write(root.join(".plain"), "plain").unwrap();
        std::fs::rename(root.join(".plain"), &pipe).unwrap();
        let _ = std::fs::remove_file(root.join(".fifo2"));
        std::fs::hard_link(root.join(".fifo"), root.join(".fifo2")).unwrap();
        std::fs::rename(root.join(".fifo2"), &pipe).unwrap();
    });
    let roots = s.roots.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut refused = 0;
        for _ in 0..1000 {
            for loaded in [
                rt.block_on(load_file(&roots, "pipe.txt", 1 << 20)),
                rt.block_on(load_directory(&roots, ".", 1 << 20, 100)),
            ] {
                refused += usize::from(loaded.is_err());
            }
        }
        let _ = tx.send(refused);
    });
    // A hang leaves the reading thread blocked; the test fails rather than waits for it.
    rx.recv_timeout(Duration::from_secs(120))
        .expect("a read hung on a FIFO swapped in");
    // A FIFO that is there from the start: refused by ask_file, skipped by ask_directory.
    drop(_swapper);
    std::fs::rename(&fifo, s.root.join("pipe.txt")).unwrap();
    assert!(matches!(
        block_on(load_file(&s.roots, "pipe.txt", 1 << 20)),
        Err(McpError::WrongKind { .. })
    ));
    assert!(block_on(load_directory(&s.roots, ".", 1 << 20, 100)).is_ok());
}

/// Peak resident memory of this process, in bytes.
#[cfg(target_os = "linux")]
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib << 10
}

/// A 1 GiB sparse file under a 1 MiB limit is refused on its size, never read: the peak
/// memory stays far below it.
#[cfg(target_os = "linux")]
#[test]
fn a_large_sparse_file_is_refused_without_reading_it() {
    let s = setup();
    std::fs::write(s.root.join("a.txt"), "small").unwrap();
    let big = std::fs::File::create(s.root.join("big.txt")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    let before = peak_rss();
    assert!(matches!(
        block_on(load_directory(&s.roots, ".", 1 << 20, 100)),
        Err(McpError::TooLarge { .. })
    ));
    assert!(matches!(
        block_on(load_file(&s.roots, "big.txt", 1 << 20)),
        Err(McpError::TooLarge { .. })
    ));
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
}

/// A file whose size says less than it holds (as procfs files do: size 0) is read no further
/// than the limit allows, and refused.
#[cfg(target_os = "linux")]
#[test]
fn a_file_holding_more_than_its_size_is_cut_at_the_limit_and_refused() {
    let roots = Roots::new(&[PathBuf::from("/proc/self")]).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.len() > 64);
    assert!(matches!(
        block_on(load_file(&roots, "status", 64)),
        Err(McpError::TooLarge { .. })
    ));
    let whole = block_on(load_file(&roots, "status", 1 << 20)).unwrap();
    assert!(texts(&whole)[0].starts_with("Name:"));
}

/// A reader that counts what it gave, from `inner`.
struct Counting<R> {
    inner: R,
    given: u64,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.given += n as u64;
        Ok(n)
    }
}

/// A file whose size is over the budget is not read at all: its reads would fail here.
#[test]
fn a_file_over_the_budget_by_its_size_is_not_read() {
    struct Unreadable;
    impl std::io::Read for Unreadable {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other(
                "read although its size was over the budget",
            ))
        }
    }
    assert!(
        read_within(&mut Unreadable, 1 << 30, 1 << 20)
            .unwrap()
            .is_none()
    );
}

/// A file that holds more than its size said (it grew, or lied) is read to the budget and one
/// byte more, no further.
#[test]
fn a_file_is_read_no_further_than_the_budget_and_one_byte() {
    let mut r = Counting {
        inner: std::io::Read::take(std::io::repeat(b'x'), 64 << 20),
        given: 0,
    };
    assert!(read_within(&mut r, 0, 1000).unwrap().is_none());
    assert_eq!(r.given, 1001);
    let mut r = Counting {
        inner: &b"twelve bytes"[..],
        given: 0,
    };
    assert_eq!(
        read_within(&mut r, 12, 12).unwrap().unwrap(),
        b"twelve bytes"
    );
}
