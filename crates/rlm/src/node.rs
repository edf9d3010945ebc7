//! One RLM's loop: its sandbox, its conversation with its root model, and each step.

use std::sync::Arc;
use std::time::Instant;

use rlm_llm::{CallRole, CallTag, ChatModel, ChatRequest, ChatResponse, FinishReason, Message};
use rlm_sandbox::{Context, ContextShape, Sandbox, StepResult};
use tracing::Instrument;

use crate::budget::Spent;
use crate::error::RlmError;
use crate::events::{Event, Node};
use crate::grounding::{Grounding, Seen};
use crate::host::{NodeHost, StepCalls};
use crate::lookup;
use crate::outcome::StopReason;
use crate::parse::{TextFinal, is_placeholder, parse_reply};
use crate::prompt::{self, PromptFacts, PromptProfile};
use crate::repeat::Repeats;
use crate::repls::ReplPermit;
use crate::tree::{CallError, Tree, request_hash};

/// How one RLM's loop ended.
pub(crate) struct NodeOutcome {
    pub answer: Option<String>,
    pub stop: StopReason,
    pub iterations: u32,
}

/// One RLM: its sandbox and its conversation with its root model.
pub(crate) struct NodeRun {
    tree: Arc<Tree>,
    node: Node,
    /// This RLM's root model (the run's, or the one an `rlm_query` named).
    root_model: Arc<dyn ChatModel>,
    pub(crate) sandbox: Sandbox,
    pub(crate) messages: Vec<Message>,
    shapes: Vec<(String, ContextShape)>,
    /// What this RLM has run and replied, to notice repetition.
    repeats: Repeats,
    /// Ask the next root call for a sampled reply: how many times the last one repeated an
    /// earlier step or reply (0: not at all).
    sample_next: u32,
    /// The output of the latest step that printed something without an error.
    evidence: Option<String>,
    /// The words the steps of the current question printed, and whether a final answer that
    /// none of them showed was questioned already (small models: see `grounding.rs`).
    seen: Seen,
    questioned: bool,
    /// The lines that hold the current question's words, once looked up (see `lookup.rs`).
    lookup: Option<Option<(Vec<String>, Vec<String>)>>,
    /// The sub-calls of the step running now (its host counts them; reset before each step).
    step: Arc<StepCalls>,
    /// This REPL's slot in the run's cap on live REPLs, held while the REPL lives.
    _repl: ReplPermit,
}

/// Where a root reply from an OpenAI-compatible server stops: at the fence that closes its first
/// code block (the server leaves the stop sequence out; [`close_cut_fence`] puts it back).
const CODE_BLOCK_STOP: &str = "\n```\n";

/// Close a code block that a stop sequence cut before its closing fence.
fn close_cut_fence(text: &mut String) {
    let fences = text
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    if fences % 2 == 1 {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("```");
    }
}

/// The temperature of a root call after the model repeated itself, for small models (which
/// decode greedily otherwise and would give the same reply again): 0.7 after the first repeat,
/// rising by 0.15 with each further one up to 1.0 (a 1.5B model sent the same block six times
/// at 0.7). Hosted models keep their own sampling: some refuse a temperature.
fn repeat_temperature(times: u32) -> f32 {
    (0.7 + 0.15 * times.saturating_sub(2) as f32).min(1.0)
}

