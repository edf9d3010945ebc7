//! Live progress of a run on stderr: a spinner line on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rlm::{Event, EventSink};

#[derive(Default)]
struct Counts {
    iteration: u32,
    last_action: String,
    subs_done: u64,
    subs_running: u64,
    tokens: u64,
    cost: f64,
}

/// Shows what a run is doing while it runs.
pub struct Progress {
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    counts: Mutex<Counts>,
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines when it is not.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            started: Instant::now(),
            bar,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Remove the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn line(&self, c: &Counts) -> String {
        format!(
            "iteration {} · {} · sub-calls {} done, {} running · {} tokens · ${:.4} · {:.1} s",
            c.iteration,
            c.last_action,
            c.subs_done,
            c.subs_running,
            c.tokens,
            c.cost,
            self.started.elapsed().as_secs_f64()
        )
    }

    fn plain(&self, text: String) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[{:7.1} s] {text}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn one_line(code: &str) -> String {
    let first = code
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("");
    let more = code.lines().count() > 1;
    let cut: String = first.trim().chars().take(60).collect();
    if more { format!("{cut} …") } else { cut }
}

impl EventSink for Progress {
    fn event(&self, event: &Event) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut plain: Option<String> = None;
        match event {
            Event::Iteration { node, n } if node.depth == 0 => {
                c.iteration = *n;
                c.last_action = "asking the root model".into();
            }
            Event::ModelReply {
                node,
                usage,
                cost_usd,
                ..
            } => {
                c.tokens += usage.total();
                c.cost += cost_usd.unwrap_or(0.0);
                if node.depth == 0 {
                    c.last_action = "running code".into();
                    plain = Some(format!(
                        "iteration {}: model replied ({} tokens)",
                        c.iteration,
                        usage.total()
                    ));
                }
            }
            Event::CodeExecuted {
                node,
                code,
                error,
                ms,
                ..
            } if node.depth == 0 => {
                let status = match error {
                    Some(e) if e.starts_with("SandboxLimit") => " (stopped by a sandbox limit)",
                    Some(_) => " (raised)",
                    None => "",
                };
                c.last_action = format!("ran `{}`{status}", one_line(code));
                plain = Some(format!(
                    "iteration {}: ran `{}` in {ms:.1} ms{status}",
                    c.iteration,
                    one_line(code)
                ));
            }
            Event::SubCallStarted { .. } => c.subs_running += 1,
            Event::SubCallFinished {
                usage, cost_usd, ..
            } => {
                c.subs_running = c.subs_running.saturating_sub(1);
                c.subs_done += 1;
                c.tokens += usage.total();
                c.cost += cost_usd.unwrap_or(0.0);
                if c.subs_done.is_power_of_two() || c.subs_running == 0 {
                    plain = Some(format!(
                        "sub-calls: {} done, {} running",
                        c.subs_done, c.subs_running
                    ));
                }
            }
            Event::BudgetExceeded { reason, .. } => plain = Some(format!("budget: {reason}")),
            Event::Error { message, .. } => plain = Some(format!("error: {message}")),
            Event::RunStarted { node, .. } if node.depth > 0 => {
                plain = Some(format!("sub-RLM started at depth {}", node.depth));
            }
            _ => {}
        }
        match &self.bar {
            Some(bar) => bar.set_message(self.line(&c)),
            None => {
                if let Some(p) = plain {
                    self.plain(format!("{p} · {} tokens · ${:.4}", c.tokens, c.cost));
                }
            }
        }
    }
}
