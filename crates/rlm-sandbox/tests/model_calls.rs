//! Model calls from the guest: answers, errors as values, concurrency, recovery without repeats.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rlm_sandbox::{Context, LimitHit, Limits, MemoryPool, Sandbox};

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

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_keeps_answers_not_prompts() {
    let host = Arc::new(EchoHost {
        answer_bytes: Some(10),
        ..EchoHost::default()
    });
    let mut sb = with_host(host.clone(), Limits::default()).await;
    ok(
        &mut sb,
        "big = 'p' * (4 << 20)\nfor i in range(40):\n    llm_query(big + str(i))",
    )
    .await;
    let journal = serde_json::to_string(sb.journal()).unwrap();
    assert!(journal.len() < 10_000, "journal of {} bytes", journal.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_calls_and_prompts_with_the_time_replay_without_a_reset() {
    let host = Arc::new(EchoHost::default());
    let l = Limits {
        max_host_calls_per_step: 3,
        fuel_per_step: 300_000_000,
        ..Limits::default()
    };
    let mut sb = with_host(host.clone(), l).await;
    // The fourth call is refused; a replay must meet the same refusal, in the same place.
    ok(
        &mut sb,
        "import time\nr = [llm_query(f'q{i} at {time.time()}') for i in range(4)]\nafter = llm_query('late')",
    )
    .await;
    assert_eq!(host.calls.load(Ordering::SeqCst), 3);
    let r = sb.exec("while True: pass").await.unwrap();
    assert!(r.restored && !r.reset, "{r:?}");
    assert_eq!(
        out(&mut sb, "r[0].split(' at ')[0], r[3][:20], after[:20]").await,
        "('echo: q0', 'Error: this step mad', 'Error: this step mad')"
    );
    assert_eq!(host.calls.load(Ordering::SeqCst), 3, "no call made twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_journal_resets_instead_of_growing() {
    let host = Arc::new(EchoHost {
        answer_bytes: Some(600 << 10),
        ..EchoHost::default()
    });
    let l = Limits {
        max_journal_bytes: 1 << 20,
        fuel_per_step: 300_000_000,
        ..Limits::default()
    };
    let mut sb = Sandbox::builder(engine())
        .limits(l)
        .model(host)
        .context(Context::text("doc"))
        .build()
        .await
        .unwrap();
    sb.define("query", serde_json::json!("q")).await.unwrap();
    ok(&mut sb, "a = llm_query('1')").await;
    ok(&mut sb, "b = llm_query('2')").await;
    let r = sb.exec("while True: pass").await.unwrap();
    assert!(r.reset && !r.restored, "{r:?}");
    assert!(r.error.unwrap().contains("could not be restored"));
    // The contexts and defined variables come back; the steps' variables do not.
    assert_eq!(
        out(&mut sb, "context, query, 'a' in dir()").await,
        "('doc', 'q', False)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_is_charged_to_the_memory_budget() {
    // The host's copies of what the guest produced (the journal's answers, the checkpoint)
    // count against the process's memory budget, as guest memory does.
    let host = Arc::new(EchoHost {
        answer_bytes: Some(4 << 20),
        ..EchoHost::default()
    });
    let l = Limits {
        checkpoint_after: Duration::MAX,
        fuel_per_step: 300_000_000,
        ..Limits::default()
    };
    let pool = MemoryPool::new(4 << 30);
    let mut sb = Sandbox::builder(engine())
        .limits(l)
        .model(host)
        .memory_pool(pool.clone())
        .context(Context::text("doc"))
        .build()
        .await
        .unwrap();
    for i in 0..3 {
        ok(&mut sb, &format!("x = llm_query('{i}')")).await;
    }
    let journal = pool.used() - sb.memory_held();
    assert!(
        journal >= 12 << 20,
        "{} MiB charged for 12 MiB of answers",
        journal >> 20
    );
    // A trap is recovered from the journal, still charged; dropping the REPL gives it back.
    let r = sb.exec("while True: pass").await.unwrap();
    assert!(r.restored, "{r:?}");
    assert!(pool.used() - sb.memory_held() >= 12 << 20);
    drop(sb);
    // The trapped instance is dropped on a blocking thread after the recovery.
    for _ in 0..100 {
        if pool.used() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool.used(), 0, "and all of it goes back");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sub_calls_do_not_leak_their_prompts() {
    let host = Arc::new(EchoHost::default());
    let mut sb = with_host(host.clone(), Limits::default()).await;
    // Forty failed calls with a 16 MiB prompt each: 640 MiB if every prompt stayed behind,
    // more than the REPL's 512 MiB.
    let r = ok(
        &mut sb,
        "big = 'p' * (16 << 20)\nfor i in range(40):\n    r = llm_query(big + 'FAIL' + str(i))\n\
         q = rlm_query('FAIL')\nprint(r[:24], q[:6])",
    )
    .await;
    assert_eq!(r.stdout.trim(), "Error: the model refused sub-rl");
    assert!(
        sb.memory_held() < 256 << 20,
        "{} MiB held",
        sb.memory_held() >> 20
    );
}
