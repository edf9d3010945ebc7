//! JSONL traces: write every event of a run, read them back, and replay a run offline.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rlm_llm::{ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, Usage};
use rlm_sandbox::{SandboxEngine, Tool};

use crate::engine::Rlm;
use crate::error::RlmError;
use crate::events::{Event, EventSink, ToolRecord};
use crate::input::ContextInput;
use crate::outcome::RunResult;
use crate::tool_calls::args_key;
use crate::tree::{SubCallKind, request_hash};

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("trace {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not an event.
    #[error("trace {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The trace lacks what a replay needs.
    #[error("trace {0}")]
    Incomplete(String),
    /// The replay could not run.
    #[error(transparent)]
    Rlm(#[from] RlmError),
}

/// An [`EventSink`] that appends each event as one JSON line, flushed at once (a crash loses
/// nothing already seen).
pub struct TraceWriter {
    out: Mutex<BufWriter<std::fs::File>>,
}

impl TraceWriter {
    /// Create (or truncate) `path`, readable and writable by its owner only (mode 0600 on
    /// Unix, an existing regular file's mode included): a trace holds the run's context and
    /// every reply.
    pub fn create(path: &Path) -> std::io::Result<Arc<Self>> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        // The mode above applies to a new file only; an existing regular file is narrowed too
        // (never a device such as /dev/null or a terminal).
        #[cfg(unix)]
        if file.metadata()?.is_file() {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        Ok(Arc::new(Self {
            out: Mutex::new(BufWriter::new(file)),
        }))
    }
}

impl EventSink for TraceWriter {
    fn event(&self, event: &Event) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let written = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            tracing::error!(error = %e, "could not write the trace");
        }
    }
}

