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
            Some(ra) => ra.max(backoff.min(ra.saturating_add(Duration::from_millis(250)))),
            None => backoff,
        }
    }
}

/// Parse a `Retry-After` header (seconds or an HTTP date) or `retry-after-ms`.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    retry_after_from(
        text("retry-after-ms"),
        text(reqwest::header::RETRY_AFTER.as_str()),
        SystemTime::now(),
    )
}

/// The delay asked for by a `retry-after-ms` value (milliseconds) or a `Retry-After` value
/// (seconds or an HTTP date), the former first. Whatever a provider sends, this never panics:
/// a negative delay is zero, one too long for a [`Duration`] (`inf`, `1e20`) is
/// [`Duration::MAX`] (longer than any `max_retry_after`, so the retries end), and text that is no
/// number or date (`NaN` included) is ignored.
fn retry_after_from(ms: Option<&str>, secs: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(d) = ms
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(d);
    }
    let value = secs?.trim();
    if let Ok(s) = value.parse::<f64>() {
        return seconds(s);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A number of seconds from outside as a duration: `None` for NaN, zero for negative values,
/// [`Duration::MAX`] for values too long to represent.
fn seconds(s: f64) -> Option<Duration> {
    if s.is_nan() {
        return None;
    }
    Some(Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX))
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

    /// A provider controls these headers: values a `Duration` cannot hold must not panic, and a
    /// delay too long to honour must read as longer than any policy's `max_retry_after`.
    #[test]
    fn retry_after_beyond_a_duration_is_the_longest_delay_not_a_panic() {
        let now = SystemTime::now();
        for huge in ["inf", "+Infinity", "1e20", "1e400", "18446744073709551616"] {
            assert_eq!(
                retry_after_from(None, Some(huge), now),
                Some(Duration::MAX),
                "{huge}"
            );
        }
        for huge in ["inf", "1e25", "1e400"] {
            assert_eq!(
                retry_after_from(Some(huge), None, now),
                Some(Duration::MAX),
                "{huge} ms"
            );
        }
        assert_eq!(
            retry_after_from(None, Some("-inf"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after_from(None, Some("-3"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_from(None, Some("NaN"), now), None);
        // An unusable `retry-after-ms` leaves the `Retry-After` to decide.
        assert_eq!(
            retry_after_from(Some("NaN"), Some("2"), now),
            Some(Duration::from_secs(2))
        );
        // The longest delay goes through the policy without overflowing.
        let p = RetryPolicy {
            max_retry_after: Duration::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1, Some(Duration::MAX)), Duration::MAX);
    }

    proptest::proptest! {
        /// No header value, however odd, panics; every parsed delay is at least zero.
        #[test]
        fn any_retry_after_text_parses_without_panic(
            ms in proptest::option::of("\\PC{0,24}"),
            secs in proptest::option::of("\\PC{0,40}"),
        ) {
            let _ = retry_after_from(ms.as_deref(), secs.as_deref(), SystemTime::now());
        }

        /// Any number of seconds, finite or not, gives a delay (or none for NaN), and a longer
        /// request never gives a shorter delay.
        #[test]
        fn any_number_of_seconds_gives_a_delay(a in proptest::num::f64::ANY, b in proptest::num::f64::ANY) {
            let now = SystemTime::now();
            let da = retry_after_from(None, Some(&a.to_string()), now);
            let db = retry_after_from(None, Some(&b.to_string()), now);
            proptest::prop_assert_eq!(da.is_none(), a.is_nan());
            if let (Some(da), Some(db)) = (da, db) && a <= b {
                proptest::prop_assert!(da <= db);
            }
            let p = RetryPolicy::default();
            let _ = p.delay(1, da);
        }
    }
}
