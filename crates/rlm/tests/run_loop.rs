//! The RLM loop end to end: real HTTP to a scripted OpenAI-compatible mock whose "model"
//! writes real Python, run in the real sandbox.

use std::sync::{Arc, Mutex};

use rlm::{
    Budget, BudgetLimit, ContextInput, Event, Rlm, StopReason, TraceWriter, read_trace, replay,
};
use rlm_llm::{CallRole, LlmClient, ModelConfig, Price, PriceTable, RetryPolicy};
use rlm_sandbox::{Limits, SandboxEngine};
use rlm_testkit::{MockProvider, RecordedRequest, Reply};

fn engine() -> Arc<SandboxEngine> {
    static ENGINE: Mutex<Option<Arc<SandboxEngine>>> = Mutex::new(None);
    ENGINE
        .lock()
        .unwrap()
        .get_or_insert_with(|| SandboxEngine::load().expect("guest (just guest)"))
        .clone()
}

/// A model on the mock, priced at $1 / $2 per million tokens.
fn model(mock: &MockProvider) -> Arc<rlm_llm::Model> {
    model_named(mock, "compat/scripted")
}

/// The model `id` on the mock, priced at $1 / $2 per million tokens.
fn model_named(mock: &MockProvider, id: &str) -> Arc<rlm_llm::Model> {
    let mut prices = PriceTable::empty();
    prices.set(id, Price::new(1.0, 2.0, 1.0));
    let client = LlmClient::builder()
        .retry(RetryPolicy::none())
        .prices(prices)
        .build()
        .unwrap();
    let config = ModelConfig {
        base_url: Some(mock.openai_base_url()),
        ..ModelConfig::default()
    };
    Arc::new(client.model_with(id, config).unwrap())
}

fn code(c: &str) -> Reply {
    Reply::text(format!("Let me run this.\n```repl\n{c}\n```"))
}

/// Whether a request is a root-model turn (it has a system prompt) rather than a sub-call.
fn is_root(r: &RecordedRequest) -> bool {
    r.messages()
        .first()
        .is_some_and(|(role, _)| role == "system")
}

/// Replies of the root model so far in this conversation.
fn turn(r: &RecordedRequest) -> usize {
    r.messages()
        .iter()
        .filter(|(role, _)| role == "assistant")
        .count()
}

fn haystack_with_needle() -> String {
    let mut s = String::new();
    for i in 0..4000 {
        s.push_str(&format!(
            "Record {i}: routine entry, nothing of note here.\n"
        ));
        if i == 2718 {
            s.push_str("The secret code is 4217, remember it.\n");
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn finds_a_needle_with_search_and_final_var() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("hits = search(r'secret code is (\\d+)')\nprint(hits[0]['text'])\ncode = hits[0]['text'].split()[-1]"),
        _ if r.last_user().contains("secret code is 4217") => Reply::text("Found it.\nFINAL_VAR(code)"),
        _ => Reply::text("FINAL(not found)"),
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let context = haystack_with_needle();
    let result = rlm
        .run(context.clone(), "What is the secret code?")
        .await
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("4217"));
    assert_eq!(result.stop, StopReason::Final);
    assert_eq!(result.iterations, 2);
    // The document never went to the model; the system prompt described it.
    let reqs = mock.requests();
    assert!(
        reqs.iter()
            .all(|r| !r.messages().iter().any(|(_, t)| t.contains("Record 1234:")))
    );
    let system = &reqs[0].messages()[0].1;
    assert!(
        system.contains(&format!("a str of {} characters", context.chars().count())),
        "{system}"
    );
    assert!(
        result
            .events
            .iter()
            .any(|e| matches!(e, Event::CodeExecuted { .. }))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_and_aggregates_with_llm_batch() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            // Sub-call: count the apples in the text it was given.
            let prompt = r.last_user();
            let text = prompt.split_once("TEXT:").map_or("", |p| p.1);
            return Reply::text(text.matches("apple").count().to_string());
        }
        match turn(r) {
            0 => code("answers = llm_batch([f'Count the word apple. TEXT:{d}' for d in context])\ntotal = sum(int(a) for a in answers)\nprint('total', total)"),
            _ => {
                let out = r.last_user();
                let n = out.split("total ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("?").to_string();
                Reply::text(format!("FINAL({n})"))
            }
        }
    });
    let docs: Vec<String> = (0..12)
        .map(|i| "apple pear ".repeat(i) + "banana")
        .collect();
    let expected: usize = (0..12).sum();
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let result = rlm.run(docs, "How many apples in all?").await.unwrap();
    assert_eq!(result.answer, Some(expected.to_string()));
    let subs = mock.requests().iter().filter(|r| !is_root(r)).count();
    assert_eq!(subs, 12);
    // Usage and cost add up across the tree.
    let u = &result.usage;
    assert_eq!(u.total.calls, 14, "2 root turns + 12 sub-calls");
    let root = u
        .by_role
        .iter()
        .find(|(t, _)| t.role == CallRole::Root)
        .unwrap()
        .1;
    let sub = u
        .by_role
        .iter()
        .find(|(t, _)| t.role == CallRole::SubCall && t.depth == 1)
        .unwrap()
        .1;
    assert_eq!((root.calls, sub.calls), (2, 12));
    assert_eq!(
        root.usage.input_tokens + sub.usage.input_tokens,
        u.total.usage.input_tokens
    );
    let expected_cost =
        (u.total.usage.input_tokens as f64 * 1.0 + u.total.usage.output_tokens as f64 * 2.0) / 1e6;
    assert!((u.total.cost_usd - expected_cost).abs() < 1e-12);
    assert_eq!(u.by_model["compat/scripted"].calls, 14);
}

