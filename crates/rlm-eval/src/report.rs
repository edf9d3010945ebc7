//! The report: per dataset × context size × method, the score with a 95% confidence interval,
//! cost (mean, median, p90), tokens and latency percentiles; as Markdown, JSON and an SVG plot
//! of score against context length per method (the shape of the paper's Figure 1).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::results::TaskRecord;

/// Statistics of one dataset × size × method cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Dataset.
    pub dataset: String,
    /// Requested size in tokens (`None` for user datasets).
    pub size: Option<u64>,
    /// Method.
    pub method: String,
    /// Tasks.
    pub n: usize,
    /// Mean score.
    pub score: f64,
    /// 95% interval of the mean score: Wilson for 0/1 scores, normal otherwise.
    pub score_ci: (f64, f64),
    /// Mean judge verdict, where a judge was asked.
    pub judge: Option<f64>,
    /// Dollars per task: mean, median, p90 (over priced calls).
    pub cost: Percentiles,
    /// Calls without a price, all tasks.
    pub unpriced_calls: u64,
    /// Mean input tokens per task.
    pub input_tokens: f64,
    /// Mean output tokens per task.
    pub output_tokens: f64,
    /// Mean sub-calls per task.
    pub sub_calls: f64,
    /// Seconds per task: p50, p90, p99 (and mean).
    pub latency: Percentiles,
    /// Mean context tokens.
    pub context_tokens: f64,
    /// How the tasks stopped (`final`, `budget`, ...) and how often.
    pub stops: BTreeMap<String, usize>,
    /// `direct` tasks whose context was cut to the window.
    pub truncated: usize,
    /// Wrong final answers that are literals of the prompts' worked examples (copied, not
    /// found: see [`rlm::is_prompt_literal`]).
    #[serde(default)]
    pub copied: usize,
}

/// Mean and percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values`.
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
        }
    }
}

/// The 95% interval of the mean of scores in 0..=1.
pub fn confidence_interval(scores: &[f64]) -> (f64, f64) {
    let n = scores.len() as f64;
    if scores.is_empty() {
        return (0.0, 1.0);
    }
    let mean = scores.iter().sum::<f64>() / n;
    let z = 1.96_f64;
    if scores.iter().all(|&s| s == 0.0 || s == 1.0) {
        let denom = 1.0 + z * z / n;
        let centre = (mean + z * z / (2.0 * n)) / denom;
        let half = z * (mean * (1.0 - mean) / n + z * z / (4.0 * n * n)).sqrt() / denom;
        return ((centre - half).max(0.0), (centre + half).min(1.0));
    }
    if scores.len() < 2 {
        return (0.0, 1.0);
    }
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = z * (var / n).sqrt();
    ((mean - half).max(0.0), (mean + half).min(1.0))
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Records it covers.
    pub records: usize,
    /// Methods, in first-seen order.
    pub methods: Vec<String>,
    /// Cells, by dataset, size, then method order.
    pub cells: Vec<Cell>,
}

/// Build the report of `records` (one per task and method; see
/// [`Results::latest`](crate::results::Results::latest)). Methods appear in `order` (the run's
/// order, from its headers), then any others as first seen.
pub fn build(records: &[TaskRecord], order: &[String]) -> Report {
    let mut methods: Vec<String> = order
        .iter()
        .filter(|m| records.iter().any(|r| &r.method == *m))
        .cloned()
        .collect();
    for r in records {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    let order = |m: &str| methods.iter().position(|x| x == m).unwrap_or(usize::MAX);
    let mut groups: BTreeMap<(String, Option<u64>, usize), Vec<&TaskRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.dataset.clone(), r.size, order(&r.method)))
            .or_default()
            .push(r);
    }
    let cells = groups
        .into_iter()
        .map(|((dataset, size, _), rs)| {
            let n = rs.len();
            let mean =
                |f: &dyn Fn(&TaskRecord) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n as f64;
            let scores: Vec<f64> = rs.iter().map(|r| r.score).collect();
            let judged: Vec<f64> = rs.iter().filter_map(|r| r.judge).collect();
            let mut stops = BTreeMap::new();
            for r in &rs {
                *stops.entry(r.stop.to_string()).or_insert(0) += 1;
            }
            Cell {
                dataset,
                size,
                method: rs[0].method.clone(),
                n,
                score: mean(&|r| r.score),
                score_ci: confidence_interval(&scores),
                judge: (!judged.is_empty())
                    .then(|| judged.iter().sum::<f64>() / judged.len() as f64),
                cost: Percentiles::of(&rs.iter().map(|r| r.cost_usd).collect::<Vec<_>>()),
                unpriced_calls: rs.iter().map(|r| r.unpriced_calls).sum(),
                input_tokens: mean(&|r| r.input_tokens as f64),
                output_tokens: mean(&|r| r.output_tokens as f64),
                sub_calls: mean(&|r| r.sub_calls as f64),
                latency: Percentiles::of(&rs.iter().map(|r| r.latency_s).collect::<Vec<_>>()),
                context_tokens: mean(&|r| r.context_tokens as f64),
                stops,
                truncated: rs.iter().filter(|r| r.truncated == Some(true)).count(),
                copied: rs.iter().filter(|r| copied(r)).count(),
            }
        })
        .collect();
    Report {
        records: records.len(),
        methods,
        cells,
    }
}

