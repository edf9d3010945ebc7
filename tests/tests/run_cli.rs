//! `rlm run` and `rlm replay` as processes, against a scripted OpenAI-compatible mock.

use std::fs;

use rlm_integration_tests::rlm;
use rlm_testkit::{MockProvider, Reply};

fn code(c: &str) -> Reply {
    Reply::text(format!("```repl\n{c}\n```"))
}

async fn scripted() -> MockProvider {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let root = r.messages().first().is_some_and(|(role, _)| role == "system");
        if !root {
            return Reply::text(if r.last_user().contains("penicillin") { "yes" } else { "no" });
        }
        let turns = r.messages().iter().filter(|(role, _)| role == "assistant").count();
        match turns {
            0 => code("hits = search(r'Allergy: (\\w+)')\nfound = hits[0]['text'].split(': ')[1]\nok = llm_query('Is this an allergy: ' + found + ' (penicillin)?')\nprint(found, ok)"),
            _ => Reply::text("FINAL_VAR(found)"),
        }
    });
    mock
}

async fn run_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        rlm(&refs, "")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_answers_writes_a_trace_and_replay_reproduces_it() {
    let mock = scripted().await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    fs::write(&doc, "Name: Ada\nAllergy: penicillin\n").unwrap();
    let trace = dir.path().join("run.jsonl");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--context",
            doc.to_str().unwrap(),
            "--query",
            "Allergy?",
            "--model",
            "compat/scripted",
            "--base-url",
            &mock.openai_base_url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let out = run_cli(args(&["--trace", trace.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "penicillin");
    assert!(stderr.contains("answered · 2 iterations"), "{stderr}");
    assert!(
        stderr.contains("iteration 1: ran `hits = search"),
        "plain progress lines: {stderr}"
    );
    assert!(fs::read_to_string(&trace).unwrap().lines().count() >= 8);

    let calls = mock.requests().len();
    let replayed = run_cli(vec!["replay".into(), trace.to_str().unwrap().into()]).await;
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout).trim(),
        "penicillin"
    );
    assert_eq!(mock.requests().len(), calls, "replay is offline");

    let out = run_cli(args(&["--json"])).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answer"], "penicillin");
    assert_eq!(v["stop"]["kind"], "final");
    assert_eq!(v["usage"]["total"]["calls"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_say_how_the_run_ended() {
    let mock = scripted().await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    fs::write(&doc, "Allergy: penicillin\n").unwrap();
    let base = mock.openai_base_url();
    let d = doc.to_str().unwrap().to_string();
    let out = run_cli(vec![
        "run".into(),
        "--context".into(),
        d.clone(),
        "--query".into(),
        "q".into(),
        "--model".into(),
        "compat/scripted".into(),
        "--base-url".into(),
        base.clone(),
        "--budget-tokens".into(),
        "5".into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "budget exhausted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("token budget"));

    // A named provider without its key, or an unknown provider, is a setup error (exit 2).
    // (With no model named and no key, rlm runs offline on the local model instead.)
    let args = |model: &str| -> Vec<String> {
        ["run", "--context", &d, "--query", "q", "--model", model]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let out = run_cli(args("anthropic/claude-sonnet-4-5")).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    let out = run_cli(args("nope/model")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown provider"));

    mock.respond_with(|_| Reply::status(401, "bad key"));
    let out = run_cli(vec![
        "run".into(),
        "--context".into(),
        d,
        "--query".into(),
        "q".into(),
        "--model".into(),
        "compat/scripted".into(),
        "--base-url".into(),
        base,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "model error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad key"));
}

/// A root model that writes the Python real models write for other RLM REPLs (`re.search` over
/// `context[:]`, `context.splitlines()`, the question as `query`) and answers from what its code
/// printed. Over a 6.5 MB document this used to loop on `TypeError: ... 'LazyText'`.
#[tokio::test(flavor = "multi_thread")]
async fn ordinary_re_code_finds_a_needle_in_a_large_document() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let turns = r
            .messages()
            .iter()
            .filter(|(role, _)| role == "assistant")
            .count();
        if turns == 0 {
            return code(
                "import re\n\
                 pattern = r'access code for project Saffron-75 is (\\d+)'\n\
                 m = re.search(pattern, context[:])\n\
                 lines = context.splitlines()\n\
                 print(query)\n\
                 print('found:', m.group(1) if m else None, len(lines), isinstance(context, str))",
            );
        }
        // Answer from the printed output only.
        let output = r.last_user();
        match output
            .split("found: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            Some(code) if code.chars().all(|c| c.is_ascii_digit()) => {
                Reply::text(format!("FINAL({code})"))
            }
            _ => Reply::text(format!("FINAL(not found: {output})")),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("big.txt");
    let filler: String = (0..130_000)
        .map(|i| format!("entry {i}: routine status report for unit {} ok\n", i % 913))
        .collect();
    let at = filler.len() * 3 / 5;
    let at = filler[..at].rfind('\n').unwrap() + 1;
    let text = format!(
        "{}The access code for project Saffron-75 is 59975.\n{}",
        &filler[..at],
        &filler[at..]
    );
    assert!(text.len() > 6_500_000, "{}", text.len());
    fs::write(&doc, &text).unwrap();
    let question = "What is the access code for project Saffron-75?";
    let out = run_cli(
        [
            "run",
            "--context",
            doc.to_str().unwrap(),
            "--query",
            question,
            "--model",
            "compat/scripted",
            "--base-url",
            &mock.openai_base_url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "59975");
    assert!(stderr.contains("answered · 2 iterations"), "{stderr}");
    let output = mock.requests()[1].last_user();
    assert!(
        output.contains(question),
        "the question is bound as `query`: {output}"
    );
    assert!(
        output.contains("130001 True"),
        "a real str with its lines: {output}"
    );
}

/// A trace whose run started with these settings (a negative time budget, as a hand-edited or
/// hostile file may have).
fn trace_with_time_budget(max_time: &str) -> String {
    format!(
        r#"{{"type":"run_started","rlm":"root","depth":0,"query":"q","settings":{{"root_model":"compat/x","sub_model":"compat/x","max_iterations":3,"max_depth":1,"max_output_chars":1000,"budget":{{"max_sub_calls":null,"max_tokens":null,"max_usd":null,"max_time":{max_time}}},"seed":"{}"}},"context":{{"description":"text","chars":3,"hash":"h","inline":"doc"}}}}"#,
        "0".repeat(64)
    ) + "\n"
}

/// Limits and traces come from users and files: numbers no `Duration` holds are usage errors
/// (exit 2, a sentence), never a panic (exit 101).
#[tokio::test(flavor = "multi_thread")]
async fn impossible_time_limits_are_usage_errors_not_panics() {
    let mock = scripted().await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    fs::write(&doc, "Allergy: penicillin\n").unwrap();
    let d = doc.to_str().unwrap().to_string();
    for seconds in ["-1", "1e300", "inf", "NaN"] {
        let out = run_cli(vec![
            "run".into(),
            "--context".into(),
            d.clone(),
            "--query".into(),
            "q".into(),
            "--model".into(),
            "compat/scripted".into(),
            "--base-url".into(),
            mock.openai_base_url(),
            format!("--budget-seconds={seconds}"),
        ])
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{seconds}: {err}");
        assert!(
            err.contains("time budget must be a positive number"),
            "{seconds}: {err}"
        );
    }
    assert!(mock.requests().is_empty(), "no model was asked");

    // A trace with a negative time budget: `rlm replay` says which line is wrong.
    let trace = dir.path().join("bad.jsonl");
    for max_time in ["-1", "1e300"] {
        fs::write(&trace, trace_with_time_budget(max_time)).unwrap();
        let out = run_cli(vec!["replay".into(), trace.to_str().unwrap().into()]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{max_time}: {err}");
        assert!(err.contains("line 1") && err.contains("max_time"), "{err}");
    }
}
