//! The real clients against a real local HTTP server speaking each provider's wire format.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rlm_llm::{
    ApiKey, CallTag, ChatModel, ChatRequest, FinishReason, LlmClient, LlmError, Message, Model,
    ModelConfig, Price, PriceTable, ReasoningEffort, RetryPolicy, SamplingParams,
};
use rlm_testkit::{MockProvider, Reply, Wire};
use serde_json::json;

const KEY: &str = "sk-test-SECRET1234567890";

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        max_retry_after: Duration::from_secs(10),
    }
}

fn client(retry: RetryPolicy) -> LlmClient {
    LlmClient::builder()
        .retry(retry)
        .prices(PriceTable::default())
        .build()
        .unwrap()
}

fn model_on(client: &LlmClient, mock: &MockProvider, id: &str) -> Model {
    let base = if id.starts_with("openai/") || id.starts_with("compat/") {
        mock.openai_base_url()
    } else {
        mock.url()
    };
    let config = ModelConfig {
        base_url: Some(base),
        api_key: Some(ApiKey::new(KEY)),
        ..ModelConfig::default()
    };
    client.model_with(id, config).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![
        Message::system("You are terse."),
        Message::user("what is two plus two"),
    ])
}

const MODELS: [&str; 4] = [
    "openai/gpt-5-mini",
    "anthropic/claude-sonnet-4-5",
    "gemini/gemini-2.5-flash",
    "compat/llama3.1:8b",
];

