//! queue-worker (POST `{worker_id?, batch_size?, job_types?, continuous?,
//! max_duration_ms?}`, service role): the one worker for every system. It
//! registers each system's job kinds, claims across all of them (or the
//! `job_types` asked for) until the queues are empty (batch mode) or its
//! time budget ends (continuous mode), heartbeating in the worker table,
//! then requeues expired leases and cleans up. While another batch may
//! start, a batch's last completion claims the next batch in the same call
//! (`complete_job_and_claim`).
//!
//! The time budget: an edge function is killed at its wall clock (150 s on
//! the free plan, 400 s on paid plans), and a call may start as late as half
//! of it. The seed's default of 300 000 ms is therefore held to
//! `QUEUE_WORKER_MAX_DURATION_MS` (default 45 000 ms; the reasoning is in
//! edgeworks_queue::call_budget); no new batch starts later than
//! `BATCH_MARGIN_MS` before the budget ends. A job cut off anyway is not
//! lost: its lease expires and another worker retries it.

use edgeworks_chat_queue::{isolate_worker_id, today, ChatSetup};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_pipelines::PipelineSetup;
use edgeworks_queue::housekeeping::{Housekeeping, BUCKET_IDLE_SECONDS, DEFAULT_RETENTION_SECONDS};
use edgeworks_queue::{call_budget_ms, ClaimedJob, JobQueue, Registry, Worker, WorkerStatus};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{Access, Json, Route, ServiceDb, ServiceRole, Settings};
use edgeworks_uploads::UploadJobs;
use serde::Deserialize;
use serde_json::{json, Value};

const SEED_DEFAULT_DURATION_MS: u64 = 300_000;
const BATCH_MARGIN_MS: u64 = 5_000;
const IDLE_SLEEP_MIN_MS: u32 = 100;
const IDLE_SLEEP_MAX_MS: u32 = 2_000;

/// Every job kind this worker runs, registered by its system.
pub const JOB_KINDS: &[&str] = &[
    edgeworks_chat_queue::KIND,
    "queue_housekeeping",
    "upload_parse",
    "upload_embed",
    edgeworks_pipelines::steps::KIND,
    "replicate_poll",
];

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
fn registry<'a>(
    chat: &'a ChatSetup,
    pipelines: &'a PipelineSetup,
    uploads: &'a UploadJobs,
    today: &'a str,
    ctx: &Ctx,
) -> Registry<'a, HostHttp> {
    let registry = Registry::new()
        .register(chat.handler(today))
        .register(Housekeeping)
        .register(uploads.parse_handler(ctx.clock().now_ms().div_euclid(1000)))
        .register(edgeworks_uploads::UploadEmbed);
    pipelines.register(registry, ctx)
}

