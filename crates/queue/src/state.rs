//! The job state machine and retry schedule of the Postgres job queue.
//!
//! The queue itself lives in SQL (`supabase/migrations/20261122000200_job_queue.sql`),
//! where a trigger rejects any status change not in [`LEGAL_TRANSITIONS`] and
//! `fail_job` schedules retries with the same formula as [`Backoff`]. This module
//! is the Rust statement of both, so functions can reason about a job (what a
//! failure will do, when a retry may start, how long to idle between polls)
//! without a round trip, and so the two definitions are tested against one table.

use serde::{Deserialize, Serialize};

use edgeworks_core::Rng;

/// Where a job is in its life. Serialised as the lower-case name stored in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to be claimed (possibly delayed, or blocked on dependencies).
    Pending,
    /// Held by a worker under a lease.
    Processing,
    Completed,
    Failed,
    /// Failed at least once; waits for its backoff (`run_at`) before the next claim.
    Retrying,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Retrying,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Retrying => "retrying",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, failed and cancelled jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// Pending and retrying jobs wait in the queue for a worker.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Retrying)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can happen to a job; each SQL function performs one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// `claim_jobs` handed the job to a worker.
    Claim,
    /// `complete_job` under the current lease.
    Complete,
    /// `fail_job` under the current lease; `retry` is [`should_retry`]'s answer.
    Fail { retry: bool },
    /// The lease ran out (`requeue_expired_leases`); `retry` is whether attempts remain.
    LeaseExpired { retry: bool },
    /// `cancel_job` by the owner or the service.
    Cancel,
    /// A job this one depends on failed or was cancelled.
    DependencyFailed,
}

/// An event that the job's current status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: JobStatus,
    pub event: JobEvent,
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} job cannot take event {:?}", self.from, self.event)
    }
}

impl std::error::Error for IllegalTransition {}

