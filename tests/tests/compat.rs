//! The compatibility suite of issue 11: code that real models wrote for other RLM REPLs (the
//! corpus in `tests/compat/corpus`, one trajectory per file), run block by block through our
//! sandbox and through a native CPython reference of the peers' REPLs
//! (`tests/compat/reference.py`), over a small and a large synthetic context. Every block is
//! classified mechanically:
//!
//! - `ok`: ours raised nothing;
//! - `limit`: a sandbox limit (fuel, deadline, stack, crash) stopped it;
//! - `package`: ours could not import a module outside Python's standard library (third-party
//!   packages are absent by design);
//! - `code`: ours raised the same exception type as the reference (the code's own fault, e.g. it
//!   expected another document);
//! - `repl`: ours raised and the reference did not, or raised another type (our REPL's fault).
//!
//! The test fails on any `repl` block. It prints a table per size and writes the whole report
//! to `<target>/compat-report.json`. `RLM_COMPAT_JOBS` sets how many trajectories run at once
//! (default: the number of cores); `RLM_COMPAT_SIZES=small` (or `large`) runs one size only;
//! `RLM_COMPAT_KEEP=DIR` keeps the synthetic context files in DIR.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm_sandbox::{Context, LimitHit, Limits, ModelHost, Sandbox, SandboxEngine};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// Input names that hold the question rather than the document (DSPy signature fields); the
/// same list is in reference.py.
const QUESTION_NAMES: [&str; 3] = ["query", "question", "focus"];
/// How long one reference run may take before it is reported as failed.
const REFERENCE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest error line kept in the report.
const MAX_LINE: usize = 240;

// ------------------------------------------------------------------------------------------
// Sizes and the synthetic context
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Size {
    Small,
    Large,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Characters of the text context (and, in total, of the list context).
    fn chars(self) -> usize {
        match self {
            Size::Small => 200_000,
            Size::Large => 8_400_000,
        }
    }

    /// Documents in the list context.
    fn documents(self) -> usize {
        match self {
            Size::Small => 16,
            Size::Large => 64,
        }
    }
}

/// A small deterministic generator (PCG-style LCG), so every run sees the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const COMPONENTS: &[&str] = &["scheduler", "storage", "auth", "api", "billing", "replica"];
const STATUSES: &[&str] = &["ok", "ok", "ok", "retry", "failed"];
const ERRORS: &[&str] = &[
    "timeout while reading block",
    "connection refused by peer",
    "disk capacity exceeded",
    "invalid token for user",
    "replica out of sync",
    "allocation failed: no capacity",
];
/// Prose vocabulary: names and phrases the corpus's tasks look for. The oolong category words
/// ("location", "human being", ...) appear only in the question and label sections, as in the
/// data those trajectories were written for.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "a", "of", "and", "to", "in", "money", "Endowment", "Anvoy", "Saltram", "Gravener",
    "engaged", "marriage", "postponed", "fiance", "AGI", "artificial", "general", "intelligence",
    "Des", "Moines", "Polk", "County", "seat", "grew", "up", "born", "city", "river", "scheduler",
    "allocate", "replica", "capacity", "storage", "error", "warning", "result", "decided",
    "Fjord", "rolls", "natural", "check", "save", "optimizer", "signature", "module", "compile",
    "teleprompter", "Bryson", "podcast", "guest",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const SPEAKERS: &[&str] = &["Matt", "Travis", "Laura", "Sam", "Marisha"];
const SURNAMES: &[&str] = &["Smith", "Jones", "Lee"];
const TYPES: &[&str] = &[
    "location",
    "entity",
    "human being",
    "numeric value",
    "abbreviation",
    "description and abstract concept",
];
const LABELS: &[&str] = &["LOC", "ENTY", "HUM", "NUM", "ABBR", "DESC", "spam", "ham"];
const FILES: &[&str] = &[
    "docs/api/index.md",
    "docs/api/modules/Module.md",
    "docs/api/signatures/Signature.md",
    "docs/api/optimizers/BootstrapFewShot.md",
    "docs/guide/errors.md",
    "src/scheduler.py",
];

