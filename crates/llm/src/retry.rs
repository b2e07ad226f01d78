//! Retrying outbound calls: which failures are worth retrying, and how long
//! to wait: exponential backoff with full jitter, never shorter than the
//! server's `Retry-After`, within a total time budget.
//!
//! Full jitter (`rand(0, min(cap, base * 2^attempt))`) spreads the retries
//! of many isolates that failed together, instead of having them return in
//! synchronised waves.

use edgeworks_core::http_client::TransportError;
use edgeworks_core::time::parse_http_date;
use edgeworks_core::Response;
use edgeworks_core::Rng;

/// Whether an outcome is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 1xx to 3xx: done.
    Success,
    /// Transient: the same request may succeed later.
    Retryable,
    /// The request itself is wrong; repeating it cannot help.
    Permanent,
}

/// 408 Request Timeout, 425 Too Early, 429 Too Many Requests and every
/// 5xx are transient; other 4xx are the caller's mistake.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        408 | 425 | 429 | 500..=599 => Outcome::Retryable,
        400..=499 => Outcome::Permanent,
        _ if (100..400).contains(&status) => Outcome::Success,
        // Not a real HTTP status: the upstream is broken, maybe briefly.
        _ => Outcome::Retryable,
    }
}

/// Transport failures (network errors, timeouts) are retryable: the
/// request may not have arrived. Callers retry only idempotent requests
/// or ones the upstream deduplicates (an idempotency key).
pub fn classify(result: &Result<Response, TransportError>) -> Outcome {
    match result {
        Ok(resp) => classify_status(resp.status),
        Err(TransportError::Timeout { .. } | TransportError::Network(_)) => Outcome::Retryable,
    }
}

/// `Retry-After` as milliseconds from `now_ms`: delta seconds (`120`) or an
/// HTTP-date (a date in the past means "now", 0). Anything else is `None`.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Overlong digit strings saturate rather than fail: "very long" is the meaning.
        let secs: u64 = v.parse().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000));
    }
    let at = parse_http_date(v).ok()?;
    Some(at.saturating_sub(now_ms).max(0) as u64)
}

/// The `Retry-After` of a response, if it has a usable one.
pub fn retry_after_ms(resp: &Response, now_ms: i64) -> Option<u64> {
    resp.headers
        .get("retry-after")
        .and_then(|v| parse_retry_after(v, now_ms))
}

/// Backoff policy. `attempt` counts retries from 0 (the wait before the
/// first retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
    /// Total time budget for all waits and attempts; a wait that would end
    /// beyond it is not taken.
    pub max_elapsed_ms: u64,
}

impl Default for Backoff {
    /// 250 ms doubling to at most 10 s, within 30 s: fits well inside an
    /// edge function's wall-clock limit.
    fn default() -> Self {
        Backoff {
            base_ms: 250,
            cap_ms: 10_000,
            max_elapsed_ms: 30_000,
        }
    }
}

