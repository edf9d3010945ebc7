//! The recursion tree's limits end to end (real HTTP to the scripted mock, real sandboxes): live
//! REPLs per run and shared, batches within them, sub-calls per step and per run, and the
//! defaults every front end gets from `RunSpec`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rlm::{
    Budget, BudgetLimit, DEFAULT_MAX_SUB_CALLS, DEFAULT_MAX_SUB_CALLS_PER_STEP, Event, ReplLimiter,
    Rlm, RlmError, RunSpec, StopReason,
};
use rlm_llm::{LlmClient, ModelConfig, RetryPolicy};
use rlm_sandbox::SandboxEngine;
use rlm_testkit::{MockProvider, RecordedRequest, Reply};

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
        .concurrency(64)
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

/// A root-model turn (with a system prompt), not a sub-call.
fn is_root(r: &RecordedRequest) -> bool {
    r.messages()
        .first()
        .is_some_and(|(role, _)| role == "system")
}

/// A child RLM's root-model turn: its first user message hands it its task.
fn is_child(r: &RecordedRequest) -> bool {
    r.messages()
        .iter()
        .find(|(role, _)| role == "user")
        .is_some_and(|(_, t)| t.contains("The task you are given is in `context`"))
}

/// Whether this RLM may start child RLMs of its own (its system prompt says so).
fn may_recurse(r: &RecordedRequest) -> bool {
    r.messages()
        .first()
        .is_some_and(|(_, t)| t.contains("hand a sub-task to another agent"))
}

fn turn(r: &RecordedRequest) -> usize {
    r.messages()
        .iter()
        .filter(|(role, _)| role == "assistant")
        .count()
}

/// Counts the RLMs at `min_depth` or deeper that are alive (started, not finished), and the
/// most at once. Each holds its REPL from before it starts to after it finishes, so this counts
/// no more than the REPLs alive.
#[derive(Default)]
struct LiveRlms {
    min_depth: u32,
    now: AtomicI64,
    peak: AtomicI64,
}

impl LiveRlms {
    fn at_depth(min_depth: u32) -> Arc<Self> {
        Arc::new(Self {
            min_depth,
            ..Self::default()
        })
    }

    fn sink(self: &Arc<Self>) -> Arc<dyn rlm::EventSink> {
        let me = self.clone();
        Arc::new(move |e: &Event| match e {
            Event::RunStarted { node, .. } if node.depth >= me.min_depth => {
                let n = me.now.fetch_add(1, Ordering::SeqCst) + 1;
                me.peak.fetch_max(n, Ordering::SeqCst);
            }
            Event::FinalAnswer { node, .. } if node.depth >= me.min_depth => {
                me.now.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        })
    }

    fn peak(&self) -> i64 {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A depth-2 tree whose batches are wider than the cap: the root starts 6 children at once,
/// each of those 5 grandchildren, each grandchild batches 3 sub-calls. With 4 live REPLs per run
/// (the least a chain of 3 needs is 3) every REPL waits its turn, none waits for ever, and every
/// answer comes back in prompt order.
#[tokio::test(flavor = "multi_thread")]
async fn a_depth_two_tree_with_batches_wider_than_the_caps_finishes_within_them() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            return Reply::text(format!("sub:{}", r.last_user()));
        }
        if is_child(r) && may_recurse(r) {
            // Slow too: every child holds its REPL before any asks for grandchildren, the
            // moment a plain semaphore would deadlock.
            return Reply::delayed(
                Duration::from_millis(200),
                code("rs = rlm_batch([str(context) + f'/g{j}' for j in range(5)])\nFINAL(','.join(rs))"),
            );
        }
        if is_child(r) {
            // A grandchild: a slow model, so that REPLs overlap.
            return Reply::delayed(
                Duration::from_millis(30),
                code(
                    "rs = llm_batch([str(context) + f'/s{k}' for k in range(3)])\n\
                     FINAL(str(sum(r.startswith('sub:') for r in rs)))",
                ),
            );
        }
        match turn(r) {
            0 => code("rs = rlm_batch([f't{i}' for i in range(6)])\nprint(rs)"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let live = LiveRlms::at_depth(1);
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(3)
        .max_repls(4)
        .sub_concurrency(2)
        .on_event(live.sink())
        .budget(Budget {
            max_time: Some(Duration::from_secs(60)),
            ..Budget::default()
        })
        .build()
        .unwrap();
    let result = rlm.run("unused", "Fan out.").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("done"), "{:?}", result.stop);
    let shown = mock
        .requests()
        .iter()
        .filter(|r| is_root(r) && !is_child(r) && turn(r) == 1)
        .map(RecordedRequest::last_user)
        .next()
        .unwrap();
    let each = "'3,3,3,3,3'";
    assert!(
        shown.contains(&format!("[{}]", [each; 6].join(", "))),
        "every grandchild answered, in order: {shown}"
    );
    let peak = live.peak();
    assert!(
        peak < 4,
        "{peak} children alive at once besides the root, past the cap of 4"
    );
    assert!(
        peak >= 2,
        "the cap still lets children run side by side ({peak})"
    );
    let children = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::RunStarted { node, .. } if node.depth > 0))
        .count();
    assert_eq!(children, 6 + 6 * 5);
}