fn words(rng: &mut Rng, n: usize, out: &mut String) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(rng.pick(WORDS));
    }
}

/// Append one section of the text: a run of records of one kind (prose, log lines, questions
/// with their types, a transcript, labelled records, CSV rows, or a file banner with code), as
/// in real documents, where like follows like. Lines are short (about 50 characters on average)
/// and digits rare (about 2%), which keeps the real models' whole-text regexes and line loops
/// affordable at 8M characters.
fn section(rng: &mut Rng, index: usize, out: &mut String) {
    let kind = rng.below(20);
    let n = 10 + rng.below(30);
    match kind {
        0..=7 => {
            let _ = writeln!(out, "Chapter {index}");
            for _ in 0..n {
                let k = 6 + rng.below(7);
                words(rng, k, out);
                out.push_str(".\n");
            }
        }
        8..=10 => {
            let _ = writeln!(out, "[log {index}]");
            for _ in 0..n {
                let comp = rng.pick(COMPONENTS);
                if rng.below(4) == 0 {
                    let _ = writeln!(out, "ERROR {comp}: {}", rng.pick(ERRORS));
                } else {
                    let level = rng.pick(LEVELS);
                    let status = rng.pick(STATUSES);
                    let _ = writeln!(
                        out,
                        "{level} {comp}: request {status} in {} ms",
                        rng.below(900)
                    );
                }
            }
        }
        11..=12 => {
            for _ in 0..n {
                out.push_str("Question: ");
                let k = 3 + rng.below(4);
                words(rng, k, out);
                let _ = writeln!(out, "?\nType: {}", rng.pick(TYPES));
            }
        }
        13..=15 => {
            let _ = writeln!(out, "Transcript {index}");
            for _ in 0..n {
                let _ = write!(out, "{}: ", rng.pick(SPEAKERS));
                let k = 4 + rng.below(6);
                words(rng, k, out);
                out.push('.');
                if rng.below(6) == 0 {
                    let _ = write!(out, " Fjord rolls a {}.", 1 + rng.below(20));
                }
                out.push('\n');
            }
        }
        16..=17 => {
            for _ in 0..n {
                let (month, day) = (rng.pick(MONTHS), 1 + rng.below(28));
                let label = rng.pick(LABELS);
                let _ = writeln!(out, "Date: {month} {day} || Label: {label}");
            }
        }
        18 => {
            for _ in 0..n {
                let id = rng.below(1000);
                let _ = write!(out, "{id},{} {},\"", rng.pick(SPEAKERS), rng.pick(SURNAMES));
                words(rng, 3, out);
                out.push_str("\",\"");
                words(rng, 4, out);
                out.push_str("\"\n");
            }
        }
        _ => {
            let bar = "=".repeat(48);
            let _ = writeln!(
                out,
                "{bar}\nFILE: {}\n{bar}\nclass Scheduler:\n    def allocate_blocks(self, n):\n        \
                 return self.capacity // max(n, {})",
                rng.pick(FILES),
                1 + rng.below(9)
            );
        }
    }
}

/// A text of at least `target` characters (ASCII): a header, then sections.
fn synthetic_text(rng: &mut Rng, target: usize) -> String {
    let mut out = String::with_capacity(target + 4096);
    out.push_str("# Synthetic records for the rlm compatibility suite (deterministic)\n");
    out.push_str("id,guest,title,text\n");
    let mut i = 0;
    while out.len() < target {
        section(rng, i, &mut out);
        i += 1;
    }
    out
}

fn synthetic_documents(rng: &mut Rng, total: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|d| {
            let mut doc = format!("Document {d}\n");
            doc.push_str(&synthetic_text(rng, total / n));
            doc
        })
        .collect()
}

/// One size's contexts, on the host (shared by every sandbox) and on disk (for the reference).
struct Contexts {
    size: Size,
    text: Arc<Context>,
    text_chars: usize,
    text_path: PathBuf,
    list: Arc<Context>,
    list_documents: usize,
    list_chars: usize,
    list_path: PathBuf,
}

