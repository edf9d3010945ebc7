//! Sandbox benchmarks: prints figures, asserts nothing. Run with `just bench`.
//!
//! Set `RLM_BENCH_BIG_MB` (default 1024) to change the size of the large-context run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm_sandbox::{
    Context, EngineOptions, FUEL_PER_CPU_SECOND, Limits, ModelHost, Sandbox, SandboxEngine,
};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn row(name: &str, value: String, goal: &str) {
    println!("| {name:<44} | {value:>22} | {goal:<20} |");
}

/// CPU time this process has used (all threads): unlike wall time, not inflated by other
/// processes on a busy machine.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Ten short blocks of the kind an agent sends to a new REPL (definitions, a loop, a regex, a
/// comprehension, json, string work, printing).
const AGENT_BLOCKS: [&str; 10] = [
    "x = 1",
    "import re, json",
    "data = {'a': 1, 'b': [1, 2, 3]}",
    "def double(v):\n    return v * 2",
    "total = sum(double(i) for i in range(100))",
    "words = 'the quick brown fox jumps over the lazy dog'.split()",
    "caps = [w.upper() for w in words if len(w) > 3]",
    "found = re.findall(r'o\\w', ' '.join(words))",
    "text = json.dumps(data)",
    "print(total, caps[:2], found, len(text))",
];

/// CPU-heavy Python workloads of the kind model code runs over documents (issue 15's set).
const WORKLOADS: [(&str, &str); 5] = [
    ("loop", "t = 0\nfor i in range(3_000_000):\n    t += i"),
    (
        "json",
        "import json\nd = [{'id': i, 'name': f'n{i}', 'tags': ['a', 'b']} for i in range(20_000)]\n\
         for _ in range(5):\n    json.loads(json.dumps(d))",
    ),
    (
        "regex over text",
        "import re\ntext = 'lorem ipsum 12345 dolor sit amet 678 ' * 50_000\n\
         for _ in range(5):\n    re.findall(r'\\d+', text)",
    ),
    (
        "string building",
        "parts = []\nfor i in range(300_000):\n    parts.append(str(i) + ',')\ns = ''.join(parts)",
    ),
    (
        "sorting dicts",
        "import random\nrandom.seed(1)\nrows = [{'k': random.random(), 'v': i} for i in range(200_000)]\n\
         rows.sort(key=lambda r: r['k'])",
    ),
];

/// Round-trip times of 3,000 `x = 1` steps in one REPL with `limits`, sorted.
async fn x_equals_1(engine: &Arc<SandboxEngine>, limits: Limits) -> Vec<Duration> {
    let mut sb = Sandbox::builder(engine.clone())
        .limits(limits)
        .context(Context::text("doc"))
        .build()
        .await
        .unwrap();
    let mut steps = Vec::new();
    for _ in 0..3000 {
        let t = Instant::now();
        let r = sb.exec("x = 1").await.unwrap();
        steps.push(t.elapsed());
        assert!(r.error.is_none());
    }
    steps.sort();
    steps
}

/// The CPU time and fuel one step of `code` takes.
/// Runs of each CPU workload; the least CPU time counts (the machine is shared and noisy).
const CPU_RUNS: usize = 3;

/// The least CPU time of [`CPU_RUNS`] runs of `code` as a step, and its fuel.
async fn cpu_of(sb: &mut Sandbox, code: &str) -> (Duration, u64) {
    let mut best = (Duration::MAX, 0);
    for _ in 0..CPU_RUNS {
        let t = process_cpu();
        let r = sb.exec(code).await.unwrap();
        assert!(r.error.is_none(), "{r:?}");
        let cpu = process_cpu() - t;
        if cpu < best.0 {
            best = (cpu, r.fuel);
        }
    }
    best
}

