//! `chat-process` (POST `{job_id?, batch_size?, worker_id?}`, service role):
//! claims up to `batch_size` chat jobs (or the one job), answers each with
//! the configured provider and completes or retries it.
//! Answers `{jobs_processed, jobs_failed, processing_time_ms, next_job_available, worker_id}`.

use edgeworks_chat_queue::{isolate_worker_id, WorkerSetup};
use edgeworks_core::{ApiError, Clock, Method, Request, Response};
use edgeworks_input::validate::{Field, Schema};
use edgeworks_runtime::{export_handler, Ctx, Options};
use edgeworks_service::{authenticate, service_db};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Body {
    job_id: Option<String>,
    batch_size: Option<u32>,
    worker_id: Option<String>,
}

async fn chat_process(req: Request, ctx: Ctx) -> Result<Response, ApiError> {
    let schema = Schema::object()
        .field("job_id", Field::uuid())
        .field("batch_size", Field::integer().range(1, 50))
        .field("worker_id", Field::string().non_blank().max_chars(200));
    let body: Body = if req.body.iter().all(u8::is_ascii_whitespace) {
        Body {
            job_id: None,
            batch_size: None,
            worker_id: None,
        }
    } else {
        schema.parse(&req.body)?
    };
    let caller = authenticate(&ctx, &req).await?;
    caller.require_service_role()?;

    let env = ctx.env();
    let name = body
        .worker_id
        .unwrap_or_else(|| isolate_worker_id("chat-process", &mut ctx.rng()));
    let setup = WorkerSetup::from_lookup(|k| env.get(k).map(str::to_string), name, ctx.clock().now_ms())?;
    let worker_id = &setup.worker_id;
    let db = service_db(&ctx)?;
    let http = ctx.http();
    let worker = setup.worker(&db, &http);

    let started = ctx.elapsed_ms();
    let report = worker
        .run_batch(body.batch_size.unwrap_or(5), body.job_id.as_deref())
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
    Ok(Response::ok(&json!({
        "jobs_processed": report.processed,
        "jobs_failed": report.failed,
        "processing_time_ms": ctx.elapsed_ms().saturating_sub(started),
        "next_job_available": next,
        "worker_id": worker_id,
        "provider": setup.provider.name(),
    })))
}

export_handler!(
    chat_process,
    Options {
        methods: &[Method::Post],
        ..Options::default()
    }
);
