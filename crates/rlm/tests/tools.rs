//! Custom tools in RLM runs: a scripted model (over real HTTP) writes Python that calls a
//! registered tool in the real sandbox; the system prompt lists the tools; each call is an event;
//! child RLMs get the tools too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rlm::{Event, PromptProfile, Rlm, RlmError, StopReason, Tool, replay};
use rlm_llm::{LlmClient, ModelConfig, RetryPolicy};
use rlm_sandbox::{SandboxEngine, SandboxError, ToolError};
use rlm_testkit::{MockProvider, RecordedRequest, Reply};
use serde_json::{Value, json};

fn engine() -> Arc<SandboxEngine> {
    static ENGINE: Mutex<Option<Arc<SandboxEngine>>> = Mutex::new(None);
    ENGINE
        .lock()
        .unwrap()
        .get_or_insert_with(|| SandboxEngine::load().expect("guest (just guest)"))
        .clone()
}

fn model(mock: &MockProvider) -> Arc<rlm_llm::Model> {
    let client = LlmClient::builder()
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let config = ModelConfig {
        base_url: Some(mock.openai_base_url()),
        ..ModelConfig::default()
    };
    Arc::new(client.model_with("compat/scripted", config).unwrap())
}

fn code(c: &str) -> Reply {
    Reply::text(format!("Let me run this.\n```repl\n{c}\n```"))
}

fn turn(r: &RecordedRequest) -> usize {
    r.messages()
        .iter()
        .filter(|(role, _)| role == "assistant")
        .count()
}

