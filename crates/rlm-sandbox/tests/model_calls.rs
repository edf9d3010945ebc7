//! Model calls from the guest: answers, errors as values, concurrency, recovery without repeats.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rlm_sandbox::{Context, LimitHit, Limits, Sandbox};

async fn with_host(host: Arc<EchoHost>, limits: Limits) -> Sandbox {
    Sandbox::builder(engine())
        .limits(limits)
        .model(host)
        .context(Context::text("doc"))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_answer_and_failures_are_values() {
    let host = Arc::new(EchoHost::default());
    let mut sb = with_host(host.clone(), Limits::default()).await;
    assert_eq!(out(&mut sb, "llm_query('hi')").await, "'echo: hi'");
    assert_eq!(
        out(&mut sb, "llm_query('hi', model='small')").await,
        "'echo[small]: hi'"
    );
    assert_eq!(
        out(&mut sb, "llm_query('FAIL now')").await,
        "'Error: the model refused'"
    );
    assert_eq!(
        out(&mut sb, "llm_batch(['a', 'FAIL', 'c'])").await,
        "['echo: a', 'Error: the model refused', 'echo: c']"
    );
    assert_eq!(out(&mut sb, "rlm_query('deep')").await, "'sub-rlm: deep'");
    assert_eq!(out(&mut sb, "llm_batch([])").await, "[]");
    assert_eq!(host.calls.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_model_calls_return_an_error_string() {
    let mut sb = sandbox("").await;
    let r = out(&mut sb, "llm_query('hi')").await;
    assert!(
        r.starts_with("'Error: no language model is configured"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_batch_runs_its_prompts_concurrently() {
    let host = Arc::new(EchoHost {
        delay: Duration::from_millis(200),
        ..EchoHost::default()
    });
    let mut sb = with_host(host.clone(), Limits::default()).await;
    let r = ok(
        &mut sb,
        "answers = llm_batch([f'p{i}' for i in range(40)])\nprint(answers[39])",
    )
    .await;
    assert_eq!(r.stdout.trim(), "echo: p39");
    assert_eq!(host.calls.load(Ordering::SeqCst), 40);
    assert_eq!(
        host.max_in_flight.load(Ordering::SeqCst),
        40,
        "all 40 in flight at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapped_step_restores_state_without_repeating_model_calls() {
    let host = Arc::new(EchoHost::default());
    let l = Limits {
        fuel_per_step: 300_000_000,
        ..Limits::default()
    };
    let mut sb = with_host(host.clone(), l).await;
    ok(
        &mut sb,
        "a = llm_query('first')\nb = llm_batch(['x', 'y'])\nc = rlm_query('z')",
    )
    .await;
    ok(&mut sb, "n = len(a) + len(b)").await;
    assert_eq!(host.calls.load(Ordering::SeqCst), 4);
    let r = sb
        .exec("d = llm_query('lost')\nwhile True:\n    pass")
        .await
        .unwrap();
    assert_eq!(r.limit, Some(LimitHit::Fuel));
    assert!(r.restored, "{r:?}");
    assert_eq!(
        host.calls.load(Ordering::SeqCst),
        5,
        "the replay asked no model"
    );
    assert_eq!(
        out(&mut sb, "a, b, c, n, 'd' in globals()").await,
        "('echo: first', ['echo: x', 'echo: y'], 'sub-rlm: z', 13, False)"
    );
    assert_eq!(sb.journal().len(), 4, "attach + 3 completed steps");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_model_call_is_stopped_by_the_deadline() {
    let host = Arc::new(EchoHost {
        delay: Duration::from_secs(30),
        ..EchoHost::default()
    });
    let l = Limits {
        step_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut sb = with_host(host, l).await;
    ok(&mut sb, "kept = 3").await;
    let r = sb.exec("llm_query('slow')").await.unwrap();
    assert_eq!(r.limit, Some(LimitHit::Deadline));
    assert!(r.elapsed < Duration::from_secs(10));
    assert_eq!(out(&mut sb, "kept").await, "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_answers_are_refused_not_crashing() {
    let host = Arc::new(EchoHost {
        answer_bytes: Some(2 << 20),
        ..EchoHost::default()
    });
    let l = Limits {
        max_host_string_bytes: 1 << 20,
        read_chunk_chars: 1 << 18,
        ..Limits::default()
    };
    let mut sb = with_host(host, l).await;
    let r = out(&mut sb, "llm_query('big')[:60]").await;
    assert!(
        r.contains("Error: the model's answer is 2097152 bytes"),
        "{r}"
    );
    let r = out(&mut sb, "llm_batch(['a', 'b'])[1][:40]").await;
    assert!(r.contains("Error: the model's answer is"), "{r}");
    // Error messages from the model host are bounded too.
    let r = out(
        &mut sb,
        "e = llm_query('HUGE-ERROR')\nlen(e) < 10_000, e[-40:]",
    )
    .await;
    assert!(
        r.starts_with("(True, ") && r.contains("error message cut at"),
        "{r}"
    );
    let r = out(&mut sb, "len(llm_batch(['HUGE-ERROR'] * 3)[2]) < 10_000").await;
    assert_eq!(r, "True");
}
