//! Results files: one JSON object per line, a `run` header for each start of a run and a `task`
//! record for each (task, method) answered. Appending makes runs resumable; headers make shards
//! checkable when they are merged.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// Which part of a run a process does: the planned (task, method) units whose position modulo
/// `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, 0-based: `0/4` … `3/4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Written when a run (or one shard of it) starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// Hash of the plan and settings: shards of one run share it.
    pub config: String,
    /// The shard, if the run was split.
    pub shard: Option<Shard>,
    /// (task, method) units this process was to answer.
    pub planned: usize,
    /// The method names.
    pub methods: Vec<String>,
    /// Seconds since the Unix epoch.
    pub started_unix: u64,
    /// The rlm version.
    pub version: String,
}

/// How a unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStop {
    /// The method gave its final answer.
    Final,
    /// The RLM's iterations ran out (its best answer is kept).
    MaxIterations,
    /// The task's budget of tokens, dollars or sub-calls ran out.
    Budget,
    /// The task's time ran out.
    Timeout,
    /// An infrastructure failure (a model call after its retries, a setup error): a resume
    /// runs it again.
    Error,
}

impl UnitStop {
    /// The name in results files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::MaxIterations => "max_iterations",
            Self::Budget => "budget",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for UnitStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one task answered by one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub task_id: String,
    /// Dataset (a family's name, or a user file's stem).
    pub dataset: String,
    /// Requested context size in tokens (generated datasets).
    pub size: Option<u64>,
    /// About how many tokens the context has.
    pub context_tokens: u64,
    /// The method's name.
    pub method: String,
    /// Root model id.
    pub root_model: String,
    /// Sub-model id (RLM methods).
    pub sub_model: Option<String>,
    /// The question.
    pub question: String,
    /// The gold answer.
    pub gold: String,
    /// The answer, if any.
    pub answer: Option<String>,
    /// 0..=1 from the task's scorer.
    pub score: f64,
    /// 0 or 1 from the LLM judge, when one was asked.
    pub judge: Option<f64>,
    /// `final`, `max_iterations`, `budget`, `timeout` or `error`.
    pub stop: UnitStop,
    /// Why, for budget, timeout and error stops.
    pub detail: Option<String>,
    /// Root iterations (1 for `direct`).
    pub iterations: u32,
    /// Model calls, all levels.
    pub calls: u64,
    /// Sub-calls (`llm_query`, `rlm_query`).
    pub sub_calls: u64,
    /// Input tokens, all calls.
    pub input_tokens: u64,
    /// Output tokens, all calls.
    pub output_tokens: u64,
    /// Dollars over priced calls.
    pub cost_usd: f64,
    /// Calls without a price.
    pub unpriced_calls: u64,
    /// Wall-clock seconds.
    pub latency_s: f64,
    /// `direct`: the context was cut to the window.
    pub truncated: Option<bool>,
    /// The trace file, if traces were written.
    pub trace: Option<String>,
    /// The shard that answered it.
    pub shard: Option<Shard>,
}

impl TaskRecord {
    /// The (task, method) key a resume or merge matches on.
    pub fn key(&self) -> (String, String) {
        (self.task_id.clone(), self.method.clone())
    }

    /// An infrastructure failure that a resume should retry.
    pub fn is_error(&self) -> bool {
        self.stop == UnitStop::Error
    }
}

/// One line of a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// A run header.
    Run(RunHeader),
    /// A task record.
    Task(Box<TaskRecord>),
}

/// What a results file holds.
#[derive(Debug, Default, Clone)]
pub struct Results {
    /// Headers, in order.
    pub headers: Vec<RunHeader>,
    /// Records, in order (a key may repeat: later ones win).
    pub records: Vec<TaskRecord>,
    /// Lines that did not parse (a run killed mid-write leaves one).
    pub bad_lines: usize,
}

