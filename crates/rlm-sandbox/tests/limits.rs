//! Every resource limit holds, and the REPL survives it.

mod common;

use std::time::Duration;

use common::*;
use rlm_sandbox::{Context, LimitHit, Limits};

fn limits() -> Limits {
    Limits::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_by_fuel_and_state_is_restored() {
    let l = Limits {
        fuel_per_step: 200_000_000,
        step_timeout: Duration::from_secs(120),
        ..limits()
    };
    let mut sb = sandbox_with(Context::text("doc"), l).await;
    ok(&mut sb, "kept = [1, 2, 3]").await;
    let r = sb.exec("while True:\n    pass").await.unwrap();
    assert_eq!(r.limit, Some(LimitHit::Fuel), "{r:?}");
    assert!(r.restored && !r.reset);
    assert!(r.error.unwrap().contains("ran out of fuel"));
    assert!(r.fuel >= 200_000_000);
    assert_eq!(out(&mut sb, "kept, context").await, "([1, 2, 3], 'doc')");
}

#[tokio::test(flavor = "multi_thread")]
async fn restored_state_keeps_the_random_values_it_drew() {
    let l = Limits {
        fuel_per_step: 200_000_000,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    let before = out(
        &mut sb,
        "import os, uuid, random\na = (os.urandom(8).hex(), str(uuid.uuid4()), random.random())\na",
    )
    .await;
    let r = sb.exec("while True:\n    pass").await.unwrap();
    assert!(r.restored);
    assert_eq!(
        out(&mut sb, "a").await,
        before,
        "replay drew the same random values"
    );
    // Other sandboxes draw other values.
    let mut other = sandbox_with(Context::text(""), limits()).await;
    let theirs = out(&mut other, "import os\nos.urandom(8).hex()").await;
    assert!(!before.contains(theirs.trim_matches('\'')));
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let l = Limits {
        fuel_per_step: u64::MAX / 2,
        step_timeout: Duration::from_millis(300),
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    ok(&mut sb, "kept = 'before'").await;
    let r = sb.exec("while True:\n    pass").await.unwrap();
    assert_eq!(r.limit, Some(LimitHit::Deadline), "{r:?}");
    assert!(r.restored);
    assert!(r.error.unwrap().contains("time limit of 0.3 s"));
    assert_eq!(out(&mut sb, "kept").await, "'before'");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_stopped_by_a_limit_keeps_what_it_printed_before() {
    // As a notebook keeps a cell's output before an interrupt: the model sees how far it got.
    for (limit, l) in [
        (
            LimitHit::Fuel,
            Limits {
                fuel_per_step: 300_000_000,
                ..limits()
            },
        ),
        (
            LimitHit::Deadline,
            Limits {
                fuel_per_step: u64::MAX / 2,
                step_timeout: Duration::from_millis(500),
                ..limits()
            },
        ),
    ] {
        let mut sb = sandbox_with(Context::text(""), l).await;
        let r = sb
            .exec(
                "import sys\nfor i in range(3):\n    print('chunk', i, 'done')\n\
                 print('a warning', file=sys.stderr)\nprint('héllo', end=' ')\nprint('wörld')\n\
                 while True:\n    pass",
            )
            .await
            .unwrap();
        assert_eq!(r.limit, Some(limit), "{r:?}");
        assert_eq!(
            r.stdout, "chunk 0 done\nchunk 1 done\nchunk 2 done\nhéllo wörld\n",
            "{r:?}"
        );
        assert_eq!(r.stderr, "a warning\n");
        // And a step that ends well shows its output once, in the order it was written.
        let r = ok(
            &mut sb,
            "import os\nprint('one')\nos.write(1, b'two\\n')\nprint('three')\n'four'",
        )
        .await;
        assert_eq!(r.stdout, "one\ntwo\nthree\n'four'\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeping_past_the_deadline_is_stopped() {
    let l = Limits {
        step_timeout: Duration::from_millis(300),
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    ok(&mut sb, "import time\nkept = 1").await;
    let r = sb.exec("time.sleep(30)\nprint('woke')").await.unwrap();
    assert_eq!(r.limit, Some(LimitHit::Deadline), "{r:?}");
    assert!(r.elapsed < Duration::from_secs(20), "{:?}", r.elapsed);
    assert!(!r.stdout.contains("woke"));
    assert_eq!(out(&mut sb, "kept").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_allocations_raise_memory_error_and_the_repl_continues() {
    let l = Limits {
        memory_bytes: 128 << 20,
        lazy_threshold_chars: 1 << 20,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    ok(&mut sb, "kept = 'alive'").await;
    // The guest is 32-bit: a size past the address space is an OverflowError, as in any 32-bit
    // CPython; a size that fits the address space but not the cap is a MemoryError.
    let r = sb.exec("'x' * 10**10").await.unwrap();
    assert!(r.error.unwrap_or_default().contains("OverflowError"));
    assert!(!r.restored && !r.reset);
    for code in [
        "'x' * 10**9",
        "b = bytearray(200 * 1024 * 1024)",
        "big = [str(i) * 300 for i in range(10**6)]",
    ] {
        let r = sb.exec(code).await.unwrap();
        let err = r.error.clone().unwrap_or_default();
        assert!(err.contains("MemoryError"), "{code}: {err} {r:?}");
        assert!(!r.restored && !r.reset, "no trap: {code}");
    }
    assert_eq!(out(&mut sb, "kept").await, "'alive'");
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_contained() {
    let l = Limits {
        fuel_per_step: 2_000_000_000,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    ok(&mut sb, "kept = 7\ndef f(n):\n    return f(n + 1) + 1").await;
    let r = sb.exec("f(0)").await.unwrap();
    assert!(r.error.clone().unwrap().contains("RecursionError"), "{r:?}");
    assert!(!r.restored, "Python's own recursion limit needs no restore");
    // Raising the recursion limit, or recursing in C (repr of a deeply nested list), is stopped
    // by fuel or by the wasm stack limit, and the REPL is restored.
    let r = sb
        .exec("import sys\nsys.setrecursionlimit(10**6)\nf(0)")
        .await
        .unwrap();
    assert!(
        r.error.clone().unwrap().contains("RecursionError") || r.restored,
        "{r:?}"
    );
    let r = sb
        .exec("x = []\nfor i in range(300_000):\n    x = [x]\nlen(repr(x))")
        .await
        .unwrap();
    assert!(
        matches!(r.limit, Some(LimitHit::Stack) | Some(LimitHit::Fuel)),
        "{r:?}"
    );
    assert!(r.restored);
    assert_eq!(out(&mut sb, "kept").await, "7");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_bombs_are_truncated() {
    let l = Limits {
        max_output_bytes: 64 << 10,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    let r = ok(&mut sb, "for i in range(100_000):\n    print('x' * 99)").await;
    assert_eq!(r.stdout.len(), 64 << 10);
    assert_eq!(r.stdout_dropped, 10_000_000 - (64 << 10));
    assert!(r.truncated());
    let r = ok(
        &mut sb,
        "import os\nfor i in range(10_000):\n    os.write(2, b'e' * 1000)",
    )
    .await;
    assert_eq!(r.stderr.len(), 64 << 10);
    assert_eq!(r.stderr_dropped, 10_000_000 - (64 << 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_strings_past_the_cap_are_refused_without_crashing() {
    let l = Limits {
        max_host_string_bytes: 64 << 10,
        read_chunk_chars: 16 << 10,
        lazy_threshold_chars: 16 << 10,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text("z".repeat(1 << 20)), l).await;
    // A slice larger than the threshold stays lazy instead of crossing.
    assert_eq!(
        out(&mut sb, "type(context[:500_000]).__name__").await,
        "'LazyText'"
    );
    // Asking the host directly for too much is refused with an error, not an abort.
    let r = sb
        .exec("from wit_world.imports import context as c\nc.read(0, 0, 1 << 20)")
        .await
        .unwrap();
    assert!(
        r.error.as_deref().unwrap_or("").contains("refused to read"),
        "{r:?}"
    );
    assert!(!r.restored && !r.reset);
    let r = sb.exec("c.read(0, 0, 60_000).count('z')").await.unwrap();
    assert!(r.error.is_none(), "{r:?}");
    // A search whose one match is the whole text is cut, not sent whole.
    let r = out(
        &mut sb,
        "h = search(r'(?s)z+', max_match_chars=10**9)\nlen(h), h[0]['end'], len(h[0]['text'])",
    )
    .await;
    assert_eq!(r, "(1, 1048576, 8192)");
    // Reading 100k chars through the lazy object works, chunk by chunk.
    assert_eq!(
        out(
            &mut sb,
            "str(context[:100_000]) if False else len(''.join(context.chunks(10_000)))"
        )
        .await,
        "1048576"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_code_is_refused_before_it_crosses() {
    let l = Limits {
        max_host_string_bytes: 64 << 10,
        read_chunk_chars: 16 << 10,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text(""), l).await;
    let code = format!("x = '{}'", "a".repeat(100_000));
    let r = sb.exec(&code).await.unwrap();
    assert!(r.error.unwrap().contains("the step's code is 100006 bytes"));
    assert_eq!(out(&mut sb, "1 + 1").await, "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_calls_per_step_are_capped() {
    let l = Limits {
        max_host_calls_per_step: 50,
        lazy_threshold_chars: 10,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text("abcdefghij".repeat(10)), l).await;
    let r = sb
        .exec("for i in range(100):\n    context[i]")
        .await
        .unwrap();
    assert!(r.error.unwrap().contains("more than 50 host calls"));
    // The count starts again with the next step.
    assert_eq!(out(&mut sb, "context[0]").await, "'a'");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_validated() {
    let bad = Limits {
        read_chunk_chars: 10 << 20,
        ..limits()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("read_chunk_chars")
    );
    let bad = Limits {
        max_memory_bytes: 8 << 30,
        ..limits()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("wasm32 ceiling")
    );
    assert!(Limits::default().validate().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_caps_what_the_guest_sends_back() {
    let mut sb = sandbox("doc").await;
    let cap = Limits::default().max_output_bytes as usize;
    // Model code that raises the guest's own output cap still gets only the host's.
    let r = sb
        .exec("import sys\nsys.stdout._cap = 1 << 30\nprint('x' * 5_000_000)")
        .await
        .unwrap();
    assert!(r.stdout.len() <= cap, "{}", r.stdout.len());
    assert!(r.stdout_dropped >= 5_000_000 - cap as u64);
    // A giant exception message is cut on the host, and says so.
    let r = sb.exec("raise ValueError('e' * 20_000_000)").await.unwrap();
    let err = r.error.unwrap();
    assert!(err.len() < cap + 200, "{}", err.len());
    assert!(
        err.ends_with(&format!("{cap} kept]")),
        "{}",
        &err[err.len() - 80..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_search_paths_count_toward_the_host_string_cap() {
    // A refused batch carries its reason once, not once per prompt.
    let l = Limits {
        max_host_calls_per_step: 10,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text("doc"), l).await;
    assert_eq!(
        out(
            &mut sb,
            "r = llm_batch(['p'] * 100_000)\nprint(len(r), sum(map(len, r)) < 40 * len(r), 'per-step limit' in r[0])"
        )
        .await,
        "100000 True True"
    );
    // Long keys on the way to each match count toward the cap.
    let key = "k".repeat(100_000);
    let obj: serde_json::Map<String, serde_json::Value> = (0..600)
        .map(|i| (format!("{key}{i}"), serde_json::json!("a needle")))
        .collect();
    let mut sb = sandbox_with(Context::json(serde_json::Value::Object(obj)), limits()).await;
    let n: usize = out(&mut sb, "len(search('needle', max=10_000))")
        .await
        .parse()
        .unwrap();
    let cap = limits().max_host_string_bytes as usize;
    assert!(n > 0 && n * 100_000 <= cap, "{n} matches with 100 KB paths");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_host_search_ends_with_the_step() {
    // 128 MB that a class-only pattern must scan whole (no literal to skip ahead with).
    let text = Context::text("ab1 cd2 ef3 gh4 ".repeat(8 << 20));
    let search = "import time\nt = time.time()\ntry:\n    n = len(search(r'\\d[a-f]{3}\\d'))\n\
                  except RuntimeError as e:\n    n = str(e)\nprint(n)";
    let roomy = Limits {
        lazy_threshold_chars: 1000,
        ..limits()
    };
    let mut sb = sandbox_with(text.clone(), roomy.clone()).await;
    let full = ok(&mut sb, search).await;
    assert_eq!(full.stdout.trim(), "0");
    // With a deadline far below what the scan takes, the step ends at its deadline, not when
    // the host is done (a search used to run to its end, blocking the async worker).
    let tight = Limits {
        step_timeout: full.elapsed / 8,
        ..roomy
    };
    let mut sb = sandbox_with(text, tight.clone()).await;
    let r = sb.exec(search).await.unwrap();
    assert!(
        r.elapsed < full.elapsed / 2,
        "stopped after {:?}; the whole search takes {:?}",
        r.elapsed,
        full.elapsed
    );
    assert!(
        r.limit == Some(LimitHit::Deadline) || r.stdout.contains("did not finish"),
        "{r:?}"
    );
    // The REPL goes on; the next search waits for the abandoned one, within its own time.
    let r = sb.exec("print(len(search('ab1', max=3)))").await.unwrap();
    assert!(
        r.error.is_none() || r.error.as_deref().unwrap_or("").contains("did not finish"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_time_is_reported_apart_from_the_step() {
    let l = Limits {
        fuel_per_step: 200_000_000,
        ..limits()
    };
    let mut sb = sandbox_with(Context::text("doc"), l).await;
    let r = ok(&mut sb, "x = 1").await;
    assert_eq!(r.recovery, Duration::ZERO);
    let r = sb.exec("while True:\n    pass").await.unwrap();
    assert!(r.restored && r.recovery > Duration::ZERO, "{r:?}");
}
