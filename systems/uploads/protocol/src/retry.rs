//! When the client tries a failed part again: exponential backoff with full
//! jitter (many tabs retrying at once spread out), a cap, and a limit on
//! attempts. Which failures are worth retrying is decided by status.

/// Attempts per part before the upload stops (and can be resumed later).
pub const MAX_PART_ATTEMPTS: u32 = 4;
const BASE_MS: f64 = 500.0;
const CAP_MS: f64 = 8_000.0;

/// Milliseconds to wait before attempt `attempt + 1` after `attempt` failed
/// (`attempt` from 1); `unit` is a uniform random number in `[0, 1)`.
pub fn delay_ms(attempt: u32, unit: f64) -> u32 {
    let ceiling = (BASE_MS * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(CAP_MS);
    (ceiling * unit.clamp(0.0, 1.0)).floor() as u32
}

/// Whether a part answered with `status` (0: no answer at all) is worth
/// sending again. A refused checksum or signature will fail the same way.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 0 | 408 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        assert_eq!(delay_ms(1, 0.999_999), 499);
        assert_eq!(delay_ms(2, 0.5), 500);
        assert_eq!(delay_ms(30, 0.999_999), 7_999);
        assert_eq!(delay_ms(3, 0.0), 0);
        assert_eq!(delay_ms(1, 7.0), 500);
    }

    #[test]
    fn transient_failures_are_retried_refusals_are_not() {
        for s in [0, 408, 429, 500, 503] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [400, 403, 404, 413, 415] {
            assert!(!is_retryable(s), "{s}");
        }
    }
}