#[tokio::test]
async fn happy_path_for_every_wire_format() {
    let mock = MockProvider::start().await;
    let client = client(RetryPolicy::none());
    for id in MODELS {
        let model = model_on(&client, &mock, id);
        let answer = model.chat(request()).await.unwrap();
        assert_eq!(answer.text, "mock answer to: what is two plus two", "{id}");
        assert_eq!(answer.finish_reason, FinishReason::Stop);
        assert_eq!(answer.usage.input_tokens, 8, "{id}: words of system + user");
        assert_eq!(answer.usage.output_tokens, 8);
        assert_eq!(answer.attempts, 1);
        assert!(!answer.model.is_empty());
    }
    let reqs = mock.requests();
    // Each provider's auth header and shape.
    assert_eq!(reqs[0].wire, Wire::OpenAi);
    assert_eq!(reqs[0].headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(reqs[0].body["messages"][0]["role"], "system");
    assert_eq!(reqs[1].wire, Wire::Anthropic);
    assert_eq!(reqs[1].headers["x-api-key"], KEY);
    assert_eq!(reqs[1].headers["anthropic-version"], "2023-06-01");
    assert_eq!(reqs[1].body["system"], "You are terse.");
    assert_eq!(reqs[1].body["max_tokens"], 8192);
    assert_eq!(reqs[2].wire, Wire::Gemini);
    assert_eq!(reqs[2].headers["x-goog-api-key"], KEY);
    assert!(
        reqs[2]
            .path
            .ends_with("/v1beta/models/gemini-2.5-flash:generateContent")
    );
    assert!(
        !reqs[2].path.contains(KEY),
        "the Gemini key never goes in the URL"
    );
    assert_eq!(
        reqs[2].body["systemInstruction"]["parts"][0]["text"],
        "You are terse."
    );
    assert_eq!(reqs[3].body["model"], "llama3.1:8b");
}

#[tokio::test]
async fn sampling_parameters_and_raw_options_pass_through() {
    let mock = MockProvider::start().await;
    let client = client(RetryPolicy::none());
    let mut extra = serde_json::Map::new();
    extra.insert("top_p".into(), json!(0.9));
    let params = SamplingParams {
        temperature: Some(0.5),
        max_output_tokens: Some(100),
        stop: vec!["END".into()],
        reasoning_effort: Some(ReasoningEffort::High),
        extra,
    };
    for id in MODELS {
        let mut req = request();
        req.params = params.clone();
        model_on(&client, &mock, id).chat(req).await.unwrap();
    }
    let r = mock.requests();
    let openai = &r[0].body;
    assert_eq!(
        (
            openai["temperature"].clone(),
            openai["max_completion_tokens"].clone()
        ),
        (json!(0.5), json!(100))
    );
    assert_eq!(
        (
            openai["stop"].clone(),
            openai["reasoning_effort"].clone(),
            openai["top_p"].clone()
        ),
        (json!(["END"]), json!("high"), json!(0.9))
    );
    let anthropic = &r[1].body;
    assert_eq!(anthropic["stop_sequences"], json!(["END"]));
    assert_eq!(anthropic["thinking"]["budget_tokens"], 24576);
    assert!(
        anthropic["max_tokens"].as_u64().unwrap() > 24576,
        "max_tokens covers the thinking budget"
    );
    let gemini = &r[2].body["generationConfig"];
    assert_eq!(
        (
            gemini["maxOutputTokens"].clone(),
            gemini["stopSequences"].clone()
        ),
        (json!(100), json!(["END"]))
    );
    assert_eq!(gemini["thinkingConfig"]["thinkingBudget"], 24576);
    assert_eq!(
        r[3].body["max_tokens"], 100,
        "compatible servers get max_tokens"
    );
}

#[tokio::test]
async fn streaming_delivers_text_as_it_arrives_for_every_wire_format() {
    let mock = MockProvider::start().await;
    mock.respond_with(|_| Reply::TextWithUsage {
        text: "one two three four".into(),
        input: 11,
        output: 4,
        cached: 3,
    });
    let client = client(RetryPolicy::none());
    for id in MODELS {
        let pieces = Mutex::new(Vec::<String>::new());
        let on_text = |t: &str| pieces.lock().unwrap().push(t.to_string());
        let answer = model_on(&client, &mock, id)
            .chat_stream(request(), &on_text)
            .await
            .unwrap();
        let pieces = pieces.into_inner().unwrap();
        assert!(pieces.len() >= 4, "{id}: {pieces:?}");
        assert_eq!(pieces.concat(), "one two three four");
        assert_eq!(answer.text, "one two three four");
        assert_eq!(
            (
                answer.usage.input_tokens,
                answer.usage.output_tokens,
                answer.usage.cached_input_tokens
            ),
            (11, 4, 3),
            "{id}"
        );
        assert_eq!(answer.finish_reason, FinishReason::Stop);
    }
    assert!(mock.requests().iter().all(|r| r.stream));
}

#[tokio::test]
async fn retries_honour_retry_after_then_back_off_in_order() {
    let mock = MockProvider::start().await;
    mock.push(Reply::rate_limited(1));
    mock.push(Reply::status(503, "overloaded"));
    mock.push(Reply::text("finally"));
    let model = model_on(&client(fast_retry(5)), &mock, "openai/gpt-5-mini");
    let started = Instant::now();
    let answer = model.chat(request()).await.unwrap();
    assert_eq!((answer.text.as_str(), answer.attempts), ("finally", 3));
    let at: Vec<Instant> = mock.requests().iter().map(|r| r.received).collect();
    assert_eq!(at.len(), 3);
    assert!(
        at[1] - at[0] >= Duration::from_secs(1),
        "waited the Retry-After: {:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(100),
        "then backed off: {:?}",
        at[2] - at[1]
    );
    assert!(answer.latency >= Duration::from_secs(1) && answer.latency <= started.elapsed());
}

#[tokio::test]
async fn gives_up_after_the_attempt_cap() {
    let mock = MockProvider::start().await;
    mock.respond_with(|_| Reply::status(500, "internal error"));
    let model = model_on(&client(fast_retry(3)), &mock, "anthropic/claude-sonnet-4-5");
    let err = model.chat(request()).await.unwrap_err();
    match &err {
        LlmError::GaveUp { attempts, last } => {
            assert_eq!(*attempts, 3);
            assert!(matches!(**last, LlmError::Http { status: 500, .. }));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("internal error"), "{err}");
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_fail_fast_with_the_providers_message() {
    let mock = MockProvider::start().await;
    for (status, msg) in [
        (400, "max_tokens is too large"),
        (401, "invalid x-api-key"),
        (403, "forbidden"),
        (404, "model not found"),
    ] {
        mock.push(Reply::status(status, msg));
        let err = model_on(&client(fast_retry(5)), &mock, "gemini/gemini-2.5-flash")
            .chat(request())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::Http { status: s, .. } if s == status),
            "{err:?}"
        );
        assert!(err.to_string().contains(msg), "{err}");
    }
    assert_eq!(mock.requests().len(), 4, "no retries");
}

#[tokio::test]
async fn broken_responses_are_retried_then_succeed() {
    let mock = MockProvider::start().await;
    mock.push(Reply::DropConnection);
    mock.push(Reply::TruncatedJson);
    mock.push(Reply::WrongContentType);
    mock.push(Reply::text("survived"));
    let answer = model_on(&client(fast_retry(5)), &mock, "openai/gpt-5-mini")
        .chat(request())
        .await
        .unwrap();
    assert_eq!((answer.text.as_str(), answer.attempts), ("survived", 4));
}

#[tokio::test]
async fn broken_responses_give_clear_errors() {
    let mock = MockProvider::start().await;
    let model = model_on(&client(RetryPolicy::none()), &mock, "openai/gpt-5-mini");
    mock.push(Reply::WrongContentType);
    let err = model.chat(request()).await.unwrap_err().to_string();
    assert!(
        err.contains("expected JSON") && err.contains("text/html"),
        "{err}"
    );
    mock.push(Reply::TruncatedJson);
    let err = model.chat(request()).await.unwrap_err().to_string();
    assert!(err.contains("invalid JSON"), "{err}");
    mock.push(Reply::DropConnection);
    let err = model.chat(request()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn slow_answers_time_out() {
    let mock = MockProvider::start().await;
    mock.push(Reply::delayed(
        Duration::from_secs(5),
        Reply::text("too late"),
    ));
    let client = LlmClient::builder()
        .timeout(Duration::from_millis(300))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = model_on(&client, &mock, "anthropic/claude-sonnet-4-5")
        .chat(request())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_under_100_parallel_calls() {
    let mock = MockProvider::start().await;
    mock.respond_with(|_| Reply::delayed(Duration::from_millis(40), Reply::text("ok")));
    let client = LlmClient::builder()
        .concurrency(8)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    // Two models of one client share the limit.
    let a = Arc::new(model_on(&client, &mock, "openai/gpt-5-mini"));
    let b = Arc::new(model_on(&client, &mock, "gemini/gemini-2.5-flash"));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { m.chat(request()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().text, "ok");
    }
    assert_eq!(mock.requests().len(), 100);
    assert_eq!(
        mock.max_in_flight(),
        8,
        "never more than 8, and the limit was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_its_request_and_frees_its_slot() {
    let mock = MockProvider::start().await;
    mock.push(Reply::delayed(
        Duration::from_secs(30),
        Reply::text("never"),
    ));
    let client = LlmClient::builder()
        .concurrency(1)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let model = model_on(&client, &mock, "openai/gpt-5-mini");
    let abandoned = tokio::time::timeout(Duration::from_millis(200), model.chat(request())).await;
    assert!(abandoned.is_err(), "the caller gave up");
    // The single slot is free again: the next call goes straight through.
    let started = Instant::now();
    assert_eq!(model.chat(request()).await.unwrap().attempts, 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server saw the first request abandoned.
    for _ in 0..50 {
        if mock.cancelled() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.cancelled(), 1);
}

#[tokio::test]
async fn usage_and_cost_add_up_by_model_role_and_depth() {
    let mock = MockProvider::start().await;
    mock.respond_with(|_| Reply::TextWithUsage {
        text: "x".into(),
        input: 1_000_000,
        output: 100_000,
        cached: 500_000,
    });
    let client = client(RetryPolicy::none());
    let mini = model_on(&client, &mock, "openai/gpt-5-mini");
    let sonnet = model_on(&client, &mock, "anthropic/claude-sonnet-4-5");
    let local = model_on(&client, &mock, "compat/llama");
    // gpt-5-mini: 0.5M uncached × 0.25 + 0.5M cached × 0.025 + 0.1M × 2.0 = 0.125 + 0.0125 + 0.2
    let a = mini.chat(request()).await.unwrap();
    assert!(
        (a.cost_usd.unwrap() - 0.3375).abs() < 1e-9,
        "{:?}",
        a.cost_usd
    );
    // sonnet as a sub-call at depth 1: 0.5 × 3 + 0.5 × 0.3 + 0.1 × 15 = 3.15
    let b = sonnet
        .chat(request().tagged(CallTag::sub_call(1)))
        .await
        .unwrap();
    assert!((b.cost_usd.unwrap() - 3.15).abs() < 1e-9);
    sonnet
        .chat(request().tagged(CallTag::sub_call(2)))
        .await
        .unwrap();
    // No price for the local model, unless given per call.
    assert_eq!(local.chat(request()).await.unwrap().cost_usd, None);
    let mut priced = request();
    priced.price = Some(Price::new(1.0, 1.0, 1.0));
    assert!((local.chat(priced).await.unwrap().cost_usd.unwrap() - 1.1).abs() < 1e-9);

    let usage = client.usage();
    let total = usage.total();
    assert_eq!(total.calls, 5);
    assert_eq!(total.usage.input_tokens, 5_000_000);
    assert_eq!(total.unpriced_calls, 1);
    assert!((total.cost_usd - (0.3375 + 3.15 * 2.0 + 1.1)).abs() < 1e-9);
    let by_model = usage.by_model();
    assert_eq!(by_model["anthropic/claude-sonnet-4-5"].calls, 2);
    let by_tag = usage.by_tag();
    assert_eq!(by_tag[&CallTag::ROOT].calls, 3);
    assert_eq!(by_tag[&CallTag::sub_call(1)].calls, 1);
    assert_eq!(by_tag[&CallTag::sub_call(2)].calls, 1);
}

#[tokio::test]
async fn keys_never_appear_in_errors_or_debug_output() {
    let mock = MockProvider::start().await;
    mock.push(Reply::status(
        401,
        format!("Incorrect API key provided: {KEY}"),
    ));
    let model = model_on(&client(RetryPolicy::none()), &mock, "openai/gpt-5-mini");
    let err = model.chat(request()).await.unwrap_err();
    for text in [err.to_string(), format!("{err:?}"), format!("{model:?}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
    assert!(err.to_string().contains("Incorrect API key provided"));
}

#[tokio::test]
async fn missing_keys_and_urls_say_what_to_set() {
    // SAFETY: nextest runs each test in its own process, and this test reads no other variable
    // concurrently.
    unsafe {
        std::env::remove_var("ANTHROPIC_API_KEY");
        std::env::remove_var("GOOGLE_API_KEY");
        std::env::remove_var("GEMINI_API_KEY");
        std::env::remove_var("RLM_BASE_URL");
    }
    let client = client(RetryPolicy::none());
    let err = client
        .model("anthropic/claude-sonnet-4-5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
    let err = client
        .model("gemini/gemini-2.5-flash")
        .unwrap_err()
        .to_string();
    assert!(err.contains("GOOGLE_API_KEY or GEMINI_API_KEY"), "{err}");
    let err = client.model("compat/llama").unwrap_err().to_string();
    assert!(
        err.contains("--base-url") && err.contains("RLM_BASE_URL"),
        "{err}"
    );
    let err = client.model("nope/x").unwrap_err().to_string();
    assert!(err.contains("unknown provider"), "{err}");
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_ends_the_retries() {
    let mock = MockProvider::start().await;
    mock.push(Reply::rate_limited(3600));
    mock.push(Reply::text("too late to matter"));
    let model = model_on(&client(fast_retry(5)), &mock, "openai/gpt-5-mini");
    let started = Instant::now();
    let err = model.chat(request()).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::GaveUp { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait an hour"
    );
    assert_eq!(mock.requests().len(), 1);
}

/// A provider's `Retry-After` of `inf` or `1e20` (no `Duration` holds them) ends the retries
/// like any delay too long to honour; the client does not panic.
#[tokio::test]
async fn an_endless_retry_after_ends_the_retries_without_a_panic() {
    for value in ["inf", "1e20", "NaN"] {
        let mock = MockProvider::start().await;
        mock.push(Reply::Status {
            status: 429,
            message: "slow down".into(),
            retry_after: Some(value.into()),
        });
        mock.push(Reply::text("after the wait"));
        let model = model_on(&client(fast_retry(5)), &mock, "openai/gpt-5-mini");
        let result = model.chat(request()).await;
        match value {
            // NaN is no delay at all: an ordinary retry, which then answers.
            "NaN" => assert_eq!(result.unwrap().text, "after the wait"),
            _ => assert!(
                matches!(&result, Err(LlmError::GaveUp { attempts: 1, .. })),
                "{value}: {result:?}"
            ),
        }
    }
}