fn contexts(size: Size, dir: &Path) -> Contexts {
    let mut rng = Rng(0x5eed_0000 + size as u64);
    let text = synthetic_text(&mut rng, size.chars());
    let docs = synthetic_documents(&mut rng, size.chars(), size.documents());
    let text_path = dir.join(format!("{}-text.txt", size.name()));
    let list_path = dir.join(format!("{}-list.json", size.name()));
    std::fs::write(&text_path, &text).expect("write the text context");
    std::fs::write(
        &list_path,
        serde_json::to_string(&docs).expect("serialize the documents"),
    )
    .expect("write the list context");
    Contexts {
        size,
        text_chars: text.chars().count(),
        list_documents: docs.len(),
        list_chars: docs.iter().map(|d| d.chars().count()).sum(),
        text: Context::text(text),
        text_path,
        list: Context::documents(docs),
        list_path,
    }
}

// ------------------------------------------------------------------------------------------
// The corpus
// ------------------------------------------------------------------------------------------

struct Trajectory {
    file: String,
    /// "text" or "list".
    kind: String,
    inputs: Vec<String>,
    question: String,
    blocks: Vec<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/corpus")
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Read one corpus file; `Err` is the reason it is skipped.
fn parse_trajectory(file: &str, text: &str) -> Result<Trajectory, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let kind = doc
        .get("context")
        .and_then(Value::as_str)
        .ok_or("no \"context\" kind")?;
    match kind {
        "text" | "list" => {}
        "dataframe" => return Err("dataframe context: no DataFrame in our REPL".into()),
        other => {
            return Err(format!(
                "{other:?} context: this suite runs text and list contexts"
            ));
        }
    }
    let inputs = match doc.get("inputs") {
        None | Some(Value::Null) => vec!["context".to_string()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if is_identifier(s) => Ok(s.to_string()),
                _ => Err(format!("input {v} is not a Python name")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("\"inputs\" is not a list: {other}")),
    };
    let blocks = doc
        .get("blocks")
        .and_then(Value::as_array)
        .ok_or("no \"blocks\" list")?
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("block {i} is not a string"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if blocks.is_empty() {
        return Err("no blocks".into());
    }
    Ok(Trajectory {
        file: file.to_string(),
        kind: kind.to_string(),
        inputs,
        question: doc
            .get("task")
            .and_then(Value::as_str)
            .unwrap_or("What does the document say?")
            .to_string(),
        blocks,
    })
}

/// Every trajectory of the corpus, and the files skipped with their reasons.
fn load_corpus() -> (Vec<Arc<Trajectory>>, Vec<(String, String)>) {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::read_to_string(&path)
            .map_err(|e| format!("unreadable: {e}"))
            .and_then(|text| parse_trajectory(&file, &text))
        {
            Ok(t) => run.push(Arc::new(t)),
            Err(reason) => skipped.push((file, reason)),
        }
    }
    (run, skipped)
}

// ------------------------------------------------------------------------------------------
// The model host: the same stub answers as the reference
// ------------------------------------------------------------------------------------------

/// `"stub answer (N chars)"`, N the prompt's length in code points (Python's `len`); the same
/// as `stub_answer` in reference.py.
fn stub_answer(prompt: &str) -> String {
    format!("stub answer ({} chars)", prompt.chars().count())
}

struct StubHost;

#[async_trait::async_trait]
impl ModelHost for StubHost {
    async fn llm_query(&self, prompt: String, _model: Option<String>) -> Result<String, String> {
        Ok(stub_answer(&prompt))
    }

    async fn rlm_query(&self, prompt: String, _model: Option<String>) -> Result<String, String> {
        Ok(stub_answer(&prompt))
    }
}

// ------------------------------------------------------------------------------------------
// The reference run
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ReferenceBlock {
    error_type: Option<String>,
    error: Option<String>,
}

struct Reference {
    stdlib: BTreeSet<String>,
    blocks: Vec<ReferenceBlock>,
    /// Why the reference stopped early, if it did.
    problem: Option<String>,
}

fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/reference.py")
}

