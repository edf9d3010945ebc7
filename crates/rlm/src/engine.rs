//! The RLM: the public entry point that starts runs and sessions.

use std::sync::Arc;
use std::time::Instant;

use rlm_llm::ChatModel;
use rlm_sandbox::{Context, SandboxEngine};
use tracing::Instrument;

use crate::blocking::off_runtime;
use crate::builder::RlmBuilder;
use crate::config::Config;
use crate::error::RlmError;
use crate::events::{ContextRecord, Event, Node};
use crate::input::ContextInput;
use crate::node::NodeRun;
use crate::outcome::{RunResult, UsageReport};
use crate::prompt;
use crate::tree::Tree;

/// A Recursive Language Model: a root model that answers questions about a context by writing
/// Python in a sandboxed REPL, with sub-calls to a sub-model and recursive sub-RLMs.
#[derive(Clone)]
pub struct Rlm {
    pub(crate) config: Arc<Config>,
}

impl std::fmt::Debug for Rlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rlm")
            .field("root_model", &self.config.root_model.id())
            .field("sub_model", &self.config.sub_model.id())
            .field("max_iterations", &self.config.max_iterations)
            .field("max_depth", &self.config.max_depth)
            .finish_non_exhaustive()
    }
}

impl Rlm {
    /// Start configuring an RLM whose root model is `root_model`: any [`ChatModel`] (e.g.
    /// `rlm::model("openai/gpt-5")?`), or an `Arc` of one shared with other code.
    pub fn builder(root_model: impl ChatModel + 'static) -> RlmBuilder {
        RlmBuilder::new(root_model.into_shared())
    }

    /// Load the sandbox engine now rather than on the first run (to fail early, or to keep the
    /// first run's latency down). Does not block the async runtime.
    pub async fn load_engine(&self) -> Result<Arc<SandboxEngine>, RlmError> {
        Ok(self.config.engine().await?)
    }

    /// Answer `query` about `context`.
    pub async fn run(
        &self,
        context: impl Into<ContextInput>,
        query: &str,
    ) -> Result<RunResult, RlmError> {
        let started = Instant::now();
        let input = context.into();
        let inline_chars = self.config.inline_context_chars;
        // Indexing and hashing a large context takes a while: not on an async thread.
        let (ctx, record) = off_runtime(move || {
            let ctx = input.to_context();
            let record = context_record(&input, &ctx, inline_chars);
            (ctx, record)
        })
        .await;
        let tree = Tree::new(self.config.clone());
        let span = tracing::info_span!("run", root_model = %self.config.root_model.id(), depth = 0);
        async {
            let root = self.config.root_model.clone();
            let repl = tree.open_repl(&root_node()).await;
            let mut node = NodeRun::start(tree.clone(), root_node(), root, vec![ctx], repl).await?;
            tree.events.emit(Event::RunStarted {
                node: root_node(),
                query: query.to_string(),
                settings: Some(Box::new(tree.settings())),
                context: Some(record),
            });
            let outcome = node.answer(query).await;
            Ok(RunResult {
                answer: outcome.answer,
                stop: outcome.stop,
                iterations: outcome.iterations,
                usage: UsageReport::from_tracker(&tree.usage),
                elapsed: started.elapsed(),
                events: tree.events.take(),
            })
        }
        .instrument(span)
        .await
    }

    /// [`Rlm::run`] for callers without an async runtime (starts one for the call). Called
    /// from inside a runtime, it runs the call on a thread of its own (a runtime cannot be
    /// started on a thread that drives one) and blocks until it ends; async code should
    /// `.await` [`Rlm::run`] instead.
    pub fn run_blocking(
        &self,
        context: impl Into<ContextInput>,
        query: &str,
    ) -> Result<RunResult, RlmError> {
        let context = context.into();
        let run = move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| RlmError::Config(format!("cannot start a tokio runtime: {e}")))?;
            rt.block_on(self.run(context, query))
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("rlm-run-blocking".into())
                .spawn_scoped(scope, run)
                .map_err(|e| RlmError::Config(format!("cannot start a thread for the run: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A multi-turn session over `context`: the REPL and the conversation persist across
    /// questions.
    pub async fn session(
        &self,
        context: impl Into<ContextInput>,
    ) -> Result<crate::session::Session, RlmError> {
        let input = context.into();
        let ctx = off_runtime(move || input.into_context()).await;
        let tree = Tree::new(self.config.clone());
        let repl = tree.open_repl(&root_node()).await;
        let node = NodeRun::start(
            tree.clone(),
            root_node(),
            self.config.root_model.clone(),
            vec![ctx],
            repl,
        )
        .await?;
        Ok(crate::session::Session::new(tree, node))
    }
}

/// How the trace records the context: facts from the already-built `ctx`, the input itself
/// only when it has at most `inline_chars` characters.
fn context_record(input: &ContextInput, ctx: &Context, inline_chars: u64) -> ContextRecord {
    let chars = ctx.total_chars();
    let inline = (chars <= inline_chars).then(|| input.to_json());
    let hash = match (input, &inline) {
        (ContextInput::Text(t), _) => blake3::hash(t.as_bytes()),
        (_, Some(json)) => blake3::hash(json.to_string().as_bytes()),
        (_, None) => blake3::hash(input.to_json().to_string().as_bytes()),
    };
    ContextRecord {
        description: prompt::describe_shape(&ctx.shape()),
        chars,
        hash: hash.to_hex()[..32].to_string(),
        inline,
    }
}

pub(crate) fn root_node() -> Node {
    Node {
        rlm: "root".to_string(),
        depth: 0,
    }
}
