//! `queue-worker` (POST `{worker_id?, batch_size?, job_types?, continuous?,
//! max_duration_ms?}`, service role): runs chat batches until the queue is
//! empty (batch mode) or until its time budget ends (continuous mode),
//! heartbeating in the worker table, then requeues expired leases and cleans
//! up finished jobs and idle rate-limit buckets.
//!
//! The time budget: an edge function is killed at its wall clock (150 s on
//! the free plan, 400 s on paid plans). The seed's default of 300 000 ms is
//! therefore clamped to `QUEUE_WORKER_MAX_DURATION_MS` (default 120 000 ms),
//! which leaves 30 s on the free plan for the batch in flight (a provider
//! call has a 30 s timeout) to finish; no new batch starts later than
//! `BATCH_MARGIN_MS` before the budget ends. A job cut off anyway is not
//! lost: its lease expires and another worker retries it.

use edgeworks_chat_queue::{isolate_worker_id, WorkerSetup, KIND, QUEUE};
use edgeworks_core::{ApiError, Clock, Method, Request, Response};
use edgeworks_input::validate::{Field, Schema};
use edgeworks_queue::{JobQueue, WorkerStatus};
use edgeworks_runtime::{export_handler, sleep_ms, Ctx, Options};
use edgeworks_service::{authenticate, service_db};
use serde::Deserialize;
use serde_json::{json, Value};

const SEED_DEFAULT_DURATION_MS: u64 = 300_000;
const DEFAULT_CLAMP_MS: u64 = 120_000;
const BATCH_MARGIN_MS: u64 = 5_000;
const IDLE_SLEEP_MIN_MS: u32 = 100;
const IDLE_SLEEP_MAX_MS: u32 = 2_000;

#[derive(Deserialize, Default)]
struct Body {
    worker_id: Option<String>,
    batch_size: Option<u32>,
    continuous: Option<bool>,
    max_duration_ms: Option<u64>,
}

async fn queue_worker(req: Request, ctx: Ctx) -> Result<Response, ApiError> {
    let schema = Schema::object()
        .field("worker_id", Field::string().non_blank().max_chars(200))
        .field("batch_size", Field::integer().range(1, 50))
        .field("job_types", Field::array(Field::string().one_of(&[KIND])).max_items(10))
        .field("continuous", Field::boolean())
        .field("max_duration_ms", Field::integer().range(1, 3_600_000));
    let body: Body = if req.body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        schema.parse(&req.body)?
    };
    let caller = authenticate(&ctx, &req).await?;
    caller.require_service_role()?;

    let env = ctx.env();
    let clamp = env.parse_or("QUEUE_WORKER_MAX_DURATION_MS", DEFAULT_CLAMP_MS);
    let asked = body.max_duration_ms.unwrap_or(SEED_DEFAULT_DURATION_MS);
    let budget_ms = asked.min(clamp);
    let continuous = body.continuous.unwrap_or(false);
    let batch = body.batch_size.unwrap_or(5);

    let name = body
        .worker_id
        .unwrap_or_else(|| isolate_worker_id("queue-worker", &mut ctx.rng()));
    let setup = WorkerSetup::from_lookup(|k| env.get(k).map(str::to_string), name, ctx.clock().now_ms())?;
    let worker_id = &setup.worker_id;
    let db = service_db(&ctx)?;
    let http = ctx.http();
    let worker = setup.worker(&db, &http);
    let queue = JobQueue::new(&db);
    let _ = queue.heartbeat(worker_id, Some(&[QUEUE]), WorkerStatus::Active).await;

    let started = ctx.elapsed_ms();
    let (mut processed, mut failed, mut iterations) = (0u32, 0u32, 0u32);
    let mut idle_sleep = IDLE_SLEEP_MIN_MS;
    loop {
        let elapsed = ctx.elapsed_ms().saturating_sub(started);
        if elapsed + BATCH_MARGIN_MS.min(budget_ms / 2) >= budget_ms {
            break;
        }
        let report = worker.run_batch(batch, None).await?;
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
        sleep_ms(idle_sleep.min(left as u32)).await;
        idle_sleep = (idle_sleep * 2).min(IDLE_SLEEP_MAX_MS);
    }

    // Housekeeping: crashed workers' jobs back in line, old jobs and idle buckets gone.
    let requeued = queue.requeue_expired().await.unwrap_or(0);
    let retention = env.parse_or("QUEUE_RETENTION_SECONDS", 7 * 24 * 3600u32);
    let cleaned = queue
        .cleanup(retention, 1000)
        .await
        .map(|r| r.jobs_deleted)
        .unwrap_or(0);
    let _ = db
        .rpc::<Value>("rate_limit_prune", &json!({ "p_idle_seconds": 3600 }))
        .await;
    let next = worker.next_job_available().await.unwrap_or(false);
    let _ = queue.heartbeat(worker_id, None, WorkerStatus::Idle).await;

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
    Ok(Response::ok(&data))
}

export_handler!(
    queue_worker,
    Options {
        methods: &[Method::Post],
        ..Options::default()
    }
);
