//! Progress notifications: a run's events, tallied and sent to the client while it works.

use std::sync::{Arc, Mutex, PoisonError};

use rlm::{Event, SubCallKind};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio::sync::mpsc;

/// What a run's progress notifications report.
#[derive(Default)]
pub(crate) struct Tally {
    iterations: u32,
    sub_calls: u64,
    tokens: u64,
    cost_usd: f64,
}

impl Tally {
    /// Count `event`; whether it is worth a notification.
    fn add(&mut self, event: &Event) -> bool {
        match event {
            Event::Iteration { node, .. } => {
                if node.depth == 0 {
                    self.iterations += 1;
                }
                true
            }
            Event::ModelReply {
                usage, cost_usd, ..
            } => {
                self.tokens += usage.total();
                self.cost_usd += cost_usd.unwrap_or(0.0);
                false
            }
            Event::SubCallFinished {
                kind,
                usage,
                cost_usd,
                deduped,
                ..
            } => {
                self.sub_calls += 1;
                // A child RLM's own replies are counted as they come.
                if *kind == SubCallKind::LlmQuery && !deduped {
                    self.tokens += usage.total();
                    self.cost_usd += cost_usd.unwrap_or(0.0);
                }
                true
            }
            _ => false,
        }
    }

    fn message(&self) -> String {
        format!(
            "iteration {} · {} sub-calls · {} tokens · ${:.4}",
            self.iterations, self.sub_calls, self.tokens, self.cost_usd
        )
    }
}

/// Forwards a run's events to the client as progress notifications.
pub(crate) struct Progress {
    pub(crate) sink: Arc<dyn rlm::EventSink>,
    sender: Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(token: Option<ProgressToken>, peer: Peer<RoleServer>) -> Self {
        let Some(token) = token else {
            return Self {
                sink: Arc::new(|_: &Event| {}),
                sender: Arc::default(),
                task: None,
            };
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let sender = Arc::new(Mutex::new(Some(tx)));
        let s = sender.clone();
        let sink: Arc<dyn rlm::EventSink> = Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::Iteration { .. } | Event::ModelReply { .. } | Event::SubCallFinished { .. }
            ) && let Some(tx) = s.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            {
                let _ = tx.send(e.clone());
            }
        });
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut sent = 0u32;
            while let Some(e) = rx.recv().await {
                if tally.add(&e) {
                    sent += 1;
                    let param = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                        .with_message(tally.message());
                    if peer.notify_progress(param).await.is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            sink,
            sender,
            task: Some(task),
        }
    }

    /// Stop taking events and wait until those taken are sent (before the tool's result).
    pub(crate) async fn finish(mut self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_iterations_sub_calls_tokens_and_cost() {
        let node = rlm::Node {
            rlm: "r".into(),
            depth: 0,
        };
        let mut t = Tally::default();
        assert!(t.add(&Event::Iteration {
            node: node.clone(),
            n: 1
        }));
        let usage = rlm_llm::Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        };
        assert!(!t.add(&Event::ModelReply {
            node: node.clone(),
            iteration: 1,
            text: String::new(),
            model: "m".into(),
            request_hash: String::new(),
            usage,
            cost_usd: Some(0.5),
            ms: 1.0,
        }));
        assert_eq!(
            t.message(),
            "iteration 1 · 0 sub-calls · 15 tokens · $0.5000"
        );
    }
}
