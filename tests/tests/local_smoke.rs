//! The offline path end to end: `rlm run` with no key answers a question about the sample
//! patient history on the local 0.5B model, through the sandbox. Asserts the protocol (code
//! ran, a final answer came back, usage counted), not the wording.

use rlm_integration_tests::ask_sample;

#[test]
fn local_model_answers_offline_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("local.jsonl");
    let out = ask_sample(
        "Which new drug allergy was recorded for the patient?",
        &["--max-iterations", "4", "--trace", trace.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runs offline on local/qwen2.5-coder-0.5b"),
        "{stderr}"
    );
    assert!(
        stderr.contains("A hosted model answers far better"),
        "{stderr}"
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "answered or used its iterations: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "an answer came back: {stderr}"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "code_executed"),
        "the model's code ran in the sandbox"
    );
    let tokens: u64 = events
        .iter()
        .filter(|e| e["type"] == "model_reply")
        .map(|e| {
            e["usage"]["input_tokens"].as_u64().unwrap()
                + e["usage"]["output_tokens"].as_u64().unwrap()
        })
        .sum();
    assert!(tokens > 100, "usage counted: {tokens}");
    assert!(events.iter().any(|e| e["type"] == "final_answer"));
}
