//! Resource limits of a sandbox, with safe defaults.

use std::time::Duration;

use crate::error::SandboxError;
use crate::memory::{WASM32_MAX_MEMORY, WHOLE_FACTOR};

fn default_max_memory() -> u64 {
    WASM32_MAX_MEMORY
}

/// Largest piece of a lazy context that loads as a real object when no threshold is set.
const DEFAULT_PIECE_CHARS: u64 = 64 << 20;

/// Fuel units that one CPU-second of guest Python burns, measured on the reference machine
/// (2-core x86_64) by CPU time over five workloads (a loop, json, regex, string building,
/// sorting dicts): 3.6 × 10^9 to 1.1 × 10^10, median 7.4 × 10^9 (`RLM_BENCH_ONLY=fuel just bench`
/// prints the figures for yours). Code that spends its time in C (sorting) burns fuel slowest. Used to
/// turn CPU-time budgets into fuel.
pub const FUEL_PER_CPU_SECOND: u64 = 7_000_000_000;

/// CPU-seconds of fuel a step gets by default (at [`FUEL_PER_CPU_SECOND`]; measured rates make
/// it 38 CPU-seconds for regex in Python to over 110 for sorting, where the step's 120 s
/// deadline may stop it first). Chosen so that the
/// whole-document sweeps real model code makes finish: over 32 MB, `re.findall` and a
/// line-by-line `re.search` loop take under 1 s, and the slowest sweep of the compatibility corpus,
/// a real model's `re.findall(r'.{0,200}(grew up|born|...).{0,200}', context, re.I)` over 8.4 M
/// characters, needs about 3.7 × 10^11 units. A runaway loop is still stopped after about
/// 47 CPU-seconds (a Python loop burns 9.0 × 10^9 units per CPU-second), within the 120 s step
/// deadline.
pub const DEFAULT_STEP_CPU_SECONDS: u64 = 60;

/// Every limit a sandbox enforces. Each has a safe default; see [`Limits::default`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one step may burn. Default: about 60 CPU-seconds
    /// ([`DEFAULT_STEP_CPU_SECONDS`]).
    pub fuel_per_step: u64,
    /// Bytes of linear memory one REPL may grow to, before its contexts: each context that
    /// loads whole as real Python objects adds [`WHOLE_FACTOR`] times its guest size (see
    /// [`crate::memory`]). Default: 512 MiB.
    pub memory_bytes: u64,
    /// The most linear memory one REPL may have, contexts included. Contexts that would take a
    /// REPL past it stay lazy. Default: 4 GiB, the wasm32 ceiling.
    #[serde(default = "default_max_memory")]
    pub max_memory_bytes: u64,
    /// Wall-clock time of one step, including time spent waiting on host calls. Default: 120 s.
    pub step_timeout: Duration,
    /// Bytes kept of each of stdout and stderr per step (the rest is counted, not kept).
    /// Default: 256 KiB.
    pub max_output_bytes: u64,
    /// Largest string the host sends into the guest in one piece. Default: 16 MiB.
    pub max_host_string_bytes: u64,
    /// Host calls (context reads, searches, model calls) one step may make. Default: 100,000.
    pub max_host_calls_per_step: u64,
    /// Contexts above this many characters are lazy (served by the host) even when they would
    /// fit the REPL's memory; pieces of a lazy context (slices, list items) up to it load as
    /// real objects. Default: no fixed threshold (`u64::MAX`): the memory rule alone decides
    /// whether a context loads whole, and lazy pieces load up to 64 Mi characters.
    pub lazy_threshold_chars: u64,
    /// Characters the guest reads from the host per call when it loads text. Default: 1 Mi.
    pub read_chunk_chars: u64,
    /// Matches one `search` call may return at most. Default: 10,000.
    pub max_search_results: u32,
    /// Bytes of step code and model answers the REPL keeps to restore itself after a trap
    /// (prompts are not kept). Past it, a trap restarts the REPL instead. Default: 64 MiB.
    #[serde(default = "default_max_journal")]
    pub max_journal_bytes: u64,
    /// Custom-tool calls one step may make (each also counts as a host call). Past it, a call
    /// raises `ToolError` without reaching the tool. Default: 1,000.
    #[serde(default = "default_max_tool_calls")]
    pub max_tool_calls_per_step: u64,
    /// Bytes of JSON arguments one custom-tool call may pass, checked before they are parsed
    /// (parsed JSON takes up to about 30 times its text). Past it, the call raises `ToolError`
    /// without reaching the tool. Default: 1 MiB.
    #[serde(default = "default_max_tool_args")]
    pub max_tool_args_bytes: u64,
    /// Once the steps since the REPL's last checkpoint took longer than this (and longer than
    /// taking the last checkpoint did), the REPL saves its state (its variables, functions and
    /// classes, and the `random` generator; see the guest's `rlm_checkpoint`) after the step. A
    /// trap is then recovered by restoring that checkpoint into a fresh instance and replaying
    /// only the steps after it: the cost follows the size of the state, not the length of the
    /// history. The rule keeps the time spent on checkpoints below the time spent on steps. A
    /// state that cannot be saved (a generator, a kept traceback, ...) or is larger than
    /// `max_checkpoint_bytes` makes recovery replay the journal instead. `Duration::MAX` turns
    /// checkpoints off. Default: 2 ms (short sessions take none: replaying them is as cheap).
    #[serde(default = "default_checkpoint_after")]
    pub checkpoint_after: Duration,
    /// Bytes of one checkpoint at most (the host keeps the latest per REPL). Default: 32 MiB.
    #[serde(default = "default_max_checkpoint")]
    pub max_checkpoint_bytes: u64,
    /// Once replaying the journal would take longer than this (the time the journal's entries
    /// took: context loads, definitions, steps), the REPL keeps a standby: a second instance that
    /// follows each successful step in the background (starting from the latest checkpoint), so
    /// a trap is recovered by swapping it in, in microseconds. It doubles the REPL's CPU and
    /// memory, so it is off by default (`Duration::MAX`): checkpoints bound recovery already.
    /// (A REPL whose state cannot be checkpointed keeps one anyway once replaying its steps
    /// since the last checkpoint would take more than 50 ms, and drops it when a checkpoint
    /// succeeds again.)
    /// The standby's memory is charged to the same memory budget; it is dropped when the budget
    /// runs short.
    #[serde(default = "default_standby_after")]
    pub standby_after: Duration,
}