/// `stock(sku, warehouse=None)`: units in stock, counting its calls.
fn stock(calls: Arc<AtomicUsize>) -> Tool {
    Tool::new(
        "stock",
        "Units of a product in stock.",
        json!({
            "type": "object",
            "properties": {
                "sku": {"type": "string", "description": "the product code"},
                "warehouse": {"type": "string"},
            },
            "required": ["sku"],
        }),
        move |args: Value| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match (args["sku"].as_str(), args.get("warehouse")) {
                    (Some("A-1"), None) => Ok(json!({"sku": "A-1", "units": 40})),
                    (Some("A-1"), Some(w)) => Ok(json!({"sku": "A-1", "units": 7, "in": w})),
                    (Some(other), _) => Err(format!("unknown product {other}")),
                    (None, _) => Err("sku must be a string".into()),
                }
            }
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn model_code_calls_a_tool_and_answers_with_its_result() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("s = stock('A-1')\nn = s['units'] + stock(sku='A-1', warehouse='east')['units']\nprint('total', n)"),
        _ if r.last_user().contains("total 47") => {
            code("FINAL(f\"{n} units\")")
        }
        _ => Reply::text("FINAL(wrong)"),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .tool(stock(calls.clone()))
        .build()
        .unwrap();
    let result = rlm.run("unused", "How many A-1 are there?").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("47 units"));
    assert_eq!(result.stop, StopReason::Final);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The system prompt lists the tool, its description and parameters.
    let system = &mock.requests()[0].messages()[0].1;
    assert!(
        system.contains("- stock(sku, warehouse=None): Units of a product in stock.")
            && system.contains("    sku (string): the product code")
            && system.contains("raises ToolError"),
        "{system}"
    );
    // Each call is an event, with its arguments and result; the trace's JSON form reads back.
    let tool_events: Vec<&Event> = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::ToolCall { .. }))
        .collect();
    assert_eq!(tool_events.len(), 2);
    let Event::ToolCall {
        node,
        name,
        args,
        result: res,
        ..
    } = tool_events[1]
    else {
        unreachable!()
    };
    assert_eq!((node.depth, name.as_str()), (0, "stock"));
    assert_eq!(args, &json!({"sku": "A-1", "warehouse": "east"}));
    assert_eq!(res, &Ok(json!({"sku": "A-1", "units": 7, "in": "east"})));
    let line = serde_json::to_string(tool_events[1]).unwrap();
    assert!(line.contains(r#""type":"tool_call""#), "{line}");
    let back: Event = serde_json::from_str(&line).unwrap();
    assert_eq!(&back, tool_events[1]);

    // The trace replays offline: the same prompt (the tools are recorded in the settings) and
    // the recorded results, without calling the tool.
    let again = replay(&result.events, None, engine()).await.unwrap();
    assert_eq!(again.result.answer.as_deref(), Some("47 units"));
    assert_eq!(again.recorded_answer.as_deref(), Some("47 units"));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the replay called no tool");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_tool_raises_tool_error_that_model_code_can_handle() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code("stock('Z-9')"),
        1 => code("try:\n    stock('Z-9')\nexcept ToolError as e:\n    FINAL('failed: ' + str(e))"),
        _ => Reply::text("FINAL(wrong)"),
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .tool(stock(Arc::default()))
        .build()
        .unwrap();
    let result = rlm.run("unused", "How many Z-9?").await.unwrap();
    assert_eq!(
        result.answer.as_deref(),
        Some("failed: stock: unknown product Z-9")
    );
    // The first, uncaught failure reached the model as the step's traceback.
    let reqs = mock.requests();
    let seen = reqs[1].last_user();
    assert!(
        seen.contains("ToolError: stock: unknown product Z-9"),
        "{seen}"
    );
    let failed = result
        .events
        .iter()
        .any(|e| matches!(e, Event::ToolCall { result: Err(m), .. } if m == "unknown product Z-9"));
    assert!(failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn child_rlms_get_the_tools_too() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let first_user = r
            .messages()
            .iter()
            .find(|(role, _)| role == "user")
            .map(|m| m.1.clone())
            .unwrap_or_default();
        if first_user.contains("The task you are given is in `context`") {
            return code("FINAL(str(stock('A-1')['units']))");
        }
        match turn(r) {
            0 => code("r = rlm_query('How many A-1?')\nprint('child said', r)"),
            _ if r.last_user().contains("child said 40") => Reply::text("FINAL(40)"),
            _ => Reply::text("FINAL(wrong)"),
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(2)
        .tool(stock(calls.clone()))
        .build()
        .unwrap();
    let result = rlm.run("unused", "Ask a helper.").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("40"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        result
            .events
            .iter()
            .any(|e| matches!(e, Event::ToolCall { node, .. } if node.depth == 1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_small_profile_lists_the_tools() {
    let mock = MockProvider::start().await;
    mock.respond_with(|_| Reply::text("FINAL(done)"));
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .prompt_profile(PromptProfile::Small)
        .tool(stock(Arc::default()))
        .build()
        .unwrap();
    rlm.run("unused", "q").await.unwrap();
    let system = &mock.requests()[0].messages()[0].1;
    assert!(
        system.contains("stock(sku, warehouse=None): Units of a product in stock."),
        "{system}"
    );
}

#[test]
fn duplicate_tool_names_are_refused_at_build() {
    let t = stock(Arc::default());
    let err = Rlm::builder(Arc::new(rlm_testkit_model()))
        .engine(engine())
        .tools([t.clone(), t])
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RlmError::Sandbox(SandboxError::Tool(ToolError::Duplicate(ref n))) if n == "stock"
        ),
        "{err}"
    );
}

/// A model that is never called (the build fails first).
fn rlm_testkit_model() -> rlm_llm::Model {
    let client = LlmClient::builder()
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let config = ModelConfig {
        base_url: Some("http://127.0.0.1:9/v1".into()),
        ..ModelConfig::default()
    };
    client.model_with("compat/unused", config).unwrap()
}

/// `measure(text)`: the length of `text`, counting its calls; `big(n)`: a string of `n` x's.
fn measure_and_big(calls: Arc<AtomicUsize>) -> [Tool; 2] {
    let text_param = json!({
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    });
    let measure = Tool::new(
        "measure",
        "The length of a text.",
        text_param,
        move |args: Value| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(json!(args["text"].as_str().map_or(0, str::len)))
            }
        },
    )
    .unwrap();
    let n_param = json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    });
    let big = Tool::new("big", "A long text.", n_param, |args: Value| async move {
        let n = args["n"].as_u64().unwrap_or(0) as usize;
        Ok(json!("x".repeat(n)))
    })
    .unwrap();
    [measure, big]
}

/// Whatever crosses into a tool or out of it, its event holds a bounded copy: 100 KB of
/// arguments are kept as their first 4 KiB (their size and hash whole), a result larger than
/// the sandbox passes to model code is not kept (the error model code got is); the trace still
/// replays, finding the call's result by the hash and giving model code the same error.
#[tokio::test(flavor = "multi_thread")]
async fn tool_events_hold_bounded_copies_and_the_trace_still_replays() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| match turn(r) {
        0 => code(
            "n = measure('a' * 100_000)\n\
             try:\n    big(n=200_000)\nexcept ToolError as e:\n    err = str(e)\n\
             print('measured', n, '|', err[:60])",
        ),
        _ if r.last_user().contains("measured 100000") => code("FINAL(f'{n} chars')"),
        _ => Reply::text("FINAL(wrong)"),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let limits = rlm::Limits {
        max_host_string_bytes: 128 << 10,
        read_chunk_chars: 16 << 10,
        ..rlm::Limits::default()
    };
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .limits(limits)
        .tools(measure_and_big(calls.clone()))
        .on_event(rlm::TraceWriter::create(&path).unwrap())
        .build()
        .unwrap();
    let result = rlm.run("unused", "How long?").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("100000 chars"));
    let seen = mock.requests()[1].last_user();
    assert!(
        seen.contains("measured 100000 | big: the tool's result is 200002 bytes of JSON"),
        "model code got the sandbox's error for the large result: {seen}"
    );
    let events: Vec<&Event> = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::ToolCall { .. }))
        .collect();
    let Event::ToolCall {
        args,
        args_bytes,
        args_hash,
        result: res,
        ..
    } = events[0]
    else {
        unreachable!()
    };
    let whole = json!({"text": "a".repeat(100_000)}).to_string();
    assert_eq!(*args_bytes, whole.len());
    assert_eq!(args_hash.len(), 32);
    let kept = args
        .as_str()
        .expect("long arguments are kept as a cut string");
    assert!(
        kept.len() <= rlm::MAX_EVENT_ARGS_BYTES + 200,
        "{}",
        kept.len()
    );
    assert!(kept.starts_with(r#"{"text":"aaa"#) && kept.contains("100011 bytes of JSON"));
    assert_eq!(res, &Ok(json!(100_000)));
    let Event::ToolCall { result: res, .. } = events[1] else {
        unreachable!()
    };
    assert!(
        matches!(res, Err(m) if m.starts_with("the tool's result is 200002 bytes of JSON")),
        "{res:?}"
    );
    for e in &events {
        let line = serde_json::to_string(e).unwrap();
        assert!(line.len() < 8 << 10, "an event of {} bytes", line.len());
    }
    let trace_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        trace_bytes < 64 << 10,
        "the trace holds {trace_bytes} bytes"
    );

    let events = rlm::read_trace(&path).unwrap();
    let again = replay(&events, None, engine()).await.unwrap();
    assert!(again.matches(), "{:?}", again.result.answer);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the replay called no tool");
}
