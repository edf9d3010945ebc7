//! Multi-turn use: one REPL and one conversation across several questions.

use std::sync::Arc;
use std::time::Instant;

use crate::error::RlmError;
use crate::events::Event;
use crate::input::ContextInput;
use crate::node::NodeRun;
use crate::outcome::{RunResult, UsageReport};
use crate::tree::Tree;

/// A conversation with an RLM over a context. The REPL persists across questions (variables
/// stay defined), later contexts are added as `context_1`, `context_2`, ..., and earlier answers
/// stay available, both in the conversation and in the REPL list `previous_answers`.
///
/// The budget, usage and seed belong to the whole session.
pub struct Session {
    tree: Arc<Tree>,
    node: NodeRun,
    asked: u32,
}

impl Session {
    pub(crate) fn new(tree: Arc<Tree>, node: NodeRun) -> Self {
        Self {
            tree,
            node,
            asked: 0,
        }
    }

    /// Ask a question. The result's usage is the session's total so far; its events are those
    /// of this question.
    pub async fn ask(&mut self, query: &str) -> RunResult {
        let started = Instant::now();
        self.asked += 1;
        self.tree.events.emit(Event::RunStarted {
            node: self.node.node().clone(),
            query: query.to_string(),
            settings: None,
            context: None,
        });
        let outcome = self.node.answer(query).await;
        let answer_literal =
            serde_json::to_string(outcome.answer.as_deref().unwrap_or("")).unwrap_or_default();
        let remember = format!(
            "previous_answers = globals().get('previous_answers', [])\nprevious_answers.append({answer_literal})"
        );
        if let Err(e) = self.node.run_code(&remember).await {
            tracing::warn!(error = %e, "could not store the answer in the REPL");
        }
        RunResult {
            answer: outcome.answer,
            stop: outcome.stop,
            iterations: outcome.iterations,
            usage: UsageReport::from_tracker(&self.tree.usage),
            elapsed: started.elapsed(),
            events: self.tree.events.take(),
        }
    }

    /// Load another context; returns its name in the REPL (`context_1`, ...).
    pub async fn add_context(
        &mut self,
        context: impl Into<ContextInput>,
    ) -> Result<String, RlmError> {
        let input = context.into();
        let ctx = crate::blocking::off_runtime(move || input.into_context()).await;
        self.node.add_context(ctx).await
    }

    /// Questions asked so far.
    pub fn questions(&self) -> u32 {
        self.asked
    }

    /// Tokens and cost of the session so far.
    pub fn usage(&self) -> UsageReport {
        UsageReport::from_tracker(&self.tree.usage)
    }
}
