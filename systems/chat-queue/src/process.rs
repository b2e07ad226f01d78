//! chat-process (POST `{job_id?, batch_size?, worker_id?}`, service role):
//! claims up to `batch_size` chat jobs (or the one job) and runs them
//! through the queue's worker with the chat kind alone registered.
//! Answers `{jobs_processed, jobs_failed, processing_time_ms, next_job_available, worker_id, provider}`.

use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_input::validate::Field;
use edgeworks_queue::{Registry, Worker};
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, Json, Route, ServiceDb, ServiceRole, Settings};
use serde_json::{json, Value};

use crate::{isolate_worker_id, today, ChatSetup};

/// POST, service role.
pub const ROUTE: Route = Route::new(&[Method::Post]).access(Access::Service);

edgeworks_input::input! {
    /// What a caller may ask of one run.
    pub struct ProcessRequest {
        /// Exactly this job.
        pub job_id: Option<String> = Field::uuid(),
        /// Jobs per batch (default 5).
        pub batch_size: Option<u32> = Field::integer().range(1, 50),
        /// The worker's name (default: this isolate's).
        pub worker_id: Option<String> = Field::string().non_blank().max_chars(200),
    }
}

/// The handler.
pub async fn handle(
    _: ServiceRole,
    setup: Settings<ChatSetup>,
    Json(body): Json<ProcessRequest>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let worker_id = body
        .worker_id
        .unwrap_or_else(|| isolate_worker_id("chat-process", &mut ctx.rng()));
    let today = today(ctx.clock().now_ms());
    let registry = Registry::new().register(setup.handler(&today));
    let http = ctx.http();
    let worker = Worker::new(&registry, &db, &http, &worker_id, setup.settings.lease_seconds);
    let started = ctx.elapsed_ms();
    let report = worker
        .run_batch(body.batch_size.unwrap_or(5), body.job_id.as_deref(), None)
        .await?;
    if body.job_id.is_some() && report.claimed == 0 {
        return Err(ApiError::conflict(
            "job_not_claimable",
            "that job does not exist or is not waiting to run (already running, finished, or not yet due)",
        ));
    }
    for event in &report.events {
        ctx.log().info("job processed", event.clone());
    }
    let next = worker.next_job_available().await.unwrap_or(false);
    Ok(Json(json!({
        "jobs_processed": report.processed,
        "jobs_failed": report.failed,
        "processing_time_ms": ctx.elapsed_ms().saturating_sub(started),
        "next_job_available": next,
        "worker_id": worker_id,
        "provider": setup.provider.name(),
    })))
}
