//! Running a question: the run's settings and models, its trace, and the tool's result.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use rlm::{BudgetLimits, ContextInput, RunSpec, StopReason};
use rlm_llm::ChatModel;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock as Content};
use rmcp::service::RequestContext;

use super::{RlmMcp, tool_error};
use crate::progress::Progress;
use crate::{McpError, RunOptions};

impl RlmMcp {
    /// The run's settings: the request's options over the server's defaults, its models checked.
    fn spec(&self, o: RunOptions) -> Result<RunSpec, McpError> {
        let d = &self.config.defaults;
        for id in [&o.model, &o.sub_model].into_iter().flatten() {
            let id = id.trim();
            if !id.is_empty() && !self.model_allowed(id) {
                return Err(McpError::Model {
                    id: id.to_string(),
                    reason: format!(
                        "not allowed by this server (its models: {}; the operator may add more with --allow-model)",
                        self.allowed_list()
                    ),
                });
            }
        }
        let spec = RunSpec {
            model: o.model,
            sub_model: o.sub_model,
            max_iterations: o.max_iterations,
            max_depth: o.max_depth,
            budget: BudgetLimits {
                usd: o.budget_usd,
                tokens: o.budget_tokens,
                sub_calls: o.budget_sub_calls,
                seconds: o.budget_seconds,
            },
            ..RunSpec::default()
        }
        .or(d);
        if spec.model.is_none()
            && let Some(reason) = &self.config.no_model_reason
        {
            return Err(McpError::Model {
                id: "(default)".into(),
                reason: reason.clone(),
            });
        }
        spec.budget()?;
        Ok(spec)
    }

    fn model_allowed(&self, id: &str) -> bool {
        self.config
            .defaults
            .allows_model(id, &self.config.allowed_models)
    }

    fn allowed_list(&self) -> String {
        let d = &self.config.defaults;
        let mut v: Vec<&str> = [d.model.as_deref(), d.sub_model.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        v.extend(self.config.allowed_models.iter().map(String::as_str));
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    async fn make(&self, id: &str) -> Result<Arc<dyn ChatModel>, McpError> {
        (self.config.models)(id.to_string())
            .await
            .map_err(|reason| McpError::Model {
                id: id.to_string(),
                reason,
            })
    }

    /// Run a question; setup failures and run errors come back as tool errors.
    pub(super) async fn ask(
        &self,
        input: ContextInput,
        question: &str,
        options: RunOptions,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        match self.ask_inner(input, question, options, ctx).await {
            Ok(r) => r,
            Err(e) => tool_error(e),
        }
    }

    async fn ask_inner(
        &self,
        input: ContextInput,
        question: &str,
        options: RunOptions,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let spec = self.spec(options)?;
        let (root_id, sub_id) = spec.models()?;
        let root = self.make(&root_id).await?;
        let sub = if sub_id == root_id {
            root.clone()
        } else {
            self.make(&sub_id).await?
        };
        let progress = Progress::start(ctx.meta.get_progress_token(), ctx.peer.clone());
        let mut builder = spec
            .builder(root, sub)?
            .engine(self.config.engine.clone())
            .sub_concurrency(self.config.sub_concurrency.max(1))
            .on_event(progress.sink.clone());
        let mut trace_name = None;
        if let Some(store) = &self.traces {
            // The process id keeps two servers over the same roots from reusing a name.
            let name = format!(
                "mcp-{}-{}-{}.jsonl",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                std::process::id(),
                self.runs.fetch_add(1, Ordering::Relaxed) + 1
            );
            builder = builder.on_event(store.create(&name)?);
            trace_name = Some(name);
        }
        let rlm = builder.build()?;
        let outcome = tokio::select! {
            r = rlm.run(input, question) => Some(r),
            () = ctx.ct.cancelled() => None,
        };
        drop(rlm);
        progress.finish().await;
        let Some(result) = outcome else {
            return Ok(tool_error("the run was cancelled"));
        };
        let result = result?;
        let u = &result.usage.total;
        let stop = &result.stop;
        let mut stats = format!(
            "[rlm: {stop} · {} iterations · {} tokens · ${:.4}{} · {:.1} s",
            result.iterations,
            u.usage.total(),
            u.cost_usd,
            if u.unpriced_calls > 0 {
                format!(" (+{} unpriced calls)", u.unpriced_calls)
            } else {
                String::new()
            },
            result.elapsed.as_secs_f64()
        );
        if let Some(name) = &trace_name {
            stats.push_str(&format!(" · trace {name}"));
        }
        stats.push(']');
        let answer = result
            .answer
            .clone()
            .unwrap_or_else(|| "(no answer)".into());
        let content = vec![Content::text(answer), Content::text(stats)];
        Ok(match result.stop {
            StopReason::Error { .. } => CallToolResult::error(content),
            _ => CallToolResult::success(content),
        })
    }
}