#[tokio::test(flavor = "multi_thread")]
async fn rlm_query_starts_a_child_rlm_at_depth_two() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let first_user = r
            .messages()
            .iter()
            .find(|(role, _)| role == "user")
            .map(|m| m.1.clone())
            .unwrap_or_default();
        if first_user.contains("The task you are given is in `context`") {
            // The child RLM: its context is the task.
            return code(
                "task = str(context)\nFINAL(str(6 * 7) if '6 times 7' in task else 'unknown')",
            );
        }
        match turn(r) {
            0 => code("r = rlm_query('What is 6 times 7?')\nprint('child said', r)"),
            _ if r.last_user().contains("child said 42") => Reply::text("FINAL(42)"),
            _ => Reply::text("FINAL(wrong)"),
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(2)
        .build()
        .unwrap();
    let result = rlm.run("unused", "Ask a helper.").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("42"));
    let child_started = result
        .events
        .iter()
        .any(|e| matches!(e, Event::RunStarted { node, .. } if node.depth == 1));
    assert!(child_started, "a child RLM ran at depth 1");
    let child_final = result.events.iter().any(|e| matches!(e, Event::FinalAnswer { node, answer, .. } if node.depth == 1 && answer.as_deref() == Some("42")));
    assert!(child_final);

    // At max_depth 1 the same call is a plain sub-call.
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(1)
        .build()
        .unwrap();
    let result = rlm.run("unused", "Ask a helper.").await.unwrap();
    assert!(
        !result
            .events
            .iter()
            .any(|e| matches!(e, Event::RunStarted { node, .. } if node.depth == 1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_replies_are_survived() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => Reply::text("Hmm, I think the answer involves the document."),
        1 => code("x = 5\nif x\n    print(x)"),
        2 => code("x = 5\ny = x / 0"),
        3 => code("while True:\n    pass"),
        4 => code("print('x is', x)"),
        _ => Reply::text("Done. FINAL(the value is (x) = f(5), i.e. 5)\nThanks."),
    });
    let limits = Limits {
        fuel_per_step: 300_000_000,
        ..Limits::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .limits(limits)
        .build()
        .unwrap();
    let result = rlm.run("doc", "What is x?").await.unwrap();
    assert_eq!(
        result.answer.as_deref(),
        Some("the value is (x) = f(5), i.e. 5")
    );
    assert_eq!(result.iterations, 6);
    let feedback: Vec<String> = mock
        .requests()
        .last()
        .unwrap()
        .messages()
        .into_iter()
        .filter(|(r, _)| r == "user")
        .map(|m| m.1)
        .collect();
    assert!(
        feedback[1].contains("no ```repl code block"),
        "nudged: {}",
        feedback[1]
    );
    assert!(feedback[2].contains("SyntaxError"), "{}", feedback[2]);
    assert!(feedback[3].contains("ZeroDivisionError"), "{}", feedback[3]);
    assert!(
        feedback[4].contains("SandboxLimit") && feedback[4].contains("restored"),
        "{}",
        feedback[4]
    );
    assert!(
        feedback[5].contains("x is 5"),
        "state survived the restore: {}",
        feedback[5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_iterations_asks_once_for_an_answer() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if r.last_user().contains("You have used all") {
            Reply::text("FINAL(best guess)")
        } else {
            code("print('still looking')")
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_iterations(3)
        .build()
        .unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    assert_eq!(
        (result.answer.as_deref(), result.stop.clone()),
        (Some("best guess"), StopReason::MaxIterations)
    );
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_budget_returns_the_partial_answer() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            return Reply::text("label");
        }
        code("answer['content'] = 'partial: 2 labelled'\nres = llm_batch([f'label {i}' for i in range(5)])\nprint(res)")
    });
    let budget = Budget {
        max_sub_calls: Some(2),
        ..Budget::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .budget(budget)
        .build()
        .unwrap();
    let result = rlm.run("doc", "Label everything").await.unwrap();
    assert!(
        matches!(
            &result.stop,
            StopReason::Budget {
                limit: Some(BudgetLimit::SubCalls),
                ..
            }
        ),
        "{:?}",
        result.stop
    );
    assert_eq!(result.answer.as_deref(), Some("partial: 2 labelled"));
    assert_eq!(
        mock.requests().iter().filter(|r| !is_root(r)).count(),
        2,
        "no sub-call past the budget"
    );
    let out = mock.requests().iter().filter(|r| is_root(r)).count();
    assert_eq!(
        out, 1,
        "the loop stopped before asking the root model again"
    );
    assert!(
        result
            .events
            .iter()
            .any(|e| matches!(e, Event::BudgetExceeded { .. }))
    );

    // A token budget stops it too.
    let budget = Budget {
        max_tokens: Some(10),
        ..Budget::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .budget(budget)
        .build()
        .unwrap();
    let result = rlm.run("doc", "Label everything").await.unwrap();
    assert!(
        matches!(
            &result.stop,
            StopReason::Budget {
                limit: Some(BudgetLimit::Tokens),
                ..
            }
        ),
        "{:?}",
        result.stop
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_sub_calls_are_made_once() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            return Reply::delayed(std::time::Duration::from_millis(100), Reply::text("shared answer"));
        }
        match turn(r) {
            0 => code("a = llm_batch(['same prompt'] * 5)\nb = llm_query('same prompt')\nprint(len(set(a + [b])), b)"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    assert_eq!(
        mock.requests().iter().filter(|r| !is_root(r)).count(),
        1,
        "one real request for six identical calls"
    );
    let deduped = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::SubCallFinished { deduped: true, .. }))
        .count();
    assert_eq!(deduped, 5);
    assert!(mock.requests()[1].last_user().contains("1 shared answer") || result.events.iter().any(|e| matches!(e, Event::CodeExecuted { output, .. } if output.contains("1 shared answer"))));
    assert_eq!(
        result.usage.total.calls, 3,
        "two root turns and one sub-call"
    );
}

/// A failed sub-call is not an answer to keep: the same call made again is tried again (a
/// timeout or a 500 is often gone a moment later), and gets the new answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sub_call_is_tried_again_not_served_from_the_dedupe_cache() {
    let mock = MockProvider::start().await;
    let subs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = subs.clone();
    mock.respond_with(move |r| {
        if !is_root(r) {
            return match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Reply::status(500, "the sub-model is overloaded"),
                _ => Reply::text("fresh answer"),
            };
        }
        match turn(r) {
            0 => code("a = llm_query('same prompt')\nb = llm_query('same prompt')\nc = llm_query('same prompt')\nprint(repr(a[:6]), b, c)"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    let output = result
        .events
        .iter()
        .find_map(|e| match e {
            Event::CodeExecuted { output, .. } => Some(output.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        output.trim(),
        "'Error:' fresh answer fresh answer",
        "{output}"
    );
    assert_eq!(
        subs.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the failure was tried again once; the answer was then shared"
    );
    let deduped: Vec<bool> = result
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SubCallFinished { deduped, .. } => Some(*deduped),
            _ => None,
        })
        .collect();
    assert_eq!(deduped, [false, false, true]);
}

/// `rlm_query(prompt, model=...)` below the depth limit starts a child RLM whose root is the
/// model named, not the run's root model.
#[tokio::test(flavor = "multi_thread")]
async fn rlm_query_with_a_model_gives_the_child_rlm_that_model() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let first_user = r
            .messages()
            .iter()
            .find(|(role, _)| role == "user")
            .map(|m| m.1.clone())
            .unwrap_or_default();
        if first_user.contains("The task you are given is in `context`") {
            return Reply::text(format!("FINAL(child ran on {})", r.model()));
        }
        match turn(r) {
            0 => code("print(rlm_query('What is 6 times 7?', model='compat/helper'))"),
            _ => Reply::text(format!(
                "FINAL({})",
                r.last_user()
                    .trim_start_matches("Output:")
                    .split("\n\n")
                    .next()
                    .unwrap_or_default()
                    .trim()
            )),
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .sub_model(model_named(&mock, "compat/helper"))
        .engine(engine())
        .max_depth(2)
        .build()
        .unwrap();
    let result = rlm.run("unused", "Ask a helper.").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("child ran on helper"));
    let child_models: Vec<String> = result
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ModelReply { node, model, .. } if node.depth == 1 => Some(model.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(child_models, ["compat/helper"]);
    // The same prompt without a model is another call (another root), not a deduped one.
    assert!(result.events.iter().any(|e| matches!(
        e,
        Event::SubCallFinished { kind: rlm::SubCallKind::RlmQuery, model, .. } if model == "rlm:compat/helper"
    )));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_replays_to_the_same_answer_offline() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            return Reply::text(r.last_user().len().to_string());
        }
        match turn(r) {
            0 => code("import random, os\nsizes = llm_batch([d for d in context])\nnoise = os.urandom(4).hex()\npick = random.choice(context)\nprint(sizes, pick)"),
            _ => code("FINAL(f'{sum(int(s) for s in sizes)} {pick} {noise}')"),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let writer = TraceWriter::create(&path).unwrap();
    let docs: Vec<String> = ["alpha", "beta", "gamma delta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let limits = Limits {
        fuel_per_step: 3_000_000_000,
        ..Limits::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .limits(limits.clone())
        .on_event(writer)
        .build()
        .unwrap();
    let original = rlm.run(docs, "sum the lengths").await.unwrap();
    assert!(
        original.answer.as_deref().unwrap().starts_with("20 "),
        "{:?}",
        original.answer
    );
    let requests_before = mock.requests().len();

    let events = read_trace(&path).unwrap();
    assert_eq!(events.len(), original.events.len());
    let recorded_limits = events.iter().find_map(|e| match e {
        Event::RunStarted {
            settings: Some(s), ..
        } => s.limits.clone(),
        _ => None,
    });
    assert_eq!(
        recorded_limits,
        Some(limits),
        "the trace records the sandbox limits"
    );
    let replayed = replay(&events, None, engine()).await.unwrap();
    assert!(
        replayed.matches(),
        "{:?} vs {:?}",
        replayed.result.answer,
        replayed.recorded_answer
    );
    assert_eq!(replayed.result.answer, original.answer);
    assert_eq!(
        mock.requests().len(),
        requests_before,
        "the replay asked no model"
    );

    // A replay against a different context diverges, and says so.
    let other = ContextInput::Documents(vec!["x".into()]);
    let diverged = replay(&events, Some(other), engine()).await.unwrap();
    assert!(!diverged.matches());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_the_repl_and_adds_contexts() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let q = r
            .messages()
            .iter()
            .rev()
            .find(|(role, t)| role == "user" && t.starts_with("Question:"))
            .map(|m| m.1.clone())
            .unwrap_or_default();
        let last = r.last_user();
        if q.contains("first") {
            return if last.starts_with("Question:") {
                code("word = context.split()[0]\nFINAL(word)")
            } else {
                Reply::text("FINAL(?)")
            };
        }
        if last.starts_with("Question:") {
            code("FINAL(word + ' ' + context_1 + ' ' + previous_answers[0])")
        } else {
            Reply::text("FINAL(?)")
        }
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let mut session = rlm.session("hello world").await.unwrap();
    let a = session.ask("first word?").await;
    assert_eq!(a.answer.as_deref(), Some("hello"));
    let name = session.add_context("second doc").await.unwrap();
    assert_eq!(name, "context_1");
    let b = session.ask("combine").await;
    assert_eq!(b.answer.as_deref(), Some("hello second doc hello"));
    assert_eq!(session.questions(), 2);
}

/// The blocking wrapper, for callers without an async runtime.
#[test]
fn run_blocking_works_without_a_runtime() {
    let server = tokio::runtime::Runtime::new().unwrap();
    let mock = server.block_on(MockProvider::start());
    mock.respond_with(|r| match turn(r) {
        0 => code("n = len(context)"),
        _ => Reply::text("FINAL_VAR(n)"),
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let result = rlm.run_blocking("twelve chars", "how long?").unwrap();
    assert_eq!(result.answer.as_deref(), Some("12"));
    drop(mock);
}

/// Called from async code by mistake, the blocking wrapper still answers instead of panicking
/// ("cannot start a runtime from within a runtime"), on both kinds of runtime.
#[test]
fn run_blocking_inside_a_runtime_answers_instead_of_panicking() {
    for multi_thread in [false, true] {
        let mut rt = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let rt = rt.enable_all().build().unwrap();
        // The mock serves from its own runtime: the caller's may be blocked by the call.
        let server = tokio::runtime::Runtime::new().unwrap();
        let mock = server.block_on(MockProvider::start());
        mock.respond_with(|r| match turn(r) {
            0 => code("n = len(context)"),
            _ => Reply::text("FINAL_VAR(n)"),
        });
        let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
        let result = rt.block_on(async { rlm.run_blocking("twelve chars", "how long?") });
        assert_eq!(
            result.unwrap().answer.as_deref(),
            Some("12"),
            "{multi_thread}"
        );
        drop(mock);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn time_and_cost_budgets_stop_the_run() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("answer['content'] = 'half done'\nx = 1"),
        _ => Reply::delayed(
            std::time::Duration::from_secs(20),
            Reply::text("FINAL(late)"),
        ),
    });
    let budget = Budget {
        max_time: Some(std::time::Duration::from_millis(800)),
        ..Budget::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .budget(budget)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let result = rlm.run("doc", "q").await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &result.stop,
            StopReason::Budget {
                limit: Some(BudgetLimit::Time),
                ..
            }
        ),
        "{:?}",
        result.stop
    );
    assert_eq!(result.answer.as_deref(), Some("half done"));

    // $1 + $2 per million tokens: a budget of a millionth of a dollar is spent by the first turn.
    mock.respond_with(|_| code("x = 1"));
    let budget = Budget {
        max_usd: Some(0.000_001),
        ..Budget::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .budget(budget)
        .build()
        .unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    assert!(
        matches!(
            &result.stop,
            StopReason::Budget {
                limit: Some(BudgetLimit::Cost),
                ..
            }
        ),
        "{:?}",
        result.stop
    );
    assert_eq!(result.iterations, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn depth_zero_disables_sub_calls_and_unknown_models_are_refused() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("print(llm_query('hi'))\nprint(rlm_query('hi'))"),
        _ => Reply::text(format!(
            "FINAL({})",
            r.last_user().contains("sub-calls are disabled")
        )),
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(0)
        .build()
        .unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("true"));
    assert!(
        mock.requests().iter().all(is_root),
        "no sub-call reached the model"
    );
    let system = &mock.requests()[0].messages()[0].1;
    assert!(
        system.contains("disabled in this run"),
        "the prompt says so: {system}"
    );

    mock.respond_with(|r| match turn(r) {
        0 => code("print(llm_query('hi', model='openai/gpt-5'))"),
        _ => Reply::text(format!(
            "FINAL({})",
            r.last_user().contains("unknown model")
        )),
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    assert_eq!(
        rlm.run("doc", "q").await.unwrap().answer.as_deref(),
        Some("true")
    );
}

/// A model that re-sends the same block is told so (with the question again) and, with the
/// small profile, sampled rather than decoded greedily on its next reply; the note is about
/// repetition only, whatever the question.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_step_is_pointed_out_and_the_next_reply_is_sampled() {
    use rlm::PromptProfile::{Small, Standard};
    // (model, profile, temperature of each root call): open models (compat/) decode greedily
    // by default and are sampled after a repeat, as small-profile models are; a hosted model
    // with the standard prompt keeps its own sampling (some refuse a temperature).
    for (id, profile, temperatures) in [
        (
            "compat/scripted",
            Standard,
            [Some(0.0), Some(0.0), Some(0.7)],
        ),
        ("compat/scripted", Small, [Some(0.0), Some(0.0), Some(0.7)]),
        ("openai/scripted", Standard, [None, None, None]),
        ("openai/scripted", Small, [None, None, Some(0.7)]),
    ] {
        let mock = MockProvider::start().await;
        mock.respond_with(|r| {
            if r.last_user().contains("same code as in reply 1") {
                Reply::text("FINAL(4217)")
            } else {
                code("print([l for l in context.splitlines() if 'secret' in l])")
            }
        });
        let client = LlmClient::builder()
            .retry(RetryPolicy::none())
            .build()
            .unwrap();
        let config = ModelConfig {
            base_url: Some(mock.openai_base_url()),
            api_key: Some(rlm_llm::ApiKey::new("test-key")),
            ..ModelConfig::default()
        };
        let rlm = Rlm::builder(Arc::new(client.model_with(id, config).unwrap()))
            .engine(engine())
            .prompt_profile(profile)
            .max_iterations(6)
            .build()
            .unwrap();
        let result = rlm
            .run(haystack_with_needle(), "What is the secret code?")
            .await
            .unwrap();
        let case = format!("{id} {profile:?}");
        assert_eq!(
            (result.answer.as_deref(), result.stop.clone()),
            (Some("4217"), StopReason::Final),
            "{case}"
        );
        let roots: Vec<_> = mock.requests().into_iter().filter(is_root).collect();
        assert_eq!(roots.len(), 3, "{case}");
        // After the first step: how to finish. After the repeat: the note and the question.
        assert!(
            roots[1]
                .last_user()
                .contains("FINAL(...) holding that answer")
        );
        assert!(!roots[1].last_user().contains("same code"));
        let note = roots[2].last_user();
        assert!(
            note.contains("same code as in reply 1") && note.contains("What is the secret code?"),
            "{note}"
        );
        let sent: Vec<_> = roots
            .iter()
            .map(|r| r.body.get("temperature").and_then(|t| t.as_f64()))
            .collect();
        let want: Vec<_> = temperatures
            .iter()
            .map(|t| t.map(|t: f32| t as f64))
            .collect();
        assert_eq!(sent, want, "{case}");
        // Open models' root calls stop after the first closed code block.
        let stop = roots[0].body.get("stop").cloned();
        let want_stop = id
            .starts_with("compat/")
            .then(|| serde_json::json!(["\n```\n"]));
        assert_eq!(stop, want_stop, "{case}");
    }
}

/// The answer forced at the iteration limit is asked for with the question and the last output
/// that printed something, so it is read from that evidence.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_call_repeats_the_question_and_the_evidence() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let last = r.last_user();
        if last.contains("You have used all") {
            let evidence =
                last.contains("The secret code is 4217") && last.contains("secret code?");
            Reply::text(if evidence {
                "FINAL(4217)"
            } else {
                "FINAL(guess)"
            })
        } else if turn(r) == 0 {
            code("print([l for l in context.splitlines() if 'secret' in l])")
        } else {
            code("x = 1")
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_iterations(3)
        .build()
        .unwrap();
    let result = rlm
        .run(haystack_with_needle(), "What is the secret code?")
        .await
        .unwrap();
    assert_eq!(
        (result.answer.as_deref(), result.stop),
        (Some("4217"), StopReason::MaxIterations)
    );
}

/// The prompt profile follows the root model, not its provider: a 1.5B model served over an
/// OpenAI-compatible endpoint gets the small prompt by default, a named profile wins, and the
/// run records the profile it used.
#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_profile_follows_the_model() {
    for (id, chosen, want) in [
        ("compat/qwen2.5-coder-1.5b", None, rlm::PromptProfile::Small),
        ("compat/scripted", None, rlm::PromptProfile::Standard),
        (
            "compat/qwen2.5-coder-1.5b",
            Some(rlm::PromptProfile::Standard),
            rlm::PromptProfile::Standard,
        ),
    ] {
        let mock = MockProvider::start().await;
        mock.push(Reply::text("FINAL(done)"));
        let mut builder = Rlm::builder(model_named(&mock, id)).engine(engine());
        if let Some(p) = chosen {
            builder = builder.prompt_profile(p);
        }
        let result = builder.build().unwrap().run("doc", "q").await.unwrap();
        let system = mock.requests()[0].messages()[0].1.clone();
        let small = system.contains("reply with exactly ONE code block");
        assert_eq!(small, want == rlm::PromptProfile::Small, "{id}: {system}");
        let recorded = result.events.iter().find_map(|e| match e {
            Event::RunStarted {
                settings: Some(s), ..
            } => Some(s.profile),
            _ => None,
        });
        assert_eq!(recorded, Some(want), "{id}");
    }
}

/// A final answer that is the prompt's placeholder copied as it is (small models do this) is
/// refused with a note, and the next reply's real answer is taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_copied_placeholder_is_not_taken_as_the_answer() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => Reply::text("FINAL(your answer)"),
        1 => code("FINAL('...')"),
        _ => Reply::text("FINAL(4217)"),
    });
    let rlm = Rlm::builder(model(&mock)).engine(engine()).build().unwrap();
    let result = rlm.run("doc", "What is the code?").await.unwrap();
    assert_eq!(
        (result.answer.as_deref(), result.stop, result.iterations),
        (Some("4217"), StopReason::Final, 3)
    );
    let requests = mock.requests();
    assert!(
        requests[1]
            .last_user()
            .contains("FINAL(your answer) is not an answer")
    );
    assert!(
        requests[2]
            .last_user()
            .contains("FINAL(...) is not an answer")
    );
}

/// A step whose searches all matched nothing is not followed by the hint to finish, but by
/// the advice to try other words (small models read "0 matches" as "not in the document").
#[tokio::test(flavor = "multi_thread")]
async fn searches_that_matched_nothing_steer_to_other_words_not_to_finishing() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("hits = search('headquarters')\nprint(len(hits), 'matches')"),
        1 => code("hits = search('headquarter')\nprint(hits[0]['snippet'])"),
        _ => Reply::text("FINAL(Oslo)"),
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_iterations(5)
        .build()
        .unwrap();
    let result = rlm
        .run(
            "Acme Corp is headquartered in Oslo.\nIt makes anvils.",
            "Where is Acme's head office?",
        )
        .await
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("Oslo"));
    let roots: Vec<_> = mock.requests().into_iter().filter(is_root).collect();
    assert_eq!(roots.len(), 3);
    let after_nothing = roots[1].last_user();
    assert!(
        after_nothing.contains("0 matches") && after_nothing.contains("matched nothing"),
        "{after_nothing}"
    );
    assert!(!after_nothing.contains("FINAL(...) holding that answer"));
    let after_found = roots[2].last_user();
    assert!(
        after_found.contains("FINAL(...) holding that answer")
            && !after_found.contains("matched nothing"),
        "{after_found}"
    );
}

/// The code the nothing-found advice shows runs as is on every shape of context (it once
/// called `splitlines()` on a list of documents, and small models copy it word for word).
#[tokio::test(flavor = "multi_thread")]
async fn the_code_shown_after_nothing_found_runs_on_every_shape_of_context() {
    let inputs = [
        rlm::ContextInput::Text("first line\nsecond line".into()),
        rlm::ContextInput::Documents(vec!["doc one".into(), "doc two".into()]),
        rlm::ContextInput::Json(serde_json::json!({"a": "x", "b": [1, 2]})),
    ];
    for input in inputs {
        let mock = MockProvider::start().await;
        mock.respond_with(|r| {
            if !is_root(r) {
                return Reply::text("yes");
            }
            match turn(r) {
                0 => code("hits = search('never written')\nprint(len(hits), 'matches')"),
                1 => {
                    // Copy the advice's code block, as a small model does.
                    let last = r.last_user();
                    let start = last.find("```repl\n").map(|i| i + 8).unwrap_or(0);
                    let end = last[start..].find("```").map_or(last.len(), |e| start + e);
                    code(last[start..end].trim_end())
                }
                _ => Reply::text("FINAL(done)"),
            }
        });
        let rlm = Rlm::builder(model(&mock))
            .engine(engine())
            .max_iterations(4)
            .build()
            .unwrap();
        let result = rlm.run(input.clone(), "How many?").await.unwrap();
        assert_eq!(result.answer.as_deref(), Some("done"));
        let roots: Vec<_> = mock.requests().into_iter().filter(is_root).collect();
        let out = roots[2].last_user();
        assert!(
            out.contains("2 pieces, 2 with an answer") && !out.contains("Error"),
            "{input:?}: {out}"
        );
        // The helper was asked the question about each piece.
        let asked = mock
            .requests()
            .into_iter()
            .filter(|r| !is_root(r))
            .filter(|r| r.last_user().contains("Question: How many?"))
            .count();
        assert_eq!(asked, 2, "{input:?}");
    }
}

/// A search re-run with nothing found again gets the note that it repeats, without the
/// invitation to answer from what it printed ("0 matches" is not an answer), the nothing-found
/// advice with code to copy, and each further repeat a hotter sample (a 1.5B model re-sent one
/// block six times at 0.7); the repeated exchanges are not kept in the conversation.
#[tokio::test(flavor = "multi_thread")]
async fn a_search_repeated_with_nothing_found_gets_the_advice_and_hotter_samples() {
    let mock = MockProvider::start().await;
    // Counted by calls: the conversation does not grow while the model repeats itself.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    mock.respond_with(
        move |_| match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0..=2 => code("hits = search('kind')\nprint(len(hits), 'matches')"),
            _ => Reply::text("FINAL(none)"),
        },
    );
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .prompt_profile(rlm::PromptProfile::Small)
        .max_iterations(6)
        .build()
        .unwrap();
    let result = rlm
        .run(
            "The parcel never arrived.\nI was charged twice.",
            "How many are about billing?",
        )
        .await
        .unwrap();
    assert_eq!(result.stop, StopReason::Final);
    let roots: Vec<_> = mock.requests().into_iter().filter(is_root).collect();
    // The answer "none", which no output showed, is questioned once (small models copy
    // answers; see grounding.rs): a reader's conversation of its own, then the model again.
    assert_eq!(roots.len(), 6);
    assert!(
        roots[4].messages()[0]
            .1
            .starts_with("You answer a question from a piece of text")
    );
    assert!(
        roots[5]
            .last_user()
            .contains("is not in any output your code printed")
    );
    let roots = &roots[..4];
    // The conversation keeps one copy of the repeated exchange (system, question, the block,
    // its output with the latest note), so copies do not pile up in front of the model.
    for r in &roots[1..] {
        assert_eq!(r.messages().len(), 4);
        assert_eq!(turn(r), 1);
    }
    for (i, r) in roots.iter().enumerate().skip(2) {
        let note = r.last_user();
        assert!(
            note.contains("same code as in reply 1")
                && note.contains("matched nothing again")
                && note.contains("llm_batch(")
                && note.contains("How many are about billing?"),
            "reply {i}: {note}"
        );
        assert!(!note.contains("holding that answer"), "reply {i}: {note}");
    }
    let sent: Vec<_> = roots
        .iter()
        .map(|r| r.body.get("temperature").and_then(|t| t.as_f64()))
        .map(|t| t.map(|t| (t * 100.0).round() / 100.0))
        .collect();
    assert_eq!(sent, [Some(0.0), Some(0.0), Some(0.7), Some(0.85)]);
}

/// In a session, a question whose first step is the same as the last question's (a model looks
/// at the context again) keeps its own exchange: the repeat note goes after it, and the
/// question's message is left as asked (the scripted examples' session looped on it).
#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_across_questions_of_a_session_keeps_the_question_as_asked() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let last = r.last_user();
        if last.starts_with("Question:") {
            code("print(len(context))")
        } else if r
            .messages()
            .iter()
            .any(|(_, t)| t.contains("Question: second"))
        {
            Reply::text("FINAL(two)")
        } else {
            Reply::text("FINAL(one)")
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_iterations(4)
        .build()
        .unwrap();
    let mut session = rlm.session("hello world").await.unwrap();
    let a = session.ask("first?").await;
    assert_eq!(
        (a.answer.as_deref(), a.stop),
        (Some("one"), StopReason::Final)
    );
    let b = session.ask("second?").await;
    assert_eq!(
        (b.answer.as_deref(), b.stop),
        (Some("two"), StopReason::Final)
    );
    let roots: Vec<_> = mock.requests().into_iter().filter(is_root).collect();
    let last = roots.last().unwrap().last_user();
    assert!(last.contains("same code as in reply"), "{last}");
}