impl Results {
    /// Read a results file.
    pub fn read(path: &Path) -> Result<Results, EvalError> {
        let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut out = Results::default();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|source| EvalError::Io {
                path: path.display().to_string(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::Run(h)) => out.headers.push(h),
                Ok(Line::Task(r)) => out.records.push(*r),
                Err(_) => out.bad_lines += 1,
            }
        }
        Ok(out)
    }

    /// Read several files into one.
    pub fn read_all(paths: &[impl AsRef<Path>]) -> Result<Results, EvalError> {
        let mut out = Results::default();
        for p in paths {
            let r = Results::read(p.as_ref())?;
            out.headers.extend(r.headers);
            out.records.extend(r.records);
            out.bad_lines += r.bad_lines;
        }
        Ok(out)
    }

    /// The latest record per (task, method); a later error does not replace an earlier answer.
    pub fn latest(&self) -> Vec<TaskRecord> {
        let mut by_key: BTreeMap<(String, String), TaskRecord> = BTreeMap::new();
        for r in &self.records {
            let keep_old = by_key
                .get(&r.key())
                .is_some_and(|old| r.is_error() && !old.is_error());
            if !keep_old {
                by_key.insert(r.key(), r.clone());
            }
        }
        by_key.into_values().collect()
    }
}

/// Appends lines to a results file, starting a new line if a killed run left half of one.
pub struct ResultsWriter {
    file: std::fs::File,
    path: String,
}

impl ResultsWriter {
    /// Open `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self, EvalError> {
        let io = |source| EvalError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if last_byte(&mut file)
            .map_err(io)?
            .is_some_and(|c| c != b'\n')
        {
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Self {
            file,
            path: path.display().to_string(),
        })
    }

    /// Append one line and flush it.
    pub fn write(&mut self, line: &Line) -> Result<(), EvalError> {
        let mut text = serde_json::to_string(line).map_err(|e| EvalError::Bad {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| EvalError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// The last byte of a file (without reading the rest).
fn last_byte(file: &mut std::fs::File) -> std::io::Result<Option<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(Some(b[0]))
}

/// What merging shards found.
#[derive(Debug, Default)]
pub struct MergeReport {
    /// Records in the merged file.
    pub records: usize,
    /// Shard count of the run (0 when unsharded).
    pub shard_count: u32,
    /// Shards with no header in the inputs.
    pub missing_shards: Vec<u32>,
    /// Planned units with no record (all shards' plans together, minus records).
    pub missing_units: usize,
    /// Records whose last attempt was an error.
    pub errors: usize,
}

impl MergeReport {
    /// Every shard is there and every planned unit has a record.
    pub fn complete(&self) -> bool {
        self.missing_shards.is_empty() && self.missing_units == 0
    }
}

/// Join the results of a run's shards into `out`: one header, the latest record per unit.
/// Fails if the inputs come from different runs (different plans or settings).
pub fn merge(inputs: &[impl AsRef<Path>], out: &Path) -> Result<MergeReport, EvalError> {
    let all = Results::read_all(inputs)?;
    let configs: BTreeSet<&str> = all.headers.iter().map(|h| h.config.as_str()).collect();
    if configs.len() > 1 {
        return Err(EvalError::Bad {
            path: out.display().to_string(),
            line: 0,
            message: format!(
                "the inputs come from {} different runs (plans or settings differ); merge the \
                 shards of one run at a time",
                configs.len()
            ),
        });
    }
    let first = all.headers.first().cloned();
    let shard_count = all
        .headers
        .iter()
        .filter_map(|h| h.shard.map(|s| s.count))
        .max()
        .unwrap_or(0);
    let present: BTreeSet<u32> = all
        .headers
        .iter()
        .filter_map(|h| h.shard.map(|s| s.index))
        .collect();
    // A shard planned the same units on every restart: count each shard's plan once.
    let mut planned_by_shard: BTreeMap<Option<Shard>, usize> = BTreeMap::new();
    for h in &all.headers {
        planned_by_shard.insert(h.shard, h.planned);
    }
    let planned: usize = planned_by_shard.values().sum();
    let records = all.latest();
    let report = MergeReport {
        records: records.len(),
        shard_count,
        missing_shards: (0..shard_count).filter(|i| !present.contains(i)).collect(),
        missing_units: planned.saturating_sub(records.len()),
        errors: records.iter().filter(|r| r.is_error()).count(),
    };
    if out.exists() {
        std::fs::remove_file(out).map_err(|source| EvalError::Io {
            path: out.display().to_string(),
            source,
        })?;
    }
    let mut w = ResultsWriter::open(out)?;
    if let Some(h) = first {
        w.write(&Line::Run(RunHeader {
            shard: None,
            planned,
            ..h
        }))?;
    }
    for r in records {
        w.write(&Line::Task(Box::new(r)))?;
    }
    Ok(report)
}
