//! The sandbox's host for one RLM: sub-calls from model code go to the tree, within the run's
//! per-step cap and concurrency limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use rlm_llm::ChatModel;
use rlm_sandbox::ModelHost;

use crate::events::Node;
use crate::tree::Tree;

/// The sub-calls the current step of one REPL has asked for; reset before each step.
#[derive(Debug, Default)]
pub(crate) struct StepCalls(AtomicU64);

impl StepCalls {
    /// A new step begins.
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// Count `n` more sub-calls of this step, or refuse them all (counting none) when they
    /// would take it past `cap`.
    fn take(&self, n: u64, cap: Option<u64>) -> Result<(), String> {
        let Some(cap) = cap else {
            return Ok(());
        };
        let counted = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|&after| after <= cap)
            });
        let Err(before) = counted else {
            return Ok(());
        };
        Err(if n == 1 {
            format!(
                "this step has made {before} sub-calls, the most one step may make ({cap}), so \
                 this one was not sent; put more text in each call (llm_batch with fewer, \
                 larger chunks) or go on in the next step"
            )
        } else {
            format!(
                "this batch of {n} prompts would take the step past {cap} sub-calls, the most one \
                 step may make ({before} made so far), so none of them was sent; batch fewer \
                 prompts with more text in each, or split the work over several steps"
            )
        })
    }
}

/// Who answers a sub-call: a plain call to a model, or a child RLM whose root is a model.
enum Target {
    Llm(Arc<dyn ChatModel>),
    Rlm(Arc<dyn ChatModel>),
}

/// The [`ModelHost`] of one RLM's sandbox: sub-calls go to the tree. Every call counts
/// against the step's cap ([`Budget::max_sub_calls_per_step`](crate::Budget)), a batch all at
/// once: a batch that would pass it is refused whole. Batches run within the tree's limits:
/// no more prompts in flight than the sub-call concurrency (plain calls) or the live-REPL cap
/// (child RLMs), answers in prompt order.
pub(crate) struct NodeHost {
    pub(crate) tree: Arc<Tree>,
    pub(crate) node: Node,
    pub(crate) step: Arc<StepCalls>,
}

impl NodeHost {
    /// Who answers `llm_query` (`recursive` false) or `rlm_query` (true) with `model`.
    fn target(&self, recursive: bool, model: Option<&str>) -> Result<Target, String> {
        let c = &self.tree.config;
        if self.node.depth + 1 > c.max_depth {
            return Err(format!(
                "sub-calls are disabled in this run (max_depth = {}); use search() and Python",
                c.max_depth
            ));
        }
        if recursive && self.node.depth + 1 < c.max_depth {
            // A child RLM's root is the model named, else the run's root model.
            return Ok(Target::Rlm(match model {
                None => c.root_model.clone(),
                Some(name) => self.tree.model_named(Some(name))?,
            }));
        }
        // At the depth limit a sub-RLM is a plain sub-call, as in the paper.
        Ok(Target::Llm(self.tree.model_named(model)?))
    }

    async fn call(&self, target: &Target, prompt: String) -> Result<String, String> {
        match target {
            Target::Llm(m) => self.tree.sub_call(&self.node, m.clone(), prompt).await,
            Target::Rlm(m) => self.tree.child_rlm(&self.node, m.clone(), prompt).await,
        }
    }

    async fn one(
        &self,
        recursive: bool,
        prompt: String,
        model: Option<String>,
    ) -> Result<String, String> {
        let target = self.target(recursive, model.as_deref())?;
        self.step
            .take(1, self.tree.config.budget.max_sub_calls_per_step)?;
        self.call(&target, prompt).await
    }

    async fn batch(
        &self,
        recursive: bool,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> Vec<Result<String, String>> {
        let n = prompts.len();
        let checked = self.target(recursive, model.as_deref()).and_then(|target| {
            let count = u64::try_from(n).unwrap_or(u64::MAX);
            self.step
                .take(count, self.tree.config.budget.max_sub_calls_per_step)
                .map(|()| target)
        });
        let target = match checked {
            Ok(t) => t,
            Err(e) => return vec![Err(e); n],
        };
        let c = &self.tree.config;
        let width = match target {
            Target::Llm(_) => c.sub_concurrency,
            Target::Rlm(_) => c.max_repls,
        };
        let target = &target;
        futures::stream::iter(prompts)
            .map(|p| self.call(target, p))
            .buffered(width.max(1))
            .collect()
            .await
    }
}

#[async_trait::async_trait]
impl ModelHost for NodeHost {
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        self.one(false, prompt, model).await
    }

    async fn llm_batch(
        &self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> Vec<Result<String, String>> {
        self.batch(false, prompts, model).await
    }

    async fn rlm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        self.one(true, prompt, model).await
    }

    async fn rlm_batch(
        &self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> Vec<Result<String, String>> {
        self.batch(true, prompts, model).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_counts_its_calls_and_refuses_a_batch_past_the_cap_whole() {
        let step = StepCalls::default();
        assert!(step.take(3, Some(5)).is_ok());
        let e = step.take(3, Some(5)).unwrap_err();
        assert!(
            e.contains("batch of 3") && e.contains("past 5") && e.contains("3 made so far"),
            "{e}"
        );
        assert!(
            step.take(2, Some(5)).is_ok(),
            "the refused batch counted nothing"
        );
        let e = step.take(1, Some(5)).unwrap_err();
        assert!(e.contains("made 5 sub-calls"), "{e}");
        assert!(step.take(u64::MAX, None).is_ok(), "no cap, no count");
        step.reset();
        assert!(step.take(5, Some(5)).is_ok(), "a new step starts from 0");
        assert!(step.take(u64::MAX, Some(5)).is_err(), "no overflow");
    }
}
