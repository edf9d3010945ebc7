//! Custom tools from the guest: arguments, results, failures as `ToolError`, caps, the per-step
//! limit, recovery without repeating calls, a tool that never returns, and numbers that cross
//! exactly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rlm_sandbox::{Context, LimitHit, Limits, Sandbox, SandboxError, Tool, ToolError};
use serde_json::{Value, json};

/// `lookup(key, default=None)`: a small table, counting its calls.
fn lookup(calls: Arc<AtomicUsize>) -> Tool {
    Tool::new(
        "lookup",
        "Look a key up in the host's table.",
        json!({
            "type": "object",
            "properties": {"key": {"type": "string"}, "default": {}},
            "required": ["key"],
        }),
        move |args: Value| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match args["key"].as_str() {
                    Some("fruit") => Ok(json!({"name": "apple", "sizes": [1, 2.5], "ok": true})),
                    Some("fail") => Err("the table is closed today".to_string()),
                    Some("panic") => panic!("a bug in the tool"),
                    Some("big") => Ok(json!("x".repeat(2 << 20))),
                    Some(_) => Ok(args.get("default").cloned().unwrap_or(Value::Null)),
                    None => Err("key must be a string".to_string()),
                }
            }
        },
    )
    .unwrap()
}

/// `echo(**anything)`: returns its arguments.
fn echo() -> Tool {
    Tool::new(
        "echo",
        "Return the arguments.",
        json!({"type": "object", "properties": {"a": {}, "b": {}}, "additionalProperties": true}),
        |args| async move { Ok(args) },
    )
    .unwrap()
}

