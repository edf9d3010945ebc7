//! The run's custom tools as one RLM's sandbox gets them: each call also reported as an
//! [`Event::ToolCall`].

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;

use crate::events::{Event, Node};
use crate::tree::Tree;

impl Tree {
    /// The run's custom tools as one RLM's sandbox gets them: each call also reported as an
    /// [`Event::ToolCall`] from `node`.
    pub(crate) fn node_tools(self: &Arc<Self>, node: &Node) -> Vec<rlm_sandbox::Tool> {
        self.config
            .tools
            .iter()
            .map(|tool| {
                let (tree, node, inner) = (self.clone(), node.clone(), tool.clone());
                tool.with_handler(move |args| {
                    let (tree, node, inner) = (tree.clone(), node.clone(), inner.clone());
                    async move {
                        let id = tree.next_call_id();
                        let started = Instant::now();
                        let call = std::panic::AssertUnwindSafe(inner.call(args.clone()));
                        let outcome = call.catch_unwind().await;
                        let result = match &outcome {
                            Ok(r) => r.clone(),
                            Err(_) => Err("the tool's handler panicked".to_string()),
                        };
                        tree.events.emit(Event::ToolCall {
                            node,
                            id,
                            name: inner.name().to_string(),
                            args,
                            result,
                            ms: started.elapsed().as_secs_f64() * 1e3,
                        });
                        match outcome {
                            Ok(r) => r,
                            // The sandbox reports a panicking handler to model code.
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                })
            })
            .collect()
    }
}