impl NodeRun {
    pub(crate) async fn start(
        tree: Arc<Tree>,
        node: Node,
        root_model: Arc<dyn ChatModel>,
        contexts: Vec<Arc<Context>>,
        repl: ReplPermit,
    ) -> Result<Self, RlmError> {
        let c = &tree.config;
        let step = Arc::new(StepCalls::default());
        let host = Arc::new(NodeHost {
            tree: tree.clone(),
            node: node.clone(),
            step: step.clone(),
        });
        let mut builder = Sandbox::builder(c.engine().await?)
            .limits(c.limits.clone())
            .model(host)
            .tools(tree.node_tools(&node))
            .seed(tree.node_seed(&node.rlm));
        let mut shapes = Vec::new();
        for (i, ctx) in contexts.into_iter().enumerate() {
            shapes.push((rlm_sandbox::slot_name(i), ctx.shape()));
            builder = builder.context(ctx);
        }
        let sandbox = builder.build().await?;
        let mut run = Self {
            tree,
            node,
            root_model,
            sandbox,
            messages: Vec::new(),
            shapes,
            repeats: Repeats::default(),
            sample_next: 0,
            evidence: None,
            seen: Seen::default(),
            questioned: false,
            lookup: None,
            step,
            _repl: repl,
        };
        let system = run.system_prompt();
        run.messages.push(Message::system(system));
        Ok(run)
    }

