use std::sync::Arc;
use std::time::Duration;

use rlm::{ContextInput, Event, Node, RunSpec, StopReason};

use super::*;
use crate::AppState;

fn code(n: u32, output: String) -> Event {
    Event::CodeExecuted {
        node: Node {
            rlm: "root".into(),
            depth: 0,
        },
        iteration: n,
        code: "print(1)".into(),
        output,
        error: Some("E".repeat(50_000)),
        final_answer: None,
        fuel: 1,
        ms: 1.0,
        restored: false,
        reset: false,
    }
}

fn small() -> Retention {
    Retention {
        finished_runs: 2,
        finished_bytes: usize::MAX,
        events_per_run: 3,
        bytes_per_run: usize::MAX,
        field_bytes: 100,
        answer_bytes: 200,
    }
}

fn entry(id: &str, r: Retention) -> Arc<RunEntry> {
    RunEntry::new(
        id.into(),
        "q".repeat(1000),
        "m".into(),
        "api",
        false,
        None,
        r,
    )
}

fn done(answer: &str) -> Summary {
    Summary {
        status: RunStatus::Answered,
        answer: Some(answer.into()),
        message: "M".repeat(10_000),
        stop: Some(StopReason::Error {
            message: "S".repeat(10_000),
        }),
        iterations: 1,
        usage: None,
        elapsed_s: 0.0,
    }
}

#[tokio::test]
async fn a_run_keeps_a_bounded_number_of_events_with_cut_fields() {
    let e = entry("r1", small());
    let mut live = e.follow();
    for n in 0..10 {
        e.push(&code(n, "x".repeat(1 << 20)));
    }
    e.finish(done(&"A".repeat(10_000)));
    assert_eq!((e.events().len(), e.dropped()), (3, 7));
    for ev in e.events() {
        let Event::CodeExecuted { output, error, .. } = &*ev else {
            panic!("{ev:?}")
        };
        assert!(
            output.len() < 200 && output.contains("trace file"),
            "{output}"
        );
        assert!(error.as_ref().unwrap().len() < 200);
    }
    assert!(e.query.len() < 200);
    let sum = e.summary().unwrap();
    assert!(sum.answer.as_ref().unwrap().len() < 300 && sum.message.len() < 200);
    assert!(matches!(&sum.stop, Some(StopReason::Error { message }) if message.len() < 200));
    let (bytes, finished) = e.kept();
    assert!(finished && bytes < 4_000, "{bytes} bytes kept");
    // A live follower saw every event (cut), then the end.
    let mut seen = 0;
    while let Some(m) = live.next().await {
        if let Msg::Event(_) = m {
            seen += 1;
        }
    }
    assert_eq!(seen, 10);
    // Following the finished run replays what was kept.
    let mut later = e.follow();
    assert!(
        later.rx.is_none(),
        "the live channel is gone once the run ended"
    );
    let mut replayed = 0;
    while later.next().await.is_some() {
        replayed += 1;
    }
    assert_eq!(replayed, 4);
}

#[test]
fn a_run_keeps_a_bounded_number_of_bytes() {
    let r = Retention {
        events_per_run: usize::MAX,
        bytes_per_run: 1_000,
        ..small()
    };
    let e = entry("r1", r);
    for n in 0..100 {
        e.push(&code(n, "y".repeat(50)));
    }
    let (bytes, _) = e.kept();
    assert!(bytes <= 1_000 + e.query.len(), "{bytes}");
    assert!(!e.events().is_empty() && e.dropped() > 90);
}

#[test]
fn only_the_newest_finished_runs_stay() {
    let reg = Registry::new(4, small());
    let running: Vec<_> = (0..3)
        .map(|i| entry(&format!("live{i}"), small()))
        .collect();
    for r in &running {
        reg.keep(r.clone());
    }
    for i in 0..6 {
        let e = entry(&format!("r{i}"), small());
        e.finish(done("a"));
        reg.keep(e);
    }
    let ids: Vec<String> = reg.list().iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["r5", "r4", "live2", "live1", "live0"]);
    // A byte budget lets runs go too.
    let reg = Registry::new(
        4,
        Retention {
            finished_runs: 100,
            finished_bytes: 5_000,
            ..small()
        },
    );
    for i in 0..50 {
        let e = entry(&format!("r{i}"), small());
        e.finish(done("a"));
        reg.keep(e);
    }
    let kept = reg.list();
    let bytes: usize = kept.iter().map(|e| e.kept().0).sum();
    assert!(
        bytes <= 5_000 && kept.len() < 50 && !kept.is_empty(),
        "{bytes}"
    );
    assert_eq!(kept[0].id, "r49");
}

/// A stand-in for an in-process local model: it answers at once.
struct TinyLocal;

