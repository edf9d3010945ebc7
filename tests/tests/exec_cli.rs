//! `rlm exec` as a user runs it: files in, one JSON object per step out.

use std::fs;

use rlm_integration_tests::{json_lines, rlm};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn steps_share_one_repl_and_print_one_json_object_each() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(
        &dir,
        "doc.txt",
        "Patient: Ada\nAllergy: penicillin\nBlood type: O+\n",
    );
    let s1 = write(
        &dir,
        "1.py",
        "hits = search(r'Allergy: (\\w+)')\nallergy = hits[0]['text'].split(': ')[1]\nprint(allergy)",
    );
    let s2 = write(&dir, "2.py", "len(context), context.count('\\n')");
    let s3 = write(&dir, "3.py", "FINAL_VAR('allergy')");
    let out = rlm(&["exec", "--context", &ctx, &s1, &s2, &s3], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for line in &lines {
        for key in [
            "stdout", "stderr", "error", "final", "fuel", "ms", "restored", "reset",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    assert_eq!(lines[0]["stdout"], "penicillin\n");
    assert_eq!(lines[1]["stdout"], "(48, 3)\n");
    assert_eq!(lines[2]["final"], "penicillin");
    assert!(lines[2]["fuel"].as_u64().unwrap() > 0);
}

#[test]
fn a_step_from_stdin_and_errors_still_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(&dir, "doc.txt", "x");
    let bad = write(&dir, "bad.py", "1 / 0");
    let out = rlm(
        &["exec", "--context", &ctx, &bad, "-"],
        "print('from stdin', context)",
    );
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError")
    );
    assert_eq!(lines[1]["stdout"], "from stdin x\n");
}

#[test]
fn limit_flags_apply_and_the_repl_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(&dir, "doc.txt", "");
    let s1 = write(&dir, "1.py", "kept = 5");
    let spin = write(&dir, "spin.py", "while True:\n    pass");
    let s3 = write(&dir, "3.py", "print(kept)");
    let out = rlm(
        &[
            "exec",
            "--context",
            &ctx,
            "--fuel",
            "100000000",
            &s1,
            &spin,
            &s3,
        ],
        "",
    );
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines[1]["limit"], "fuel");
    assert_eq!(lines[1]["restored"], true);
    assert_eq!(lines[2]["stdout"], "5\n");

    let out = rlm(
        &[
            "exec",
            "--context",
            &ctx,
            "--timeout-ms",
            "300",
            "--fuel",
            "999999999999999",
            &spin,
        ],
        "",
    );
    assert_eq!(json_lines(&out)[0]["limit"], "deadline");

    let bomb = write(&dir, "bomb.py", "print('x' * 100_000)");
    let out = rlm(
        &["exec", "--context", &ctx, "--max-output", "1000", &bomb],
        "",
    );
    let line = &json_lines(&out)[0];
    assert_eq!(line["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(line["truncated"], true);

    let hog = write(&dir, "hog.py", "b = bytearray(300 * 1024 * 1024)");
    let out = rlm(&["exec", "--context", &ctx, "--memory-mb", "128", &hog], "");
    assert!(
        json_lines(&out)[0]["error"]
            .as_str()
            .unwrap()
            .contains("MemoryError")
    );
}

#[test]
fn json_contexts_load_as_python_objects() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(
        &dir,
        "doc.json",
        r#"{"visits": [{"date": "2024-01-02", "bp": "120/80"}]}"#,
    );
    let lines_ctx = write(&dir, "docs.jsonl", "\"first\"\n\"second\"\n");
    let step = write(&dir, "s.py", "context['visits'][0]['bp']");
    let out = rlm(&["exec", "--context", &ctx, &step], "");
    assert_eq!(json_lines(&out)[0]["stdout"], "'120/80'\n");
    let step = write(&dir, "t.py", "context");
    let out = rlm(&["exec", "--context", &lines_ctx, &step], "");
    assert_eq!(json_lines(&out)[0]["stdout"], "['first', 'second']\n");
}

#[test]
fn without_a_model_llm_query_returns_an_error_string() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(&dir, "doc.txt", "");
    let step = write(&dir, "s.py", "print(llm_query('hello'))");
    let out = rlm(&["exec", "--context", &ctx, &step], "");
    assert!(out.status.success());
    let stdout = json_lines(&out)[0]["stdout"].as_str().unwrap().to_string();
    assert!(
        stdout.starts_with("Error: no language model is configured"),
        "{stdout}"
    );
}

#[test]
fn setup_errors_are_clear_and_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let step = write(&dir, "s.py", "1");
    let out = rlm(&["exec", "--context", "/nonexistent/doc.txt", &step], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading the context /nonexistent/doc.txt")
    );

    let out = rlm(
        &["exec", "--guest", "/nonexistent/rlm_guest.wasm", &step],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/rlm_guest.wasm") && err.contains("RLM_GUEST_WASM"),
        "{err}"
    );

    let bad = write(&dir, "bad.json", "{not json");
    let out = rlm(&["exec", "--context", &bad, &step], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}