    fn system_prompt(&self) -> String {
        let c = &self.tree.config;
        let facts = PromptFacts {
            shape: self
                .shapes
                .first()
                .map_or(ContextShape::Text { chars: 0 }, |s| s.1.clone()),
            extra_contexts: self.shapes.iter().skip(1).cloned().collect(),
            lazy_contexts: (0..self.shapes.len())
                .filter(|&i| !self.sandbox.loaded_whole(i))
                .map(rlm_sandbox::slot_name)
                .collect(),
            sub_model_chars: c.sub_model_context_tokens.saturating_mul(3),
            sub_calls: self.node.depth < c.max_depth,
            recursive: self.node.depth + 1 < c.max_depth,
            max_output_chars: c.max_output_chars,
            max_iterations: c.max_iterations,
            tools: c.tools.clone(),
        };
        prompt::system_prompt_for(c.profile, &facts)
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// Bind another context (`context_1`, ...) and tell the model about it.
    pub(crate) async fn add_context(&mut self, ctx: Arc<Context>) -> Result<String, RlmError> {
        let shape = ctx.shape();
        let name = self.sandbox.add_context(ctx).await?;
        let lazy = if self.sandbox.loaded_whole(self.shapes.len()) {
            ""
        } else {
            " It is too large for the REPL's memory: a lazy object (slice it, search it, iterate \
             its lines), not a str."
        };
        self.messages.push(Message::user(format!(
            "A new document was loaded as `{name}`: {}.{lazy}",
            prompt::describe_shape(&shape)
        )));
        self.shapes.push((name.clone(), shape));
        Ok(name)
    }

    /// The loop: ask the root model, run its code, feed back the output, until a final answer,
    /// the iteration limit or the budget.
    pub(crate) async fn answer(&mut self, query: &str) -> NodeOutcome {
        let c = self.tree.config.clone();
        // The question as a variable too, as DSPy gives its inputs (`query`, `question`).
        for name in ["query", "question"] {
            if let Err(e) = self
                .sandbox
                .define(name, serde_json::Value::String(query.to_string()))
                .await
            {
                tracing::warn!(error = %e, "could not bind the question as `{name}`");
            }
        }
        self.messages
            .push(Message::user(prompt::first_user_message(query)));
        self.seen = Seen::default();
        self.questioned = false;
        self.lookup = None;
        let mut last_prose = String::new();
        // Where the latest feedback of this question is in the conversation.
        let mut feedback_at: Option<usize> = None;
        // While the model repeats itself: that feedback as first sent, to which the latest
        // note is added.
        let mut folded: Option<String> = None;
        for iteration in 1..=c.max_iterations {
            if let Some(spent) = self.tree.budget.exhausted() {
                return self
                    .stop_for_budget(spent, iteration - 1, &last_prose)
                    .await;
            }
            self.tree.events.emit(Event::Iteration {
                node: self.node.clone(),
                n: iteration,
            });
            let span = tracing::info_span!("iteration", rlm = %self.node.rlm, n = iteration);
            let reply = match self.ask_root(iteration).instrument(span.clone()).await {
                Ok(r) => r,
                Err(CallError::Budget(spent)) => {
                    return self.stop_for_budget(spent, iteration, &last_prose).await;
                }
                Err(CallError::Failed(message)) => {
                    return self.stop_for_error(message, iteration, &last_prose).await;
                }
            };
            let parsed = parse_reply(&reply);
            last_prose = parsed.prose.clone();
            let repeated_reply = self.repeats.reply(&reply, iteration);
            self.messages.push(Message::assistant(reply));

            let mut feedback = Vec::new();
            let mut repeated_step = None;
            let mut repeated_blocks = 0usize;
            let mut printed = false;
            // (searches made, searches that matched nothing) over the reply's blocks.
            let mut searches = (0u32, 0u32);
            let blocks = parsed.code_blocks.len();
            for (i, code) in parsed.code_blocks.iter().enumerate() {
                let (step, shown) = match self.exec(code, iteration).instrument(span.clone()).await
                {
                    Ok(s) => s,
                    Err(message) => {
                        return self.stop_for_error(message, iteration, &last_prose).await;
                    }
                };
                feedback.push(if blocks == 1 {
                    format!("Output:\n{shown}")
                } else {
                    format!("Output of block {}:\n{shown}", i + 1)
                });
                if let Some(answer) = step.final_answer {
                    if !is_placeholder(&answer) {
                        return self.finish(Some(answer), StopReason::Final, iteration);
                    }
                    feedback.push(prompt::placeholder_final(&answer));
                }
                if let Some(r) = self.repeats.step(code, &shown, iteration) {
                    repeated_step = Some(r);
                    repeated_blocks += 1;
                }
                searches.0 = searches.0.saturating_add(step.searches);
                searches.1 = searches.1.saturating_add(step.empty_searches);
                self.seen.add(&shown);
                if step.error.is_none() && !step.stdout.trim().is_empty() {
                    printed = true;
                    self.evidence = Some(shown);
                }
            }
            if blocks == 0 {
                match parsed.final_answer {
                    Some(TextFinal::Answer(a)) if is_placeholder(&a) => {
                        feedback.push(prompt::placeholder_final(&a));
                    }
                    Some(TextFinal::Answer(a)) if self.questions(&a, query) => {
                        self.questioned = true;
                        if let Some(read) = self.read_answer(query, iteration).await {
                            return self.finish(Some(read), StopReason::Final, iteration);
                        }
                        feedback.push(prompt::ungrounded_final(
                            &a,
                            query,
                            self.evidence.as_deref(),
                        ));
                    }
                    Some(TextFinal::Answer(a)) => {
                        return self.finish(Some(a), StopReason::Final, iteration);
                    }
                    Some(TextFinal::Var(name)) => match self.final_var(&name, iteration).await {
                        Ok(a) => return self.finish(Some(a), StopReason::Final, iteration),
                        Err(why) => feedback.push(why),
                    },
                    None => feedback.push(prompt::NUDGE.to_string()),
                }
            }
            let found_nothing = searches.0 > 0 && searches.1 == searches.0;
            if let Some(r) = repeated_step {
                feedback.push(prompt::repeated_step(
                    r.first_iteration,
                    r.times,
                    query,
                    found_nothing,
                ));
                self.sample_next = r.times;
            } else if let Some(r) = repeated_reply {
                feedback.push(prompt::repeated_reply(r.first_iteration));
                self.sample_next = r.times;
            }
            if found_nothing {
                // Small models take "0 matches" for "not in the document" and give up, or run
                // the same search again; the document usually says it in other words. Repeated
                // or not, they get code to copy that does something else.
                let shape = self.shapes.first().map(|s| &s.1);
                let shape = shape.cloned().unwrap_or(ContextShape::Text { chars: 0 });
                feedback.push(prompt::nothing_found(self.node.depth < c.max_depth, &shape));
                if c.profile == PromptProfile::Small
                    && let Some(lines) = self.look_up(query).await
                {
                    feedback.push(lines);
                }
            } else if printed && repeated_step.is_none() && repeated_reply.is_none() {
                feedback.push(prompt::finish_hint(query));
            }
            let feedback = feedback.join("\n\n");
            let all_repeated =
                repeated_reply.is_some() || (blocks > 0 && repeated_blocks == blocks);
            // A reply that only repeats earlier steps is not kept as a new exchange: the
            // conversation keeps the exchange before it, whose feedback gets the note. Copies
            // piling up make a small model all the more sure to send the same block again (a
            // 1.5B model re-sent one block seven times at temperatures up to 1.0). Only after
            // this question's own feedback: in a session, a question's message stays as asked.
            let after_feedback = feedback_at.is_some_and(|i| i + 2 == self.messages.len());
            if all_repeated && after_feedback {
                self.messages.pop();
                if let Some(last) = self.messages.last_mut() {
                    let first = folded.get_or_insert_with(|| last.content.clone());
                    last.content =
                        format!("{first}\n\nYour next reply repeated an earlier one.\n{feedback}");
                }
            } else {
                folded = None;
                self.messages.push(Message::user(feedback));
                feedback_at = Some(self.messages.len() - 1);
            }
        }
        // Out of iterations: ask once for the best answer.
        if let Some(spent) = self.tree.budget.exhausted() {
            return self
                .stop_for_budget(spent, c.max_iterations, &last_prose)
                .await;
        }
        self.messages.push(Message::user(prompt::last_call(
            c.max_iterations,
            query,
            self.evidence.as_deref(),
        )));
        let answer = match self.ask_root(c.max_iterations + 1).await {
            Ok(reply) => {
                let parsed = parse_reply(&reply);
                let prose = parsed.prose;
                self.messages.push(Message::assistant(reply));
                match parsed.final_answer {
                    Some(TextFinal::Answer(a)) if is_placeholder(&a) => self.partial(&prose).await,
                    Some(TextFinal::Answer(a)) => Some(a),
                    Some(TextFinal::Var(name)) => {
                        self.final_var(&name, c.max_iterations).await.ok()
                    }
                    None => (!prose.is_empty()).then_some(prose),
                }
            }
            Err(_) => self.partial(&last_prose).await,
        };
        self.finish(answer, StopReason::MaxIterations, c.max_iterations)
    }

    /// The lines of the first context that hold the question's words (see `lookup.rs`), looked
    /// up once per question off the async workers; what they show is taken as printed by the
    /// run.
    async fn looked_up(&mut self, query: &str) -> Option<(Vec<String>, Vec<String>)> {
        if self.lookup.is_none() {
            let context = self.sandbox.contexts().first().cloned();
            let words = lookup::key_words(query);
            let found = match context {
                Some(context) => {
                    crate::blocking::off_runtime(move || lookup::lines_with(&context, &words)).await
                }
                None => None,
            };
            if let Some((_, lines)) = &found {
                self.seen.add(&lines.join("\n"));
            }
            self.lookup = Some(found);
        }
        self.lookup.clone().flatten()
    }

    /// The looked-up lines as the model is shown them after its searches found nothing; they
    /// become the latest evidence.
    async fn look_up(&mut self, query: &str) -> Option<String> {
        let (used, lines) = self.looked_up(query).await?;
        self.evidence = Some(lines.join("\n"));
        Some(prompt::lines_with_words(&used, &lines, query))
    }

    /// Whether a final answer the model wrote is questioned before it is accepted: for small
    /// models, once per question, when no output of the run showed it (see `grounding.rs`).
    fn questions(&self, answer: &str, query: &str) -> bool {
        self.tree.config.profile == PromptProfile::Small
            && !self.questioned
            && self.seen.grounding(answer, query) != Grounding::Grounded
    }

    /// The answer to `query` read by the root model in a conversation of its own from the
    /// lines that hold the question's words and the latest output, without the worked examples
    /// a small model copies from. `None` when there is nothing to read, the call failed, or its
    /// answer rests on nothing the run printed either (a number it never printed is let
    /// through here: this conversation has no examples to copy one from).
    async fn read_answer(&mut self, query: &str, iteration: u32) -> Option<String> {
        let mut evidence = self.evidence.clone().unwrap_or_default();
        if let Some((_, lines)) = self.looked_up(query).await {
            let lines = lines.join("\n");
            if !evidence.contains(&lines) {
                evidence = format!("{lines}\n{evidence}");
            }
        }
        if evidence.trim().is_empty() {
            return None;
        }
        let messages = vec![
            Message::system(prompt::READER_SYSTEM),
            Message::user(prompt::reader_question(&evidence, query)),
        ];
        let response = self
            .call_root(ChatRequest::new(messages), iteration)
            .await
            .ok()?;
        let parsed = parse_reply(&response.text);
        let answer = match parsed.final_answer {
            Some(TextFinal::Answer(a)) => a,
            _ => parsed.prose.trim().to_string(),
        };
        (!answer.is_empty()
            && !is_placeholder(&answer)
            && self.seen.grounding(&answer, query) != Grounding::Not)
            .then_some(answer)
    }

    async fn ask_root(&mut self, iteration: u32) -> Result<String, CallError> {
        let model_id = self.root_model.id();
        let mut request = ChatRequest::new(self.messages.clone());
        // OpenAI-compatible servers (open models) are asked to stop after the first closed code
        // block, as local models are: what a model writes after its code (invented outputs, more
        // turns) is never useful.
        let open_model = model_id.starts_with("compat/");
        if open_model {
            request.params.stop = vec![CODE_BLOCK_STOP.to_string()];
        }
        let repeats = std::mem::take(&mut self.sample_next);
        if repeats > 0
            && (self.tree.config.profile == PromptProfile::Small
                || open_model
                || model_id.starts_with("local/"))
        {
            request.params.temperature = Some(repeat_temperature(repeats));
        }
        Ok(self.call_root(request, iteration).await?.text)
    }

    /// One call of the root model, tagged as this node's and recorded as a `ModelReply` event.
    /// A reply cut by a stop sequence (the code block's end) gets its closing fence back.
    async fn call_root(
        &mut self,
        request: ChatRequest,
        iteration: u32,
    ) -> Result<ChatResponse, CallError> {
        let model = self.root_model.clone();
        let model_id = model.id();
        let request_hash = request_hash(&model_id, &request.messages);
        let stops = !request.params.stop.is_empty();
        let tag = CallTag {
            role: CallRole::Root,
            depth: self.node.depth,
        };
        let started = Instant::now();
        let mut response = self.tree.call_model(&model, request.tagged(tag)).await?;
        if stops && response.finish_reason == FinishReason::Stop {
            close_cut_fence(&mut response.text);
        }
        self.tree.events.emit(Event::ModelReply {
            node: self.node.clone(),
            iteration,
            text: response.text.clone(),
            model: model_id,
            request_hash,
            usage: response.usage,
            cost_usd: response.cost_usd,
            ms: started.elapsed().as_secs_f64() * 1e3,
        });
        Ok(response)
    }

    /// Run one block; returns the step and its output as the model sees it (also in the event).
    async fn exec(&mut self, code: &str, iteration: u32) -> Result<(StepResult, String), String> {
        let step = self
            .run_code(code)
            .await
            .map_err(|e| format!("the sandbox failed: {e}"))?;
        let c = &self.tree.config;
        let shown = format_step(&step, c.max_output_chars, c.profile);
        self.tree.events.emit(Event::CodeExecuted {
            node: self.node.clone(),
            iteration,
            code: code.to_string(),
            output: shown.clone(),
            error: step.error.clone(),
            final_answer: step.final_answer.clone(),
            fuel: step.fuel,
            // The step's whole cost: its run plus the recovery or the checkpoint after it.
            ms: step.total_time().as_secs_f64() * 1e3,
            restored: step.restored,
            reset: step.reset,
        });
        Ok((step, shown))
    }

    /// Run `code` as a new step of the REPL (its sub-calls counted from 0).
    pub(crate) async fn run_code(
        &mut self,
        code: &str,
    ) -> Result<StepResult, rlm_sandbox::SandboxError> {
        self.step.reset();
        self.sandbox.exec(code).await
    }

    /// `FINAL_VAR(name)` written in the reply text: read the variable from the REPL.
    async fn final_var(&mut self, name: &str, iteration: u32) -> Result<String, String> {
        let code = format!("FINAL_VAR({})", serde_json::Value::String(name.to_string()));
        let (step, _) = self.exec(&code, iteration).await?;
        step.final_answer.ok_or_else(|| {
            format!(
                "FINAL_VAR({name}) failed: {}",
                step.error.unwrap_or_else(|| "no such variable".into())
            )
        })
    }

    /// The best partial answer: the REPL's `answer["content"]` if set, else the last reply's
    /// prose.
    async fn partial(&mut self, last_prose: &str) -> Option<String> {
        let code =
            "print(str(answer.get('content') or '') if isinstance(answer, dict) else '', end='')";
        if let Ok(step) = self.run_code(code).await
            && step.error.is_none()
            && !step.stdout.trim().is_empty()
        {
            return Some(step.stdout);
        }
        (!last_prose.trim().is_empty()).then(|| last_prose.trim().to_string())
    }

    async fn stop_for_budget(
        &mut self,
        spent: Spent,
        iterations: u32,
        last_prose: &str,
    ) -> NodeOutcome {
        self.tree.events.emit(Event::BudgetExceeded {
            node: self.node.clone(),
            reason: spent.reason.clone(),
        });
        let answer = self.partial(last_prose).await;
        let stop = StopReason::Budget {
            limit: Some(spent.limit),
            reason: spent.reason,
        };
        self.finish(answer, stop, iterations)
    }

    async fn stop_for_error(
        &mut self,
        message: String,
        iterations: u32,
        last_prose: &str,
    ) -> NodeOutcome {
        self.tree.events.emit(Event::Error {
            node: self.node.clone(),
            message: message.clone(),
        });
        let answer = self.partial(last_prose).await;
        self.finish(answer, StopReason::Error { message }, iterations)
    }

    fn finish(&mut self, answer: Option<String>, stop: StopReason, iterations: u32) -> NodeOutcome {
        self.tree.events.emit(Event::FinalAnswer {
            node: self.node.clone(),
            answer: answer.clone(),
            stop: stop.clone(),
        });
        NodeOutcome {
            answer,
            stop,
            iterations,
        }
    }
}

/// A step's output as the model sees it.
pub(crate) fn format_step(
    step: &StepResult,
    max_chars: usize,
    profile: prompt::PromptProfile,
) -> String {
    let mut s = String::new();
    if !step.stdout.is_empty() {
        s.push_str(&step.stdout);
    }
    if !step.stderr.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[stderr]\n");
        s.push_str(&step.stderr);
    }
    if let Some(e) = &step.error {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[error]\n");
        s.push_str(e);
    }
    if step.truncated() {
        s.push_str(&format!(
            "\n[the sandbox kept only part of the output: {} bytes were dropped]",
            step.stdout_dropped + step.stderr_dropped
        ));
    }
    if s.trim().is_empty() {
        s = prompt::no_output(profile).to_string();
    }
    prompt::truncate_middle(s.trim_end(), max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_cut_at_its_closing_fence_is_closed_again() {
        let mut t = "Let me look.\n```repl\nprint(1)".to_string();
        close_cut_fence(&mut t);
        assert_eq!(t, "Let me look.\n```repl\nprint(1)\n```");
        assert_eq!(
            crate::parse::parse_reply(&t).code_blocks,
            vec!["print(1)\n"]
        );
        for whole in ["FINAL(3)", "a\n```repl\nx\n```", ""] {
            let mut t = whole.to_string();
            close_cut_fence(&mut t);
            assert_eq!(t, whole);
        }
    }
}
