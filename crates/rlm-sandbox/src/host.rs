//! The model-call side of the sandbox: a trait the embedding application implements.

use async_trait::async_trait;

/// Answers the model calls that guest code makes (`llm_query`, `llm_batch`, `rlm_query`).
///
/// The sandbox knows no language model; the RLM loop implements this trait (and starts a child
/// RLM for `rlm_query`). Errors are `String`s written for the model to read: they reach the
/// guest as `"Error: ..."` values, never as a crash.
#[async_trait]
pub trait ModelHost: Send + Sync + 'static {
    /// One sub-LLM call.
    async fn llm_query(&self, prompt: String, model: Option<String>) -> Result<String, String>;

    /// Several sub-LLM calls, answered in prompt order. The default runs them all concurrently
    /// through [`ModelHost::llm_query`]; concurrency limits belong to the model client.
    async fn llm_batch(
        &self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> Vec<Result<String, String>> {
        futures::future::join_all(
            prompts
                .into_iter()
                .map(|p| self.llm_query(p, model.clone())),
        )
        .await
    }

    /// A recursive sub-RLM call.
    async fn rlm_query(&self, prompt: String, model: Option<String>) -> Result<String, String>;

    /// Several recursive sub-RLM calls (`rlm_batch`, `rlm_query_batched`), answered in prompt
    /// order. The default runs them all concurrently through [`ModelHost::rlm_query`].
    async fn rlm_batch(
        &self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> Vec<Result<String, String>> {
        futures::future::join_all(
            prompts
                .into_iter()
                .map(|p| self.rlm_query(p, model.clone())),
        )
        .await
    }
}

/// A [`ModelHost`] for sandboxes without a model: every call returns an error saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

const NO_MODEL: &str = "no language model is configured, so llm_query, llm_batch and \
rlm_query cannot answer here; work with context, search() and plain Python instead";

#[async_trait]
impl ModelHost for NoModel {
    async fn llm_query(&self, _prompt: String, _model: Option<String>) -> Result<String, String> {
        Err(NO_MODEL.to_string())
    }

    async fn rlm_query(&self, _prompt: String, _model: Option<String>) -> Result<String, String> {
        Err(NO_MODEL.to_string())
    }
}
