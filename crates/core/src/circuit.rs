//! Circuit breakers: stop calling an upstream that keeps failing, then let
//! a few trial calls through to see whether it recovered.
//!
//! The state lives in the isolate and takes the time as an argument. It is
//! a local optimisation (fail fast, spare the upstream), not a guarantee:
//! each isolate learns on its own.
//!
//! ```text
//! Closed --(failure_threshold consecutive failures)--> Open
//! Open   --(open_ms elapsed, next acquire)-----------> HalfOpen
//! HalfOpen: admits up to half_open_trials calls;
//!           all of them succeed --> Closed;  any fails --> Open
//! ```

use std::collections::BTreeMap;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConfig {
    pub failure_threshold: u32,
    pub open_ms: i64,
    pub half_open_trials: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: 5,
            open_ms: 30_000,
            half_open_trials: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until_ms: i64,
    },
    HalfOpen {
        since_ms: i64,
        admitted: u32,
        succeeded: u32,
    },
}

/// Refusal to call: the upstream is considered down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream is unavailable; retry in {retry_after_ms} ms")]
pub struct CircuitOpen {
    pub retry_after_ms: i64,
}

impl From<CircuitOpen> for ApiError {
    fn from(e: CircuitOpen) -> ApiError {
        let secs = (e.retry_after_ms.max(0) as u64).div_ceil(1000).max(1);
        ApiError::unavailable(
            "upstream_unavailable",
            "an upstream service is unavailable; try again shortly",
        )
        .with_header("retry-after", secs.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: CircuitConfig,
    inner: Inner,
}

impl CircuitBreaker {
    pub fn new(config: CircuitConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            inner: Inner::Closed { failures: 0 },
        }
    }

    /// The state as of `now_ms` (an expired Open reads as HalfOpen).
    pub fn state(&self, now_ms: i64) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until_ms } if now_ms < until_ms => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make one call. Every `Ok` must be followed by
    /// [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure).
    pub fn try_acquire(&mut self, now_ms: i64) -> Result<(), CircuitOpen> {
        match self.inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until_ms } if now_ms < until_ms => Err(CircuitOpen {
                retry_after_ms: until_ms - now_ms,
            }),
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen {
                    since_ms: now_ms,
                    admitted: 1,
                    succeeded: 0,
                };
                Ok(())
            }
            Inner::HalfOpen {
                since_ms,
                admitted,
                succeeded,
            } => {
                // Trials whose outcome never arrived (the request was lost)
                // must not wedge the breaker: after open_ms, admit afresh.
                if now_ms.saturating_sub(since_ms) >= self.config.open_ms {
                    self.inner = Inner::HalfOpen {
                        since_ms: now_ms,
                        admitted: 1,
                        succeeded: 0,
                    };
                    return Ok(());
                }
                if admitted < self.config.half_open_trials.max(1) {
                    self.inner = Inner::HalfOpen {
                        since_ms,
                        admitted: admitted + 1,
                        succeeded,
                    };
                    Ok(())
                } else {
                    Err(CircuitOpen {
                        retry_after_ms: (since_ms + self.config.open_ms - now_ms).max(1),
                    })
                }
            }
        }
    }

    pub fn record_success(&mut self, _now_ms: i64) {
        match self.inner {
            Inner::Closed { .. } => self.inner = Inner::Closed { failures: 0 },
            Inner::HalfOpen {
                since_ms,
                admitted,
                succeeded,
            } => {
                let succeeded = succeeded + 1;
                self.inner = if succeeded >= self.config.half_open_trials.max(1) {
                    Inner::Closed { failures: 0 }
                } else {
                    Inner::HalfOpen {
                        since_ms,
                        admitted,
                        succeeded,
                    }
                };
            }
            // A late success from before the circuit opened proves little.
            Inner::Open { .. } => {}
        }
    }

    pub fn record_failure(&mut self, now_ms: i64) {
        let open = Inner::Open {
            until_ms: now_ms.saturating_add(self.config.open_ms),
        };
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.inner = if failures >= self.config.failure_threshold.max(1) {
                    open
                } else {
                    Inner::Closed { failures }
                };
            }
            Inner::HalfOpen { .. } => self.inner = open,
            // Already open; a late failure does not extend the wait.
            Inner::Open { .. } => {}
        }
    }
}

/// One breaker per upstream name (a handful: "gemini", "replicate", ...).
#[derive(Debug, Clone, Default)]
pub struct Circuits {
    config: CircuitConfig,
    breakers: BTreeMap<String, CircuitBreaker>,
}