/// The least CPU seconds of [`CPU_RUNS`] runs of `code` in native `python3` (`None` when it
/// cannot run).
fn native_cpu(code: &str) -> Option<f64> {
    let wrapper = format!(
        "import time\nbest = None\nfor _ in range({CPU_RUNS}):\n    t = time.process_time()\n    \
         exec(compile({code:?}, 'w', 'exec'), {{}})\n    \
         d = time.process_time() - t\n    best = d if best is None else min(best, d)\nprint(best)"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &wrapper])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A whole `rlm exec` process over a context file of 100 MB and of `big_mb`, loaded whole (a
/// real `str`, the default when it fits the REPL's memory) and lazy (`--lazy-threshold 0`, served
/// by the host): seconds from start to the step's output, the process's peak RSS (from
/// `wait4`, so one process's figure, not the bench's) and its peak anonymous memory (the file is
/// mapped, so the host's side of the context is the page cache's pages, not a copy).
fn big_context_processes(bin: &std::path::Path, big_mb: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    for mb in [100usize, big_mb] {
        let file = dir.path().join(format!("context-{mb}.txt"));
        std::fs::write(&file, haystack(mb << 20, "NEEDLE-7731 found")).expect("write context");
        let label = if mb >= 1024 {
            format!("{} GB", mb / 1024)
        } else {
            format!("{mb} MB")
        };
        for (mode, extra) in [
            ("whole str", &[][..]),
            ("lazy", &["--lazy-threshold", "0"][..]),
        ] {
            let mut args = vec!["--context".as_ref(), file.as_os_str()];
            args.extend(extra.iter().map(std::ffi::OsStr::new));
            let run = rlm_exec(bin, &args, "print(len(context))");
            assert!(
                run.ok && run.out.contains(&format!("{}", (mb << 20) + 17)),
                "{}",
                run.out
            );
            let peers = if mb >= 1024 {
                "<= 1 s; official rlm 3.58 s / 3098 MiB, eryx 1.59 s / 2162 MiB (earlier)"
            } else {
                ""
            };
            row(
                &format!("`rlm exec` {label} context, {mode}"),
                format!(
                    "{:.2} s, {} MiB ({} MiB anonymous)",
                    run.time.as_secs_f64(),
                    run.peak_rss >> 20,
                    run.peak_anon >> 20
                ),
                peers,
            );
        }
    }
}

/// One `rlm exec` process.
struct ExecRun {
    /// From start until its output was complete.
    time: Duration,
    out: String,
    ok: bool,
    /// Its peak resident set, in bytes.
    peak_rss: u64,
    /// Its peak anonymous resident memory (sampled every 2 ms), in bytes: the resident set less
    /// the pages of mapped files (a mapped context's are the page cache's, shared and
    /// reclaimable).
    peak_anon: u64,
}

/// Run `rlm exec ARGS -` with `step` on stdin, to the end.
fn rlm_exec(bin: &std::path::Path, args: &[&std::ffi::OsStr], step: &str) -> ExecRun {
    use std::io::{Read, Write};
    let t = Instant::now();
    // Reaped by `wait_with_peak_rss` (wait4, for the child's own rusage).
    #[allow(clippy::zombie_processes)]
    let mut child = std::process::Command::new(bin)
        .arg("exec")
        .args(args)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rlm");
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            match status_kb(&status, "RssAnon:") {
                Some(kb) => peak = peak.max(kb * 1024),
                None => break, // a zombie: the process has exited
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(step.as_bytes()).expect("write step");
    drop(stdin);
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_to_string(&mut out).expect("read output");
    let time = t.elapsed();
    let (ok, peak_rss) = wait_with_peak_rss(child.id());
    let peak_anon = sampler.join().unwrap_or(0);
    ExecRun {
        time,
        out,
        ok,
        peak_rss,
        peak_anon,
    }
}

/// The figure of `key` (in kB) in a `/proc/PID/status` text.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Wait for child `pid`; whether it succeeded, and its peak resident set in bytes.
fn wait_with_peak_rss(pid: u32) -> (bool, u64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; both pointers are to live locals.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    let ok = r == pid as libc::pid_t && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, (usage.ru_maxrss.max(0) as u64) * 1024)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kb(&s, "VmRSS:"))
        .map_or(0, |kb| kb * 1024)
}

/// A model host that answers after a fixed delay.
struct Delayed(Duration);

