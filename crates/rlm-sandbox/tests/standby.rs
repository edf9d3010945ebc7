//! Recovery after a trap by swapping in a standby instance (it costs what the REPL's state
//! costs, not its history): nothing replayed on the step's path, variables, contexts, defined
//! names and model answers intact, the standby's memory charged to the budget.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{EchoHost, engine, out};
use rlm_sandbox::{Context, Limits, MemoryPool, Sandbox};

/// Limits that stop `while True: pass` quickly, with a standby from the first step on
/// (`standby_after` zero) or never (`Duration::MAX`), and no checkpoints (`checkpoint.rs` tests
/// them, and a standby started from one).
fn limits(standby_after: Duration) -> Limits {
    Limits {
        fuel_per_step: 200_000_000,
        standby_after,
        checkpoint_after: Duration::MAX,
        ..Limits::default()
    }
}

async fn sandbox(standby_after: Duration) -> Sandbox {
    Sandbox::builder(engine())
        .limits(limits(standby_after))
        .context(Context::text("the doc"))
        .build()
        .await
        .expect("sandbox")
}

const TRAP: &str = "while True:\n    pass";

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_after_many_steps_replays_none_of_them() {
    let mut sb = sandbox(Duration::ZERO).await;
    let n = 40;
    for i in 0..n {
        out(&mut sb, &format!("v{i} = [i * {i} for i in range(50)]")).await;
    }
    assert!(sb.has_standby());
    assert!(sb.settle().await, "the standby caught up");
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored && !r.reset, "{r:?}");
    assert_eq!(r.replayed, 0, "{r:?}");
    let total: usize = (0..n).map(|i| 49 * 50 / 2 * i).sum();
    let sum = (0..n)
        .map(|i| format!("sum(v{i})"))
        .collect::<Vec<_>>()
        .join(" + ");
    assert_eq!(
        out(&mut sb, &format!("print({sum})")).await,
        total.to_string()
    );
    // The REPL goes on, and a second trap is recovered the same way: a new standby was built.
    out(&mut sb, "w = len(context)").await;
    assert!(sb.settle().await);
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored && r.replayed == 0, "{r:?}");
    assert_eq!(out(&mut sb, "print(w, sum(v3))").await, "7 3675");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_standby_a_trap_replays_the_whole_journal() {
    let mut sb = sandbox(Duration::MAX).await;
    for i in 0..12 {
        out(&mut sb, &format!("v{i} = {i}")).await;
    }
    assert!(!sb.has_standby());
    assert!(!sb.settle().await);
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored, "{r:?}");
    // The context's attachment and the twelve steps.
    assert_eq!(r.replayed, 13, "{r:?}");
    assert_eq!(out(&mut sb, "print(v11)").await, "11");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_state_survives_a_swap() {
    let host = Arc::new(EchoHost::default());
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .model(host.clone())
        .context(Context::text("first"))
        .build()
        .await
        .unwrap();
    sb.define("query", serde_json::json!({"q": "why?"}))
        .await
        .unwrap();
    assert_eq!(
        sb.add_context(Context::text("second doc")).await.unwrap(),
        "context_1"
    );
    out(
        &mut sb,
        "a = llm_query('hello')\nimport random\nr = random.random()",
    )
    .await;
    out(
        &mut sb,
        "class Box:\n    pass\nb = Box()\nb.items = [a, len(context_1)]",
    )
    .await;
    let before = out(&mut sb, "print(repr(r))").await;
    let calls = host.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 1);
    assert!(sb.settle().await);
    let r = sb.exec(&format!("x = 1\n{TRAP}")).await.unwrap();
    assert!(r.restored && r.replayed == 0, "{r:?}");
    // The standby replayed the model call from the journal, not from the model.
    assert_eq!(host.calls.load(Ordering::SeqCst), calls);
    assert_eq!(out(&mut sb, "print(repr(r))").await, before);
    assert_eq!(
        out(
            &mut sb,
            "print(b.items, query['q'], context, context_1, 'x' in dir())"
        )
        .await,
        "['echo: hello', 10] why? first second doc False"
    );
    // Contexts added after the swap reach the new instance's host state too.
    assert_eq!(
        sb.add_context(Context::text("third")).await.unwrap(),
        "context_2"
    );
    assert_eq!(out(&mut sb, "print(context_2)").await, "third");
    assert!(sb.settle().await);
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored && r.replayed == 0, "{r:?}");
    assert_eq!(
        out(&mut sb, "print(context_2, b.items[0])").await,
        "third echo: hello"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standby_is_charged_to_the_memory_budget_and_given_back() {
    let pool = MemoryPool::new(8 << 30);
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .memory_pool(pool.clone())
        .build()
        .await
        .unwrap();
    out(&mut sb, "x = 1").await;
    assert!(sb.settle().await);
    let held = sb.memory_held();
    assert!(
        pool.used() >= 2 * held,
        "the pool holds {} bytes, the REPL {held}",
        pool.used()
    );
    drop(sb);
    assert_eq!(pool.used(), 0);

    // Without a standby the pool holds the REPL alone.
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::MAX))
        .memory_pool(pool.clone())
        .build()
        .await
        .unwrap();
    out(&mut sb, "x = 1").await;
    // The REPL's memory, and the journal's five bytes of code.
    assert_eq!(pool.used(), sb.memory_held() + 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_standby_when_the_budget_has_no_room_for_a_second_copy() {
    // Measure one REPL, then give the budget room for it, a copy for a replay and half of
    // another: not enough for a standby and a replay.
    let probe = Sandbox::builder(engine())
        .limits(limits(Duration::MAX))
        .build()
        .await
        .unwrap();
    let held = probe.memory_held();
    drop(probe);
    let pool = MemoryPool::new(2 * held + held / 2);
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .memory_pool(pool.clone())
        .build()
        .await
        .unwrap();
    out(&mut sb, "x = 1").await;
    assert!(!sb.has_standby());
    // The REPL's memory, and the journal's five bytes of code.
    assert_eq!(pool.used(), sb.memory_held() + 5);
    // Recovery still works, by replaying the journal.
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored && r.replayed == 1, "{r:?}");
    assert_eq!(out(&mut sb, "print(x)").await, "1");
}
