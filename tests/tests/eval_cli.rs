//! `rlm eval run | merge | report` as processes, against the scripted eval model served by the
//! mock provider: every dataset × method, resume, shards, traces, judge and report.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use rlm_integration_tests::rlm;
use rlm_testkit::{MockProvider, Reply};

async fn scripted() -> MockProvider {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| Reply::text(rlm_testkit::scripted::respond(&r.messages())));
    mock
}

async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        rlm(&refs, "")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "task")
        .collect()
}

fn eval_run(url: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = args(&[
        "eval",
        "run",
        "--model",
        "compat/scripted",
        "--base-url",
        url,
        "--sizes",
        "4k,32k",
        "--direct-window",
        "8k",
        "--sub-context-tokens",
        "8k",
        "--concurrency",
        "6",
        "--out",
        out.to_str().unwrap(),
    ]);
    v.extend(args(extra));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dataset_and_method_scores_and_reports() {
    let mock = scripted().await;
    let url = mock.openai_base_url();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    let out = cli(eval_run(&url, &results, &["--judge", "compat/scripted"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let recs = records(&results);
    assert_eq!(recs.len(), 4 * 2 * 4, "datasets × sizes × methods");

    let mut direct = BTreeMap::new();
    for r in &recs {
        let (method, size) = (r["method"].as_str().unwrap(), r["size"].as_u64().unwrap());
        let what = format!("{} {method}: {r}", r["task_id"]);
        if method == "direct" {
            direct.insert(
                (r["dataset"].as_str().unwrap().to_string(), size),
                r["score"].as_f64().unwrap(),
            );
            assert_eq!(r["truncated"], size > 8_000, "{what}");
        } else {
            // The scripted model is competent: every RLM method answers every task.
            assert_eq!(r["score"], 1.0, "{what}");
            assert_eq!(r["stop"], "final", "{what}");
        }
        assert_eq!(
            r["judge"], r["score"],
            "the judge agrees on 0/1 scores: {what}"
        );
        let trace = r["trace"].as_str().expect("a trace per unit");
        let events = rlm_core::read_trace(Path::new(trace)).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, rlm_core::Event::FinalAnswer { .. })),
            "{what}"
        );
        if r["dataset"] == "oolong" {
            let subs = r["sub_calls"].as_u64().unwrap();
            match method {
                "rlm-d0" | "direct" => assert_eq!(subs, 0, "{what}"),
                _ => assert!(subs >= 1, "{what}"),
            }
            let recursive = events.iter().any(|e| matches!(e, rlm_core::Event::SubCallFinished { kind, .. } if *kind == rlm_core::SubCallKind::RlmQuery));
            assert_eq!(
                recursive,
                method == "rlm-d2",
                "only depth 2 starts sub-RLMs: {what}"
            );
        }
    }
    // `direct` sees everything at 4K and falls once the context passes its 8K window.
    for d in ["s-niah", "oolong", "oolong-pairs", "multi-hop"] {
        assert_eq!(direct[&(d.to_string(), 4_000)], 1.0, "direct {d} 4K");
    }
    let big: f64 = direct
        .iter()
        .filter(|((_, s), _)| *s == 32_000)
        .map(|(_, v)| v)
        .sum();
    assert!(big <= 2.0, "direct past its window: {direct:?}");

    // A traced RLM unit replays offline to the same answer.
    let rlm_trace = recs
        .iter()
        .find(|r| r["method"] == "rlm" && r["dataset"] == "oolong")
        .unwrap()["trace"]
        .as_str()
        .unwrap()
        .to_string();
    let replay = cli(args(&["replay", &rlm_trace])).await;
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );

    // The report: Markdown, JSON and the plot; score gates.
    let report_dir = dir.path().join("report");
    let rep = cli(args(&[
        "eval",
        "report",
        results.to_str().unwrap(),
        "--out",
        report_dir.to_str().unwrap(),
        "--min-score",
        "rlm=1",
        "--min-score",
        "rlm-d2=1",
        "--min-score",
        "rlm-d0=1",
    ]))
    .await;
    assert_eq!(
        rep.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let md = fs::read_to_string(report_dir.join("report.md")).unwrap();
    for d in [
        "### s-niah",
        "### oolong",
        "### oolong-pairs",
        "### multi-hop",
        "| rlm-d2 | 1.00 (n=1) | 1.00 (n=1) |",
    ] {
        assert!(md.contains(d), "{d} in\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(report_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 32);
    let svg = fs::read_to_string(report_dir.join("report.svg")).unwrap();
    assert_eq!(
        svg.matches("<polyline").count(),
        16,
        "4 datasets × 4 methods"
    );
    let gate = cli(args(&[
        "eval",
        "report",
        results.to_str().unwrap(),
        "--out",
        report_dir.to_str().unwrap(),
        "--min-score",
        "direct=1",
    ]))
    .await;
    assert_eq!(gate.status.code(), Some(3), "direct is below 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_resume_and_shards_merge() {
    let mock = scripted().await;
    let url = mock.openai_base_url();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    let base = [
        "--dataset",
        "s-niah,oolong",
        "--method",
        "direct",
        "--method",
        "rlm",
        "--no-traces",
    ];
    let out = cli(eval_run(
        &url,
        &results,
        &[&base[..], &["--limit", "5"]].concat(),
    ))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&results).len(), 5, "--limit");
    // A killed run leaves half a line; the resume skips what is done and finishes the rest.
    let mut text = fs::read_to_string(&results).unwrap();
    text.push_str("{\"kind\":\"task\",\"task_id\":\"s-ni");
    fs::write(&results, text).unwrap();
    let before = mock.requests().len();
    let out = cli(eval_run(&url, &results, &base)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("5 resumed") && stderr.contains("3 run now"),
        "{stderr}"
    );
    assert_eq!(records(&results).len(), 8);
    let direct_calls = mock.requests()[before..]
        .iter()
        .filter(|r| {
            r.messages()[0]
                .1
                .starts_with("Answer the question about the document")
        })
        .count();
    assert_eq!(direct_calls, 1, "only the missing units ran");

    // Three shards cover the plan exactly once; merge checks they are all there.
    let shards: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("s{i}.jsonl")))
        .collect();
    for (i, s) in shards.iter().enumerate() {
        let out = cli(eval_run(
            &url,
            s,
            &[&base[..], &["--shard", &format!("{i}/3")]].concat(),
        ))
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counts: Vec<usize> = shards.iter().map(|s| records(s).len()).collect();
    assert_eq!(counts, vec![3, 3, 2]);
    let merged = dir.path().join("merged.jsonl");
    let m = |inputs: &[&Path]| {
        let mut a = args(&["eval", "merge", "--out", merged.to_str().unwrap()]);
        a.extend(inputs.iter().map(|p| p.to_str().unwrap().to_string()));
        cli(a)
    };
    let partial = m(&[&shards[0], &shards[2]]).await;
    assert_eq!(partial.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&partial.stderr).contains("missing shards [1]"));
    let full = m(&[&shards[0], &shards[1], &shards[2]]).await;
    assert_eq!(
        full.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let mut a: Vec<String> = records(&merged)
        .iter()
        .map(|r| format!("{} {}", r["task_id"], r["method"]))
        .collect();
    let mut b: Vec<String> = records(&results)
        .iter()
        .map(|r| format!("{} {}", r["task_id"], r["method"]))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the shards together are the whole run");
    // Shards of a different run do not merge with these.
    let other = dir.path().join("other.jsonl");
    let out = cli(eval_run(
        &url,
        &other,
        &[
            "--dataset",
            "s-niah",
            "--method",
            "direct",
            "--no-traces",
            "--shard",
            "0/3",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let mixed = m(&[&shards[0], &other]).await;
    assert_eq!(mixed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("different runs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    let o = cli(args(&[
        "eval",
        "run",
        "--model",
        "compat/x",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--dataset",
        "nope",
        "--out",
        out.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown dataset \"nope\""));
    let o = cli(args(&[
        "eval",
        "run",
        "--model",
        "compat/x",
        "--method",
        "rag",
        "--out",
        out.to_str().unwrap(),
    ]))
    .await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown method"));
    let o = cli(args(&["eval", "run", "--shard", "3/3"])).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected I/N"));
    // Time limits no duration holds are usage errors, not panics (exit 101).
    for (flag, value) in [
        ("--task-timeout", "inf"),
        ("--task-timeout", "-1"),
        ("--budget-seconds", "1e300"),
    ] {
        let o = cli(args(&[
            "eval",
            "run",
            "--model",
            "compat/x",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--dataset",
            "s-niah",
            "--sizes",
            "4k",
            flag,
            value,
            "--out",
            out.to_str().unwrap(),
        ]))
        .await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains("time budget must be a positive number"),
            "{err}"
        );
    }
    // A model that is down: the units are recorded as errors, and the run exits 1.
    let o = cli(args(&[
        "eval",
        "run",
        "--model",
        "compat/x",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--dataset",
        "s-niah",
        "--sizes",
        "1k",
        "--method",
        "direct",
        "--no-traces",
        "--out",
        out.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = records(&out);
    assert_eq!((r.len(), r[0]["stop"].as_str()), (1, Some("error")));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_task_budgets_and_timeouts_are_recorded() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        Reply::delayed(
            Duration::from_millis(700),
            Reply::text(rlm_testkit::scripted::respond(&r.messages())),
        )
    });
    let url = mock.openai_base_url();
    let dir = tempfile::tempdir().unwrap();
    let by_method = |path: &Path| -> BTreeMap<String, serde_json::Value> {
        records(path)
            .into_iter()
            .map(|r| (r["method"].as_str().unwrap().to_string(), r))
            .collect()
    };
    // A token budget stops the RLM with its reason; `direct` (one call) is not an RLM.
    let spent = dir.path().join("budget.jsonl");
    let base = ["--dataset", "s-niah", "--sizes", "1k", "--no-traces"];
    let out = cli(eval_run(
        &url,
        &spent,
        &[&base[..], &["--method", "rlm", "--budget-tokens", "50"]].concat(),
    ))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &by_method(&spent)["rlm"];
    assert_eq!(r["stop"], "budget", "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("token budget"),
        "{r}"
    );
    // A task past its time limit is recorded as a timeout, for both kinds of method.
    let slow = dir.path().join("timeout.jsonl");
    let out = cli(eval_run(
        &url,
        &slow,
        &[
            &base[..],
            &[
                "--method",
                "direct",
                "--method",
                "rlm",
                "--task-timeout",
                "0.5",
            ],
        ]
        .concat(),
    ))
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = by_method(&slow);
    for m in ["direct", "rlm"] {
        assert_eq!(recs[m]["stop"], "timeout", "{m}: {}", recs[m]);
        assert_eq!(recs[m]["score"], 0.0);
    }
}