/// Whether a task's final answer is wrong and a literal of the prompts' examples.
fn copied(r: &TaskRecord) -> bool {
    r.score < 1.0 && r.answer.as_deref().is_some_and(rlm::is_prompt_literal)
}

/// `8000` → `8K`, `1000000` → `1M`.
pub fn size_label(tokens: u64) -> String {
    if tokens >= 1_000_000 && tokens.is_multiple_of(100_000) {
        let m = tokens as f64 / 1e6;
        if m.fract() == 0.0 {
            format!("{m:.0}M")
        } else {
            format!("{m:.1}M")
        }
    } else if tokens >= 1_000 {
        format!("{}K", (tokens as f64 / 1e3).round())
    } else {
        tokens.to_string()
    }
}

fn size_cell(size: Option<u64>) -> String {
    size.map_or("—".into(), size_label)
}

fn dollars(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x < 0.01 {
        format!("{x:.5}")
    } else {
        format!("{x:.3}")
    }
}

impl Report {
    fn datasets(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for c in &self.cells {
            if !seen.contains(&c.dataset) {
                seen.push(c.dataset.clone());
            }
        }
        seen
    }

    /// The report as Markdown: a paper-style table per dataset (score by size and method), then
    /// every cell in full.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# rlm eval report\n\n{} task results, {} methods. Scores are means over tasks with \
             95% confidence intervals (Wilson for 0/1 scores, normal otherwise); cost is dollars \
             per task over priced calls; latency is seconds per task.\n",
            self.records,
            self.methods.len()
        );
        let _ = writeln!(md, "## Score by context size\n");
        for d in self.datasets() {
            let cells: Vec<&Cell> = self.cells.iter().filter(|c| c.dataset == d).collect();
            let sizes: BTreeSet<Option<u64>> = cells.iter().map(|c| c.size).collect();
            let _ = writeln!(md, "### {d}\n");
            let header: Vec<String> = sizes.iter().map(|s| size_cell(*s)).collect();
            let _ = writeln!(md, "| method | {} |", header.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(sizes.len()));
            for m in &self.methods {
                let row: Vec<String> = sizes
                    .iter()
                    .map(|s| {
                        cells
                            .iter()
                            .find(|c| &c.method == m && c.size == *s)
                            .map_or("".into(), |c| format!("{:.2} (n={})", c.score, c.n))
                    })
                    .collect();
                if row.iter().any(|r| !r.is_empty()) {
                    let _ = writeln!(md, "| {m} | {} |", row.join(" | "));
                }
            }
            let copied: Vec<String> = self
                .methods
                .iter()
                .filter_map(|m| {
                    let of: Vec<&&Cell> = cells.iter().filter(|c| &c.method == m).collect();
                    let n: usize = of.iter().map(|c| c.n).sum();
                    let k: usize = of.iter().map(|c| c.copied).sum();
                    (n > 0).then(|| format!("{m} {k}/{n}"))
                })
                .collect();
            let _ = writeln!(
                md,
                "\nAnswers copied from the prompt's examples (wrong, and a literal of them): {}.",
                copied.join(", ")
            );
            md.push('\n');
        }
        let _ = writeln!(md, "## Details\n");
        let _ = writeln!(
            md,
            "| dataset | size | method | n | score [95% CI] | judge | cost mean / median / p90 | \
             tokens in / out | sub-calls | latency p50 / p90 / p99 | stops |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for c in &self.cells {
            let stops: Vec<String> = c.stops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let mut cost = format!(
                "{} / {} / {}",
                dollars(c.cost.mean),
                dollars(c.cost.p50),
                dollars(c.cost.p90)
            );
            if c.unpriced_calls > 0 {
                let _ = write!(cost, " (+{} unpriced calls)", c.unpriced_calls);
            }
            let truncated = if c.truncated > 0 {
                format!(", {} cut to window", c.truncated)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} [{:.2}, {:.2}] | {} | {cost} | {:.0} / {:.0} | {:.1} | {:.2} / {:.2} / {:.2} | {}{truncated} |",
                c.dataset,
                size_cell(c.size),
                c.method,
                c.n,
                c.score,
                c.score_ci.0,
                c.score_ci.1,
                c.judge.map_or("—".into(), |j| format!("{j:.2}")),
                c.input_tokens,
                c.output_tokens,
                c.sub_calls,
                c.latency.p50,
                c.latency.p90,
                c.latency.p99,
                stops.join(", ")
            );
        }
        md
    }

    /// Score against context length, one panel per dataset, one line per method.
    pub fn svg(&self) -> String {
        const W: f64 = 340.0;
        const H: f64 = 250.0;
        const COLORS: [&str; 8] = [
            "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
        ];
        let datasets = self.datasets();
        let cols = datasets.len().clamp(1, 4);
        let rows = datasets.len().div_ceil(cols).max(1);
        let legend_h = 30.0;
        let (width, height) = (W * cols as f64, H * rows as f64 + legend_h);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let x_of = |c: &Cell| c.size.map_or(c.context_tokens, |s| s as f64).max(1.0).ln();
        for (i, d) in datasets.iter().enumerate() {
            let (ox, oy) = ((i % cols) as f64 * W, (i / cols) as f64 * H);
            let (left, right, top, bottom) = (ox + 45.0, ox + W - 15.0, oy + 28.0, oy + H - 35.0);
            let cells: Vec<&Cell> = self.cells.iter().filter(|c| &c.dataset == d).collect();
            let xs: Vec<f64> = cells.iter().map(|c| x_of(c)).collect();
            let (lo, hi) = xs
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let px = |x: f64| {
                if hi - lo < 1e-9 {
                    (left + right) / 2.0
                } else {
                    left + (x - lo) / (hi - lo) * (right - left)
                }
            };
            let py = |score: f64| bottom - score * (bottom - top);
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>",
                (left + right) / 2.0,
                oy + 16.0,
                xml(d)
            );
            for k in 0..=4 {
                let v = f64::from(k) / 4.0;
                let _ = writeln!(
                    s,
                    "<line x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
                    left - 5.0,
                    py(v) + 4.0,
                    y = py(v)
                );
            }
            let mut ticks: Vec<(f64, String)> = cells
                .iter()
                .map(|c| {
                    (
                        x_of(c),
                        c.size
                            .map_or_else(|| size_label(c.context_tokens as u64), size_label),
                    )
                })
                .collect();
            ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
            ticks.dedup_by(|a, b| a.1 == b.1);
            for (x, label) in ticks {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                    px(x),
                    bottom + 15.0
                );
            }
            let _ = writeln!(
                s,
                "<line x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{bottom:.1}\" y2=\"{bottom:.1}\" stroke=\"#333\"/>\
                 <line x1=\"{left:.1}\" x2=\"{left:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"#333\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">context tokens (log)</text>",
                (left + right) / 2.0,
                bottom + 29.0
            );
            for (mi, m) in self.methods.iter().enumerate() {
                let color = COLORS[mi % COLORS.len()];
                let mut pts: Vec<(f64, f64)> = cells
                    .iter()
                    .filter(|c| &c.method == m)
                    .map(|c| (px(x_of(c)), py(c.score)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if pts.is_empty() {
                    continue;
                }
                let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                    path.join(" "),
                    xml(m)
                );
                for (x, y) in pts {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{color}\"/>"
                    );
                }
            }
        }
        let mut lx = 20.0;
        let ly = height - 12.0;
        for (mi, m) in self.methods.iter().enumerate() {
            let color = COLORS[mi % COLORS.len()];
            let _ = writeln!(
                s,
                "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\
                 <text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
                lx + 22.0,
                ly - 4.0,
                ly - 4.0,
                lx + 27.0,
                xml(m)
            );
            lx += 40.0 + 7.0 * m.chars().count() as f64;
        }
        s.push_str("</svg>\n");
        s
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(dataset: &str, size: u64, method: &str, score: f64, cost: f64) -> TaskRecord {
        TaskRecord {
            task_id: format!("{dataset}-{size}-{score}-{cost}"),
            dataset: dataset.into(),
            size: Some(size),
            context_tokens: size,
            method: method.into(),
            root_model: "m".into(),
            sub_model: None,
            question: "q".into(),
            gold: "g".into(),
            answer: Some("a".into()),
            score,
            judge: None,
            stop: crate::results::UnitStop::Final,
            detail: None,
            iterations: 1,
            calls: 1,
            sub_calls: 0,
            input_tokens: 100,
            output_tokens: 10,
            cost_usd: cost,
            unpriced_calls: 0,
            latency_s: cost * 100.0,
            truncated: None,
            trace: None,
            shard: None,
        }
    }

    #[test]
    fn statistics_are_right() {
        let p = Percentiles::of(&[5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!((p.mean, p.p50, p.p90, p.p99), (5.5, 5.0, 9.0, 10.0));
        // Wilson interval of 8/10.
        let (lo, hi) = confidence_interval(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(
            (lo - 0.490).abs() < 0.005 && (hi - 0.943).abs() < 0.005,
            "{lo} {hi}"
        );
        let (lo, hi) = confidence_interval(&[1.0, 1.0, 1.0]);
        assert!(lo > 0.4 && hi == 1.0);
        let (lo, hi) = confidence_interval(&[0.5, 0.7]);
        assert!(lo < 0.6 && hi > 0.6);
        assert_eq!(size_label(8_000), "8K");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(1_500_000), "1.5M");
    }

    #[test]
    fn report_groups_and_draws() {
        let records = vec![
            rec("s-niah", 8_000, "direct", 1.0, 0.01),
            rec("s-niah", 8_000, "direct", 0.0, 0.03),
            rec("s-niah", 64_000, "direct", 0.0, 0.05),
            rec("s-niah", 8_000, "rlm", 1.0, 0.02),
            rec("s-niah", 64_000, "rlm", 1.0, 0.04),
            rec("oolong", 8_000, "rlm", 1.0, 0.02),
        ];
        let r = build(&records, &["direct".to_string()]);
        assert_eq!(r.methods, vec!["direct", "rlm"]);
        assert_eq!(r.cells.len(), 5);
        let c = &r
            .cells
            .iter()
            .find(|c| c.dataset == "s-niah" && c.size == Some(8_000) && c.method == "direct")
            .unwrap();
        assert_eq!((c.n, c.score), (2, 0.5));
        assert!((c.cost.mean - 0.02).abs() < 1e-12);
        let md = r.markdown();
        assert!(md.contains("| direct | 0.50 (n=2) | 0.00 (n=1) |"), "{md}");
        assert!(md.contains("### oolong"));
        let svg = r.svg();
        assert_eq!(
            svg.matches("<polyline").count(),
            3,
            "one line per method per dataset"
        );
        assert!(svg.contains(">64K<") && svg.starts_with("<svg"));
    }

    #[test]
    fn wrong_answers_copied_from_the_prompt_are_counted_per_dataset() {
        let answered = |method: &str, answer: &str, score: f64| {
            let mut r = rec("s-niah", 8_000, method, score, 0.0);
            r.answer = Some(answer.into());
            r
        };
        let records = vec![
            answered("rlm", "A-", 0.0),
            answered("rlm", "2", 0.0),
            answered("rlm", "2", 1.0), // right: the gold answer was 2
            answered("rlm", "SYN-0042-7781", 0.0),
            answered("direct", "12", 0.0),
        ];
        let r = build(&records, &[]);
        let rlm = r.cells.iter().find(|c| c.method == "rlm").unwrap();
        assert_eq!(rlm.copied, 2);
        let md = r.markdown();
        assert!(
            md.contains("Answers copied from the prompt's examples (wrong, and a literal of them): rlm 2/4, direct 0/1."),
            "{md}"
        );
    }
}