#[async_trait::async_trait]
impl ModelHost for Delayed {
    async fn llm_query(&self, prompt: String, _m: Option<String>) -> Result<String, String> {
        tokio::time::sleep(self.0).await;
        Ok(prompt)
    }
    async fn rlm_query(&self, prompt: String, _m: Option<String>) -> Result<String, String> {
        Ok(prompt)
    }
}

/// Varied ASCII filler of `bytes` bytes with `needle` at the very end.
fn haystack(bytes: usize, needle: &str) -> String {
    let words = [
        "patient",
        "reported",
        "mild",
        "headache",
        "after",
        "the",
        "visit",
        "blood",
        "pressure",
        "was",
        "normal",
        "follow-up",
        "in",
        "two",
        "weeks",
        "no",
        "allergies",
        "noted",
    ];
    let mut s = String::with_capacity(bytes + needle.len() + 64);
    let mut i = 0usize;
    while s.len() < bytes {
        s.push_str(words[(i * 7 + i / 13) % words.len()]);
        s.push(if i % 17 == 16 { '\n' } else { ' ' });
        i += 1;
    }
    s.truncate(bytes);
    s.push_str(needle);
    s
}

async fn step_ms(sb: &mut Sandbox, code: &str) -> f64 {
    let r = sb.exec(code).await.expect("exec");
    assert!(r.error.is_none(), "{code}: {:?}", r.error);
    r.elapsed.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let big_mb: usize = std::env::var("RLM_BENCH_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    println!(
        "rlm-sandbox benchmarks ({} cores)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // RLM_BENCH_ONLY=recovery,step (comma-separated section names) runs only those sections:
    // engine, process, fresh, step, hostcall, fuel, batch, contexts, sweep, memory, recovery.
    let only = std::env::var("RLM_BENCH_ONLY").ok();
    let want = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    println!("| {:<44} | {:>22} | {:<20} |", "what", "figure", "goal");
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(24), "-".repeat(22));

    if want("engine") {
        // Engine load with a warm artifact cache (what each process start pays).
        let _ = SandboxEngine::load().expect("guest (run `just guest`)");
        let mut loads = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let e = SandboxEngine::load().expect("engine");
            loads.push(t.elapsed());
            assert!(e.cache_hit());
        }
        loads.sort();
        row(
            "engine load, warm cache (in process)",
            ms(pct(&loads, 0.5)),
            "",
        );
    }
    let engine = SandboxEngine::load().expect("engine");

    if want("process") {
        // A whole `rlm exec` process with one step, warm cache (needs the release binary, which
        // `just bench` builds).
        let rlm = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("rlm")));
        match rlm.filter(|p| p.is_file()) {
            Some(bin) => {
                let mut runs = Vec::new();
                for _ in 0..10 {
                    let run = rlm_exec(&bin, &[], "x = 1");
                    assert!(run.ok, "{}", run.out);
                    runs.push(run.time);
                }
                runs.sort();
                row(
                    "`rlm exec` process, one step, warm cache p50",
                    ms(pct(&runs, 0.5)),
                    "<= 30 ms; Monty 79, eryx 112, official rlm 97 (earlier)",
                );
                big_context_processes(&bin, big_mb);
            }
            None => println!("(skipping the process-start figure: build target/release/rlm first)"),
        }
    }

    if want("fresh") {
        // A new REPL with a context, and a new session of 10 agent blocks, start included:
        // taken from the warm pool (given the time to refill between REPLs, as the model's
        // turns give it; the refill of the instance taken runs during the session), and with
        // the pool off (every REPL instantiates and initialises).
        let cold_engine = tokio::task::spawn_blocking(|| {
            SandboxEngine::with_options(EngineOptions {
                warm_instances: Some(0),
                ..EngineOptions::default()
            })
        })
        .await
        .unwrap()
        .expect("engine without a warm pool");
        for (label, engine) in [
            ("warm pool", engine.clone()),
            ("no pool", cold_engine.clone()),
        ] {
            let mut fresh = Vec::new();
            let mut sessions = Vec::new();
            // The first REPL of an engine starts filling its pool.
            drop(Sandbox::builder(engine.clone()).build().await.unwrap());
            for i in 0..100 {
                while engine.warm_instances() < 2 && label == "warm pool" {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let t = Instant::now();
                let mut sb = Sandbox::builder(engine.clone())
                    .context(Context::text("small doc"))
                    .build()
                    .await
                    .unwrap();
                let built = t.elapsed();
                if i % 2 == 0 {
                    fresh.push(built);
                } else {
                    for block in AGENT_BLOCKS {
                        let r = sb.exec(block).await.unwrap();
                        assert!(r.error.is_none(), "{block}: {r:?}");
                    }
                    sessions.push(t.elapsed());
                }
                drop(sb);
            }
            fresh.sort();
            sessions.sort();
            row(
                &format!("new REPL with a context p50, {label}"),
                ms(pct(&fresh, 0.5)),
                "<= 0.25 ms (issue 15)",
            );
            row(
                &format!("10 agent blocks, new session p50, {label}"),
                ms(pct(&sessions, 0.5)),
                "<= 0.5 ms (issue 15)",
            );
        }
    }

    if want("step") {
        // Step round trip, with the default limits and without checkpoints (the default takes
        // one once the steps since the last took longer than it did).
        let steps = x_equals_1(&engine, Limits::default()).await;
        row(
            "step round trip `x = 1` p50",
            ms(pct(&steps, 0.5)),
            "<= 0.1 ms",
        );
        row("step round trip `x = 1` p99", ms(pct(&steps, 0.99)), "");
        let no_checkpoints = Limits {
            checkpoint_after: Duration::MAX,
            ..Limits::default()
        };
        let steps = x_equals_1(&engine, no_checkpoints).await;
        row(
            "step round trip `x = 1` p50, no checkpoints",
            ms(pct(&steps, 0.5)),
            "",
        );
    }

    if want("hostcall") {
        // Host-call latency: guest -> host -> guest, from inside a step.
        let mut sb = Sandbox::builder(engine.clone())
            .context(Context::text("doc"))
            .build()
            .await
            .unwrap();
        let n = 100_000;
        let base = step_ms(&mut sb, &format!("for i in range({n}):\n    pass")).await;
        let calls = step_ms(
            &mut sb,
            &format!(
                "from wit_world.imports import context as _c\nfor i in range({n}):\n    _c.info(0)"
            ),
        )
        .await;
        row(
            "host-call round trip (context.info)",
            format!("{:.2} µs", (calls - base) * 1e3 / n as f64),
            "",
        );
    }

    if want("fuel") {
        // Where CPU-heavy Python's time goes: native CPython, the sandbox without metering, the
        // sandbox with fuel (which also paces the deadline checks); and fuel per CPU-second (CPU
        // time of this process, so a busy machine does not skew it), which calibrates
        // FUEL_PER_CPU_SECOND. Each figure is the least of CPU_RUNS runs.
        // No checkpoints: the rows compare running Python (checkpoints have their own row).
        let big = Limits {
            fuel_per_step: u64::MAX / 4,
            step_timeout: Duration::from_secs(600),
            checkpoint_after: Duration::MAX,
            ..Limits::default()
        };
        let unmetered_engine = tokio::task::spawn_blocking(|| {
            SandboxEngine::with_options(EngineOptions {
                unmetered: true,
                ..EngineOptions::default()
            })
        })
        .await
        .unwrap()
        .expect("unmetered engine");
        let mut metered = Sandbox::builder(engine.clone())
            .limits(big.clone())
            .build()
            .await
            .unwrap();
        let mut plain = Sandbox::builder(unmetered_engine)
            .limits(big)
            .build()
            .await
            .unwrap();
        println!(
            "(CPU seconds; native is the machine's python3 {}, the sandbox CPython 3.14)",
            std::process::Command::new("python3")
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .replace("Python ", ""))
                .unwrap_or_default()
        );
        let mut rates = Vec::new();
        for (name, code) in WORKLOADS {
            let (plain_cpu, _) = cpu_of(&mut plain, code).await;
            let (metered_cpu, fuel) = cpu_of(&mut metered, code).await;
            let rate = fuel as f64 / metered_cpu.as_secs_f64();
            rates.push(rate);
            let native = native_cpu(code);
            let vs_native = native.map_or("n/a".to_string(), |n| {
                format!("{:.1}x", metered_cpu.as_secs_f64() / n)
            });
            row(
                &format!("{name}: native / unmetered / metered"),
                format!(
                    "{} / {:.2} / {:.2} s",
                    native.map_or("n/a".to_string(), |n| format!("{n:.2}")),
                    plain_cpu.as_secs_f64(),
                    metered_cpu.as_secs_f64()
                ),
                "",
            );
            row(
                &format!("{name}: vs native, metering, fuel/CPU-s"),
                format!(
                    "{vs_native}, {:.2}x, {rate:.1e}",
                    metered_cpu.as_secs_f64() / plain_cpu.as_secs_f64()
                ),
                "<= 2.5x native",
            );
        }
        rates.sort_by(f64::total_cmp);
        row(
            "fuel per CPU-second: median (min-max)",
            format!(
                "{:.2e} ({:.1e}-{:.1e})",
                rates[rates.len() / 2],
                rates[0],
                rates[rates.len() - 1]
            ),
            &format!("constant {:.2e}", FUEL_PER_CPU_SECOND as f64),
        );
    }

    if want("batch") {
        // llm_batch concurrency through the host.
        let mut sb = Sandbox::builder(engine.clone())
            .model(Arc::new(Delayed(Duration::from_millis(200))))
            .build()
            .await
            .unwrap();
        let t = step_ms(&mut sb, "r = llm_batch([str(i) for i in range(100)])").await;
        row(
            "llm_batch of 100 at 200 ms each",
            format!("{t:.0} ms"),
            "~200 ms",
        );
    }

    if want("contexts") {
        // Large contexts: slice throughput and host regex.
        for mb in [100usize, big_mb] {
            let needle = "NEEDLE-7731 found";
            let text = haystack(mb << 20, needle);
            let len = text.len();
            let t = Instant::now();
            let ctx = Context::text(text);
            let index_ms = t.elapsed().as_secs_f64() * 1e3;
            let mut sb = Sandbox::builder(engine.clone())
                .context(ctx)
                .build()
                .await
                .unwrap();
            let label = if mb >= 1024 {
                format!("{} GB", mb / 1024)
            } else {
                format!("{mb} MB")
            };
            row(
                &format!("context load (index) {label}"),
                format!("{index_ms:.0} ms"),
                "",
            );
            let r = sb
                .exec("len(context), type(context).__name__")
                .await
                .unwrap();
            // Whole (`str`) or lazy (`LazyText`), as the memory rule decides.
            assert!(r.stdout.trim().starts_with(&format!("({len}, '")), "{r:?}");
            if mb == 100 {
                let t = step_ms(
                    &mut sb,
                    "n = 0\nfor i in range(0, len(context), 1 << 20):\n    n += len(context[i:i + (1 << 20)])",
                )
                .await;
                row(
                    "slice throughput, 1 MB slices, 100 MB",
                    format!("{:.2} GB/s", (100u64 << 20) as f64 / 1e9 / (t / 1e3)),
                    ">= 1 GB/s",
                );
            }
            let t = step_ms(
                &mut sb,
                "hits = search(r'NEEDLE-\\d+')\nassert len(hits) == 1",
            )
            .await;
            row(
                &format!("host regex search over {label}"),
                format!("{t:.1} ms"),
                if mb == 100 { "<= 30 ms" } else { "" },
            );
            let t = step_ms(&mut sb, "assert context.find('NEEDLE-7731') > 0").await;
            row(
                &format!("context.find over {label}"),
                format!("{t:.1} ms"),
                "",
            );
            let t = step_ms(
                &mut sb,
                "tail = context[-30:]\nassert tail.endswith('found')",
            )
            .await;
            row(&format!("tail slice of {label}"), format!("{t:.3} ms"), "");
            if mb != 100 {
                let t = step_ms(&mut sb, "c = context.count('patient')").await;
                row(
                    &format!("context.count over {label}"),
                    format!("{t:.0} ms"),
                    "",
                );
            }
        }
    }

    if want("sweep") {
        regex_sweep(&engine).await;
    }

    if want("memory") {
        // Memory per live REPL.
        let before = rss_bytes();
        let mut live = Vec::new();
        for _ in 0..100 {
            let mut sb = Sandbox::builder(engine.clone())
                .context(Context::text("doc"))
                .build()
                .await
                .unwrap();
            sb.exec("import json\nd = [json.dumps({'i': i}) for i in range(2000)]")
                .await
                .unwrap();
            live.push(sb);
        }
        let after = rss_bytes();
        row(
            "RSS of 100 live REPLs (after a small step)",
            format!(
                "{:.0} MiB",
                (after.saturating_sub(before)) as f64 / (1 << 20) as f64
            ),
            "<= 1.5 GB",
        );
        row(
            "RSS per live REPL",
            format!(
                "{:.1} MiB",
                (after.saturating_sub(before)) as f64 / 100.0 / (1 << 20) as f64
            ),
            "",
        );
        drop(live);
    }

    if want("recovery") {
        recovery(&engine).await;
    }
}