/// The status `event` moves a job in status `from` to, or why it cannot.
pub fn transition(from: JobStatus, event: JobEvent) -> Result<JobStatus, IllegalTransition> {
    use JobEvent as E;
    use JobStatus as S;
    let to = match (from, event) {
        (S::Pending | S::Retrying, E::Claim) => S::Processing,
        (S::Processing, E::Complete) => S::Completed,
        (S::Processing, E::Fail { retry: true } | E::LeaseExpired { retry: true }) => S::Retrying,
        (S::Processing, E::Fail { retry: false } | E::LeaseExpired { retry: false }) => S::Failed,
        (S::Pending | S::Retrying | S::Processing, E::Cancel) => S::Cancelled,
        // Only a pending job can be blocked on a dependency: a job is claimed only
        // after every dependency completed, and completed is final.
        (S::Pending, E::DependencyFailed) => S::Failed,
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

/// Every (from, to) pair a job may take: exactly the list in `private.record_job_change`,
/// which the status trigger on `public.jobs` calls for changes made outside the queue
/// functions. Creation (`enqueue_job`) always yields `Pending`.
pub const LEGAL_TRANSITIONS: [(JobStatus, JobStatus); 9] = [
    (JobStatus::Pending, JobStatus::Processing),
    (JobStatus::Retrying, JobStatus::Processing),
    (JobStatus::Processing, JobStatus::Completed),
    (JobStatus::Processing, JobStatus::Retrying),
    (JobStatus::Processing, JobStatus::Failed),
    (JobStatus::Pending, JobStatus::Failed),
    (JobStatus::Pending, JobStatus::Cancelled),
    (JobStatus::Retrying, JobStatus::Cancelled),
    (JobStatus::Processing, JobStatus::Cancelled),
];

/// Whether a failed attempt is retried. `attempts` counts claims so far,
/// including the one that just failed (SQL increments it at claim).
pub fn should_retry(retryable: bool, attempts: u32, max_attempts: u32) -> bool {
    retryable && attempts < max_attempts
}

/// Exponential backoff with full jitter and a cap. SQL stores `base_ms` and
/// `cap_ms` per job (`backoff_base_ms`, `backoff_cap_ms`); defaults match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Backoff {
    /// The retry schedule `enqueue_job` uses unless told otherwise.
    pub const DEFAULT: Backoff = Backoff {
        base_ms: 1_000,
        cap_ms: 600_000,
    };

    /// Idle polling for workers that cannot LISTEN (edge functions): after the
    /// n-th empty `claim_jobs`, wait `POLL.delay_ms(n, None, rng)`; reset n on
    /// a non-empty claim.
    pub const POLL: Backoff = Backoff {
        base_ms: 100,
        cap_ms: 2_000,
    };

    /// The upper bound of the delay after `attempt` failed attempts (1-based;
    /// 0 is treated as 1): `min(cap, base * 2^(attempt - 1))`. SQL:
    /// `backoff_ceiling_ms(attempt, base, cap)`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        // A zero base stays zero however many doublings (as in SQL's float math).
        if self.base_ms == 0 {
            return 0;
        }
        let doublings = attempt.max(1) - 1;
        let grown = if doublings >= 64 {
            u64::MAX
        } else {
            self.base_ms.saturating_mul(1u64 << doublings)
        };
        grown.min(self.cap_ms)
    }

    /// The delay before the next attempt: uniform in `[0, ceiling]` (full
    /// jitter, so failing workers spread out), but never below
    /// `retry_after_ms` (a provider's Retry-After). SQL does the same with
    /// `floor(random() * (ceiling + 1))`.
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, rng: &mut dyn Rng) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        let jitter = (rng.next_f64() * (ceiling as f64 + 1.0)).floor() as u64;
        jitter.min(ceiling).max(retry_after_ms.unwrap_or(0))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::platform::SeededRng;
    use JobEvent as E;
    use JobStatus as S;

    const EVENTS: [JobEvent; 8] = [
        E::Claim,
        E::Complete,
        E::Fail { retry: true },
        E::Fail { retry: false },
        E::LeaseExpired { retry: true },
        E::LeaseExpired { retry: false },
        E::Cancel,
        E::DependencyFailed,
    ];

    #[test]
    fn pending_job_is_claimed_into_processing() {
        assert_eq!(transition(S::Pending, E::Claim), Ok(S::Processing));
    }

    #[test]
    fn retrying_job_is_claimed_into_processing() {
        assert_eq!(transition(S::Retrying, E::Claim), Ok(S::Processing));
    }

    #[test]
    fn processing_job_completes() {
        assert_eq!(transition(S::Processing, E::Complete), Ok(S::Completed));
    }

    #[test]
    fn failure_with_attempts_left_retries() {
        assert_eq!(transition(S::Processing, E::Fail { retry: true }), Ok(S::Retrying));
    }

    #[test]
    fn failure_without_attempts_left_fails() {
        assert_eq!(transition(S::Processing, E::Fail { retry: false }), Ok(S::Failed));
    }

    #[test]
    fn expired_lease_with_attempts_left_retries() {
        assert_eq!(
            transition(S::Processing, E::LeaseExpired { retry: true }),
            Ok(S::Retrying)
        );
    }

    #[test]
    fn expired_lease_without_attempts_left_fails() {
        assert_eq!(
            transition(S::Processing, E::LeaseExpired { retry: false }),
            Ok(S::Failed)
        );
    }

    #[test]
    fn unfinished_jobs_can_be_cancelled() {
        for from in [S::Pending, S::Retrying, S::Processing] {
            assert_eq!(transition(from, E::Cancel), Ok(S::Cancelled), "from {from}");
        }
    }

    #[test]
    fn failed_dependency_fails_a_pending_dependent() {
        assert_eq!(transition(S::Pending, E::DependencyFailed), Ok(S::Failed));
    }

    #[test]
    fn terminal_jobs_accept_no_event() {
        for from in [S::Completed, S::Failed, S::Cancelled] {
            for event in EVENTS {
                assert_eq!(
                    transition(from, event),
                    Err(IllegalTransition { from, event }),
                    "{from} + {event:?}"
                );
            }
        }
    }

    #[test]
    fn a_job_is_never_completed_twice_or_without_a_claim() {
        assert!(transition(S::Completed, E::Complete).is_err());
        assert!(transition(S::Pending, E::Complete).is_err());
        assert!(transition(S::Retrying, E::Complete).is_err());
    }

    #[test]
    fn a_processing_job_cannot_be_claimed_again() {
        assert!(transition(S::Processing, E::Claim).is_err());
    }

    #[test]
    fn only_processing_jobs_fail_or_lose_a_lease() {
        for from in [S::Pending, S::Retrying] {
            for event in [
                E::Fail { retry: true },
                E::Fail { retry: false },
                E::LeaseExpired { retry: true },
                E::LeaseExpired { retry: false },
            ] {
                assert!(transition(from, event).is_err(), "{from} + {event:?}");
            }
        }
    }

    #[test]
    fn claimed_or_retrying_jobs_are_not_failed_by_dependencies() {
        for from in [S::Processing, S::Retrying] {
            assert!(transition(from, E::DependencyFailed).is_err(), "from {from}");
        }
    }

    #[test]
    fn reachable_pairs_are_exactly_the_sql_trigger_list() {
        let mut reachable: Vec<(JobStatus, JobStatus)> = Vec::new();
        for from in JobStatus::ALL {
            for event in EVENTS {
                if let Ok(to) = transition(from, event) {
                    if !reachable.contains(&(from, to)) {
                        reachable.push((from, to));
                    }
                }
            }
        }
        assert_eq!(reachable.len(), LEGAL_TRANSITIONS.len());
        for pair in LEGAL_TRANSITIONS {
            assert!(reachable.contains(&pair), "{pair:?} unreachable");
        }
    }

    #[test]
    fn every_transition_leaves_the_status_it_came_from() {
        for from in JobStatus::ALL {
            for event in EVENTS {
                if let Ok(to) = transition(from, event) {
                    assert_ne!(from, to);
                }
            }
        }
    }

    #[test]
    fn status_names_round_trip_through_sql_spelling_and_serde() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(serde_json::from_str::<JobStatus>(&json).unwrap(), st);
        }
        assert_eq!(JobStatus::parse("queued"), None);
    }

    #[test]
    fn terminal_and_waiting_partition_the_non_processing_statuses() {
        for st in JobStatus::ALL {
            let classes = [st.is_terminal(), st.is_waiting(), st == S::Processing];
            assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{st}");
        }
    }

    #[test]
    fn retry_needs_retryable_error_and_attempts_left() {
        assert!(should_retry(true, 1, 5));
        assert!(should_retry(true, 4, 5));
        assert!(!should_retry(true, 5, 5));
        assert!(!should_retry(false, 1, 5));
        assert!(!should_retry(true, 1, 1));
    }

    // The same table pins `backoff_ceiling_ms` in tests/platform/queue/retry.test.ts.
    #[test]
    fn ceiling_doubles_from_base_until_the_cap() {
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 600_000,
        };
        let expected = [
            (0, 1_000),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (5, 16_000),
            (10, 512_000),
            (11, 600_000),
            (64, 600_000),
            (65, 600_000),
            (u32::MAX, 600_000),
        ];
        for (attempt, ceiling) in expected {
            assert_eq!(b.ceiling_ms(attempt), ceiling, "attempt {attempt}");
        }
    }

    #[test]
    fn zero_base_means_immediate_retry() {
        let b = Backoff { base_ms: 0, cap_ms: 0 };
        let mut rng = SeededRng(7);
        for attempt in [1, 2, 40, 100] {
            assert_eq!(b.ceiling_ms(attempt), 0);
            assert_eq!(b.delay_ms(attempt, None, &mut rng), 0);
        }
    }

    #[test]
    fn delay_stays_within_full_jitter_bounds() {
        let b = Backoff::DEFAULT;
        let mut rng = SeededRng(42);
        for attempt in 1..=15 {
            let ceiling = b.ceiling_ms(attempt);
            for _ in 0..200 {
                let d = b.delay_ms(attempt, None, &mut rng);
                assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
            }
        }
    }

    #[test]
    fn delay_is_spread_over_the_whole_jitter_range() {
        // Full jitter, not "ceiling plus a little": both halves of [0, ceiling] occur.
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 60_000,
        };
        let mut rng = SeededRng(3);
        let samples: Vec<u64> = (0..500).map(|_| b.delay_ms(4, None, &mut rng)).collect();
        assert!(samples.iter().any(|d| *d < 2_000));
        assert!(samples.iter().any(|d| *d > 6_000));
    }

    #[test]
    fn retry_after_is_a_lower_bound_even_above_the_cap() {
        let b = Backoff {
            base_ms: 100,
            cap_ms: 1_000,
        };
        let mut rng = SeededRng(9);
        for _ in 0..100 {
            assert!(b.delay_ms(3, Some(250), &mut rng) >= 250);
            assert_eq!(b.delay_ms(3, Some(30_000), &mut rng), 30_000);
        }
    }

    #[test]
    fn delay_is_deterministic_for_a_seed() {
        let b = Backoff::DEFAULT;
        let a: Vec<u64> = {
            let mut rng = SeededRng(11);
            (1..10).map(|n| b.delay_ms(n, None, &mut rng)).collect()
        };
        let c: Vec<u64> = {
            let mut rng = SeededRng(11);
            (1..10).map(|n| b.delay_ms(n, None, &mut rng)).collect()
        };
        assert_eq!(a, c);
    }

    #[test]
    fn idle_poll_backoff_is_bounded_by_two_seconds() {
        let mut rng = SeededRng(5);
        for empty_polls in 1..100 {
            assert!(Backoff::POLL.delay_ms(empty_polls, None, &mut rng) <= 2_000);
        }
        assert_eq!(Backoff::POLL.ceiling_ms(1), 100);
    }
}
