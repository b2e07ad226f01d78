//! What one worker call (an edge function draining queues) may spend, and the
//! id it works under.
//!
//! The budget: the hosted runtime stops handing a worker process new requests
//! at half its wall clock (150 s on the free plan) and kills it at the wall
//! clock, so a call may start as late as 75 s into its process's life and has
//! 75 s left. It stops starting batches a margin before its budget ends, and a
//! batch in flight may still wait out a 30 s provider call: 45 s + 30 s fits.
//! `QUEUE_WORKER_MAX_DURATION_MS` changes the ceiling (e.g. on a paid plan's
//! 400 s wall clock).

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::Rng;

/// The variable that sets the ceiling on a worker call's budget.
pub const MAX_DURATION_VAR: &str = "QUEUE_WORKER_MAX_DURATION_MS";

/// The ceiling when the variable is not set (see the module docs).
pub const DEFAULT_MAX_DURATION_MS: u64 = 45_000;

/// The budget for a call that asked for `asked_ms`, and the ceiling it was
/// held to (from `MAX_DURATION_VAR`, or the default when unset or unparsable).
pub fn call_budget_ms(asked_ms: u64, lookup: impl Fn(&str) -> Option<String>) -> (u64, u64) {
    let ceiling = lookup(MAX_DURATION_VAR)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_MAX_DURATION_MS);
    (asked_ms.min(ceiling), ceiling)
}

/// A worker id for callers that did not name one: `<prefix>-<8 hex>`.
pub fn worker_id(prefix: &str, rng: &mut dyn Rng) -> String {
    format!("{prefix}-{}", &uuid_v4(rng)[..8])
}

/// The worker id of this isolate: drawn once, then the same for every request
/// it serves, so a scheduler calling a worker function every few seconds keeps
/// heartbeating one `workers` row instead of adding one per call. (An isolate
/// is one function's instance; a re-instantiated one draws a new id, and the
/// old row is reaped once it has been silent long enough.)
pub fn isolate_worker_id(prefix: &str, rng: &mut dyn Rng) -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| worker_id(prefix, rng)).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl Rng for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            self.0 = self.0.wrapping_add(1);
            buf.fill(self.0);
        }
    }

    #[test]
    fn an_isolate_keeps_one_worker_id() {
        let mut rng = Counter(0);
        let first = isolate_worker_id("queue-worker", &mut rng);
        assert!(first.starts_with("queue-worker-"));
        assert_eq!(isolate_worker_id("queue-worker", &mut rng), first);
        assert_ne!(worker_id("queue-worker", &mut rng), first);
    }

    #[test]
    fn a_call_is_held_to_the_ceiling_and_keeps_a_shorter_ask() {
        let unset = |_: &str| None;
        assert_eq!(call_budget_ms(300_000, unset), (45_000, 45_000));
        assert_eq!(call_budget_ms(1_000, unset), (1_000, 45_000));
        let paid = |k: &str| (k == MAX_DURATION_VAR).then(|| "180000".to_string());
        assert_eq!(call_budget_ms(300_000, paid), (180_000, 180_000));
        let junk = |_: &str| Some("soon".to_string());
        assert_eq!(call_budget_ms(300_000, junk), (45_000, 45_000));
    }
}