impl Backoff {
    /// `min(cap, base * 2^attempt)`, without overflow.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.cap_ms)
    }

    /// How long to wait before retry number `attempt`, given the time
    /// already spent and the server's `Retry-After` (a lower bound: a
    /// server that names a time knows best). `None` means give up: the
    /// wait would end past `max_elapsed_ms`.
    pub fn next_delay_ms(
        &self,
        attempt: u32,
        elapsed_ms: u64,
        retry_after_ms: Option<u64>,
        rng: &mut dyn Rng,
    ) -> Option<u64> {
        let ceiling = self.ceiling_ms(attempt);
        let jittered = rng.next_u64() % ceiling.saturating_add(1);
        let delay = jittered.max(retry_after_ms.unwrap_or(0));
        (elapsed_ms.saturating_add(delay) <= self.max_elapsed_ms).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::platform::SeededRng;
    use proptest::prelude::*;

    fn resp(status: u16) -> Result<Response, TransportError> {
        Ok(Response::new(status))
    }

    #[test]
    fn transient_failures_are_retryable() {
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(&resp(s)), Outcome::Retryable, "{s}");
        }
        assert_eq!(
            classify(&Err(TransportError::Timeout { after_ms: 5 })),
            Outcome::Retryable
        );
        assert_eq!(
            classify(&Err(TransportError::Network("reset".into()))),
            Outcome::Retryable
        );
    }

    #[test]
    fn client_errors_are_permanent_and_2xx_3xx_succeed() {
        for s in [400, 401, 403, 404, 409, 413, 422, 499] {
            assert_eq!(classify(&resp(s)), Outcome::Permanent, "{s}");
        }
        for s in [200, 201, 204, 301, 304] {
            assert_eq!(classify(&resp(s)), Outcome::Success, "{s}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(30_000));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(0));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(u64::MAX));
        for bad in ["", "-5", "1.5", "soon", "120s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
        let r = Response::new(429).with_header("Retry-After", "7");
        assert_eq!(retry_after_ms(&r, now), Some(7_000));
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff {
            base_ms: 100,
            cap_ms: 1_000,
            max_elapsed_ms: 60_000,
        };
        let c: Vec<u64> = (0..6).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(c, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.ceiling_ms(200), 1_000);
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let b = Backoff {
            base_ms: 100,
            cap_ms: 1_000,
            max_elapsed_ms: 60_000,
        };
        let mut rng = SeededRng(1);
        for _ in 0..100 {
            assert!(b.next_delay_ms(0, 0, Some(5_000), &mut rng).unwrap() == 5_000);
        }
    }

    #[test]
    fn gives_up_when_the_wait_would_exceed_the_budget() {
        let b = Backoff {
            base_ms: 100,
            cap_ms: 1_000,
            max_elapsed_ms: 10_000,
        };
        let mut rng = SeededRng(1);
        assert_eq!(b.next_delay_ms(0, 0, Some(10_001), &mut rng), None);
        assert_eq!(b.next_delay_ms(0, 0, Some(10_000), &mut rng), Some(10_000));
        assert_eq!(b.next_delay_ms(3, 10_000, Some(1), &mut rng), None);
    }

    #[test]
    fn jitter_spreads_delays_over_the_whole_range() {
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 1_000,
            max_elapsed_ms: u64::MAX,
        };
        let mut rng = SeededRng(42);
        let delays: Vec<u64> = (0..1_000)
            .map(|_| b.next_delay_ms(0, 0, None, &mut rng).unwrap())
            .collect();
        assert!(delays.iter().any(|d| *d < 100));
        assert!(delays.iter().any(|d| *d > 900));
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        assert!((400.0..600.0).contains(&mean), "{mean}");
    }

    proptest! {
        #[test]
        fn delay_stays_within_jitter_bounds_and_budget(
            base in 1u64..10_000, cap in 1u64..100_000, budget in 0u64..200_000,
            attempt in 0u32..100, elapsed in 0u64..200_000, ra in proptest::option::of(0u64..100_000), seed in any::<u64>(),
        ) {
            let b = Backoff { base_ms: base, cap_ms: cap, max_elapsed_ms: budget };
            let mut rng = SeededRng(seed);
            if let Some(d) = b.next_delay_ms(attempt, elapsed, ra, &mut rng) {
                prop_assert!(elapsed + d <= budget);
                match ra {
                    Some(r) => prop_assert!(d >= r && d <= r.max(b.ceiling_ms(attempt))),
                    None => prop_assert!(d <= b.ceiling_ms(attempt)),
                }
            }
        }

        #[test]
        fn ceiling_is_monotone_and_capped(base in 0u64..u64::MAX, cap in 0u64..u64::MAX, attempt in 0u32..200) {
            let b = Backoff { base_ms: base, cap_ms: cap, max_elapsed_ms: 0 };
            prop_assert!(b.ceiling_ms(attempt) <= b.ceiling_ms(attempt + 1));
            prop_assert!(b.ceiling_ms(attempt) <= cap);
        }
    }
}