fn default_checkpoint_after() -> Duration {
    Duration::from_millis(2)
}

fn default_max_checkpoint() -> u64 {
    32 << 20
}

fn default_standby_after() -> Duration {
    Duration::MAX
}

fn default_max_journal() -> u64 {
    64 << 20
}

fn default_max_tool_calls() -> u64 {
    1_000
}

fn default_max_tool_args() -> u64 {
    1 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel_per_step: DEFAULT_STEP_CPU_SECONDS * FUEL_PER_CPU_SECOND,
            memory_bytes: 512 << 20,
            step_timeout: Duration::from_secs(120),
            max_output_bytes: 256 << 10,
            max_host_string_bytes: 16 << 20,
            max_host_calls_per_step: 100_000,
            max_memory_bytes: WASM32_MAX_MEMORY,
            lazy_threshold_chars: u64::MAX,
            read_chunk_chars: 1 << 20,
            max_search_results: 10_000,
            max_journal_bytes: default_max_journal(),
            max_tool_calls_per_step: default_max_tool_calls(),
            max_tool_args_bytes: default_max_tool_args(),
            checkpoint_after: default_checkpoint_after(),
            max_checkpoint_bytes: default_max_checkpoint(),
            standby_after: default_standby_after(),
        }
    }
}

impl Limits {
    /// Fuel for a CPU-time budget, using [`FUEL_PER_CPU_SECOND`].
    pub fn fuel_for(cpu: Duration) -> u64 {
        (cpu.as_secs_f64() * FUEL_PER_CPU_SECOND as f64) as u64
    }

    /// The memory cap of a REPL whose whole-loaded contexts take `whole_bytes` in the guest.
    pub fn memory_cap(&self, whole_bytes: u64) -> u64 {
        self.memory_bytes
            .saturating_add(whole_bytes.saturating_mul(WHOLE_FACTOR))
            .min(self.max_memory_bytes)
    }

    /// Whether a context of `chars` characters (as a whole) taking `bytes` in the guest may load
    /// whole into a REPL that already holds `whole_bytes` of whole contexts.
    pub fn loads_whole(&self, chars: u64, bytes: u64, whole_bytes: u64) -> bool {
        chars <= self.lazy_threshold_chars
            && self.memory_bytes.saturating_add(
                whole_bytes
                    .saturating_add(bytes)
                    .saturating_mul(WHOLE_FACTOR),
            ) <= self.max_memory_bytes
    }

    /// Largest piece of a lazy context that loads as a real object (slices, items).
    pub fn piece_chars(&self) -> u64 {
        self.lazy_threshold_chars.min(DEFAULT_PIECE_CHARS)
    }

    /// Check that the limits are usable together.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |msg: String| Err(SandboxError::InvalidLimits(msg));
        if self.fuel_per_step == 0 {
            return bad("fuel_per_step must be above 0".into());
        }
        if self.memory_bytes < 64 << 20 {
            return bad(format!(
                "memory_bytes is {} MiB; the Python guest needs at least 64 MiB",
                self.memory_bytes >> 20
            ));
        }
        if self.step_timeout.is_zero() {
            return bad("step_timeout must be above 0".into());
        }
        if self.max_host_string_bytes < 4096 {
            return bad("max_host_string_bytes must be at least 4096".into());
        }
        // A read of one chunk can be 4 bytes per character in UTF-8.
        if self.read_chunk_chars == 0 || self.read_chunk_chars * 4 > self.max_host_string_bytes {
            return bad(format!(
                "read_chunk_chars ({}) must be between 1 and max_host_string_bytes / 4 ({})",
                self.read_chunk_chars,
                self.max_host_string_bytes / 4
            ));
        }
        if self.max_memory_bytes < self.memory_bytes || self.max_memory_bytes > WASM32_MAX_MEMORY {
            return bad(format!(
                "max_memory_bytes ({} MiB) must be between memory_bytes ({} MiB) and 4096 MiB \
                 (the wasm32 ceiling)",
                self.max_memory_bytes >> 20,
                self.memory_bytes >> 20
            ));
        }
        Ok(())
    }
}
