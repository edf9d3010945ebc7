//! Dollars per token: a default table for common models, overridable by a file or per call.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::LlmError;
use crate::usage::Usage;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache (default: the input price).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

impl Price {
    /// A price (dollars per million input, output and cached-input tokens).
    pub const fn new(input: f64, output: f64, cached_input: f64) -> Self {
        Self {
            input,
            output,
            cached_input: Some(cached_input),
        }
    }

    /// Cost of `usage` in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// The built-in prices (list prices in USD per million tokens, standard tier, as of late
/// 2025; check your provider's page and override with a file when they change).
pub const DEFAULT_PRICES: &[(&str, Price)] = &[
    ("openai/gpt-5", Price::new(1.25, 10.0, 0.125)),
    ("openai/gpt-5-mini", Price::new(0.25, 2.0, 0.025)),
    ("openai/gpt-5-nano", Price::new(0.05, 0.40, 0.005)),
    ("openai/gpt-4.1", Price::new(2.0, 8.0, 0.50)),
    ("openai/gpt-4.1-mini", Price::new(0.40, 1.60, 0.10)),
    ("openai/gpt-4.1-nano", Price::new(0.10, 0.40, 0.025)),
    ("openai/gpt-4o", Price::new(2.50, 10.0, 1.25)),
    ("openai/gpt-4o-mini", Price::new(0.15, 0.60, 0.075)),
    ("openai/o3", Price::new(2.0, 8.0, 0.50)),
    ("openai/o4-mini", Price::new(1.10, 4.40, 0.275)),
    ("anthropic/claude-opus-4-1", Price::new(15.0, 75.0, 1.50)),
    ("anthropic/claude-opus-4", Price::new(15.0, 75.0, 1.50)),
    ("anthropic/claude-sonnet-4-5", Price::new(3.0, 15.0, 0.30)),
    ("anthropic/claude-sonnet-4", Price::new(3.0, 15.0, 0.30)),
    ("anthropic/claude-haiku-4-5", Price::new(1.0, 5.0, 0.10)),
    ("anthropic/claude-3-5-haiku", Price::new(0.80, 4.0, 0.08)),
    ("gemini/gemini-2.5-pro", Price::new(1.25, 10.0, 0.31)),
    ("gemini/gemini-2.5-flash", Price::new(0.30, 2.50, 0.075)),
    (
        "gemini/gemini-2.5-flash-lite",
        Price::new(0.10, 0.40, 0.025),
    ),
    ("gemini/gemini-2.0-flash", Price::new(0.10, 0.40, 0.025)),
];

/// Prices by model id. Lookup is exact first, then the longest id that is a prefix of the
/// model's (so `openai/gpt-5-mini-2025-08-07` costs as `openai/gpt-5-mini`).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            prices: DEFAULT_PRICES
                .iter()
                .map(|(k, p)| (k.to_string(), *p))
                .collect(),
        }
    }
}

impl PriceTable {
    /// A table with no prices.
    pub fn empty() -> Self {
        Self {
            prices: BTreeMap::new(),
        }
    }

    /// Set the price of a model id (`provider/model`).
    pub fn set(&mut self, model: impl Into<String>, price: Price) {
        self.prices.insert(model.into(), price);
    }

    /// Merge prices from a JSON file over this table. The file maps model ids to
    /// `{"input": 0.25, "output": 2.0, "cached_input": 0.025}` (dollars per million tokens).
    pub fn merge_file(&mut self, path: &Path) -> Result<(), LlmError> {
        let err = |message: String| LlmError::Prices {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let map: BTreeMap<String, Price> = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "{e}; expected {{\"provider/model\": {{\"input\": 0.25, \"output\": 2.0}}}}"
            ))
        })?;
        self.prices.extend(map);
        Ok(())
    }

    /// The default table, with `RLM_PRICES` (a JSON file) merged over it when set.
    pub fn from_env() -> Result<Self, LlmError> {
        let mut table = Self::default();
        if let Some(path) = std::env::var_os("RLM_PRICES") {
            table.merge_file(Path::new(&path))?;
        }
        Ok(table)
    }

    /// The price of `model` (`provider/model`), if known.
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter(|(k, _)| model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_split_cached_input() {
        let p = Price::new(1.0, 10.0, 0.1);
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cached_input_tokens: 500_000,
        };
        assert!((p.cost(&u) - (0.5 + 0.05 + 1.0)).abs() < 1e-9);
    }

    #[test]
    fn longest_prefix_wins_and_files_override() {
        let mut t = PriceTable::default();
        assert_eq!(
            t.get("openai/gpt-5-mini-2025-08-07"),
            Some(Price::new(0.25, 2.0, 0.025))
        );
        assert_eq!(
            t.get("openai/gpt-5-2025-08-07"),
            Some(Price::new(1.25, 10.0, 0.125))
        );
        assert_eq!(t.get("compat/llama"), None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"compat/llama": {"input": 0.0, "output": 0.0}, "openai/gpt-5-mini": {"input": 9, "output": 9}}"#).unwrap();
        t.merge_file(&f).unwrap();
        assert_eq!(t.get("compat/llama").unwrap().output, 0.0);
        assert_eq!(t.get("openai/gpt-5-mini").unwrap().input, 9.0);
        std::fs::write(&f, "{bad").unwrap();
        assert!(
            t.merge_file(&f)
                .unwrap_err()
                .to_string()
                .contains("expected")
        );
    }
}