#[async_trait::async_trait]
impl rlm_llm::ChatModel for TinyLocal {
    fn id(&self) -> String {
        "local/tiny".into()
    }

    async fn chat(
        &self,
        _request: rlm_llm::ChatRequest,
    ) -> Result<rlm_llm::ChatResponse, rlm_llm::LlmError> {
        Ok(rlm_llm::ChatResponse {
            text: "FINAL(ok)".into(),
            usage: rlm_llm::Usage::default(),
            model: self.id(),
            finish_reason: rlm_llm::FinishReason::Stop,
            latency: Duration::ZERO,
            attempts: 1,
            cost_usd: None,
        })
    }
}

/// A server state with one run slot, whose models all answer at once ([`TinyLocal`]).
fn tiny_state() -> Arc<AppState> {
    let engine = rlm_sandbox::SandboxEngine::load().expect("guest (just guest)");
    let config = crate::ServeConfig {
        defaults: RunSpec {
            model: Some("local/tiny".into()),
            max_iterations: Some(3),
            ..RunSpec::default()
        },
        no_model_reason: None,
        models: Arc::new(|_id| {
            Box::pin(async { Ok(Arc::new(TinyLocal) as Arc<dyn rlm_llm::ChatModel>) })
        }),
        engine,
        api_key: None,
        max_body_bytes: 1 << 20,
        body_budget_bytes: 4 << 20,
        request_timeout: Duration::from_secs(60),
        max_runs: 1,
        trace_dir: None,
        sample: None,
        allow_hosts: Vec::new(),
        header_read_timeout: Duration::from_secs(5),
        max_connections: 4,
        max_event_streams: 4,
        retention: Retention::default(),
        allowed_models: Vec::new(),
    };
    Arc::new(AppState::new(config, [127, 0, 0, 1].into()))
}

/// The server sets runs up as the CLI and eval do ([`RunSpec::builder`]): a local root model
/// gets the small-model prompt and output size.
#[tokio::test(flavor = "multi_thread")]
async fn a_local_model_gets_the_small_model_setup_on_the_server_too() {
    let state = tiny_state();
    let entry = state
        .runs
        .launch(
            &state,
            Launch {
                context: ContextInput::Text("doc".into()),
                query: "q".into(),
                spec: RunSpec::default(),
                source: "api",
                cancel_on_disconnect: false,
            },
        )
        .await
        .unwrap();
    let summary = entry.wait().await;
    assert_eq!(summary.status, RunStatus::Answered, "{summary:?}");
    let settings = entry
        .events()
        .iter()
        .find_map(|e| match &**e {
            Event::RunStarted {
                settings: Some(s), ..
            } => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(settings.profile, rlm::PromptProfile::Small);
    assert!(settings.max_output_chars <= rlm::SMALL_MODEL_OUTPUT_CHARS);
    assert_eq!(settings.max_iterations, 3);
}

#[test]
fn trace_names_are_only_made_from_run_ids() {
    assert!(Registry::trace_name("r12").unwrap().ends_with("-r12.jsonl"));
    for bad in ["r", "12", "r1/../x", "r-1", "r1.jsonl", "../r1"] {
        assert_eq!(Registry::trace_name(bad), None, "{bad}");
    }
}

/// A run cancelled before its first event is still copying and hashing its context on a
/// blocking thread (inside `rlm`), which cannot be stopped: it shows as cancelled at once, and
/// keeps its run slot until that work is over; then its task stops and the slot frees.
#[tokio::test]
async fn a_cancelled_run_holds_its_slot_until_its_blocking_work_ends() {
    let state = tiny_state();
    let launch = || Launch {
        context: ContextInput::Text("word ".repeat(1 << 20).into()),
        query: "q".into(),
        spec: RunSpec::default(),
        source: "api",
        cancel_on_disconnect: false,
    };
    let entry = state.runs.launch(&state, launch()).await.unwrap();
    // On this one-thread runtime the run's task has not been polled yet: its context is not
    // copied, nor hashed.
    assert!(entry.cancel());
    assert_eq!(entry.summary().unwrap().status, RunStatus::Cancelled);
    assert_eq!(
        state.runs.check_free().unwrap_err().status,
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "the slot is held while the context is copied and hashed"
    );
    tokio::time::timeout(Duration::from_secs(60), entry.slot_freed())
        .await
        .expect("the slot frees once the context is copied and hashed");
    assert!(state.runs.check_free().is_ok());
    assert!(entry.events().is_empty(), "nothing more was kept for it");
    // A run cancelled after its first event frees its slot at once.
    let entry = state.runs.launch(&state, launch()).await.unwrap();
    while entry.events().is_empty() && entry.summary().is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    entry.cancel();
    assert!(state.runs.check_free().is_ok(), "freed at once");
}
