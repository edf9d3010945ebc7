//! REPL behaviour: persistence, echo, tracebacks, finishing, the stdlib.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn variables_persist_across_steps() {
    let mut sb = sandbox("").await;
    ok(&mut sb, "x = 40\ndef add(a, b):\n    return a + b").await;
    assert_eq!(out(&mut sb, "print(add(x, 2))").await, "42");
    assert_eq!(sb.steps(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn trailing_expression_is_echoed_like_a_notebook() {
    let mut sb = sandbox("").await;
    assert_eq!(out(&mut sb, "y = [1, 2]\ny + [3]").await, "[1, 2, 3]");
    assert_eq!(out(&mut sb, "'text'").await, "'text'");
    assert_eq!(out(&mut sb, "None").await, "");
    assert_eq!(out(&mut sb, "print('a')\n1 + 1").await, "a\n2");
    // An expression that is not last is not echoed.
    assert_eq!(out(&mut sb, "3\nz = 4").await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn tracebacks_use_the_models_line_numbers() {
    let mut sb = sandbox("").await;
    ok(&mut sb, "def boom():\n    return 1 / 0").await;
    let r = sb.exec("a = 1\nb = 2\nboom()").await.unwrap();
    let err = r.error.expect("an error");
    assert!(err.contains("ZeroDivisionError"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("line 2, in boom"), "{err}");
    assert!(err.contains("return 1 / 0"), "source line shown: {err}");
    assert!(
        !err.contains("rlm_guest"),
        "guest internals are hidden: {err}"
    );
    // The REPL goes on after an exception.
    assert_eq!(out(&mut sb, "a + b").await, "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn syntax_errors_are_reported_not_run() {
    let mut sb = sandbox("").await;
    let r = sb.exec("x = 1\nif x\n  print(x)").await.unwrap();
    let err = r.error.unwrap();
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(out(&mut sb, "'x' in globals()").await, "False");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_captured_from_python_and_file_descriptors() {
    let mut sb = sandbox("").await;
    let r = ok(
        &mut sb,
        "import os, sys\nprint('py-out')\nprint('py-err', file=sys.stderr)\n\
                         os.write(1, b'fd-out\\n')\nos.write(2, b'fd-err\\n')",
    )
    .await;
    assert!(
        r.stdout.contains("py-out") && r.stdout.contains("fd-out"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("py-err") && r.stderr.contains("fd-err"),
        "{r:?}"
    );
    assert!(!r.truncated());
}

#[tokio::test(flavor = "multi_thread")]
async fn final_final_var_and_answer_dict_finish() {
    let mut sb = sandbox("").await;
    let r = ok(&mut sb, "x = 1").await;
    assert_eq!(r.final_answer, None);
    let r = ok(&mut sb, "FINAL('the answer (with parens)')").await;
    assert_eq!(r.final_answer.as_deref(), Some("the answer (with parens)"));
    let r = ok(&mut sb, "result = {'n': 3}\nFINAL_VAR('result')").await;
    assert_eq!(r.final_answer.as_deref(), Some("{'n': 3}"));
    let r = sb.exec("FINAL_VAR('missing')").await.unwrap();
    assert!(r.error.unwrap().contains("no variable named 'missing'"));
    assert_eq!(r.final_answer, None);
    let r = ok(&mut sb, "answer['content'] = 'partial'").await;
    assert_eq!(r.final_answer, None);
    let r = ok(&mut sb, "answer['ready'] = True").await;
    assert_eq!(r.final_answer.as_deref(), Some("partial"));
}

#[tokio::test(flavor = "multi_thread")]
async fn show_vars_lists_user_variables() {
    let mut sb = sandbox("").await;
    ok(&mut sb, "items = [1, 2, 3]\nname = 'x'\n_hidden = 1").await;
    let shown = out(&mut sb, "SHOW_VARS()").await;
    assert!(shown.contains("items: list, len 3"), "{shown}");
    assert!(shown.contains("name: str"), "{shown}");
    assert!(shown.contains("context: str"), "{shown}");
    assert!(
        !shown.contains("_hidden") && !shown.contains("llm_query"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exits_end_the_step_not_the_repl() {
    let mut sb = sandbox("").await;
    ok(&mut sb, "kept = 'yes'").await;
    for code in [
        "import sys\nsys.exit(0)\nprint('not reached')",
        "exit()",
        "import os\nos._exit(3)",
    ] {
        let r = sb.exec(code).await.unwrap();
        assert!(!r.stdout.contains("not reached"));
        assert!(!r.restored && !r.reset, "{code}: {r:?}");
    }
    assert_eq!(out(&mut sb, "kept").await, "'yes'");
}

/// Every module the guest pre-imports must be importable by model code.
#[tokio::test(flavor = "multi_thread")]
async fn every_preimported_module_imports() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../guest/app/rlm_guest.py"
    ))
    .unwrap();
    let start = src.find("PREIMPORTED = (").unwrap();
    let end = start + src[start..].find("\n)").unwrap();
    let modules: Vec<&str> = src[start..end].split('"').skip(1).step_by(2).collect();
    assert!(modules.len() > 50, "found {} modules", modules.len());
    let mut sb = sandbox("").await;
    let code: String = modules.iter().map(|m| format!("import {m}\n")).collect();
    ok(&mut sb, &code).await;
    // Modules that failed before pre-importing, exercised for real.
    let r = out(
        &mut sb,
        "import collections, difflib, csv, io, datetime, heapq, statistics, decimal, json, re\n\
         print(collections.Counter('abracadabra').most_common(1))\n\
         print(difflib.SequenceMatcher(None, 'abcd', 'abed').ratio())\n\
         print(next(csv.reader(io.StringIO('a,b\\n'))))\n\
         print(datetime.date(2024, 2, 29) + datetime.timedelta(days=1))\n\
         print(heapq.nlargest(2, [5, 1, 9]), statistics.median([1, 3, 2]))\n\
         print(decimal.Decimal('0.1') + decimal.Decimal('0.2'), json.dumps({'a': re.sub('b', 'c', 'b')}))",
    )
    .await;
    assert_eq!(
        r,
        "[('a', 5)]\n0.75\n['a', 'b']\n2024-03-01\n[9, 5] 2\n0.3 {\"a\": \"c\"}"
    );
}

/// Steps compile straight from their source when their last statement splits off simply (the
/// guest's `_compile_fast`), and through the AST otherwise. Over every block of the
/// compatibility corpus (real models' code) and edge cases, the fast split must decide the echo
/// as the AST does and compile the same last expression, and most real blocks must take it.
#[tokio::test(flavor = "multi_thread")]
async fn steps_compile_from_source_as_the_ast_would() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/corpus");
    let mut blocks: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for b in v["blocks"].as_array().unwrap() {
                blocks.push(b.as_str().unwrap().to_string());
            }
        }
    }
    let corpus = blocks.len();
    assert!(corpus > 200, "{corpus} blocks");
    for edge in [
        "x",
        "x = 1; x",
        "(1 +\n2)",
        "dict(\na=1)",
        "f(\n    x,\n)",
        "s = '''\nabc\n'''\ns",
        "if x:\n    pass\nelse:\n    y",
        "x, y = 1, 2",
        "a[0] += 1",
        "x == 1",
        "x <= 1",
        "type(x)",
        "match(x)",
        "not x",
        "lambda: 1",
        "@dec\ndef f(): pass",
        "# only a comment",
        "",
        "x = 1\n# trailing comment\n\n",
        "\"\"\"doc\"\"\"",
        "(y := 5)",
        "for i in range(3):\n    i\ni",
        "x = [\n1,\n2]\nx",
        "x = 1 + \\\n2",
        "x = 1 + \\\n2\nx",
        "*a, b = [1, 2, 3]",
        "a, *b = 1, 2, 3\nb",
        "iffy = 1\niffy",
        "import_x = 2\nimport_x",
        "x: int = 1\ny: str = 'a'",
        "x: int = 1\ny",
        "from __future__ import annotations\nx",
        "import asyncio\nawait asyncio.sleep(0)\n1",
    ] {
        blocks.push(edge.to_string());
    }
    let mut sb = sandbox_with(
        rlm_sandbox::Context::json(serde_json::json!(blocks)),
        rlm_sandbox::Limits::default(),
    )
    .await;
    let report = out(
        &mut sb,
        r#"
import sys
G = sys.modules['rlm_guest']
def same(a, b):
    return (a.co_code == b.co_code and a.co_names == b.co_names
            and list(a.co_positions()) == list(b.co_positions()))
fast = fast_corpus = 0
for k, code in enumerate(context):
    f = G._compile_fast(code, f"<step {k}>")
    if f is None:
        continue
    fast += 1
    fast_corpus += k < CORPUS
    body, last = G._compile_ast(code, f"<step {k}>")
    assert (f[1] is None) == (last is None), ("echo", code)
    assert last is None or same(f[1], last), ("last", code)
print(fast, fast_corpus)
"#
        .replace("CORPUS", &corpus.to_string())
        .as_str(),
    )
    .await;
    let (fast, fast_corpus): (usize, usize) = {
        let mut it = report.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        fast_corpus * 100 >= corpus * 85,
        "{fast_corpus} of {corpus} corpus blocks compile from source"
    );
    assert!(fast > fast_corpus, "edge cases take the fast path too");

    // What the steps do, end to end, on the splits that matter.
    let mut sb = sandbox("").await;
    ok(&mut sb, "def f(**k):\n    return k").await;
    assert_eq!(out(&mut sb, "f(\na=1)").await, "{'a': 1}");
    assert_eq!(out(&mut sb, "x = 1 + \\\n2").await, "");
    assert_eq!(out(&mut sb, "x = 1; x").await, "1");
    assert_eq!(out(&mut sb, "(x +\n2)").await, "3");
    assert_eq!(
        out(&mut sb, "x += 1\nif x:\n    pass\nelse:\n    x").await,
        ""
    );
    assert_eq!(
        out(&mut sb, "a: int = 1\nb: str = 'b'\nsorted(__annotate__(1))").await,
        "['a', 'b']"
    );
    assert_eq!(
        out(
            &mut sb,
            "p: int = 1\nq = 2\nr: int = 3\nsorted(__annotate__(1))"
        )
        .await,
        "['p', 'r']"
    );
    let r = sb.exec("y = 1\nz = (\n").await.unwrap();
    assert!(
        r.error.as_deref().unwrap_or("").contains("SyntaxError"),
        "{r:?}"
    );
    assert_eq!(out(&mut sb, "print(x)\n(y := 7)").await, "2\n7");
}
