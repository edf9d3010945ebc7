//! Helpers for integration tests that drive the real `rlm` binary as a process.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Path of the `rlm` binary built next to this test executable (`cargo build -p rlm-cli`;
/// `just test` builds it first).
pub fn rlm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/rlm
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("rlm{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p rlm-cli` (`just test` does)",
        bin.display()
    );
    bin
}

/// Run `rlm` with `args`, feeding `stdin`.
pub fn rlm(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(rlm_bin())
        .args(args)
        // Tests never reach real providers, whatever the developer's environment holds.
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("RLM_API_KEY")
        .env_remove("RLM_BASE_URL")
        .env_remove("RLM_MODEL")
        .env_remove("RLM_SUB_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rlm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for rlm")
}

/// The sample patient history (`data/synthetic_patient_data.md`).
pub const SAMPLE_DOCUMENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/synthetic_patient_data.md"
);

/// `rlm run` asking `query` about the sample document, with `extra` arguments.
pub fn ask_sample(query: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--context", SAMPLE_DOCUMENT, "--query", query];
    args.extend_from_slice(extra);
    rlm(&args, "")
}

/// Parse every stdout line as JSON.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}
