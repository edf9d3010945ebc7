//! When and how long to wait before trying a failed call again.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Retry settings. Retries happen on retryable errors only (see
/// [`LlmError::is_retryable`](crate::LlmError::is_retryable)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 5.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles each time. Default 500 ms.
    pub initial_backoff: Duration,
    /// Longest backoff. Default 30 s.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a provider asking for more ends the retries. Default 120 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Wait before retry number `retry` (1 for the first retry): exponential, with "equal jitter"
    /// (half fixed, half random) so waits grow while concurrent callers spread out. A
    /// `Retry-After` from the provider wins when it is longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(
                1u32.checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_backoff);
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        let backoff = half + Duration::from_millis(jitter);
        match retry_after {
            Some(ra) => ra.max(backoff.min(ra + Duration::from_millis(250))),
            None => backoff,
        }
    }
}

/// Parse a `Retry-After` header (seconds or an HTTP date) or `retry-after-ms`.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_respects_retry_after() {
        let p = RetryPolicy::default();
        for _ in 0..50 {
            let d1 = p.delay(1, None);
            let d3 = p.delay(3, None);
            assert!(
                d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(500),
                "{d1:?}"
            );
            assert!(
                d3 >= Duration::from_millis(1000) && d3 <= Duration::from_millis(2000),
                "{d3:?}"
            );
            assert!(p.delay(30, None) <= p.max_backoff);
        }
        assert!(p.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn parses_retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = reqwest::header::HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", later.parse().unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }
}