/// Several runs given one shared cap stay within it together.
#[tokio::test(flavor = "multi_thread")]
async fn runs_sharing_a_cap_stay_within_it_together() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if is_child(r) {
            return Reply::delayed(Duration::from_millis(30), code("FINAL(str(context))"));
        }
        match turn(r) {
            0 => code("print(rlm_batch([f'x{i}' for i in range(6)]))"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let shared = ReplLimiter::new(5);
    let live = LiveRlms::at_depth(0);
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(2)
        .repl_limiter(shared.clone())
        .on_event(live.sink())
        .build()
        .unwrap();
    let (a, b) = tokio::join!(rlm.run("one", "q"), rlm.run("two", "q"));
    for r in [a.unwrap(), b.unwrap()] {
        assert_eq!(r.answer.as_deref(), Some("done"));
    }
    let peak = live.peak();
    assert!(
        peak <= 5,
        "{peak} RLMs of the two runs at once, past the shared 5"
    );
    assert!(peak >= 3, "both runs' REPLs went on side by side ({peak})");
    assert_eq!(shared.in_use(), 0, "every slot came back");
}

/// A child that asks for its own task again gets a grandchild, not itself to wait on.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_asking_for_its_own_task_gets_a_grandchild_not_itself() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if is_child(r) && may_recurse(r) {
            return code("r = rlm_query(str(context))\nFINAL('outer:' + r)");
        }
        if is_child(r) {
            return code("FINAL('inner')");
        }
        match turn(r) {
            0 => code("print('child said', rlm_query('the same task'))"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .max_depth(3)
        .budget(Budget {
            max_time: Some(Duration::from_secs(60)),
            ..Budget::default()
        })
        .build()
        .unwrap();
    let result = rlm.run("unused", "q").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("done"), "{:?}", result.stop);
    let shown = mock
        .requests()
        .iter()
        .filter(|r| is_root(r) && !is_child(r) && turn(r) == 1)
        .map(RecordedRequest::last_user)
        .next()
        .unwrap();
    assert!(shown.contains("child said outer:inner"), "{shown}");
}

/// A depth whose chain of REPLs cannot fit the cap is refused when the run is built.
#[tokio::test(flavor = "multi_thread")]
async fn a_depth_the_cap_cannot_hold_is_refused_at_build() {
    let mock = MockProvider::start().await;
    let err = Rlm::builder(model(&mock))
        .max_depth(4)
        .max_repls(3)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RlmError::Config(m) if m.contains("max_depth 4") && m.contains("cap of 3")),
        "{err}"
    );
    let err = Rlm::builder(model(&mock))
        .max_depth(3)
        .repl_limiter(ReplLimiter::new(2))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RlmError::Config(m) if m.contains("shared")),
        "{err}"
    );
    assert!(
        Rlm::builder(model(&mock))
            .max_depth(3)
            .max_repls(3)
            .build()
            .is_ok()
    );
}