/// A real model's whole-context sweep (from the compatibility corpus) over 8.4 M characters of
/// ASCII prose: in the REPL (the host finds the matches, CPython confirms them), in the REPL's
/// CPython alone (over a copy of the context, which the host does not serve), and in native
/// CPython.
async fn regex_sweep(engine: &Arc<SandboxEngine>) {
    const SWEEP: &str =
        r"re.findall(r'.{0,200}(grew up|born|raised|childhood).{0,200}', TEXT, re.I)";
    let words = [
        "the", "of", "and", "to", "in", "was", "with", "for", "on", "at", "from", "his", "her",
        "town", "years", "family", "school", "moved", "later", "river", "north", "worked",
    ];
    let mut text = String::with_capacity(8_500_000);
    let mut i = 0usize;
    while text.len() < 8_400_000 {
        for k in 0..12 {
            text.push_str(words[(i * 7 + k * 3 + i / 5) % words.len()]);
            text.push(' ');
        }
        if i.is_multiple_of(500) {
            text.push_str("and she was born in Lyon");
        }
        text.push('\n');
        i += 1;
    }
    let mut sb = Sandbox::builder(engine.clone())
        .limits(Limits {
            step_timeout: Duration::from_secs(600),
            fuel_per_step: u64::MAX / 4,
            ..Limits::default()
        })
        .context(Context::text(text.clone()))
        .build()
        .await
        .unwrap();
    let fast = step_ms(
        &mut sb,
        &format!("hits = {}", SWEEP.replace("TEXT", "context")),
    )
    .await;
    let slow = step_ms(
        &mut sb,
        &format!(
            "copy = (' ' + context)[1:]\nassert {} == hits",
            SWEEP.replace("TEXT", "copy")
        ),
    )
    .await;
    let n = sb.exec("print(len(hits))").await.unwrap().stdout;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("prose.txt");
    std::fs::write(&file, &text).expect("write the text");
    let native = native_cpu(&format!(
        "import re\nTEXT = open({:?}).read()\n{SWEEP}",
        file.display().to_string()
    ))
    .map_or("n/a".to_string(), |s| format!("{s:.1} s"));
    row(
        &format!(
            "real model's regex sweep, 8.4 M chars ({} matches)",
            n.trim()
        ),
        format!("{:.3} s", fast / 1e3),
        &format!(
            "REPL's CPython alone {:.1} s; native CPython {native}",
            slow / 1e3
        ),
    );
}

