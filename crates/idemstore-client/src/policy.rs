//! [`RetryPolicy`]: which answers are retried, how often and for how long,
//! and the pause before each try (exponential backoff with full jitter, or
//! the server's `Retry-After`).

use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime};

/// How [`IdempotentRetry`](crate::IdempotentRetry) retries one logical
/// request. Start from [`RetryPolicy::default`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Most attempts, the first included (default 6).
    pub max_attempts: u32,
    /// Longest a logical request may take, every attempt and pause
    /// included (default 60 s); no pause is started that would end past it.
    pub max_elapsed: Duration,
    /// The first backoff ceiling (default 100 ms); attempt `n` pauses a
    /// random time in `[0, min(max_backoff, base * 2^n))` ("full jitter").
    pub base_backoff: Duration,
    /// The largest backoff ceiling (default 10 s).
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured (default 60 s); a longer one ends
    /// the retries with that answer.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Sets the most attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the longest a logical request may take.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }
    /// Sets the first and the largest backoff ceiling.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// The random pause before attempt `attempt + 1` (`attempt` counts
    /// from 1): full jitter under the exponential ceiling.
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_backoff);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// Whether an answer is worth another attempt with the same key: 409 (the
/// first attempt still runs), 429 and 503 (come back later). Never 400 or
/// 422 (the request is wrong, or the key was used for another), nor any
/// other answer, nor a replay (`Idempotent-Replayed`: the first attempt's
/// own answer, a 409 of the service's included): it is the request's
/// result.
pub(crate) fn retryable(status: StatusCode, headers: &HeaderMap) -> bool {
    matches!(
        status,
        StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && !headers.contains_key(REPLAYED)
}

/// The header a server sets on a replayed answer.
const REPLAYED: &str = "idempotent-replayed";

/// The server's `Retry-After`, as a pause from `now`: delay-seconds or an
/// HTTP-date; `None` when absent or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_doubling_ceiling_and_the_cap() {
        let p = RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..=40 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff_after(attempt) <= ceiling, "attempt {attempt}");
            }
        }
        // Jitter: not always the ceiling.
        let samples: Vec<Duration> = (0..50).map(|_| p.backoff_after(4)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(700)));
    }

    #[test]
    fn only_409_429_and_503_are_retried_and_never_a_replay() {
        let none = HeaderMap::new();
        let mut replayed = HeaderMap::new();
        replayed.insert(REPLAYED, http::HeaderValue::from_static("true"));
        for s in [409, 429, 503] {
            assert!(retryable(StatusCode::from_u16(s).unwrap(), &none), "{s}");
            assert!(
                !retryable(StatusCode::from_u16(s).unwrap(), &replayed),
                "{s}"
            );
        }
        for s in [200, 201, 400, 401, 404, 412, 422, 500, 502, 504] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap(), &none), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        h.insert(http::header::RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
