//! Traces are private to the roots that made them, owner-only, and read within bounds.

use super::*;

fn roots(dirs: &[&Path]) -> Roots {
    Roots::new(&dirs.iter().map(|d| d.to_path_buf()).collect::<Vec<_>>()).unwrap()
}

fn write_trace(store: &TraceStore, name: &str) {
    use rlm::EventSink;
    let writer = store.create(name).unwrap();
    writer.event(&rlm::Event::Iteration {
        node: rlm::Node {
            rlm: "root".into(),
            depth: 0,
        },
        n: 1,
    });
}

fn names(listed: &serde_json::Value) -> Vec<&str> {
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

/// A session over root A writes a trace; a session over root B, over A and B, or with no
/// roots, sharing the same base directory, neither lists nor reads it. The same roots in
/// another order are the same session's.
#[test]
fn traces_from_another_root_set_are_neither_listed_nor_read() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("traces");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let store_a = TraceStore::new(&base, &roots(&[&a]));
    write_trace(&store_a, "mcp-1.jsonl");
    assert_eq!(names(&store_a.list().unwrap()), ["mcp-1.jsonl"]);
    assert!(
        store_a
            .read("mcp-1.jsonl", 1000)
            .unwrap()
            .contains("iteration")
    );

    for other in [roots(&[&b]), roots(&[&a, &b]), roots(&[])] {
        let store = TraceStore::new(&base, &other);
        assert!(names(&store.list().unwrap()).is_empty(), "{other:?}");
        assert!(store.read("mcp-1.jsonl", 1000).is_err(), "{other:?}");
    }
    let (ab, ba) = (
        trace_dir_for(&base, &roots(&[&a, &b])),
        trace_dir_for(&base, &roots(&[&b, &a])),
    );
    assert_eq!(ab, ba);
    // Nothing lies in the base directory itself, where `rlm serve` would list it.
    for entry in std::fs::read_dir(&base).unwrap() {
        assert!(entry.unwrap().file_type().unwrap().is_dir());
    }
}

/// The directory is 0700 (narrowed if it was wider) and each trace 0600.
#[cfg(unix)]
#[test]
fn the_trace_directory_and_its_traces_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let roots = roots(&[&root]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = trace_dir_for(&tmp.path().join("base"), &roots);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = TraceStore::new(&tmp.path().join("base"), &roots);
    write_trace(&store, "mcp-1.jsonl");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("mcp-1.jsonl")), 0o600);
    let fresh = prepare_trace_dir(&tmp.path().join("fresh"), &roots).unwrap();
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn trace_names_are_plain_and_reads_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let store = TraceStore::new(&tmp.path().join("base"), &roots(&[&root]));
    store.ensure_dir().unwrap();
    std::fs::write(store.dir.join("c.txt"), "see").unwrap();
    std::fs::write(store.dir.join("t.jsonl"), "{\"a\":1}\n").unwrap();
    assert_eq!(names(&store.list().unwrap()), ["t.jsonl"]);
    assert_eq!(
        store.read("t.jsonl", 3).unwrap().lines().next(),
        Some("{\"a")
    );
    for bad in [
        "../t.jsonl",
        "c.txt",
        "/etc/passwd.jsonl",
        ".jsonl",
        "a/b.jsonl",
    ] {
        assert!(
            matches!(store.read(bad, 10), Err(McpError::BadTraceName(_))),
            "{bad}"
        );
    }
}

/// However many characters a request asks for, a read returns (and reads) at most
/// MAX_TRACE_CHARS of them.
#[test]
fn a_read_returns_at_most_the_hard_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let store = TraceStore::new(&tmp.path().join("base"), &roots(&[&root]));
    store.ensure_dir().unwrap();
    let line = format!("{{\"text\":\"{}\"}}\n", "é".repeat(1000));
    std::fs::write(store.dir.join("big.jsonl"), line.repeat(3000)).unwrap();
    let text = store.read("big.jsonl", usize::MAX).unwrap();
    let chars = text.chars().count();
    assert!(chars <= MAX_TRACE_CHARS + 100, "{chars}");
    assert!(
        text.ends_with("-byte trace]"),
        "{}",
        &text[text.len() - 80..]
    );
    let small = store.read("big.jsonl", 10).unwrap();
    assert!(small.starts_with("{\"text\":\"é"));
}

/// A symlink in the trace directory to a file outside it is neither listed nor read; a FIFO
/// named like a trace is refused without blocking.
#[cfg(unix)]
#[test]
fn a_symlink_or_fifo_among_the_traces_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let outside = tmp.path().join("secret.jsonl");
    std::fs::write(&outside, "{\"secret\":1}\n").unwrap();
    let store = TraceStore::new(&tmp.path().join("base"), &roots(&[&root]));
    store.ensure_dir().unwrap();
    std::os::unix::fs::symlink(&outside, store.dir.join("evil.jsonl")).unwrap();
    assert!(names(&store.list().unwrap()).is_empty());
    assert!(matches!(
        store.read("evil.jsonl", 1000),
        Err(McpError::BadTraceName(_))
    ));
    let made = std::process::Command::new("mkfifo")
        .arg(store.dir.join("pipe.jsonl"))
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(matches!(
            store.read("pipe.jsonl", 1000),
            Err(McpError::BadTraceName(_))
        ));
    });
    let refused = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("reading a FIFO named like a trace hung");
    assert!(refused);
}
