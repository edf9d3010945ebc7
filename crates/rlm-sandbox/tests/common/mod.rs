//! Helpers shared by the sandbox tests: the engine, sandboxes with chosen limits, fake model hosts.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rlm_sandbox::{Context, Limits, ModelHost, Sandbox, SandboxEngine, StepResult};

/// The engine, loaded once per test process.
pub fn engine() -> Arc<SandboxEngine> {
    static ENGINE: Mutex<Option<Arc<SandboxEngine>>> = Mutex::new(None);
    let mut slot = ENGINE.lock().unwrap();
    slot.get_or_insert_with(|| SandboxEngine::load().expect("load the guest (run `just guest`)"))
        .clone()
}

pub async fn sandbox_with(context: Arc<Context>, limits: Limits) -> Sandbox {
    Sandbox::builder(engine())
        .limits(limits)
        .context(context)
        .build()
        .await
        .expect("sandbox")
}

pub async fn sandbox(text: &str) -> Sandbox {
    sandbox_with(Context::text(text), Limits::default()).await
}

/// Run a step and require that it raised nothing.
pub async fn ok(sb: &mut Sandbox, code: &str) -> StepResult {
    let r = sb.exec(code).await.expect("exec");
    assert!(
        r.error.is_none(),
        "step failed: {code}\n--- error ---\n{}",
        r.error.unwrap()
    );
    r
}

/// Run a step and return its stdout, trimmed; the step must not raise.
pub async fn out(sb: &mut Sandbox, code: &str) -> String {
    ok(sb, code).await.stdout.trim_end().to_string()
}

/// A model host that answers "echo: <prompt>" after `delay`, counting calls and the most
/// calls in flight at once.
#[derive(Default)]
pub struct EchoHost {
    pub delay: Duration,
    pub calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Answer this many bytes instead of the echo, when set.
    pub answer_bytes: Option<usize>,
}

#[async_trait::async_trait]
impl ModelHost for EchoHost {
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if prompt.contains("HUGE-ERROR") {
            return Err("e".repeat(10 << 20));
        }
        if prompt.contains("FAIL") {
            return Err("the model refused".into());
        }
        if let Some(n) = self.answer_bytes {
            return Ok("y".repeat(n));
        }
        Ok(match model {
            Some(m) => format!("echo[{m}]: {prompt}"),
            None => format!("echo: {prompt}"),
        })
    }

    async fn rlm_query(&self, prompt: String, _model: Option<String>) -> Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("sub-rlm: {prompt}"))
    }
}
