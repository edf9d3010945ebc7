//! What model code written for other RLM REPLs (the official rlm, DSPy) expects: their names,
//! their finishing calls, and a scaffold that one bad step cannot break.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use rlm_sandbox::{Context, Limits, Sandbox};

/// Default limits, but a spin runs out of fuel in a fraction of a second.
fn quick_traps() -> Limits {
    Limits {
        fuel_per_step: 300_000_000,
        ..Limits::default()
    }
}

async fn with_host(host: Arc<EchoHost>, context: Arc<Context>) -> Sandbox {
    Sandbox::builder(engine())
        .limits(quick_traps())
        .model(host)
        .context(context)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peers_names_are_aliases_of_ours() {
    let host = Arc::new(EchoHost::default());
    let mut sb = with_host(host.clone(), Context::text("the document")).await;
    assert_eq!(
        out(&mut sb, "llm_query_batched(['a', 'FAIL', 'c'])").await,
        "['echo: a', 'Error: the model refused', 'echo: c']"
    );
    assert_eq!(
        out(&mut sb, "rlm_query_batched(['x', 'y']), rlm_batch([])").await,
        "(['sub-rlm: x', 'sub-rlm: y'], [])"
    );
    // The official rlm's first context is `context_0`; DSPy code names `re` without importing.
    assert_eq!(
        out(
            &mut sb,
            "context_0 is context, re.findall(r'\\w+', context_0)"
        )
        .await,
        "(True, ['the', 'document'])"
    );
    assert_eq!(host.calls.load(Ordering::SeqCst), 5);
    // Batched sub-RLM calls are journaled: a restore after a trap does not ask again.
    ok(&mut sb, "kept = rlm_query_batched(['p', 'q'])").await;
    let r = sb.exec("while True: pass").await.unwrap();
    assert!(r.restored, "{r:?}");
    assert_eq!(out(&mut sb, "kept").await, "['sub-rlm: p', 'sub-rlm: q']");
    assert_eq!(host.calls.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_and_show_vars_behave_as_in_dspy_and_the_official_rlm() {
    let mut sb = sandbox("doc").await;
    for (code, want) in [
        ("SUBMIT('42')", "42"),
        ("SUBMIT(answer='Paris')", "Paris"),
        ("SUBMIT(7)", "7"),
        ("SUBMIT(answer='x', reasoning='because')", "x"),
        (
            "SUBMIT(answer='1', sparql='q')",
            r#"{"answer": "1", "sparql": "q"}"#,
        ),
        // DSPy's positional form for several output fields, in signature order.
        ("SUBMIT({'a': 1}, 'text', 5)", r#"[{"a": 1}, "text", 5]"#),
        (
            "FINAL({'content': 'from a dict', 'ready': True})",
            "from a dict",
        ),
        ("v = 'kept'\nFINAL_VAR('v')", "kept"),
    ] {
        let r = ok(&mut sb, code).await;
        assert_eq!(r.final_answer.as_deref(), Some(want), "{code}");
    }
    let r = sb.exec("SUBMIT()").await.unwrap();
    assert!(r.error.unwrap().contains("SUBMIT needs the answer"));
    // SHOW_VARS returns the listing (the official rlm's contract) and shows plainly.
    ok(&mut sb, "items = [1, 2, 3]").await;
    let printed = out(&mut sb, "print(SHOW_VARS())").await;
    assert!(printed.contains("items: list, len 3"), "{printed}");
    assert_eq!(out(&mut sb, "SHOW_VARS()").await, printed);
    assert_eq!(out(&mut sb, "isinstance(SHOW_VARS(), str)").await, "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_step_cannot_break_the_scaffold() {
    let mut sb = sandbox("doc").await;
    ok(
        &mut sb,
        "FINAL = None\nFINAL_VAR = 1\nSUBMIT = 2\nllm_query = 3\nsearch = 'x'\nSHOW_VARS = 4\n\
         print = lambda *a, **k: None\ndel answer\nimport builtins\nbuiltins.len = None\n\
         builtins.print = None\n__builtins__ = {}",
    )
    .await;
    // Every name is back for the next step.
    assert_eq!(
        out(
            &mut sb,
            "print(len(search('doc')), llm_query('q')[:6], answer)"
        )
        .await,
        "1 Error: {'content': '', 'ready': False}"
    );
    let r = ok(&mut sb, "FINAL('done')").await;
    assert_eq!(r.final_answer.as_deref(), Some("done"));
    // A model's own `answer` variable is left alone.
    ok(&mut sb, "answer = 'my answer'").await;
    let r = ok(&mut sb, "FINAL_VAR('answer')").await;
    assert_eq!(r.final_answer.as_deref(), Some("my answer"));
}

#[tokio::test(flavor = "multi_thread")]
async fn defined_variables_hold_json_values_and_survive_a_restore() {
    let mut sb = sandbox_with(Context::text("doc"), quick_traps()).await;
    sb.define("query", serde_json::json!("Which drug?"))
        .await
        .unwrap();
    sb.define("opts", serde_json::json!({"k": [1, 2]}))
        .await
        .unwrap();
    assert!(sb.define("FINAL", serde_json::json!(1)).await.is_err());
    assert!(sb.define("not a name", serde_json::json!(1)).await.is_err());
    let r = sb.exec("while True: pass").await.unwrap();
    assert!(r.restored);
    assert_eq!(
        out(&mut sb, "query, opts['k']").await,
        "('Which drug?', [1, 2])"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn common_modules_need_no_import() {
    let mut sb = sandbox_with(Context::text("a b a"), Limits::default()).await;
    assert_eq!(
        out(
            &mut sb,
            "collections.Counter(context.split()).most_common(1), json.dumps([1]), math.sqrt(4)"
        )
        .await,
        "([('a', 2)], '[1]', 2.0)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn top_level_await_runs_code_written_for_async_repls() {
    let host = Arc::new(EchoHost::default());
    let mut sb = with_host(host.clone(), Context::text("doc")).await;
    // fast-rlm's REPL makes llm_query a coroutine: models write `await` at top level.
    assert_eq!(
        out(
            &mut sb,
            "import asyncio\nr = await llm_query('a')\n\
             rs = await asyncio.gather(*[llm_query(p) for p in ['b', 'c']])\n\
             b = await llm_query_batched(['d'])\n\
             async def twice(x):\n    await asyncio.sleep(0.01)\n    return x * 2\n\
             print(r, rs, b, await twice(21))"
        )
        .await,
        "echo: a ['echo: b', 'echo: c'] ['echo: d'] 42"
    );
    // A trailing awaited expression is echoed, and the answers are still plain strings.
    assert_eq!(out(&mut sb, "await llm_query('e')").await, "'echo: e'");
    assert_eq!(
        out(&mut sb, "isinstance(r, str), r.upper(), r + '!'").await,
        "(True, 'ECHO: A', 'echo: a!')"
    );
}
