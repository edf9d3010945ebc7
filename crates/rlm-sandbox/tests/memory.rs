//! The memory rule: a context loads whole when it fits the REPL's ceiling, the REPL's cap grows
//! with it, and every REPL is charged to one shared budget.

mod common;

use common::*;
use rlm_sandbox::{Context, Limits, MemoryPool, Sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn a_large_text_is_a_real_str_with_default_limits() {
    // Above the old fixed threshold of 4 Mi characters.
    let text = "log line: user_7 paid $12.50\n".repeat(400_000);
    let mut sb = sandbox(&text).await;
    assert!(sb.loaded_whole(0));
    let limits = Limits::default();
    assert_eq!(
        sb.memory_cap(),
        limits.memory_bytes + 3 * Context::text(text.clone()).guest_bytes()
    );
    assert_eq!(
        out(
            &mut sb,
            "isinstance(context, str), len(context), len(re.findall(r'user_(\\d+)', context)), \
             len(context.splitlines()), context.lower()[:8]"
        )
        .await,
        format!("(True, {}, 400000, 400000, 'log line')", text.len())
    );
}

#[test]
fn guest_bytes_follow_cpython_string_widths() {
    let n = 1000u64;
    let size = |s: &str| Context::text(s.repeat(n as usize)).guest_bytes();
    assert_eq!(size("a"), 49 + n);
    assert_eq!(size("é"), 49 + 24 + n);
    assert_eq!(size("日"), 49 + 24 + 2 * n);
    assert_eq!(size("🎉"), 49 + 24 + 4 * n);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_past_the_ceiling_is_lazy_and_the_cap_stays_at_the_base() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        max_memory_bytes: 96 << 20,
        ..Limits::default()
    };
    // 64 MiB + 3 × 12 MB > 96 MiB: lazy.
    let text = "x".repeat(12_000_000);
    let mut sb = sandbox_with(Context::text(text.clone()), limits.clone()).await;
    assert!(!sb.loaded_whole(0));
    assert_eq!(sb.memory_cap(), 64 << 20);
    assert_eq!(out(&mut sb, "type(context).__name__").await, "'LazyText'");
    // A smaller one fits: whole, and the cap grows by three times its size.
    let mut sb = sandbox_with(Context::text("y".repeat(5_000_000)), limits).await;
    assert!(sb.loaded_whole(0));
    assert_eq!(sb.memory_cap(), (64 << 20) + 3 * (5_000_000 + 49));
    assert_eq!(out(&mut sb, "type(context).__name__").await, "'str'");
    // An added context is decided the same way against what the REPL already holds.
    let name = sb.add_context(Context::text(text)).await.unwrap();
    assert!(!sb.loaded_whole(1));
    assert_eq!(
        out(&mut sb, &format!("type({name}).__name__")).await,
        "'LazyText'"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repls_share_one_memory_budget() {
    let probe = sandbox("").await;
    let base = probe.memory_held();
    drop(probe);
    // Room for two idle REPLs and 100 MiB more, not for two REPLs holding 100 MiB each.
    let pool = MemoryPool::new(2 * base + (150 << 20));
    let build = |ctx: &str| {
        Sandbox::builder(engine())
            .memory_pool(pool.clone())
            .context(Context::text(ctx))
            .build()
    };
    let mut a = build("").await.unwrap();
    let mut b = build("").await.unwrap();
    ok(&mut a, "big = bytearray(100 << 20)").await;
    let r = b.exec("big = bytearray(100 << 20)").await.unwrap();
    assert!(
        r.error.as_deref().unwrap_or("").contains("MemoryError"),
        "{r:?}"
    );
    assert!(
        !r.restored && !r.reset,
        "a refused allocation is an ordinary MemoryError"
    );
    // While the budget is short, a context that would fit a REPL on its own loads lazily.
    let c = build(&"z".repeat(30_000_000)).await.unwrap();
    assert!(!c.loaded_whole(0));
    drop(c);
    // Memory comes back when a REPL is dropped.
    drop(a);
    ok(&mut b, "big = bytearray(100 << 20)").await;
    assert!(pool.used() >= 100 << 20);
    drop(b);
    assert_eq!(pool.used(), 0);
    // A budget too small for any REPL is a clear error, not a crash.
    let tiny = MemoryPool::new(1 << 20);
    let err = Sandbox::builder(engine())
        .memory_pool(tiny)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("memory budget"), "{err}");
}
