//! The models a long-running front end (`rlm serve`, `rlm mcp`) makes per request: one
//! [`ModelFactory`] that builds each `provider/model` once and shares it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use rlm::ModelFactory;
use rlm_llm::{ChatModel, LlmClient, ModelConfig};

use crate::{LocalSettings, make_model};

/// The factory of `rlm serve` and `rlm mcp`: makes a model on its first request, with the
/// command's client, provider settings and local-model settings, and keeps it for the next.
pub(crate) fn factory(
    client: LlmClient,
    config: ModelConfig,
    local: LocalSettings,
) -> ModelFactory {
    let cache: Arc<Mutex<HashMap<String, Arc<dyn ChatModel>>>> = Arc::default();
    let shared = Arc::new((client, config, local));
    Arc::new(move |id: String| {
        let cache = cache.clone();
        let shared = shared.clone();
        async move {
            if let Some(m) = cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
            {
                return Ok(m.clone());
            }
            let m = make_model(&shared.0, &id, &shared.1, &shared.2)
                .await
                .map_err(|e| format!("{e:#}"))?;
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, m.clone());
            Ok(m)
        }
        .boxed()
    })
}