impl Circuits {
    pub fn new(config: CircuitConfig) -> Circuits {
        Circuits {
            config,
            breakers: BTreeMap::new(),
        }
    }

    pub fn breaker(&mut self, upstream: &str) -> &mut CircuitBreaker {
        let config = self.config;
        self.breakers
            .entry(upstream.to_string())
            .or_insert_with(|| CircuitBreaker::new(config))
    }

    pub fn state(&self, upstream: &str, now_ms: i64) -> CircuitState {
        self.breakers
            .get(upstream)
            .map_or(CircuitState::Closed, |b| b.state(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb(threshold: u32, trials: u32) -> CircuitBreaker {
        CircuitBreaker::new(CircuitConfig {
            failure_threshold: threshold,
            open_ms: 1_000,
            half_open_trials: trials,
        })
    }

    #[test]
    fn closed_stays_closed_below_the_threshold_and_success_resets_the_count() {
        let mut b = cb(3, 1);
        b.record_failure(0);
        b.record_failure(0);
        b.record_success(0);
        b.record_failure(0);
        b.record_failure(0);
        assert_eq!(b.state(0), CircuitState::Closed);
        assert!(b.try_acquire(0).is_ok());
    }

    #[test]
    fn closed_opens_after_consecutive_failures() {
        let mut b = cb(3, 1);
        for _ in 0..3 {
            b.record_failure(100);
        }
        assert_eq!(b.state(100), CircuitState::Open);
        assert_eq!(b.try_acquire(600), Err(CircuitOpen { retry_after_ms: 500 }));
    }

    #[test]
    fn open_becomes_half_open_after_the_open_duration() {
        let mut b = cb(1, 1);
        b.record_failure(0);
        assert_eq!(b.state(999), CircuitState::Open);
        assert_eq!(b.state(1_000), CircuitState::HalfOpen);
        assert!(b.try_acquire(1_000).is_ok());
        // Only the trial is admitted while it is in flight.
        assert!(b.try_acquire(1_001).is_err());
    }

    #[test]
    fn half_open_closes_when_all_trials_succeed() {
        let mut b = cb(1, 2);
        b.record_failure(0);
        assert!(b.try_acquire(1_000).is_ok());
        assert!(b.try_acquire(1_000).is_ok());
        assert!(b.try_acquire(1_000).is_err());
        b.record_success(1_010);
        assert_eq!(b.state(1_010), CircuitState::HalfOpen);
        b.record_success(1_020);
        assert_eq!(b.state(1_020), CircuitState::Closed);
        assert!(b.try_acquire(1_020).is_ok());
    }

    #[test]
    fn half_open_reopens_on_a_failed_trial() {
        let mut b = cb(1, 2);
        b.record_failure(0);
        assert!(b.try_acquire(1_000).is_ok());
        b.record_success(1_001);
        b.record_failure(1_002);
        assert_eq!(b.state(1_002), CircuitState::Open);
        assert_eq!(b.try_acquire(1_500), Err(CircuitOpen { retry_after_ms: 502 }));
        assert!(b.try_acquire(2_002).is_ok());
    }

    #[test]
    fn lost_trials_do_not_wedge_half_open() {
        let mut b = cb(1, 1);
        b.record_failure(0);
        assert!(b.try_acquire(1_000).is_ok());
        assert!(b.try_acquire(1_500).is_err());
        assert!(b.try_acquire(2_000).is_ok());
    }

    #[test]
    fn late_results_while_open_change_nothing() {
        let mut b = cb(1, 1);
        b.record_failure(0);
        b.record_success(10);
        b.record_failure(900);
        assert_eq!(b.state(999), CircuitState::Open);
        assert_eq!(b.state(1_000), CircuitState::HalfOpen);
    }

    #[test]
    fn open_circuit_is_a_503_with_retry_after() {
        let e: ApiError = CircuitOpen { retry_after_ms: 1_500 }.into();
        assert_eq!((e.status(), e.code()), (503, "upstream_unavailable"));
        assert_eq!(e.into_response("r").headers.get("retry-after"), Some("2"));
    }

    #[test]
    fn breakers_are_independent_per_upstream() {
        let mut c = Circuits::new(CircuitConfig {
            failure_threshold: 1,
            open_ms: 1_000,
            half_open_trials: 1,
        });
        c.breaker("gemini").record_failure(0);
        assert_eq!(c.state("gemini", 1), CircuitState::Open);
        assert_eq!(c.state("openai", 1), CircuitState::Closed);
        assert!(c.breaker("openai").try_acquire(1).is_ok());
    }
}
