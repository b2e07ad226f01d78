//! The queue's own job kind: housekeeping on demand. `queue-worker` also
//! does this after every run; enqueueing a `queue_housekeeping` job lets an
//! operator (or a schedule) run it with its own retention without a worker
//! call of its own, and is the second kind beside chat that proves the
//! worker is not wired to one system.

use edgeworks_core::http_client::HttpClient;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::sql::{ClaimedJob, JobQueue};
use crate::worker::{JobContext, JobHandler, JobOutcome};

/// Finished jobs older than this are deleted unless the job says otherwise.
pub const DEFAULT_RETENTION_SECONDS: u32 = 7 * 24 * 3600;
/// Rate-limit buckets idle this long are pruned.
pub const BUCKET_IDLE_SECONDS: u32 = 3600;

/// What a housekeeping job may ask for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HousekeepingInput {
    /// Keep finished jobs this long.
    pub retention_seconds: Option<u32>,
}

/// Requeues expired leases, deletes old finished jobs, prunes idle buckets.
pub struct Housekeeping;

impl<C: HttpClient> JobHandler<C> for Housekeeping {
    const QUEUE: &'static str = "maintenance";
    const KIND: &'static str = "queue_housekeeping";
    type Input = HousekeepingInput;

    async fn run(&self, _job: &ClaimedJob, input: HousekeepingInput, cx: &JobContext<'_, C>) -> JobOutcome {
        let queue = JobQueue::new(cx.db);
        let retention = input.retention_seconds.unwrap_or(DEFAULT_RETENTION_SECONDS);
        let requeued = match queue.requeue_expired().await {
            Ok(n) => n,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: e.to_string(),
                    retry_after_ms: None,
                }
            }
        };
        let cleaned = match queue.cleanup(retention, 1000).await {
            Ok(r) => r.jobs_deleted,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: e.to_string(),
                    retry_after_ms: None,
                }
            }
        };
        let pruned = cx
            .db
            .rpc::<Value>("rate_limit_prune", &json!({ "p_idle_seconds": BUCKET_IDLE_SECONDS }))
            .await
            .is_ok();
        JobOutcome::Complete(Some(json!({
            "expired_leases_requeued": requeued,
            "jobs_cleaned_up": cleaned,
            "buckets_pruned": pruned,
        })))
    }
}