/// A batch that would take a step past its cap is refused whole (nothing sent), with a sentence
/// the model reads; single calls past it are refused one by one; the next step starts from 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_past_its_sub_call_cap_is_refused_whole_and_the_run_goes_on() {
    let mock = MockProvider::start().await;
    mock.respond_with(|r| {
        if !is_root(r) {
            return Reply::text("yes");
        }
        match turn(r) {
            0 => code("rs = llm_batch([f'p{i}' for i in range(8)])\nprint(rs[0])"),
            1 => code("rs = [llm_query(f'q{i}') for i in range(7)]\nprint(rs[4], '|', rs[5])"),
            2 => code("rs = llm_batch([f'r{i}' for i in range(5)])\nprint(len(rs), rs[0])"),
            _ => Reply::text("FINAL(done)"),
        }
    });
    let rlm = Rlm::builder(model(&mock))
        .engine(engine())
        .budget(Budget {
            max_sub_calls_per_step: Some(5),
            ..Budget::default()
        })
        .build()
        .unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("done"));
    let requests = mock.requests();
    let feedback = |t: usize| {
        requests
            .iter()
            .find(|r| is_root(r) && turn(r) == t)
            .map(RecordedRequest::last_user)
            .unwrap()
    };
    let refused = feedback(1);
    assert!(
        refused.contains("batch of 8 prompts would take the step past 5 sub-calls")
            && refused.contains("none of them was sent"),
        "{refused}"
    );
    let one_by_one = feedback(2);
    assert!(
        one_by_one.contains("yes | Error: this step has made 5 sub-calls"),
        "{one_by_one}"
    );
    assert!(feedback(3).contains("5 yes"), "a new step starts from 0");
    let sent: Vec<String> = requests
        .iter()
        .filter(|r| !is_root(r))
        .map(RecordedRequest::last_user)
        .collect();
    assert_eq!(sent.len(), 10, "5 single calls and a batch of 5: {sent:?}");
    assert!(
        !sent.iter().any(|p| p.starts_with('p')),
        "none of the refused batch was sent"
    );
}

/// The front ends' defaults (`RunSpec`): a document that makes the model send 3,000 prompts in
/// one step gets none sent; work in steps within the cap goes on until the run's cap, where the
/// run stops with the partial answer and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_front_ends_defaults_cap_sub_calls_per_step_and_per_run() {
    let spec = RunSpec::default();
    let budget = spec.budget().unwrap();
    assert_eq!(
        (budget.max_sub_calls, budget.max_sub_calls_per_step),
        (
            Some(DEFAULT_MAX_SUB_CALLS),
            Some(DEFAULT_MAX_SUB_CALLS_PER_STEP)
        )
    );
    let per_step = DEFAULT_MAX_SUB_CALLS_PER_STEP;
    let mock = MockProvider::start().await;
    mock.respond_with(move |r| {
        if !is_root(r) {
            return Reply::text("label");
        }
        match turn(r) {
            0 => code("print(llm_batch([f'injected {i}' for i in range(3000)])[0])"),
            t => code(&format!(
                "rs = llm_batch([f'chunk {t}.{{i}}' for i in range({per_step})])\n\
                 answer['content'] = 'partial after step {t}'\nprint(rs[0])"
            )),
        }
    });
    let m = model(&mock);
    let rlm = RunSpec {
        max_iterations: Some(20),
        ..spec
    }
    .builder(m.clone(), m)
    .unwrap()
    .engine(engine())
    .build()
    .unwrap();
    let result = rlm.run("doc", "q").await.unwrap();
    let requests = mock.requests();
    let sent = requests.iter().filter(|r| !is_root(r)).count() as u64;
    assert_eq!(
        sent, DEFAULT_MAX_SUB_CALLS,
        "the run's cap, not one call more"
    );
    assert!(
        !requests
            .iter()
            .any(|r| !is_root(r) && r.last_user().starts_with("injected")),
        "the 3,000-prompt batch was refused whole"
    );
    let steps = DEFAULT_MAX_SUB_CALLS / per_step;
    assert!(
        matches!(
            &result.stop,
            StopReason::Budget { limit: Some(BudgetLimit::SubCalls), reason }
                if reason.contains("sub-call budget")
        ),
        "{:?}",
        result.stop
    );
    assert_eq!(
        result.answer,
        Some(format!("partial after step {steps}")),
        "the last step's partial answer; the run stopped before asking for another"
    );
}
