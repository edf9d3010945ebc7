//! The `llm` interface: model calls from the guest (`llm_query`, `llm_batch`, `rlm_query`,
//! `rlm_batch`), answered by the embedding application's [`ModelHost`] (the sandbox knows no
//! model), recorded for the journal, or served from it when a REPL is rebuilt.

use async_trait::async_trait;

use super::HostState;
use super::calls::{CLOSED, ModelCall, ReplayDiverged};
use crate::bindings::rlm::sandbox::llm as wit_llm;

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

/// A single call's outcome as the guest takes it.
pub(super) fn reply(r: Result<String, String>) -> wit_llm::Reply {
    match r {
        Ok(a) => wit_llm::Reply::Answer(a),
        Err(e) => wit_llm::Reply::Failure(e),
    }
}

/// One refusal for a whole batch: the reason in the first slot, a short pointer to it in the
/// others (so a refusal costs the same whatever the batch's size).
fn refuse_all(n: usize, reason: String) -> Vec<Result<String, String>> {
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        out.push(Err(reason));
    }
    out.resize(n, Err("refused (see the first answer)".into()));
    out
}

/// The two single-prompt model calls.
#[derive(Debug, Clone, Copy)]
enum Single {
    Llm,
    Rlm,
}

impl HostState {
    /// `llm_query` or `rlm_query`: from the journal when replaying, else from the model host
    /// (recorded, and bounded by the host string cap).
    async fn single_call(
        &mut self,
        kind: Single,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<Result<String, String>> {
        if self.closed(1) {
            return Ok(Err(CLOSED.to_string()));
        }
        if self.replaying() {
            return match (kind, self.replay_next()) {
                (Single::Llm, Some(ModelCall::Query { model: m, result }))
                | (Single::Rlm, Some(ModelCall::Rlm { model: m, result }))
                    if m == model =>
                {
                    Ok(result)
                }
                _ => Err(ReplayDiverged.into()),
            };
        }
        if let Err(e) = self.charge(1) {
            // Refusals are journaled too, so a replay meets the calls in the same order.
            self.record(match kind {
                Single::Llm => ModelCall::Query {
                    model,
                    result: Err(e.clone()),
                },
                Single::Rlm => ModelCall::Rlm {
                    model,
                    result: Err(e.clone()),
                },
            });
            return Ok(Err(e));
        }
        let host = self.model.clone();
        let (name, what) = match kind {
            Single::Llm => ("llm_query", "the model's answer"),
            Single::Rlm => ("rlm_query", "the sub-RLM's answer"),
        };
        let span = tracing::debug_span!("sub_call", kind = name, chars = prompt.len());
        let call = async {
            match kind {
                Single::Llm => host.llm_query(prompt, model.clone()).await,
                Single::Rlm => host.rlm_query(prompt, model.clone()).await,
            }
        };
        let answer = tracing::Instrument::instrument(call, span).await;
        let result = answer
            .map_err(|e| self.bounded_error(e))
            .and_then(|a| self.bounded(what, a));
        let result_copy = result.clone();
        self.record(match kind {
            Single::Llm => ModelCall::Query {
                model,
                result: result_copy,
            },
            Single::Rlm => ModelCall::Rlm {
                model,
                result: result_copy,
            },
        });
        Ok(result)
    }
}

impl HostState {
    /// `llm_batch` or `rlm_batch`: from the journal when replaying, else from the model host
    /// (recorded; each answer and their total bounded by the host string cap).
    async fn batch_call(
        &mut self,
        kind: Single,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        if self.closed(prompts.len() as u64) {
            return Ok(refuse_all(prompts.len(), CLOSED.to_string()));
        }
        if self.replaying() {
            return match (kind, self.replay_next()) {
                (Single::Llm, Some(ModelCall::Batch { model: m, results }))
                | (Single::Rlm, Some(ModelCall::RlmBatch { model: m, results }))
                    if m == model && results.len() == prompts.len() =>
                {
                    Ok(results)
                }
                _ => Err(ReplayDiverged.into()),
            };
        }
        if let Err(e) = self.charge(prompts.len() as u64) {
            let results = refuse_all(prompts.len(), e);
            self.record(match kind {
                Single::Llm => ModelCall::Batch {
                    model,
                    results: results.clone(),
                },
                Single::Rlm => ModelCall::RlmBatch {
                    model,
                    results: results.clone(),
                },
            });
            return Ok(results);
        }
        let name = match kind {
            Single::Llm => "llm_batch",
            Single::Rlm => "rlm_batch",
        };
        let n = prompts.len();
        let span = tracing::debug_span!("sub_call", kind = name, n);
        let host = self.model.clone();
        let call = async {
            match kind {
                Single::Llm => host.llm_batch(prompts, model.clone()).await,
                Single::Rlm => host.rlm_batch(prompts, model.clone()).await,
            }
        };
        let answers = tracing::Instrument::instrument(call, span).await;
        let mut results: Vec<Result<String, String>> = answers
            .into_iter()
            .map(|r| {
                r.map_err(|e| self.bounded_error(e))
                    .and_then(|a| self.bounded("the model's answer", a))
            })
            .collect();
        // A host that returned the wrong number of answers must not shift them.
        results.resize(n, Err("the model host returned no answer".into()));
        let total: usize = results
            .iter()
            .map(|r| r.as_ref().map_or_else(String::len, String::len))
            .sum();
        if total > self.cap() {
            let msg = format!(
                "the batch's answers add up to {total} bytes, more than the sandbox passes at \
                 once ({} bytes); use smaller batches",
                self.cap()
            );
            results = refuse_all(n, msg);
        }
        let results_copy = results.clone();
        self.record(match kind {
            Single::Llm => ModelCall::Batch {
                model,
                results: results_copy,
            },
            Single::Rlm => ModelCall::RlmBatch {
                model,
                results: results_copy,
            },
        });
        Ok(results)
    }
}

impl wit_llm::Host for HostState {
    async fn llm_query(
        &mut self,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<wit_llm::Reply> {
        Ok(reply(self.single_call(Single::Llm, prompt, model).await?))
    }

    async fn llm_batch(
        &mut self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        self.batch_call(Single::Llm, prompts, model).await
    }

    async fn rlm_batch(
        &mut self,
        prompts: Vec<String>,
        model: Option<String>,
    ) -> wasmtime::Result<Vec<Result<String, String>>> {
        self.batch_call(Single::Rlm, prompts, model).await
    }

    async fn rlm_query(
        &mut self,
        prompt: String,
        model: Option<String>,
    ) -> wasmtime::Result<wit_llm::Reply> {
        Ok(reply(self.single_call(Single::Rlm, prompt, model).await?))
    }
}