/// Read a JSONL trace.
pub fn read_trace(path: &Path) -> Result<Vec<Event>, TraceError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: p.clone(),
        source,
    })?;
    let mut events = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TraceError::Io {
            path: p.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| TraceError::Parse {
            path: p.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// What a recorded request got.
#[derive(Debug, Clone)]
struct Recorded {
    result: Result<String, String>,
    usage: Usage,
    cost_usd: Option<f64>,
}

/// A [`ChatModel`] that answers from a trace, finding each request by its hash (model and
/// messages), so order and concurrency do not matter.
struct ReplayModel {
    id: String,
    answers: Arc<HashMap<String, Recorded>>,
}

#[async_trait]
impl ChatModel for ReplayModel {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let hash = request_hash(&self.id, &request.messages);
        let recorded = self.answers.get(&hash).ok_or_else(|| {
            LlmError::Replayed(format!(
                "the replay diverged: no recorded answer for this {} request ({hash})",
                self.id
            ))
        })?;
        let text = recorded.result.clone().map_err(LlmError::Replayed)?;
        Ok(ChatResponse {
            text,
            usage: recorded.usage,
            model: self.id.clone(),
            finish_reason: FinishReason::Stop,
            latency: std::time::Duration::ZERO,
            attempts: 1,
            cost_usd: recorded.cost_usd,
        })
    }
}

/// A replayed run next to what the trace recorded.
#[derive(Debug)]
pub struct Replay {
    /// The root's final answer in the trace.
    pub recorded_answer: Option<String>,
    /// The run made again.
    pub result: RunResult,
}

impl Replay {
    /// Whether the replay reached the recorded answer.
    pub fn matches(&self) -> bool {
        self.result.answer == self.recorded_answer
    }
}

/// Re-run a traced run offline: the recorded code runs again in fresh sandboxes (with the
/// recorded seed) against the recorded model replies. `context` replaces the trace's when given
/// (needed when the trace did not store the context inline).
pub async fn replay(
    events: &[Event],
    context: Option<ContextInput>,
    engine: Arc<SandboxEngine>,
) -> Result<Replay, TraceError> {
    let Some((query, settings, record)) = events.iter().find_map(|e| match e {
        Event::RunStarted {
            node,
            query,
            settings: Some(s),
            context,
        } if node.depth == 0 => Some((query.clone(), (**s).clone(), context.clone())),
        _ => None,
    }) else {
        return Err(TraceError::Incomplete(
            "has no run_started event with settings".into(),
        ));
    };
    let context = match (context, record.and_then(|r| r.inline)) {
        (Some(c), _) => c,
        (None, Some(v)) => ContextInput::from_json(v),
        (None, None) => {
            return Err(TraceError::Incomplete(
                "does not store its context (it was large): pass it with --context".into(),
            ));
        }
    };
    let mut answers = HashMap::new();
    for e in events {
        match e {
            Event::ModelReply {
                request_hash,
                text,
                usage,
                cost_usd,
                ..
            } => {
                answers.insert(
                    request_hash.clone(),
                    Recorded {
                        result: Ok(text.clone()),
                        usage: *usage,
                        cost_usd: *cost_usd,
                    },
                );
            }
            Event::SubCallFinished {
                kind,
                request_hash,
                result,
                usage,
                cost_usd,
                deduped: false,
                ..
            } if *kind == SubCallKind::LlmQuery => {
                answers.insert(
                    request_hash.clone(),
                    Recorded {
                        result: result.clone(),
                        usage: *usage,
                        cost_usd: *cost_usd,
                    },
                );
            }
            _ => {}
        }
    }
    let recorded_answer = events.iter().rev().find_map(|e| match e {
        Event::FinalAnswer { node, answer, .. } if node.depth == 0 => Some(answer.clone()),
        _ => None,
    });
    let tools = replay_tools(&settings.tools, events)?;
    let answers = Arc::new(answers);
    let root = Arc::new(ReplayModel {
        id: settings.root_model.clone(),
        answers: answers.clone(),
    });
    let sub = Arc::new(ReplayModel {
        id: settings.sub_model.clone(),
        answers,
    });
    let seed = parse_seed(&settings.seed).ok_or_else(|| {
        TraceError::Incomplete(format!("has a malformed seed {:?}", settings.seed))
    })?;
    let mut budget = settings.budget.clone();
    budget.max_time = None; // a replay is fast; time must not cut it differently
    let mut builder = Rlm::builder(root);
    if let Some(tokens) = settings.sub_model_context_tokens {
        builder = builder.sub_model_context_tokens(tokens);
    }
    let rlm = builder
        .sub_model(sub)
        .engine(engine)
        .max_iterations(settings.max_iterations)
        .max_depth(settings.max_depth)
        .max_output_chars(settings.max_output_chars)
        .budget(budget)
        .limits(settings.limits.clone().unwrap_or_default())
        .prompt_profile(settings.profile)
        .tools(tools)
        .seed(seed)
        .build()?;
    let result = rlm.run(context, &query).await?;
    Ok(Replay {
        recorded_answer: recorded_answer.flatten(),
        result,
    })
}

/// Recorded results of a tool, by the hash of its arguments' JSON, in the order they were given.
type ToolResults = HashMap<String, VecDeque<Result<serde_json::Value, String>>>;

/// The recorded tools, answering from the trace's `tool_call` events: a call with the same
/// arguments gets the next recorded result; an unrecorded call is an error for the model.
fn replay_tools(records: &[ToolRecord], events: &[Event]) -> Result<Vec<Tool>, TraceError> {
    let mut results: HashMap<&str, ToolResults> = HashMap::new();
    for e in events {
        if let Event::ToolCall {
            name,
            args,
            args_hash,
            result,
            ..
        } = e
        {
            // Events keep long arguments cut, with the hash of the whole; older traces kept
            // them whole, without it.
            let key = if args_hash.is_empty() {
                args_key(args)
            } else {
                args_hash.clone()
            };
            results
                .entry(name.as_str())
                .or_default()
                .entry(key)
                .or_default()
                .push_back(result.clone());
        }
    }
    records
        .iter()
        .map(|r| {
            let recorded = Arc::new(Mutex::new(
                results.remove(r.name.as_str()).unwrap_or_default(),
            ));
            Tool::new(
                r.name.clone(),
                r.description.clone(),
                r.parameters.clone(),
                move |args| {
                    let next = recorded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_mut(&args_key(&args))
                        .and_then(VecDeque::pop_front);
                    async move {
                        next.unwrap_or_else(|| {
                            Err(
                                "the trace has no result for this call (the replay diverged)"
                                    .to_string(),
                            )
                        })
                    }
                },
            )
            .map_err(|e| TraceError::Incomplete(format!("records an unusable tool: {e}")))
        })
        .collect()
}

fn parse_seed(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A trace file may come from anywhere: any lines read as events or give an error that names
    /// the line, never a panic.
    fn read_lines(lines: &[String]) -> Result<Vec<Event>, TraceError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(file, "{l}").unwrap();
        }
        read_trace(file.path())
    }

    fn budget_json() -> impl Strategy<Value = String> {
        let num = prop_oneof![
            Just("null".to_string()),
            proptest::num::f64::ANY.prop_map(|f| if f.is_finite() {
                f.to_string()
            } else {
                "1e999".to_string()
            }),
            proptest::num::i64::ANY.prop_map(|i| i.to_string()),
        ];
        (num.clone(), num.clone(), num.clone(), num).prop_map(|(a, b, c, d)| {
            format!(r#"{{"max_sub_calls":{a},"max_tokens":{b},"max_usd":{c},"max_time":{d}}}"#)
        })
    }

    proptest! {
        #[test]
        fn any_lines_read_without_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..6)) {
            if let Err(TraceError::Parse { line, .. }) = read_lines(&lines) {
                prop_assert!(line >= 1 && line <= lines.len());
            }
        }

        /// A run_started line with any numbers in its budget: an event or a parse error.
        #[test]
        fn any_recorded_budget_reads_without_panic(budget in budget_json(), depth in any::<i64>()) {
            let line = format!(
                r#"{{"type":"run_started","rlm":"root","depth":{depth},"query":"q","settings":{{"root_model":"m","sub_model":"m","max_iterations":1,"max_depth":1,"max_output_chars":10,"budget":{budget},"seed":"00"}}}}"#
            );
            let _ = read_lines(&[line]);
        }
    }

    /// A trace holds the run's context and every reply: only its owner may read it, whether
    /// it is new or an existing file being replaced.
    #[cfg(unix)]
    #[test]
    fn traces_are_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let new = dir.path().join("new.jsonl");
        TraceWriter::create(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.jsonl");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        TraceWriter::create(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn a_negative_time_budget_is_a_parse_error_naming_the_line() {
        let good = r#"{"type":"iteration","rlm":"root","depth":0,"n":1}"#.to_string();
        let bad = r#"{"type":"run_started","rlm":"root","depth":0,"query":"q","settings":{"root_model":"m","sub_model":"m","max_iterations":1,"max_depth":1,"max_output_chars":10,"budget":{"max_time":-1},"seed":"00"}}"#.to_string();
        match read_lines(&[good, bad]) {
            Err(TraceError::Parse {
                line: 2, message, ..
            }) => {
                assert!(message.contains("max_time"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