async fn with_tools(tools: Vec<Tool>, limits: Limits) -> Sandbox {
    Sandbox::builder(engine())
        .limits(limits)
        .context(Context::text("doc"))
        .tools(tools)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_take_positional_and_keyword_arguments_and_return_python_values() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sb = with_tools(vec![lookup(calls.clone()), echo()], Limits::default()).await;
    assert_eq!(
        out(
            &mut sb,
            "r = lookup('fruit')\nr, type(r['sizes'][1]).__name__"
        )
        .await,
        "({'name': 'apple', 'sizes': [1, 2.5], 'ok': True}, 'float')"
    );
    assert_eq!(
        out(&mut sb, "lookup(key='none', default=[1, 'b'])").await,
        "[1, 'b']"
    );
    assert_eq!(
        out(&mut sb, "lookup('none', {'x': None})").await,
        "{'x': None}"
    );
    assert_eq!(out(&mut sb, "print(lookup('none'))").await, "None");
    assert_eq!(
        out(&mut sb, "echo(1, b='ü', extra=(1, 2))").await,
        "{'a': 1, 'b': 'ü', 'extra': [1, 2]}"
    );
    // A lazy piece of the context crosses as its text.
    assert_eq!(out(&mut sb, "echo(a=context)['a']").await, "'doc'");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Evaluating a tool shows its signature and description.
    assert_eq!(
        out(&mut sb, "lookup").await,
        "<tool lookup(key, default=None): Look a key up in the host's table.>"
    );
    assert_eq!(sb.tools().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_raise_tool_error_in_model_code() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sb = with_tools(vec![lookup(calls.clone())], Limits::default()).await;
    let cases = [
        ("lookup('fail')", "lookup: the table is closed today"),
        (
            "lookup('panic')",
            "lookup: the tool failed on the host (its handler panicked)",
        ),
        ("lookup(1)", "lookup: key must be a string"),
    ];
    for (call, msg) in cases {
        let code = format!("try:\n    {call}\nexcept ToolError as e:\n    print(e)");
        assert_eq!(out(&mut sb, &code).await, msg, "{call}");
    }
    // Caught as a RuntimeError too; the host goes on after a panic.
    assert_eq!(
        out(
            &mut sb,
            "try:\n    lookup('fail')\nexcept RuntimeError:\n    print('caught')"
        )
        .await,
        "caught"
    );
    assert_eq!(out(&mut sb, "lookup('fruit')['name']").await, "'apple'");
    // An uncaught failure is the step's traceback.
    let r = sb.exec("lookup('fail')").await.unwrap();
    let err = r.error.unwrap();
    assert!(
        err.contains("ToolError: lookup: the table is closed today"),
        "{err}"
    );
    // Arguments that do not fit are refused in the guest, before any call.
    let before = calls.load(Ordering::SeqCst);
    for (code, msg) in [
        ("lookup()", "missing required argument(s) 'key'"),
        (
            "lookup('a', 'b', 'c')",
            "takes at most 2 positional arguments",
        ),
        ("lookup('a', key='b')", "multiple values for argument 'key'"),
        ("lookup(key={1, 2})", "arguments cross to the host as JSON"),
    ] {
        let err = sb.exec(code).await.unwrap().error.unwrap();
        assert!(
            err.contains("TypeError") && err.contains(msg),
            "{code}: {err}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), before);
    // The host checks too (model code can reach the import directly).
    let direct = "from wit_world.imports import tools as t\n";
    for (args, msg) in [
        (
            "'lookup', '{\"nope\": 1}'",
            "missing required argument(s) key",
        ),
        (
            "'lookup', '{\"key\": 1, \"zzz\": 2}'",
            "unexpected argument \"zzz\"",
        ),
        ("'lookup', 'not json'", "not valid JSON"),
        ("'nosuch', '{}'", "no tool named \"nosuch\" (tools: lookup)"),
    ] {
        let r = out(&mut sb, &format!("{direct}t.call_tool({args}).value")).await;
        assert!(r.contains(msg), "{args}: {r}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_survive_rebinding_and_are_not_variables() {
    let mut sb = with_tools(vec![echo()], Limits::default()).await;
    ok(&mut sb, "echo = None\nToolError = 3\nx = 1").await;
    assert_eq!(out(&mut sb, "echo(a=1)").await, "{'a': 1}");
    assert_eq!(out(&mut sb, "ToolError.__name__").await, "'ToolError'");
    let vars = out(&mut sb, "print(SHOW_VARS())").await;
    assert!(vars.contains("x: int") && !vars.contains("echo") && !vars.contains("ToolError"));
    // A defined variable may not take a tool's name.
    assert!(sb.define("echo", json!(1)).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_results_and_arguments_are_refused_not_crashing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let l = Limits {
        max_host_string_bytes: 1 << 20,
        read_chunk_chars: 1 << 18,
        ..Limits::default()
    };
    let mut sb = with_tools(vec![lookup(calls.clone()), echo()], l).await;
    let r = out(
        &mut sb,
        "try:\n    lookup('big')\nexcept ToolError as e:\n    print(e)",
    )
    .await;
    assert!(
        r.contains("the tool's result is 2097154 bytes of JSON, more than the sandbox passes"),
        "{r}"
    );
    let r = out(
        &mut sb,
        "try:\n    echo(a='y' * (2 << 20))\nexcept ToolError as e:\n    print(e)",
    )
    .await;
    assert!(
        r.contains(
            "the arguments are 2097161 bytes of JSON, more than a tool call takes (1048576 bytes)"
        ),
        "{r}"
    );
    assert_eq!(out(&mut sb, "echo(a=1)").await, "{'a': 1}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_arguments_and_names_are_bounded_before_any_work() {
    // Arguments are measured before they are parsed: the bound is the limit, and it can be
    // raised.
    let l = Limits {
        max_tool_args_bytes: 4 << 20,
        ..Limits::default()
    };
    let mut sb = with_tools(vec![echo()], l).await;
    assert_eq!(
        out(&mut sb, "len(echo(a='y' * (2 << 20))['a'])").await,
        "2097152"
    );
    let mut sb = with_tools(vec![echo()], Limits::default()).await;
    let r = out(
        &mut sb,
        "try:
    echo(a=[0] * 600_000)
except ToolError as e:
    print(e)",
    )
    .await;
    assert!(
        r.contains("more than a tool call takes (1048576 bytes)"),
        "{r}"
    );
    // A name no tool can have is refused unlooked-at, and kept nowhere.
    let r = out(
        &mut sb,
        "t = type(echo)('x' * 5_000_000, '', [], [])\ntry:\n    t()\nexcept ToolError as e:\n    print(str(e)[-80:])",
    )
    .await;
    assert!(
        r.contains("no tool has a 5000000-byte name; the tools are echo"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_per_step_are_limited() {
    let l = Limits {
        max_tool_calls_per_step: 5,
        ..Limits::default()
    };
    let mut sb = with_tools(vec![echo()], l).await;
    let code = "n = 0\ntry:\n    for i in range(10):\n        echo(a=i)\n        n += 1\n\
                except ToolError as e:\n    print(n, e)";
    let r = out(&mut sb, code).await;
    assert!(
        r.starts_with("5 echo: this step made more than 5 tool calls"),
        "{r}"
    );
    // The count is per step.
    assert_eq!(
        out(&mut sb, "[echo(a=i)['a'] for i in range(5)]").await,
        "[0, 1, 2, 3, 4]"
    );
}

/// Whether the REPL is rebuilt by replaying its journal or by swapping in its standby (which
/// replayed the steps in the background), no tool is called again and the results are intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_trapped_step_restores_without_calling_tools_again() {
    for standby_after in [std::time::Duration::MAX, std::time::Duration::ZERO] {
        let calls = Arc::new(AtomicUsize::new(0));
        let l = Limits {
            fuel_per_step: 300_000_000,
            standby_after,
            ..Limits::default()
        };
        let mut sb = with_tools(vec![lookup(calls.clone())], l).await;
        ok(
            &mut sb,
            "a = lookup('fruit')\ntry:\n    lookup('fail')\nexcept ToolError as e:\n    b = str(e)",
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        if standby_after == std::time::Duration::ZERO {
            assert!(
                sb.has_standby() && sb.settle().await,
                "the standby caught up"
            );
        }
        let r = sb
            .exec("c = lookup('fruit')\nwhile True:\n    pass")
            .await
            .unwrap();
        assert_eq!(r.limit, Some(LimitHit::Fuel));
        assert!(r.restored, "{r:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "neither the replay nor the standby called a tool ({standby_after:?})"
        );
        assert_eq!(
            out(&mut sb, "a['name'], b, 'c' in globals()").await,
            "('apple', 'lookup: the table is closed today', False)"
        );
        let json = serde_json::to_string(sb.journal()).unwrap();
        assert!(json.contains(r#""kind":"tool","name":"lookup""#), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_never_returns_ends_with_the_step() {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (s, d) = (started.clone(), dropped.clone());
    let hang = Tool::new("hang", "Never returns.", Value::Null, move |_| {
        let (s, d) = (s.clone(), d.clone());
        async move {
            let _guard = Dropped(d);
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    })
    .unwrap();
    let l = Limits {
        step_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut sb = with_tools(vec![hang], l).await;
    ok(&mut sb, "kept = 3").await;
    let r = sb.exec("hang()").await.unwrap();
    assert_eq!(r.limit, Some(LimitHit::Deadline));
    assert!(r.elapsed < Duration::from_secs(10));
    assert_eq!(out(&mut sb, "kept").await, "3");
    assert_eq!(started.load(Ordering::SeqCst), 1);
    // The abandoned handler was cancelled, not left running.
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

/// Integers beyond 64 bits, as model code writes them, and negative.
const BIG: &str = "[2**64 + 1, -(2**70), 10**400 + 7, {'n': 2**53 + 1}]";

#[tokio::test(flavor = "multi_thread")]
async fn a_text_tool_gets_and_gives_integers_of_any_size_exactly() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let echo = Tool::new_text(
        "echo",
        "Return x, and a big integer.",
        json!({"type": "object", "properties": {"x": {}}, "required": ["x"]}),
        move |args: String| {
            s.lock().unwrap().push(args.clone());
            async move {
                let x = args
                    .strip_prefix(r#"{"x": "#)
                    .and_then(|a| a.strip_suffix('}'))
                    .ok_or("unexpected arguments")?;
                Ok(format!(r#"[{x}, 340282366920938463463374607431768211457]"#))
            }
        },
    )
    .unwrap();
    // Observed through a text wrapper, as an embedder that records calls would.
    let inner = echo.clone();
    let echo = echo.with_text_handler(move |args| inner.call_text(args));
    let mut sb = with_tools(vec![echo], Limits::default()).await;
    assert_eq!(
        out(
            &mut sb,
            &format!("v = {BIG}\nr = echo(v)\nr == [v, 2**128 + 1]")
        )
        .await,
        "True"
    );
    let args = seen.lock().unwrap().clone();
    assert_eq!(args.len(), 1);
    for digits in [
        "18446744073709551617",
        "-1180591620717411303424",
        "9007199254740993",
    ] {
        assert!(args[0].contains(digits), "{}", args[0]);
    }
    // The host checks the text against the parameters all the same, before the handler runs
    // (model code can reach the import directly).
    let direct = "from wit_world.imports import tools as t\n";
    for (args, msg) in [
        ("'{\"y\": 1}'", "missing required argument(s) x"),
        ("'{\"x\": 1, \"y\": 2}'", "unexpected argument \"y\""),
        ("'[1]'", "must be a JSON object"),
        ("'7'", "must be a JSON object"),
        ("'{\"x\": 1'", "not valid JSON"),
        ("'{\"x\": 1} 2'", "not valid JSON"),
    ] {
        let r = out(
            &mut sb,
            &format!("{direct}t.call_tool('echo', {args}).value"),
        )
        .await;
        assert!(r.contains(msg), "{args}: {r}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    // A text handler's answer that is not JSON is the model's ToolError, not the host's fault.
    let bad = Tool::new_text("bad", "Not JSON.", Value::Null, |_| async {
        Ok("{oops".to_string())
    })
    .unwrap();
    let mut sb = with_tools(vec![bad.clone()], Limits::default()).await;
    let r = out(
        &mut sb,
        "try:\n    bad()\nexcept ToolError as e:\n    print(e)",
    )
    .await;
    assert!(r.contains("not JSON"), "{r}");
    assert!(bad.call(json!({})).await.unwrap_err().contains("not JSON"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_tool_gets_integers_exactly_within_64_bits() {
    let mut sb = with_tools(vec![echo()], Limits::default()).await;
    assert_eq!(
        out(
            &mut sb,
            "v = [2**53 + 1, 2**64 - 1, -(2**63)]\necho(a=v)['a'] == v"
        )
        .await,
        "True"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_tool_names_are_refused_at_build() {
    let err = Sandbox::builder(engine())
        .tool(echo())
        .tool(echo())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::Tool(ToolError::Duplicate(ref n)) if n == "echo"),
        "{err}"
    );
}

#[test]
fn invalid_names_are_refused_at_registration() {
    for name in [
        "print",
        "llm_query",
        "FINAL",
        "context",
        "for",
        "_x",
        "2x",
        "search",
    ] {
        let r = Tool::new(name, "", Value::Null, |_| async { Ok(Value::Null) });
        assert!(matches!(r, Err(ToolError::InvalidName { .. })), "{name}");
    }
}

/// The names the host refuses cover every name the guest's REPL binds itself and every builtin
/// (a guard against the two lists drifting apart).
#[tokio::test(flavor = "multi_thread")]
async fn every_name_the_repl_binds_is_refused_as_a_tool_name() {
    let mut sb = sandbox("doc").await;
    let names = out(
        &mut sb,
        "_names = list(globals())\n\
         import builtins as _b, keyword as _k, json as _j\n\
         print(_j.dumps(sorted(set(_names + dir(_b) + _k.kwlist + _k.softkwlist))))",
    )
    .await;
    let names: Vec<String> = serde_json::from_str(&names).unwrap();
    assert!(names.len() > 150, "{names:?}");
    for name in names {
        let r = Tool::new(name.as_str(), "", Value::Null, |_| async {
            Ok(Value::Null)
        });
        assert!(r.is_err(), "{name:?} is accepted as a tool name");
    }
}
