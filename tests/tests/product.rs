//! What ships: the `rlm` binary is built from crates that hold no test fixtures (no code
//! written to fake a model), and testing a crate builds only what it needs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The packages `package` needs along the given edge kinds (`normal`, `normal,dev`), as
/// `cargo tree` resolves them for that package alone.
fn tree(package: &str, edges: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--prefix",
            "none",
            "-e",
            edges,
            "-p",
            package,
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_rlm_binary_depends_on_no_test_helper() {
    let deps = tree("rlm-cli", "normal");
    assert!(deps.iter().any(|d| d == "rlm-eval"), "{deps:?}");
    assert!(
        !deps.iter().any(|d| d == "rlm-testkit"),
        "the rlm binary links the test kit: {deps:?}"
    );
}

#[test]
fn testing_the_model_clients_builds_no_sandbox_engine() {
    let deps = tree("rlm-llm", "normal,dev");
    assert!(deps.iter().any(|d| d == "rlm-testkit"), "{deps:?}");
    for heavy in ["rlm-eval", "rlm-sandbox", "wasmtime"] {
        assert!(
            !deps.iter().any(|d| d == heavy),
            "testing rlm-llm builds {heavy}: {deps:?}"
        );
    }
}

/// The scripted test model (and helpers written for it) lives in the dev-only test kit; no
/// product crate has one.
#[test]
fn no_product_crate_holds_the_scripted_model() {
    let crates = workspace().join("crates");
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        if dir.file_name().is_some_and(|n| n == "rlm-testkit") {
            continue;
        }
        let mut stack = vec![dir.join("src")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    assert!(
                        !p.ends_with("scripted.rs") && !text.contains("mod scripted"),
                        "{} holds a scripted test model",
                        p.display()
                    );
                }
            }
        }
    }
    assert!(crates.join("rlm-testkit/src/scripted.rs").is_file());
}
