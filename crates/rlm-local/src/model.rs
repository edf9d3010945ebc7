//! The local model: one llama.cpp worker thread per model file, driven through a channel.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use rlm_llm::{
    CallRole, ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, Message, Usage,
};

use crate::error::LocalError;
use crate::fetch;

/// Settings of a local model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalOptions {
    /// Context window in tokens. Default 16,384.
    pub n_ctx: u32,
    /// CPU threads. Default: the machine's cores, at most 4.
    pub threads: u32,
    /// Most tokens per answer when the request sets none. Default 512.
    pub max_output_tokens: u32,
    /// End a root-model reply after its first complete code block (small models tend to go on
    /// and invent the block's output). Default true.
    pub stop_after_code_block: bool,
    /// Show a message and progress bars when weights must be fetched. Default true.
    pub fetch_progress: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        Self {
            n_ctx: 16_384,
            threads: cores.clamp(1, 4),
            max_output_tokens: 512,
            stop_after_code_block: true,
            fetch_progress: true,
        }
    }
}

/// One request to the worker.
struct Job {
    messages: Vec<Message>,
    max_tokens: u32,
    temperature: Option<f32>,
    /// The sampling seed when `temperature` is set: the request's `extra.seed` if given, else
    /// drawn from the prompt (reproducible, but not the same draws for every conversation).
    seed: Option<u32>,
    stop: Vec<String>,
    stop_after_code_block: bool,
    reply: tokio::sync::oneshot::Sender<Result<Generated, String>>,
}

/// What the worker produced.
struct Generated {
    text: String,
    prompt_tokens: u64,
    reused_tokens: u64,
    output_tokens: u64,
    finish: FinishReason,
}

/// The thread that owns a model and its context.
struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
}

fn backend() -> Result<&'static LlamaBackend, LocalError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            LlamaBackend::init()
                .map(|mut b| {
                    b.void_logs();
                    b
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LocalError::Llama(e.clone()))
}

type WorkerKey = (PathBuf, u32, u32);

fn workers() -> &'static Mutex<HashMap<WorkerKey, Weak<Worker>>> {
    static WORKERS: OnceLock<Mutex<HashMap<WorkerKey, Weak<Worker>>>> = OnceLock::new();
    WORKERS.get_or_init(Mutex::default)
}

impl Worker {
    /// The worker for this file and settings, started (and the model loaded) if needed.
    fn get(path: &Path, options: &LocalOptions) -> Result<Arc<Worker>, LocalError> {
        let key = (path.to_path_buf(), options.n_ctx, options.threads);
        let mut map = workers().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let backend = backend()?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path_owned = path.to_path_buf();
        let (n_ctx, threads) = (options.n_ctx, options.threads);
        std::thread::Builder::new()
            .name("rlm-local-model".into())
            .spawn(move || worker_main(backend, &path_owned, n_ctx, threads, rx, ready_tx))
            .map_err(|e| LocalError::Llama(format!("cannot start the model thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| LocalError::Llama("the model thread stopped while loading".into()))?
            .map_err(LocalError::Llama)?;
        let worker = Arc::new(Worker { jobs });
        map.insert(key, Arc::downgrade(&worker));
        Ok(worker)
    }
}

fn worker_main(
    backend: &'static LlamaBackend,
    path: &Path,
    n_ctx: u32,
    threads: u32,
    jobs: std::sync::mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let model = match LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(format!("loading {}: {e}", path.display())));
            return;
        }
    };
    let template = match model.chat_template(None) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(format!("{} has no chat template: {e}", path.display())));
            return;
        }
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(512)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("creating a context of {n_ctx} tokens: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // Tokens whose keys and values are in the cache, in order (sequence 0).
    let mut cached: Vec<LlamaToken> = Vec::new();
    while let Ok(job) = jobs.recv() {
        let result = generate(&model, &mut ctx, &template, &mut cached, &job, n_ctx);
        if result.is_err() {
            // A failed decode may leave the cache in any state: start clean next time.
            ctx.clear_kv_cache();
            cached.clear();
        }
        let _ = job.reply.send(result);
    }
}

