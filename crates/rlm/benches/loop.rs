//! RLM loop benchmarks: prints figures, asserts nothing. Run with `just bench`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rlm::Rlm;
use rlm_llm::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, LlmClient, LlmError, ModelConfig,
    RetryPolicy, Usage,
};
use rlm_sandbox::SandboxEngine;
use rlm_testkit::{MockProvider, Reply};

/// A root model that answers instantly: `iterations` replies with a small code block, then FINAL.
struct Instant0 {
    iterations: u32,
    calls: AtomicU32,
}

#[async_trait]
impl ChatModel for Instant0 {
    fn id(&self) -> String {
        "bench/instant".into()
    }
    async fn chat(&self, _r: ChatRequest) -> Result<ChatResponse, LlmError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let text = if n < self.iterations {
            format!("```repl\nx = {n}\nprint(x * 2)\n```")
        } else {
            "FINAL(done)".to_string()
        };
        Ok(ChatResponse {
            text,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 0,
            },
            model: "instant".into(),
            finish_reason: FinishReason::Stop,
            latency: Duration::ZERO,
            attempts: 1,
            cost_usd: None,
        })
    }
}

fn row(name: &str, value: String, goal: &str) {
    println!("| {name:<52} | {value:>14} | {goal:<22} |");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let engine = SandboxEngine::load().expect("guest (run `just guest`)");
    println!("rlm loop benchmarks\n");
    println!("| {:<52} | {:>14} | {:<22} |", "what", "figure", "goal");
    println!("|{}|{}|{}|", "-".repeat(54), "-".repeat(16), "-".repeat(24));

    // Engine time per iteration: instant in-process model, 200 iterations.
    let iterations = 200;
    let model = Arc::new(Instant0 {
        iterations,
        calls: AtomicU32::new(0),
    });
    let rlm = Rlm::builder(model)
        .engine(engine.clone())
        .max_iterations(iterations + 5)
        .build()
        .unwrap();
    let t = Instant::now();
    let r = rlm.run("a small document", "q").await.unwrap();
    let per = t.elapsed().as_secs_f64() * 1e3 / f64::from(r.iterations);
    row(
        "engine time per iteration (instant in-process model)",
        format!("{per:.3} ms"),
        "<= 2 ms",
    );

    // The same over real HTTP to a local mock provider.
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let turns = r
            .messages()
            .iter()
            .filter(|(role, _)| role == "assistant")
            .count();
        if turns < 100 {
            Reply::text(format!("```repl\nx = {turns}\n```"))
        } else {
            Reply::text("FINAL(done)")
        }
    });
    let client = LlmClient::builder()
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let config = ModelConfig {
        base_url: Some(mock.openai_base_url()),
        ..ModelConfig::default()
    };
    let http_model = Arc::new(client.model_with("compat/bench", config).unwrap());
    let rlm = Rlm::builder(http_model)
        .engine(engine.clone())
        .max_iterations(110)
        .build()
        .unwrap();
    let t = Instant::now();
    let r = rlm.run("a small document", "q").await.unwrap();
    let per = t.elapsed().as_secs_f64() * 1e3 / f64::from(r.iterations);
    row(
        "time per iteration, instant mock over HTTP",
        format!("{per:.3} ms"),
        "",
    );

    // 1000 sub-calls in one llm_batch, 200 ms each, concurrency 64, over HTTP.
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        let root = r.messages().first().is_some_and(|(role, _)| role == "system");
        if !root {
            return Reply::delayed(Duration::from_millis(200), Reply::text("ok"));
        }
        let turns = r.messages().iter().filter(|(role, _)| role == "assistant").count();
        if turns == 0 {
            Reply::text("```repl\nres = llm_batch([f'item {i}' for i in range(1000)])\nprint(sum(a == 'ok' for a in res))\n```")
        } else {
            Reply::text("FINAL(done)")
        }
    });
    let client = LlmClient::builder()
        .concurrency(64)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let config = ModelConfig {
        base_url: Some(mock.openai_base_url()),
        ..ModelConfig::default()
    };
    let model = Arc::new(client.model_with("compat/bench", config).unwrap());
    let rlm = Rlm::builder(model)
        .engine(engine)
        .sub_concurrency(64)
        .build()
        .unwrap();
    let r = rlm.run("doc", "q").await.unwrap();
    let step_ms = r.events.iter().find_map(|e| match e {
        rlm::Event::CodeExecuted { ms, output, .. } if output.contains("1000") => Some(*ms),
        _ => None,
    });
    let ideal = 1000.0 / 64.0 * 0.2;
    match step_ms {
        Some(ms) => row(
            "1000 llm_batch sub-calls, 200 ms each, concurrency 64",
            format!("{:.2} s ({:.2}x)", ms / 1e3, ms / 1e3 / ideal),
            &format!("<= 1.1x ideal {ideal:.2} s"),
        ),
        None => println!("(the batch step did not complete: {:?})", r.stop),
    }
    row(
        "max requests in flight at the mock",
        format!("{}", mock.max_in_flight()),
        "64",
    );
}