async fn run_reference(job: Value) -> Reference {
    let mut reference = Reference {
        stdlib: BTreeSet::new(),
        blocks: Vec::new(),
        problem: None,
    };
    let spawned = tokio::process::Command::new("python3")
        .arg(reference_script())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            reference.problem = Some(format!("could not start python3: {e}"));
            return reference;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = job.to_string().into_bytes();
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let output = match tokio::time::timeout(REFERENCE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            reference.problem = Some(format!("reference run failed: {e}"));
            return reference;
        }
        Err(_) => {
            reference.problem = Some(format!(
                "reference run took longer than {} s",
                REFERENCE_TIMEOUT.as_secs()
            ));
            return reference;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    if let Some(first) = lines
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
    {
        reference.stdlib = first
            .get("stdlib_module_names")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
    }
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            reference.problem = Some(format!("unreadable reference line: {}", clip(line)));
            break;
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        reference.blocks.push(ReferenceBlock {
            error_type: text("error_type"),
            error: text("error"),
        });
    }
    if !output.status.success() && reference.problem.is_none() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        reference.problem = Some(format!(
            "reference exited with {}: {}",
            output.status,
            clip(stderr.trim().lines().last().unwrap_or(""))
        ));
    }
    reference
}

// ------------------------------------------------------------------------------------------
// Classification
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ok,
    Limit,
    Package,
    Code,
    Repl,
}

const CLASSES: [Class; 5] = [
    Class::Ok,
    Class::Limit,
    Class::Package,
    Class::Code,
    Class::Repl,
];

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Limit => "limit",
            Class::Package => "package",
            Class::Code => "code",
            Class::Repl => "repl",
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_LINE {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_LINE).collect();
        out.push_str("...");
        out
    }
}

