//! New REPLs from the engine's warm pool (instances made ahead of time): they behave exactly
//! as REPLs given a new instance: their own seed, limits, model host, contexts and memory cap.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{EchoHost, out};
use rlm_sandbox::{Context, EngineOptions, Limits, Sandbox, SandboxEngine};

async fn engine(warm: usize) -> Arc<SandboxEngine> {
    tokio::task::spawn_blocking(move || {
        SandboxEngine::with_options(EngineOptions {
            warm_instances: Some(warm),
            ..EngineOptions::default()
        })
    })
    .await
    .unwrap()
    .expect("engine")
}

/// Wait until the pool has `n` instances ready.
async fn ready(engine: &SandboxEngine, n: usize) {
    for _ in 0..500 {
        if engine.warm_instances() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the warm pool never filled");
}

const DRAW: &str =
    "import os, random, uuid\nprint(os.urandom(4).hex(), random.random(), uuid.uuid4().hex[:6])";

#[tokio::test(flavor = "multi_thread")]
async fn a_repl_from_the_pool_draws_what_a_new_instance_draws() {
    let (pooled, plain) = (engine(2).await, engine(0).await);
    // The first REPL starts the refill.
    drop(Sandbox::builder(pooled.clone()).build().await.unwrap());
    ready(&pooled, 2).await;
    for seed in [[1u8; 32], [2u8; 32]] {
        let mut a = Sandbox::builder(pooled.clone())
            .seed(seed)
            .build()
            .await
            .unwrap();
        let mut b = Sandbox::builder(plain.clone())
            .seed(seed)
            .build()
            .await
            .unwrap();
        assert_eq!(out(&mut a, DRAW).await, out(&mut b, DRAW).await);
    }
    assert_eq!(plain.warm_instances(), 0, "no pool when it is off");
}

/// What a new REPL shows of itself: its names, the source lines it keeps for tracebacks, its
/// first step's number (in a traceback) and `_`.
const SELF: &str = "import linecache\nprint(sorted(globals()), sorted(k for k in linecache.cache \
     if k.startswith('<')), '_' in globals())\nSHOW_VARS()\n1 / 0";

#[tokio::test(flavor = "multi_thread")]
async fn the_warm_up_of_a_pooled_instance_leaves_no_trace() {
    let (pooled, plain) = (engine(1).await, engine(0).await);
    drop(Sandbox::builder(pooled.clone()).build().await.unwrap());
    ready(&pooled, 1).await;
    let mut seen = Vec::new();
    for engine in [pooled, plain] {
        let mut sb = Sandbox::builder(engine)
            .context(Context::text("a doc"))
            .build()
            .await
            .unwrap();
        let r = sb.exec(SELF).await.unwrap();
        let error = r.error.expect("1 / 0 raises");
        assert!(error.contains("ZeroDivisionError"), "{error}");
        seen.push((r.stdout, error));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(!seen[0].0.contains("rows"), "{}", seen[0].0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repl_from_the_pool_has_its_own_limits_model_and_contexts() {
    let engine = engine(1).await;
    drop(Sandbox::builder(engine.clone()).build().await.unwrap());
    ready(&engine, 1).await;
    let host = Arc::new(EchoHost::default());
    let mut sb = Sandbox::builder(engine.clone())
        .limits(Limits {
            fuel_per_step: 100_000_000,
            ..Limits::default()
        })
        .model(host.clone())
        .context(Context::text("the pooled doc"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        out(&mut sb, "print(context, llm_query('hi'))").await,
        "the pooled doc echo: hi"
    );
    assert_eq!(host.calls.load(Ordering::SeqCst), 1);
    // Its own fuel limit (the pool's instance was made with the default one).
    let r = sb.exec("while True:\n    pass").await.unwrap();
    assert!(r.restored && r.fuel == 100_000_000, "{r:?}");
    assert_eq!(out(&mut sb, "print(context)").await, "the pooled doc");
}

#[tokio::test(flavor = "multi_thread")]
async fn repls_with_other_init_options_or_tools_do_not_take_from_the_pool() {
    let engine = engine(1).await;
    drop(Sandbox::builder(engine.clone()).build().await.unwrap());
    ready(&engine, 1).await;
    let mut sb = Sandbox::builder(engine.clone())
        .limits(Limits {
            max_output_bytes: 10,
            ..Limits::default()
        })
        .build()
        .await
        .unwrap();
    // Its own output cap, from an instance made for it.
    let r = sb.exec("print('x' * 100)").await.unwrap();
    assert!(r.stdout.len() <= 10 && r.truncated(), "{r:?}");
}
