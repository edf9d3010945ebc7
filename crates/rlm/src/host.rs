//! The sandbox's host for one RLM: sub-calls from model code go to the tree.

use std::sync::Arc;

use rlm_sandbox::ModelHost;

use crate::events::Node;
use crate::tree::Tree;

/// The [`ModelHost`] of one RLM's sandbox: sub-calls go to the tree.
pub(crate) struct NodeHost {
    pub(crate) tree: Arc<Tree>,
    pub(crate) node: Node,
}

#[async_trait::async_trait]
impl ModelHost for NodeHost {
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        if self.node.depth + 1 > self.tree.config.max_depth {
            return Err(format!(
                "sub-calls are disabled in this run (max_depth = {}); use search() and Python",
                self.tree.config.max_depth
            ));
        }
        let model = self.tree.model_named(model.as_deref())?;
        self.tree.sub_call(&self.node, model, prompt).await
    }

    async fn rlm_query(&self, prompt: String, model: Option<String>) -> Result<String, String> {
        if self.node.depth + 1 < self.tree.config.max_depth {
            // A child RLM's root is the model named, else the run's root model.
            let model = match model.as_deref() {
                None => self.tree.config.root_model.clone(),
                Some(name) => self.tree.model_named(Some(name))?,
            };
            return self.tree.child_rlm(&self.node, model, prompt).await;
        }
        // At the depth limit a sub-RLM is a plain sub-call, as in the paper.
        self.llm_query(prompt, model).await
    }
}