/// A sampling seed drawn from the prompt: the same conversation samples the same reply (runs
/// replay), and each new conversation gets other draws (a fixed seed makes a peaked model pick
/// the same tokens turn after turn).
fn prompt_seed(prompt: &str) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(prompt.as_bytes());
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn generate(
    model: &LlamaModel,
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    template: &llama_cpp_2::model::LlamaChatTemplate,
    cached: &mut Vec<LlamaToken>,
    job: &Job,
    n_ctx: u32,
) -> Result<Generated, String> {
    let chat: Vec<LlamaChatMessage> = job
        .messages
        .iter()
        .map(|m| {
            let role = m.role.as_str();
            LlamaChatMessage::new(role.to_string(), m.content.replace('\0', ""))
                .map_err(|e| format!("bad message: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let prompt = model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| format!("chat template: {e}"))?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
    let n_prompt = tokens.len();
    if n_prompt + 16 >= n_ctx as usize {
        return Err(format!(
            "the conversation is {n_prompt} tokens, more than the local model's context of {n_ctx} \
             tokens; use a larger context (--local-ctx) or shorter outputs"
        ));
    }
    let max_new = (job.max_tokens as usize).min(n_ctx as usize - n_prompt - 1);

    // Reuse the longest cached prefix; always evaluate at least one token for fresh logits.
    let mut common = cached
        .iter()
        .zip(&tokens)
        .take_while(|(a, b)| a == b)
        .count();
    if common == n_prompt {
        common -= 1;
    }
    ctx.clear_kv_cache_seq(Some(0), Some(common as u32), None)
        .map_err(|e| e.to_string())?;
    cached.truncate(common);

    let mut batch = LlamaBatch::new(512, 1);
    let mut pos = common;
    for chunk in tokens[common..].chunks(512) {
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            let last = pos + i + 1 == n_prompt;
            batch
                .add(t, (pos + i) as i32, &[0], last)
                .map_err(|e| e.to_string())?;
        }
        ctx.decode(&mut batch).map_err(|e| format!("decode: {e}"))?;
        pos += chunk.len();
        cached.extend_from_slice(chunk);
    }

    let mut sampler = match job.temperature {
        Some(t) if t > 0.0 => {
            let seed = job.seed.unwrap_or_else(|| prompt_seed(&prompt));
            LlamaSampler::chain_simple([LlamaSampler::temp(t), LlamaSampler::dist(seed)])
        }
        _ => LlamaSampler::greedy(),
    };
    let mut bytes: Vec<u8> = Vec::new();
    let mut produced = 0usize;
    let mut finish = FinishReason::Length;
    let mut logits_at = batch.n_tokens() - 1;
    while produced < max_new {
        if job.reply.is_closed() {
            finish = FinishReason::Other("cancelled".into());
            break;
        }
        let token = sampler.sample(ctx, logits_at);
        sampler.accept(token);
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        bytes.extend(vocab.token_to_piece(token, false, None));
        produced += 1;
        batch.clear();
        batch
            .add(token, pos as i32, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(&mut batch).map_err(|e| format!("decode: {e}"))?;
        cached.push(token);
        pos += 1;
        logits_at = 0;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(cut) = stop_point(&text, &job.stop, job.stop_after_code_block) {
            bytes.truncate(cut);
            finish = FinishReason::Stop;
            break;
        }
    }
    Ok(Generated {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        prompt_tokens: n_prompt as u64,
        reused_tokens: common as u64,
        output_tokens: produced as u64,
        finish,
    })
}

/// Where to cut the text: at a stop sequence, or just after the first closed code block.
fn stop_point(text: &str, stop: &[String], after_code_block: bool) -> Option<usize> {
    if let Some(i) = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        return Some(i);
    }
    if after_code_block {
        let open = text.find("```")?;
        let body = open + 3 + text[open + 3..].find('\n')?;
        let close = text[body..].find("\n```")? + body + 4;
        return Some(close);
    }
    None
}

/// A GGUF model run in-process by llama.cpp. See the crate docs.
#[derive(Clone)]
pub struct LocalModel {
    id: String,
    worker: Arc<Worker>,
    options: LocalOptions,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("id", &self.id)
            .field("options", &self.options)
            .finish()
    }
}

impl LocalModel {
    /// Load `local/<known name>` (fetching it on first use) or `local/<path to a .gguf>`.
    /// Blocking: loading takes a second or two, a first fetch minutes.
    pub fn load(id: &str, options: LocalOptions) -> Result<Self, LocalError> {
        let name = id.strip_prefix("local/").unwrap_or(id);
        let path = match fetch::known(name) {
            Some(known) => fetch::ensure(known, options.fetch_progress)?,
            None if name.ends_with(".gguf") && Path::new(name).is_file() => {
                fetch::check_gguf(Path::new(name))?;
                PathBuf::from(name)
            }
            None => return Err(LocalError::Unknown(id.to_string())),
        };
        let worker = Worker::get(&path, &options)?;
        Ok(Self {
            id: format!("local/{name}"),
            worker,
            options,
        })
    }

    /// Whether `id` names a local model.
    pub fn is_local(id: &str) -> bool {
        id.starts_with("local/")
    }
}

#[async_trait]
impl ChatModel for LocalModel {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            max_tokens: request
                .params
                .max_output_tokens
                .unwrap_or(self.options.max_output_tokens),
            temperature: request.params.temperature,
            seed: request
                .params
                .extra
                .get("seed")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32),
            stop: request.params.stop.clone(),
            stop_after_code_block: self.options.stop_after_code_block
                && request.tag.role == CallRole::Root,
            messages: request.messages,
            reply,
        };
        let local_error = |message: String| LlmError::BadResponse {
            provider: "local",
            message,
        };
        self.worker
            .jobs
            .send(job)
            .map_err(|_| local_error("the model thread has stopped".into()))?;
        let out = rx
            .await
            .map_err(|_| local_error("the model thread dropped the request".into()))?
            .map_err(local_error)?;
        tracing::debug!(
            model = %self.id,
            prompt = out.prompt_tokens,
            reused = out.reused_tokens,
            output = out.output_tokens,
            secs = started.elapsed().as_secs_f64(),
            "local generation"
        );
        Ok(ChatResponse {
            text: out.text,
            usage: Usage {
                input_tokens: out.prompt_tokens,
                output_tokens: out.output_tokens,
                cached_input_tokens: out.reused_tokens,
            },
            model: self.id.clone(),
            finish_reason: out.finish,
            latency: started.elapsed(),
            attempts: 1,
            cost_usd: Some(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_the_first_code_block() {
        let t = "Let me look.\n```repl\nprint(1)\n```\nOutput: 1\nFINAL(1)";
        assert_eq!(
            &t[..stop_point(t, &[], true).unwrap()],
            "Let me look.\n```repl\nprint(1)\n```"
        );
        assert_eq!(stop_point("```repl\nprint(1)", &[], true), None);
        assert_eq!(stop_point("abc STOP def", &["STOP".into()], false), Some(4));
        assert_eq!(stop_point("FINAL(x)", &[], true), None);
    }
}
