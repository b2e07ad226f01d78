//! queue-worker (POST `{worker_id?, batch_size?, job_types?, continuous?,
//! max_duration_ms?}`, service role): the one worker for every system. It
//! registers each system's job kinds, claims across all of them (or the
//! `job_types` asked for) until the queues are empty (batch mode) or its
//! time budget ends (continuous mode), heartbeating in the worker table,
//! then requeues expired leases and cleans up.
//!
//! The time budget: an edge function is killed at its wall clock (150 s on
//! the free plan, 400 s on paid plans). The seed's default of 300 000 ms is
//! therefore clamped to `QUEUE_WORKER_MAX_DURATION_MS` (default 120 000 ms),
//! which leaves 30 s on the free plan for the batch in flight (a provider
//! call has a 30 s timeout) to finish; no new batch starts later than
//! `BATCH_MARGIN_MS` before the budget ends. A job cut off anyway is not
//! lost: its lease expires and another worker retries it.

use edgeworks_chat_queue::{isolate_worker_id, today, ChatSetup};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_queue::housekeeping::{Housekeeping, BUCKET_IDLE_SECONDS, DEFAULT_RETENTION_SECONDS};
use edgeworks_queue::{JobQueue, Registry, Worker, WorkerStatus};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{Access, Json, Route, ServiceDb, ServiceRole, Settings};
use serde::Deserialize;
use serde_json::{json, Value};

const SEED_DEFAULT_DURATION_MS: u64 = 300_000;
const DEFAULT_CLAMP_MS: u64 = 120_000;
const BATCH_MARGIN_MS: u64 = 5_000;
const IDLE_SLEEP_MIN_MS: u32 = 100;
const IDLE_SLEEP_MAX_MS: u32 = 2_000;

/// Every job kind this worker runs, registered by its system.
pub const JOB_KINDS: &[&str] = &[edgeworks_chat_queue::KIND, "queue_housekeeping"];

/// POST, service role.
pub const ROUTE: Route = Route::new(&[Method::Post]).access(Access::Service);

/// What a caller may ask of one run.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerRequest {
    worker_id: Option<String>,
    batch_size: Option<u32>,
    job_types: Option<Vec<String>>,
    continuous: Option<bool>,
    max_duration_ms: Option<u64>,
}

impl Validate for WorkerRequest {
    fn schema() -> Schema {
        Schema::object()
            .field("worker_id", Field::string().non_blank().max_chars(200))
            .field("batch_size", Field::integer().range(1, 50))
            .field(
                "job_types",
                Field::array(Field::string().one_of(JOB_KINDS)).max_items(10),
            )
            .field("continuous", Field::boolean())
            .field("max_duration_ms", Field::integer().range(1, 3_600_000))
    }
}

/// The registry: one line per system's job kind.
fn registry<'a>(chat: &'a ChatSetup, today: &'a str) -> Registry<'a, HostHttp> {
    Registry::new().register(chat.handler(today)).register(Housekeeping)
}

/// The handler.
pub async fn handle(
    _: ServiceRole,
    chat: Settings<ChatSetup>,
    Json(body): Json<WorkerRequest>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let env = ctx.env();
    let clamp = env.parse_or("QUEUE_WORKER_MAX_DURATION_MS", DEFAULT_CLAMP_MS);
    let asked = body.max_duration_ms.unwrap_or(SEED_DEFAULT_DURATION_MS);
    let budget_ms = asked.min(clamp);
    let continuous = body.continuous.unwrap_or(false);
    let batch = body.batch_size.unwrap_or(5);
    let worker_id = body
        .worker_id
        .unwrap_or_else(|| isolate_worker_id("queue-worker", &mut ctx.rng()));
    let today = today(ctx.clock().now_ms());
    let registry = registry(&chat, &today);
    let kinds: Option<Vec<&str>> = body.job_types.as_ref().map(|t| t.iter().map(String::as_str).collect());
    let http = ctx.http();
    let worker = Worker::new(&registry, &db, &http, &worker_id, chat.settings.lease_seconds);
    let queue = JobQueue::new(&db);
    let _ = queue
        .heartbeat(&worker_id, Some(&registry.queues()), WorkerStatus::Active)
        .await;

    let started = ctx.elapsed_ms();
    let (mut processed, mut failed, mut iterations) = (0u32, 0u32, 0u32);
    let mut idle_sleep = IDLE_SLEEP_MIN_MS;
    loop {
        let elapsed = ctx.elapsed_ms().saturating_sub(started);
        if elapsed + BATCH_MARGIN_MS.min(budget_ms / 2) >= budget_ms {
            break;
        }
        let report = worker.run_batch(batch, None, kinds.as_deref()).await?;
        for event in &report.events {
            ctx.log().info("job processed", event.clone());
        }
        processed += report.processed;
        failed += report.failed;
        if report.claimed > 0 {
            iterations += 1;
            idle_sleep = IDLE_SLEEP_MIN_MS;
            continue;
        }
        if !continuous {
            break;
        }
        // Nothing to claim: wait, backing off, without overrunning the budget.
        let left = budget_ms.saturating_sub(ctx.elapsed_ms().saturating_sub(started));
        ctx.sleep(idle_sleep.min(left as u32)).await;
        idle_sleep = (idle_sleep * 2).min(IDLE_SLEEP_MAX_MS);
    }

    // Housekeeping: crashed workers' jobs back in line, old jobs and idle buckets gone.
    let requeued = queue.requeue_expired().await.unwrap_or(0);
    let retention = env.parse_or("QUEUE_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS);
    let cleaned = queue
        .cleanup(retention, 1000)
        .await
        .map(|r| r.jobs_deleted)
        .unwrap_or(0);
    let _ = db
        .rpc::<Value>("rate_limit_prune", &json!({ "p_idle_seconds": BUCKET_IDLE_SECONDS }))
        .await;
    let next = worker.next_job_available().await.unwrap_or(false);
    let _ = queue.heartbeat(&worker_id, None, WorkerStatus::Idle).await;

    let mut data = json!({
        "worker_id": worker_id,
        "jobs_processed": processed,
        "jobs_failed": failed,
        "processing_time_ms": ctx.elapsed_ms().saturating_sub(started),
        "next_job_available": next,
        "continuous": continuous,
        "iterations": iterations,
        "max_duration_ms": budget_ms,
        "expired_leases_requeued": requeued,
        "jobs_cleaned_up": cleaned,
    });
    if asked > budget_ms {
        data["max_duration_clamped"] = json!({
            "requested_ms": asked,
            "reason": format!("an edge function is stopped at its wall clock (150 s on the free plan); the worker runs at most {clamp} ms (QUEUE_WORKER_MAX_DURATION_MS)"),
        });
    }
    Ok(Json(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_kind_is_an_accepted_job_type() {
        let chat = ChatSetup {
            settings: Default::default(),
            provider: edgeworks_llm::chat::ChatProvider::Offline(edgeworks_llm::offline::OfflineProvider),
        };
        let mut registered = registry(&chat, "2026-01-01").kinds();
        registered.sort_unstable();
        let mut accepted = JOB_KINDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(registered, accepted);
    }
}
