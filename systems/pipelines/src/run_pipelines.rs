//! run-pipelines.
//!
//! * `POST {pipelineId}` (its owner, or the service role): starts a run;
//!   its first step is enqueued at once (`{run_id, status: "queued"}`).
//! * `POST {run_id, action: "cancel" | "resume"}` (its owner): cancels a run
//!   (waiting step jobs are cancelled; a step running now finishes and
//!   nothing follows it), or resumes a failed or cancelled one after its
//!   last finished step.
//! * `GET ?run_id=` (its owner): the run and its steps' history.
//! * `GET` (service role; the scheduler POSTs `{}`): runs due pipeline jobs in batches
//!   until none is due or the time budget (`max_duration_ms`, at most
//!   `QUEUE_WORKER_MAX_DURATION_MS` or 120 s) is spent.

use edgeworks_core::{ApiError, Method};
use edgeworks_input::validate::{Field, Validate};
use edgeworks_queue::{JobContext, Registry, Worker};
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, Caller, Json, Route, ServiceDb, Settings};
use serde_json::{json, Value};

use crate::tokens::map_db_error;
use crate::{Incoming, PipelineSetup};

/// GET or POST; users and the service role; 60 burst, one a second.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post])
    .access(Access::UserOrService)
    .rate_limit("60/1");

const DEFAULT_BUDGET_MS: u64 = 20_000;
const BATCH_MARGIN_MS: u64 = 3_000;

edgeworks_input::input! {
    /// What a caller sends (body on POST, query on GET).
    pub struct RunRequest {
        /// The seed's name for the pipeline to run.
        #[serde(rename = "pipelineId")]
        pub pipeline_id_seed: Option<String> = Field::uuid(),
        /// The pipeline to run.
        pub pipeline_id: Option<String> = Field::uuid(),
        /// The run to act on.
        pub run_id: Option<String> = Field::uuid(),
        /// start (default with a pipeline), cancel, resume, status (default with a run).
        pub action: Option<String> = Field::string().one_of(&["start", "cancel", "resume", "status"]),
        /// Jobs claimed per batch (service role).
        pub batch_size: Option<u32> = Field::integer().range(1, 50),
        /// Time budget (service role).
        pub max_duration_ms: Option<u64> = Field::integer().range(1, 600_000),
    }
}

fn parse(req: &edgeworks_core::Request) -> Result<RunRequest, ApiError> {
    let schema = RunRequest::schema();
    // The seed's field is camelCase; the schema checks it under that name.
    let schema = schema.field("pipelineId", Field::uuid());
    match req.method {
        Method::Get => schema.parse_value(schema.object_from_query(req.query())),
        _ => schema.parse(if req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &req.body
        }),
    }
}

/// The handler.
pub async fn handle(
    caller: Caller,
    setup: Settings<PipelineSetup>,
    Incoming(req): Incoming,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let body = parse(&req)?;
    let service = caller.principal.is_service_role;
    let user = if service {
        None
    } else {
        Some(caller.user_id()?.to_string())
    };
    let pipeline = body.pipeline_id.clone().or(body.pipeline_id_seed.clone());
    let action = match (&body.action, &pipeline, &body.run_id) {
        (Some(a), _, _) => a.as_str(),
        (None, Some(_), _) => "start",
        (None, None, Some(_)) => "status",
        // The scheduler POSTs (pg_net, the local gateway); the seed's clients GET.
        (None, None, None) if service => "batch",
        _ => {
            return Err(ApiError::unprocessable(
                "request failed validation",
                json!({ "fields": [{ "field": "pipelineId", "code": "required", "message": "send pipelineId to start a run, or run_id" }] }),
            ))
        }
    };
    let need_run = || {
        body.run_id.clone().ok_or_else(|| {
            ApiError::unprocessable(
                "request failed validation",
                json!({ "fields": [{ "field": "run_id", "code": "required", "message": "the run to act on" }] }),
            )
        })
    };
    let data = match action {
        "batch" => run_batches(&setup, &db, &ctx, &body).await?,
        "start" => {
            let pipeline = pipeline.ok_or_else(|| {
                ApiError::unprocessable(
                    "request failed validation",
                    json!({ "fields": [{ "field": "pipelineId", "code": "required", "message": "the pipeline to run" }] }),
                )
            })?;
            let started: Value = db
                .rpc(
                    "pipeline_run_start",
                    &json!({ "p_user": user, "p_pipeline": pipeline, "p_trigger": "manual",
                             "p_max_attempts": setup.pipeline.step_max_attempts,
                             "p_backoff_base_ms": setup.pipeline.retry_base_ms }),
                )
                .await
                .map_err(map_db_error)?;
            ctx.log().info(
                "pipeline run started",
                json!({ "run_id": started["run_id"], "pipeline_id": pipeline }),
            );
            started
        }
        "cancel" => db
            .rpc("pipeline_run_cancel", &json!({ "p_run": need_run()?, "p_user": user }))
            .await
            .map_err(map_db_error)?,
        "resume" => db
            .rpc("pipeline_run_resume", &json!({ "p_run": need_run()?, "p_user": user }))
            .await
            .map_err(map_db_error)?,
        _ => status(&db, &need_run()?, user.as_deref()).await?,
    };
    Ok(Json(data))
}

async fn status(db: &ServiceDb, run: &str, user: Option<&str>) -> Result<Value, ApiError> {
    let mut q = db.from("pipeline_runs").select("*").eq("id", run);
    if let Some(u) = user {
        q = q.eq("user_id", u);
    }
    let runs: Vec<Value> = db.execute(q).await.map_err(ApiError::from)?;
    let run_row = runs
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("run_not_found", "no such run"))?;
    let steps: Vec<Value> = db
        .execute(
            db.from("pipeline_history")
                .select("step_id,position,step_type,status,attempts,result,error,started_at,finished_at")
                .eq("run_id", run)
                .order("position"),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(json!({ "run": run_row, "steps": steps }))
}

async fn run_batches(setup: &PipelineSetup, db: &ServiceDb, ctx: &Ctx, body: &RunRequest) -> Result<Value, ApiError> {
    let env = ctx.env();
    let (budget, _) = edgeworks_queue::call_budget_ms(body.max_duration_ms.unwrap_or(DEFAULT_BUDGET_MS), |k| {
        env.get(k).map(str::to_string)
    });
    let batch = body.batch_size.unwrap_or(10);
    // One id per isolate, so the scheduler's calls every few seconds keep one
    // workers row rather than adding one per call.
    let worker_id = edgeworks_queue::isolate_worker_id("run-pipelines", &mut ctx.rng());
    let registry = setup.register(Registry::new(), ctx);
    let http = ctx.http();
    let worker = Worker {
        registry: &registry,
        cx: JobContext {
            db,
            http: &http,
            worker_id: &worker_id,
        },
        lease_seconds: 60,
    };
    let started = ctx.elapsed_ms();
    let (mut processed, mut failed, mut batches) = (0u32, 0u32, 0u32);
    loop {
        if ctx.elapsed_ms().saturating_sub(started) + BATCH_MARGIN_MS.min(budget / 2) >= budget {
            break;
        }
        let report = worker.run_batch(batch, None, None).await?;
        for event in &report.events {
            ctx.log().info("job processed", event.clone());
        }
        processed += report.processed;
        failed += report.failed;
        if report.claimed == 0 {
            break;
        }
        batches += 1;
    }
    Ok(json!({
        "jobs_processed": processed, "jobs_failed": failed, "batches": batches,
        "processing_time_ms": ctx.elapsed_ms().saturating_sub(started), "max_duration_ms": budget,
    }))
}