/// The line that names the exception in one of our errors: the first unindented line after the
/// last "Traceback" header (a SyntaxError comes without a traceback: its first unindented line).
fn exception_line(error: &str) -> &str {
    const HEADER: &str = "Traceback (most recent call last):";
    let tail = error
        .rfind(HEADER)
        .map_or(error, |i| &error[i + HEADER.len()..]);
    tail.lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
        .or_else(|| error.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
}

/// The exception's class name in an exception line ("json.decoder.JSONDecodeError: x" ->
/// "JSONDecodeError"), or "?" when the line names none.
fn exception_type(line: &str) -> String {
    let head = line.split(':').next().unwrap_or("").trim();
    let name = head.rsplit('.').next().unwrap_or("");
    if is_identifier(name) {
        name.to_string()
    } else {
        "?".to_string()
    }
}

/// The top-level module an import error names ("No module named 'a.b'" -> "a";
/// "cannot import name 'x' from 'y'" -> "y").
fn missing_module(line: &str) -> Option<String> {
    let quoted_after = |marker: &str| {
        let rest = &line[line.find(marker)? + marker.len()..];
        let rest = rest.strip_prefix('\'').or_else(|| rest.strip_prefix('"'))?;
        let end = rest.find(['\'', '"'])?;
        Some(rest[..end].split('.').next().unwrap_or("").to_string())
    };
    quoted_after("No module named ").or_else(|| quoted_after(" from "))
}

struct Ours {
    error: Option<String>,
    limit: Option<LimitHit>,
    ms: u64,
    fuel: u64,
}

fn classify(ours: &Ours, reference: Option<&ReferenceBlock>, stdlib: &BTreeSet<String>) -> Class {
    if ours.limit.is_some() {
        return Class::Limit;
    }
    let Some(error) = &ours.error else {
        return Class::Ok;
    };
    let line = exception_line(error);
    let kind = exception_type(line);
    if (kind == "ModuleNotFoundError" || kind == "ImportError")
        && !stdlib.is_empty()
        && missing_module(line).is_some_and(|m| !m.is_empty() && !stdlib.contains(&m))
    {
        return Class::Package;
    }
    match reference.and_then(|r| r.error_type.as_deref()) {
        Some(theirs) if theirs == kind => Class::Code,
        _ => Class::Repl,
    }
}

// ------------------------------------------------------------------------------------------
// Running one trajectory
// ------------------------------------------------------------------------------------------

struct BlockOutcome {
    index: usize,
    class: Class,
    ours: Option<String>,
    reference: Option<String>,
    ms: u64,
    fuel: u64,
}

struct Outcome {
    size: Size,
    trajectory: Arc<Trajectory>,
    blocks: Vec<BlockOutcome>,
    /// A failure of the harness or the sandbox itself (not of a block), if any.
    problem: Option<String>,
    /// Whether the reference ran (it is needed only when a block of ours raised).
    reference_run: bool,
    secs: f64,
}

/// Run the blocks in our sandbox; a `SandboxError` stops the run (what ran is kept).
async fn run_ours(
    engine: Arc<SandboxEngine>,
    context: Arc<Context>,
    t: &Trajectory,
) -> (Vec<Ours>, Option<String>) {
    let mut results = Vec::new();
    // The default limits, except the wall-clock deadline: fuel (CPU work, the same on every
    // machine) is the limit under test, and a busy test machine must not turn a slow block into
    // a limit hit.
    let limits = Limits {
        step_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let built = Sandbox::builder(engine)
        .limits(limits)
        .model(Arc::new(StubHost))
        .context(context)
        .build()
        .await;
    let mut sandbox = match built {
        Ok(s) => s,
        Err(e) => return (results, Some(format!("the sandbox did not start: {e}"))),
    };
    for name in &t.inputs {
        let setup = if QUESTION_NAMES.contains(&name.as_str()) {
            sandbox
                .define(name, json!(t.question))
                .await
                .map_err(|e| e.to_string())
        } else if name != "context" {
            match sandbox.exec(&format!("{name} = context")).await {
                Ok(r) if r.error.is_none() => Ok(()),
                Ok(r) => Err(r.error.unwrap_or_default()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok(())
        };
        if let Err(e) = setup {
            return (results, Some(format!("binding input {name:?} failed: {e}")));
        }
    }
    for code in &t.blocks {
        match sandbox.exec(code).await {
            Ok(r) => results.push(Ours {
                error: r.error,
                limit: r.limit,
                ms: r.elapsed.as_millis() as u64,
                fuel: r.fuel,
            }),
            Err(e) => {
                let at = results.len();
                return (
                    results,
                    Some(format!("the sandbox failed at block {at}: {e}")),
                );
            }
        }
    }
    (results, None)
}

fn reference_job(context_path: &Path, kind: &str, t: Option<&Trajectory>) -> Value {
    json!({
        "context_path": context_path,
        "context_kind": kind,
        "inputs": t.map(|t| t.inputs.clone()).unwrap_or_default(),
        "question": t.map(|t| t.question.clone()).unwrap_or_default(),
        "blocks": t.map(|t| t.blocks.clone()).unwrap_or_default(),
    })
}

async fn run_trajectory(
    engine: Arc<SandboxEngine>,
    size: Size,
    context: Arc<Context>,
    context_path: PathBuf,
    t: Arc<Trajectory>,
    stdlib: Arc<BTreeSet<String>>,
) -> Outcome {
    let started = Instant::now();
    let (ours, mut problem) = run_ours(engine, context, &t).await;
    // The reference only judges blocks of ours that raised (not a limit, not a package), so it
    // runs only when there is one; then it runs the whole trajectory, in order.
    let needed = problem.is_some()
        || ours
            .iter()
            .any(|o| classify(o, None, &stdlib) == Class::Repl);
    let reference = if needed {
        Some(run_reference(reference_job(&context_path, &t.kind, Some(&t))).await)
    } else {
        None
    };
    let mut blocks = Vec::new();
    let mut after_limit = false;
    for (index, o) in ours.iter().enumerate() {
        let theirs = reference.as_ref().and_then(|r| r.blocks.get(index));
        // Without a reference result a raising block cannot be cleared: `classify` says repl.
        let mut class = classify(o, theirs, &stdlib);
        // A block stopped by a limit is rolled back (the reference keeps its variables): a later
        // NameError is that limit's knock-on, not our REPL's fault.
        if class == Class::Repl
            && after_limit
            && o.error
                .as_deref()
                .is_some_and(|e| exception_type(exception_line(e)) == "NameError")
        {
            class = Class::Limit;
        }
        after_limit |= o.limit.is_some();
        let reference_line = match (&reference, theirs) {
            (_, Some(r)) => r.error.clone(),
            (None, None) => None,
            (Some(r), None) => Some(format!(
                "(no reference result: {})",
                r.problem.as_deref().unwrap_or("missing line")
            )),
        };
        blocks.push(BlockOutcome {
            index,
            class,
            ours: o.error.as_deref().map(|e| {
                if o.limit.is_some() {
                    clip(e.lines().next().unwrap_or(""))
                } else {
                    clip(exception_line(e))
                }
            }),
            reference: reference_line,
            ms: o.ms,
            fuel: o.fuel,
        });
    }
    // Blocks the sandbox never ran count against our REPL.
    for index in ours.len()..t.blocks.len() {
        blocks.push(BlockOutcome {
            index,
            class: Class::Repl,
            ours: Some(format!(
                "(not run: {})",
                problem.as_deref().unwrap_or("unknown")
            )),
            reference: reference
                .as_ref()
                .and_then(|r| r.blocks.get(index))
                .and_then(|r| r.error.clone()),
            ms: 0,
            fuel: 0,
        });
    }
    if problem.is_none()
        && let Some(r) = &reference
        && let Some(p) = &r.problem
        && r.blocks.len() < t.blocks.len()
    {
        problem = Some(format!("reference: {p}"));
    }
    Outcome {
        size,
        trajectory: t,
        blocks,
        problem,
        reference_run: reference.is_some(),
        secs: started.elapsed().as_secs_f64(),
    }
}

// ------------------------------------------------------------------------------------------
// The report
// ------------------------------------------------------------------------------------------

fn counts(blocks: &[&BlockOutcome]) -> BTreeMap<Class, usize> {
    let mut c: BTreeMap<Class, usize> = CLASSES.iter().map(|&k| (k, 0)).collect();
    for b in blocks {
        *c.entry(b.class).or_default() += 1;
    }
    c
}

fn counts_json(c: &BTreeMap<Class, usize>) -> Value {
    Value::Object(
        c.iter()
            .map(|(k, v)| (k.name().to_string(), json!(v)))
            .collect(),
    )
}

fn size_report(
    ctx: &Contexts,
    outcomes: &[&Outcome],
    skipped: &[(String, String)],
) -> (String, Value) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n== compat suite, {} context: text {} chars; list {} documents, {} chars ==",
        ctx.size.name(),
        ctx.text_chars,
        ctx.list_documents,
        ctx.list_chars
    );
    let _ = writeln!(
        table,
        "{:<34} {:>4} {:>6} {:>5} {:>5} {:>7} {:>5} {:>5} {:>7} {:>3}",
        "trajectory", "kind", "blocks", "ok", "limit", "package", "code", "repl", "secs", "ref"
    );
    let mut all = Vec::new();
    let mut detail = Vec::new();
    for o in outcomes {
        let bs: Vec<&BlockOutcome> = o.blocks.iter().collect();
        let c = counts(&bs);
        let _ = writeln!(
            table,
            "{:<34} {:>4} {:>6} {:>5} {:>5} {:>7} {:>5} {:>5} {:>7.1} {:>3}",
            o.trajectory.file,
            o.trajectory.kind,
            bs.len(),
            c[&Class::Ok],
            c[&Class::Limit],
            c[&Class::Package],
            c[&Class::Code],
            c[&Class::Repl],
            o.secs,
            if o.reference_run { "yes" } else { "-" }
        );
        detail.push(json!({
            "file": o.trajectory.file,
            "kind": o.trajectory.kind,
            "secs": o.secs,
            "problem": o.problem,
            "reference_run": o.reference_run,
            "counts": counts_json(&c),
            "blocks": o.blocks.iter().map(|b| json!({
                "index": b.index,
                "class": b.class.name(),
                "ours": b.ours,
                "reference": b.reference,
                "ms": b.ms,
                "fuel": b.fuel,
            })).collect::<Vec<_>>(),
        }));
        all.extend(bs);
    }
    let total = counts(&all);
    let _ = writeln!(
        table,
        "{:<34} {:>4} {:>6} {:>5} {:>5} {:>7} {:>5} {:>5}",
        format!("TOTAL ({} trajectories)", outcomes.len()),
        "",
        all.len(),
        total[&Class::Ok],
        total[&Class::Limit],
        total[&Class::Package],
        total[&Class::Code],
        total[&Class::Repl],
    );
    for (file, reason) in skipped {
        let _ = writeln!(table, "skipped: {file}: {reason}");
    }
    let problems: Vec<Value> = outcomes
        .iter()
        .filter_map(|o| {
            o.problem
                .as_ref()
                .map(|p| json!({"file": o.trajectory.file, "problem": p}))
        })
        .collect();
    for p in &problems {
        let _ = writeln!(table, "PROBLEM: {}: {}", p["file"], p["problem"]);
    }
    let listed = |class: Class| -> Vec<Value> {
        outcomes
            .iter()
            .flat_map(|o| {
                o.blocks.iter().filter(move |b| b.class == class).map(|b| {
                    json!({
                        "file": o.trajectory.file,
                        "block": b.index,
                        "ours": b.ours,
                        "reference": b.reference,
                        "ms": b.ms,
                    })
                })
            })
            .collect()
    };
    let limits = listed(Class::Limit);
    let repl = listed(Class::Repl);
    let show = |v: &Value, k: &str| v[k].as_str().unwrap_or("(none)").to_string();
    if !limits.is_empty() {
        let _ = writeln!(table, "limit-class blocks ({}):", limits.len());
        for l in &limits {
            let _ = writeln!(
                table,
                "  {} block {} ({} ms): {}",
                show(l, "file"),
                l["block"],
                l["ms"],
                show(l, "ours")
            );
        }
    }
    let _ = writeln!(table, "repl-class failures ({}):", repl.len());
    for r in &repl {
        let _ = writeln!(
            table,
            "  {} block {}: {}\n      reference: {}",
            show(r, "file"),
            r["block"],
            show(r, "ours"),
            show(r, "reference")
        );
    }
    let report = json!({
        "size": ctx.size.name(),
        "text_chars": ctx.text_chars,
        "list_documents": ctx.list_documents,
        "list_chars": ctx.list_chars,
        "trajectories": outcomes.len(),
        "blocks": all.len(),
        "counts": counts_json(&total),
        "skipped": skipped.iter().map(|(f, r)| json!({"file": f, "reason": r})).collect::<Vec<_>>(),
        "problems": problems,
        "repl_failures": repl,
        "limits": limits,
        "trajectories_detail": detail,
    });
    (table, report)
}

fn report_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("compat-report.json")
}

fn sizes() -> Vec<Size> {
    match std::env::var("RLM_COMPAT_SIZES").as_deref() {
        Ok("small") => vec![Size::Small],
        Ok("large") => vec![Size::Large],
        _ => vec![Size::Small, Size::Large],
    }
}

fn jobs() -> usize {
    std::env::var("RLM_COMPAT_JOBS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn real_model_code_runs_in_our_repl_on_small_and_large_contexts() {
    let started = Instant::now();
    let engine = SandboxEngine::load().expect("load the guest (run `just guest`)");
    let (trajectories, skipped) = load_corpus();
    assert!(
        !trajectories.is_empty(),
        "no trajectories in {}",
        corpus_dir().display()
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    // RLM_COMPAT_KEEP=DIR keeps the context files there, to rerun a block by hand.
    let dir =
        std::env::var_os("RLM_COMPAT_KEEP").map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("context dir");
    let sizes = sizes();
    let contexts: Vec<Arc<Contexts>> = sizes.iter().map(|&s| Arc::new(contexts(s, &dir))).collect();

    // The standard library's module names, as the reference's Python reports them.
    let first = contexts.first().expect("a size");
    let probe = run_reference(reference_job(&first.text_path, "text", None)).await;
    assert!(
        !probe.stdlib.is_empty(),
        "python3 tests/compat/reference.py did not report the stdlib modules: {:?}",
        probe.problem
    );
    let stdlib = Arc::new(probe.stdlib);

    // Every (size, trajectory), largest size first so the longest runs start early.
    let jobs = jobs();
    let gate = Arc::new(Semaphore::new(jobs));
    let mut handles = Vec::new();
    for ctx in contexts.iter().rev() {
        for t in &trajectories {
            let (context, path) = if t.kind == "list" {
                (ctx.list.clone(), ctx.list_path.clone())
            } else {
                (ctx.text.clone(), ctx.text_path.clone())
            };
            let (engine, gate, t, size) = (engine.clone(), gate.clone(), t.clone(), ctx.size);
            let stdlib = stdlib.clone();
            handles.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                run_trajectory(engine, size, context, path, t, stdlib).await
            }));
        }
    }
    let mut outcomes = Vec::new();
    for h in handles {
        match h.await {
            Ok(o) => outcomes.push(o),
            Err(e) => panic!("a trajectory task panicked: {e}"),
        }
    }

    let mut reports = Vec::new();
    let mut repl_total = 0;
    let mut problem_total = 0;
    for ctx in &contexts {
        let mut of_size: Vec<&Outcome> = outcomes.iter().filter(|o| o.size == ctx.size).collect();
        of_size.sort_by(|a, b| a.trajectory.file.cmp(&b.trajectory.file));
        repl_total += of_size
            .iter()
            .flat_map(|o| &o.blocks)
            .filter(|b| b.class == Class::Repl)
            .count();
        problem_total += of_size.iter().filter(|o| o.problem.is_some()).count();
        let (table, report) = size_report(ctx, &of_size, &skipped);
        println!("{table}");
        reports.push(report);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let path = report_path();
    let report = json!({
        "elapsed_s": elapsed,
        "jobs": jobs,
        "classes": {
            "ok": "ours raised nothing",
            "limit": "a sandbox limit stopped the block",
            "package": "ours could not import a module outside the standard library",
            "code": "ours and the reference raised the same exception type",
            "repl": "ours raised and the reference did not, or raised another type",
        },
        "sizes": reports,
    });
    match serde_json::to_string_pretty(&report).map(|s| std::fs::write(&path, s)) {
        Ok(Ok(())) => println!("report: {} ({elapsed:.1} s, {jobs} jobs)", path.display()),
        Ok(Err(e)) => println!("could not write {}: {e}", path.display()),
        Err(e) => println!("could not serialize the report: {e}"),
    }
    assert_eq!(
        (repl_total, problem_total),
        (0, 0),
        "{repl_total} block(s) failed because of our REPL and {problem_total} trajectory run(s) \
         had a harness or sandbox problem; see the tables above and {}",
        path.display()
    );
}

#[test]
fn exception_lines_and_missing_modules_are_read_from_our_errors() {
    let tb = "Traceback (most recent call last):\n  File \"<step 2>\", line 1, in <module>\n    \
              import pandas\nModuleNotFoundError: No module named 'pandas.io'\n";
    assert_eq!(
        exception_line(tb),
        "ModuleNotFoundError: No module named 'pandas.io'"
    );
    assert_eq!(
        missing_module(exception_line(tb)).as_deref(),
        Some("pandas")
    );
    let syntax = "  File \"<step 3>\", line 15\n    x = \"\"\"a\"\"\"\"\n        ^\n\
                  SyntaxError: unterminated string literal (detected at line 15)";
    assert_eq!(exception_type(exception_line(syntax)), "SyntaxError");
    let chained = "Traceback (most recent call last):\n  File \"<step 1>\", line 2\nKeyError: 'a'\n\n\
                   During handling of the above exception, another exception occurred:\n\n\
                   Traceback (most recent call last):\n  File \"<step 1>\", line 4\n\
                   json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)";
    assert_eq!(exception_type(exception_line(chained)), "JSONDecodeError");
    assert_eq!(
        missing_module("ImportError: cannot import name 'x' from 'foo.bar' (unknown location)")
            .as_deref(),
        Some("foo")
    );
    assert!(stub_answer("héllo").ends_with("(5 chars)"));
}