/// How a trap is recovered in the recovery rows.
#[derive(Clone, Copy)]
enum Recovery {
    /// Neither checkpoints nor a standby: the whole journal is replayed.
    Replay,
    /// The defaults: the latest checkpoint is restored and the steps after it replayed.
    Checkpoint,
    /// A standby (started from the checkpoint), given the time between steps to catch up (as
    /// the model's turn gives it in the RLM loop) before the trap.
    StandbySettled,
}

/// Recovery after a trap after 6, 60 and 600 earlier steps (and after a few CPU-heavy steps),
/// each way, beside the goal.
async fn recovery(engine: &Arc<SandboxEngine>) {
    const GOAL: &str = "<= 5 ms (issue 15)";
    println!(
        "(recovery: Monty's published figure is 0.3 ms to restore a snapshot; not measured here)"
    );
    type StepCode = fn(usize) -> String;
    let light: StepCode = |i| format!("v{i} = [str(x) for x in range(200)]");
    // About 0.3 s of CPU each: the history is expensive, the state is not.
    let heavy: StepCode = |i| {
        format!(
            "v{i} = [str(x) for x in range(200)]\nn = 0\nfor _ in range(1_500_000):\n    n += 1"
        )
    };
    // A long session whose state stays bounded (the goal is stated by history length): each
    // step updates a few variables, a running list keeps its last 50 items.
    let bounded: StepCode = |i| {
        format!(
            "acc = (acc if 'acc' in globals() else [])[-49:] + [str({i})]\n\
             last = {{'step': {i}, 'words': '{i} words'.split()}}\nsize = len(acc)"
        )
    };
    let cases = [
        (6, light, "light"),
        (60, light, "light"),
        (600, light, "light"),
        (10, bounded, "bounded-state"),
        (100, bounded, "bounded-state"),
        (1000, bounded, "bounded-state"),
        (6, heavy, "0.2-s"),
    ];
    for (steps, code, kind) in cases {
        for how in [
            Recovery::Replay,
            Recovery::Checkpoint,
            Recovery::StandbySettled,
        ] {
            let defaults = Limits::default();
            let (checkpoint_after, standby_after) = match how {
                Recovery::Replay => (Duration::MAX, Duration::MAX),
                Recovery::Checkpoint => (defaults.checkpoint_after, defaults.standby_after),
                Recovery::StandbySettled => (defaults.checkpoint_after, Duration::ZERO),
            };
            // Enough fuel for the heavy steps; a trap spends it all.
            let fuel_per_step = if kind != "0.2-s" {
                300_000_000
            } else {
                6_000_000_000
            };
            let mut sb = Sandbox::builder(engine.clone())
                .limits(Limits {
                    fuel_per_step,
                    checkpoint_after,
                    standby_after,
                    ..Limits::default()
                })
                .context(Context::text("doc"))
                .build()
                .await
                .unwrap();
            let mut step_time = Duration::ZERO;
            let mut checkpoint_time = Duration::ZERO;
            for i in 0..steps {
                let r = sb.exec(&code(i)).await.unwrap();
                assert!(r.error.is_none(), "{r:?}");
                step_time += r.elapsed;
                checkpoint_time += r.checkpoint;
            }
            // The median of three traps.
            let mut times = Vec::new();
            let mut replayed = 0;
            for _ in 0..3 {
                if matches!(how, Recovery::StandbySettled) {
                    assert!(sb.settle().await, "the standby caught up");
                }
                let r = sb.exec("while True:\n    pass").await.unwrap();
                assert!(r.restored, "{r:?}");
                times.push(r.recovery);
                replayed = replayed.max(r.replayed);
            }
            times.sort();
            let label = match how {
                Recovery::Replay => "journal replay",
                Recovery::Checkpoint => "checkpoint (default)",
                Recovery::StandbySettled => "standby",
            };
            let overhead = if checkpoint_time.is_zero() {
                String::new()
            } else {
                format!(
                    ", checkpoints {:.0} % of step time",
                    checkpoint_time.as_secs_f64() / step_time.as_secs_f64() * 100.0
                )
            };
            row(
                &format!("recovery, {steps} {kind} steps, {label}"),
                format!("{} ({replayed} re-run{overhead})", ms(pct(&times, 0.5))),
                GOAL,
            );
            // The REPL's variables are intact.
            let (probe, want) = if kind == "bounded-state" {
                (
                    "acc[-1], size".to_string(),
                    format!("('{}', {})", steps - 1, steps.min(50)),
                )
            } else {
                (format!("v{} [0]", steps - 1), "'0'".to_string())
            };
            let check = sb.exec(&probe).await.unwrap();
            assert_eq!(check.stdout.trim(), want, "{check:?}");
        }
    }
}
