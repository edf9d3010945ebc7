//! Scorers: how an answer is compared with the gold answer. Each returns a score in 0..=1.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// How to score a task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scorer {
    /// The whole answer equals the gold answer after normalisation.
    Exact,
    /// The normalised answer contains the normalised gold answer.
    Contains,
    /// The first number in the answer is within `tolerance` (relative) of the gold number.
    Numeric {
        /// Relative tolerance, e.g. 0.0 for exact counts.
        tolerance: f64,
    },
    /// F1 between the set of pairs in the answer and the gold set.
    SetF1,
}

/// Lower-case, drop punctuation except inside numbers, collapse whitespace.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let keep_punct = (c == '.' || c == ',' || c == '-')
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_alphanumeric() || keep_punct {
            out.extend(c.to_lowercase());
        } else {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first number in `s` (thousands separators allowed).
pub fn first_number(s: &str) -> Option<f64> {
    let mut start = None;
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let negative = c == '-' && chars.get(k + 1).is_some_and(|(_, n)| n.is_ascii_digit());
        if c.is_ascii_digit() || negative {
            start = Some(i);
            break;
        }
    }
    let start = start?;
    let text: String = s[start..]
        .chars()
        .enumerate()
        .take_while(|&(j, c)| c.is_ascii_digit() || c == '.' || c == ',' || (j == 0 && c == '-'))
        .map(|(_, c)| c)
        .filter(|&c| c != ',')
        .collect();
    text.trim_end_matches('.').parse().ok()
}

/// Unordered pairs written as `(a, b)` (or `a-b`, `a & b`) in `s`, each sorted.
pub fn pairs(s: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for part in s.split(['(', ')', ';', '\n', '[', ']']) {
        let items: Vec<String> = part
            .split([',', '&', '+'])
            .map(|x| normalize(x).replace(' ', ""))
            .filter(|x| !x.is_empty())
            .collect();
        if items.len() == 2 {
            let (a, b) = (items[0].clone(), items[1].clone());
            out.insert(if a <= b { (a, b) } else { (b, a) });
        }
    }
    out
}

impl Scorer {
    /// Score `answer` against `gold`.
    pub fn score(&self, answer: &str, gold: &str) -> f64 {
        match self {
            Scorer::Exact => f64::from(normalize(answer) == normalize(gold)),
            Scorer::Contains => {
                let g = normalize(gold);
                f64::from(!g.is_empty() && normalize(answer).contains(&g))
            }
            Scorer::Numeric { tolerance } => match (first_number(answer), first_number(gold)) {
                (Some(a), Some(g)) => {
                    let allowed = tolerance * g.abs().max(1e-9);
                    f64::from((a - g).abs() <= allowed + 1e-9)
                }
                _ => 0.0,
            },
            Scorer::SetF1 => {
                let (a, g) = (pairs(answer), pairs(gold));
                if a.is_empty() && g.is_empty() {
                    return 1.0;
                }
                let hit = a.intersection(&g).count() as f64;
                if hit == 0.0 {
                    return 0.0;
                }
                let (p, r) = (hit / a.len() as f64, hit / g.len() as f64);
                2.0 * p * r / (p + r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorers_behave() {
        assert_eq!(Scorer::Exact.score("  Paris. ", "paris"), 1.0);
        assert_eq!(Scorer::Exact.score("It is Paris", "paris"), 0.0);
        assert_eq!(Scorer::Contains.score("The code is 4217.", "4217"), 1.0);
        assert_eq!(Scorer::Contains.score("anything", ""), 0.0);
        assert_eq!(
            Scorer::Numeric { tolerance: 0.0 }.score("There are 1,204 tickets", "1204"),
            1.0
        );
        assert_eq!(
            Scorer::Numeric { tolerance: 0.1 }.score("about 95", "100"),
            1.0
        );
        assert_eq!(Scorer::Numeric { tolerance: 0.0 }.score("95", "100"), 0.0);
        assert_eq!(first_number("-3.5 degrees"), Some(-3.5));
        let f1 = Scorer::SetF1.score(
            "(u1, u2), (u3, u4), (u9, u8)",
            "(u2, u1); (u4, u3); (u5, u6)",
        );
        assert!((f1 - 2.0 / 3.0).abs() < 1e-9, "{f1}");
        assert_eq!(Scorer::SetF1.score("none", ""), 1.0);
    }
}