/// The handler.
pub async fn handle(
    _: ServiceRole,
    chat: Settings<ChatSetup>,
    pipelines: Settings<PipelineSetup>,
    uploads: Settings<UploadJobs>,
    Json(body): Json<WorkerRequest>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let env = ctx.env();
    let asked = body.max_duration_ms.unwrap_or(SEED_DEFAULT_DURATION_MS);
    let (budget_ms, clamp) = call_budget_ms(asked, |k| env.get(k).map(str::to_string));
    let continuous = body.continuous.unwrap_or(false);
    let batch = body.batch_size.unwrap_or(5);
    let worker_id = body
        .worker_id
        .unwrap_or_else(|| isolate_worker_id("queue-worker", &mut ctx.rng()));
    let today = today(ctx.clock().now_ms());
    let registry = registry(&chat, &pipelines, &uploads, &today, &ctx);
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
    // The jobs a batch's last completion claimed (`Worker::run_jobs`): the
    // next batch, claimed without a round trip of its own. Empty means
    // nothing was due, as an empty claim does.
    let mut chained: Option<Vec<ClaimedJob>> = None;
    loop {
        let elapsed = ctx.elapsed_ms().saturating_sub(started);
        let may_start = elapsed + BATCH_MARGIN_MS.min(budget_ms / 2) < budget_ms;
        // Jobs in hand are leased to us already: run them even past the
        // margin rather than leave them to wait out their leases.
        if !may_start && chained.as_ref().is_none_or(Vec::is_empty) {
            break;
        }
        let jobs = match chained.take() {
            Some(jobs) => jobs,
            None => worker.claim(batch, None, kinds.as_deref()).await?,
        };
        // Chain the next claim only while another batch may start after this one.
        let want_next = may_start.then_some((batch, kinds.as_deref()));
        let (report, next) = worker.run_jobs(jobs, want_next).await;
        chained = next;
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
            "reason": format!("an edge function is stopped at its wall clock (150 s on the free plan) and a call may start as late as half of it; the worker runs at most {clamp} ms (QUEUE_WORKER_MAX_DURATION_MS)"),
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
        use edgeworks_service::FromEnv;
        let pipelines =
            PipelineSetup::from_env(&edgeworks_runtime::Env::from_pairs(Vec::<(&str, &str)>::new())).unwrap();
        let ctx = NativeHost::at(NOW).ctx(&[], "queue-worker");
        let uploads = edgeworks_uploads::UploadJobs::default();
        let mut registered = registry(&chat, &pipelines, &uploads, "2026-01-01", &ctx).kinds();
        registered.sort_unstable();
        let mut accepted = JOB_KINDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(registered, accepted);
    }

    use edgeworks_core::{Method, Request};
    use edgeworks_service::Parts;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeHost};

    const NOW: i64 = 1_767_225_600_000;

    /// PostgREST with empty queues: claims find nothing, housekeeping finds nothing.
    fn empty_queues() -> FakeServer {
        queues_holding(0)
    }

    /// A claimed housekeeping job (it runs against the fake and completes).
    fn housekeeping_row(n: usize) -> String {
        json!({
            "id": format!("00000000-0000-4000-8000-{n:012}"), "queue": "maintenance",
            "kind": "queue_housekeeping", "payload": {}, "priority": 0, "attempts": 1,
            "max_attempts": 3, "lease_token": format!("10000000-0000-4000-8000-{n:012}"),
            "lease_expires_at": "2026-01-01T00:01:00+00:00", "owner_id": null,
            "created_at": "2026-01-01T00:00:00+00:00"
        })
        .to_string()
    }

    /// PostgREST whose queues hold `jobs` housekeeping jobs, handed out one
    /// per claim (`claim_jobs` or a chained `complete_job_and_claim`).
    fn queues_holding(jobs: usize) -> FakeServer {
        let handed = std::sync::atomic::AtomicUsize::new(0);
        let next_claim = move || {
            let n = handed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < jobs {
                json_response(200, &format!("[{}]", housekeeping_row(n)))
            } else {
                json_response(200, "[]")
            }
        };
        FakeServer::start(move |req, _| match req.url.rsplit('/').next() {
            Some("claim_jobs" | "complete_job_and_claim") => next_claim(),
            Some("queue_stats") => json_response(
                200,
                r#"{"queue":"chat","pending":0,"processing":0,"retrying":0,"completed":0,"failed":0,
                    "cancelled":0,"blocked":0,"delayed":0,"completed_in_window":0,"avg_processing_ms":null,
                    "p95_processing_ms":null,"oldest_pending_age_ms":null,"active_workers":0,"window_seconds":3600}"#,
            ),
            Some("requeue_expired_leases") => json_response(200, "0"),
            Some("cleanup_jobs") => json_response(200, r#"{"jobs_deleted":0,"workers_deleted":0}"#),
            _ => json_response(200, "null"),
        })
    }

    fn call(server: &FakeServer, host: &std::rc::Rc<NativeHost>, body: &str) -> Value {
        let url = server.base_url.clone();
        let ctx = host.ctx(
            &[
                ("SUPABASE_URL", url.as_str()),
                ("SUPABASE_SERVICE_ROLE_KEY", "service-key"),
                ("QUEUE_WORKER_MAX_DURATION_MS", "1000"),
            ],
            "queue-worker",
        );
        let mut req = Request::new(Method::Post, "http://h/functions/v1/queue-worker");
        req.body = body.as_bytes().to_vec();
        let parts = Parts::new(req, ctx.clone(), None);
        block_on(async {
            use edgeworks_service::FromRequest;
            let json = Json::<WorkerRequest>::from_request(&parts).await.unwrap();
            let chat = Settings::<ChatSetup>::from_request(&parts).await.unwrap();
            let pipelines = Settings::<PipelineSetup>::from_request(&parts).await.unwrap();
            let uploads = Settings::<UploadJobs>::from_request(&parts).await.unwrap();
            let db = ServiceDb::from_request(&parts).await.unwrap();
            handle(ServiceRole, chat, pipelines, uploads, json, db, ctx)
                .await
                .unwrap()
                .0
        })
    }

    #[test]
    fn the_seed_default_duration_is_clamped_to_the_wall_clock_budget() {
        let server = empty_queues();
        let host = NativeHost::at(NOW);
        let out = call(&server, &host, "{}");
        assert_eq!(out["max_duration_ms"], 1000);
        assert_eq!(out["max_duration_clamped"]["requested_ms"], 300_000);
        assert_eq!(out["jobs_processed"], 0);
        let claims: Vec<Value> = server
            .requests()
            .iter()
            .filter(|r| r.url.ends_with("/claim_jobs"))
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(claims.len(), 1, "batch mode stops at the first empty claim");
        let mut kinds: Vec<String> = serde_json::from_value(claims[0]["p_kinds"].clone()).unwrap();
        kinds.sort();
        let mut registered: Vec<&str> = JOB_KINDS.to_vec();
        registered.sort_unstable();
        assert_eq!(kinds, registered, "one claim across every registered kind");
    }

    fn count(server: &FakeServer, function: &str) -> usize {
        server
            .requests()
            .iter()
            .filter(|r| r.url.ends_with(&format!("/rpc/{function}")))
            .count()
    }

    #[test]
    fn a_batchs_completion_claims_the_next_batch_and_an_empty_one_ends_batch_mode() {
        let server = queues_holding(1);
        let host = NativeHost::at(NOW);
        let out = call(&server, &host, r#"{"batch_size": 1}"#);
        assert_eq!(
            (out["jobs_processed"].clone(), out["iterations"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(count(&server, "claim_jobs"), 1);
        assert_eq!(count(&server, "complete_job_and_claim"), 1);
        assert_eq!(count(&server, "complete_job"), 0);
    }

    #[test]
    fn jobs_a_completion_claimed_run_as_the_next_batch_without_a_claim() {
        let server = queues_holding(3);
        let host = NativeHost::at(NOW);
        let out = call(&server, &host, r#"{"batch_size": 1}"#);
        assert_eq!(
            (out["jobs_processed"].clone(), out["iterations"].clone()),
            (json!(3), json!(3))
        );
        assert_eq!(
            count(&server, "claim_jobs"),
            1,
            "only the first batch is claimed on its own"
        );
        assert_eq!(count(&server, "complete_job_and_claim"), 3);
        assert_eq!(count(&server, "complete_job"), 0);
    }

    #[test]
    fn continuous_mode_idles_on_the_hosts_clock_until_the_budget_ends() {
        let server = empty_queues();
        let host = NativeHost::at(NOW);
        let out = call(&server, &host, r#"{"continuous": true, "max_duration_ms": 900}"#);
        assert_eq!(out["continuous"], true);
        let claims = server
            .requests()
            .iter()
            .filter(|r| r.url.ends_with("/claim_jobs"))
            .count();
        assert!(claims > 1, "it polled again after idling ({claims} claims)");
        // The idle sleeps passed on the host's clock: the run ends when the
        // budget (900 ms, less its margin of half) has elapsed there.
        assert!(out["processing_time_ms"].as_u64().is_some_and(|ms| ms >= 450), "{out}");
    }
}
