//! job-processor.
//!
//! * `GET` (service role; the gateway's scheduler locally, pg_cron + pg_net
//!   on Supabase): fires due schedules in batches. Each batch claims due
//!   rows for this processor alone (`scheduled_jobs_claim_due`: skip-locked
//!   rows, a claim token and a lease), decides each in Rust (next run in the
//!   schedule's zone, catch-up rule, see [`crate::cron`]) and applies the
//!   decisions in one call (`scheduled_jobs_fire`: compare-and-set on the
//!   claim and the due time, one run per occurrence), so any number of
//!   processors enqueue an occurrence exactly once.
//! * `POST {pipeline_id, cron_expression, timezone?, catch_up?, max_retries?}`
//!   (a signed-in user): validates the expression and the zone (422 naming
//!   the field), stores the schedule and answers its next five runs.
//! * `POST {jobId}` (the owner, or the service role): runs the schedule's
//!   pipeline now, outside its schedule.

use edgeworks_core::time::{format_rfc3339_ms, parse_rfc3339_ms};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_input::validate::{Field, Validate};
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, Caller, Json, Route, ServiceDb, Settings};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cron::{plan_firing, CatchUp, CronError, Schedule};
use crate::tokens::map_db_error;
use crate::{Incoming, PipelineSetup};

/// GET or POST; users and the service role; 60 burst, one a second.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post])
    .access(Access::UserOrService)
    .rate_limit("60/1");

const DEFAULT_BUDGET_MS: u64 = 20_000;
const CLAIM_LEASE_SECONDS: u32 = 30;

edgeworks_input::input! {
    /// What a caller sends.
    pub struct ProcessRequest {
        /// The seed's name for a schedule to run now.
        #[serde(rename = "jobId")]
        pub job_id_seed: Option<String> = Field::uuid(),
        /// A schedule to run now.
        pub job_id: Option<String> = Field::uuid(),
        /// For a new schedule: its pipeline.
        pub pipeline_id: Option<String> = Field::uuid(),
        /// For a new schedule: five fields or a macro.
        pub cron_expression: Option<String> = Field::string().non_blank().max_chars(200),
        /// For a new schedule: an IANA zone (default UTC).
        pub timezone: Option<String> = Field::string().non_blank().max_chars(64),
        /// For a new schedule: `once` (default) or `skip`.
        pub catch_up: Option<String> = Field::string().one_of(&["once", "skip"]),
        /// For a new schedule: failed runs retried before it is turned off.
        pub max_retries: Option<u32> = Field::integer().range(0, 20),
        /// Schedules per batch (service role).
        pub batch_size: Option<u32> = Field::integer().range(1, 1000),
        /// Time budget (service role).
        pub max_duration_ms: Option<u64> = Field::integer().range(1, 600_000),
    }
}

/// A claimed schedule as `scheduled_jobs_claim_due` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimedSchedule {
    /// The schedule.
    pub id: String,
    /// This processor's claim.
    pub claim_token: String,
    /// The expression.
    pub cron_expression: String,
    /// The zone.
    pub timezone: String,
    /// `once` or `skip`.
    pub catch_up: String,
    /// When it was due, exactly as stored (compared again when firing).
    pub next_run_at: String,
}

#[derive(Debug, Deserialize)]
struct Claimed {
    now: String,
    schedules: Vec<ClaimedSchedule>,
}

/// The decision for one claimed schedule, as `scheduled_jobs_fire` takes it.
pub fn decide(s: &ClaimedSchedule, now_secs: i64, grace_secs: i64) -> Value {
    let base = json!({ "id": s.id, "claim_token": s.claim_token, "due_at": s.next_run_at });
    let with = |mut v: Value, extra: Value| {
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let schedule = match Schedule::new(&s.cron_expression, &s.timezone) {
        Ok(x) => x,
        Err(e) => {
            return with(
                base,
                json!({ "fire": false, "error": format!("the schedule is invalid: {e}") }),
            )
        }
    };
    let Ok(due_ms) = parse_rfc3339_ms(&s.next_run_at) else {
        return with(
            base,
            json!({ "fire": false, "error": "the stored next run time is unreadable" }),
        );
    };
    let catch_up = CatchUp::parse(&s.catch_up).unwrap_or(CatchUp::Once);
    let due = due_ms.div_euclid(1000);
    let f = plan_firing(&schedule, due, now_secs, catch_up, grace_secs);
    let scheduled_for = if f.scheduled_for == due {
        s.next_run_at.clone()
    } else {
        format_rfc3339_ms(f.scheduled_for * 1000)
    };
    with(
        base,
        json!({
            "fire": f.fire,
            "scheduled_for": scheduled_for,
            "next_run_at": f.next_run_at.map(|t| format_rfc3339_ms(t * 1000)),
        }),
    )
}

fn cron_error(e: CronError) -> ApiError {
    let field = match e.field {
        "timezone" => "timezone",
        _ => "cron_expression",
    };
    ApiError::unprocessable(
        "request failed validation",
        json!({ "fields": [{ "field": field, "code": "invalid_cron", "message": e.to_string(), "part": e.field }] }),
    )
}

/// The handler.
pub async fn handle(
    caller: Caller,
    setup: Settings<PipelineSetup>,
    Incoming(req): Incoming,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let schema = ProcessRequest::schema().field("jobId", Field::uuid());
    let body: ProcessRequest = match req.method {
        Method::Get => schema.parse_value(schema.object_from_query(req.query()))?,
        _ => schema.parse(if req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &req.body
        })?,
    };
    let service = caller.principal.is_service_role;
    let user = if service {
        None
    } else {
        Some(caller.user_id()?.to_string())
    };
    if let Some(job) = body.job_id.clone().or(body.job_id_seed.clone()) {
        return run_now(&db, &setup, &job, user.as_deref()).await.map(Json);
    }
    if body.cron_expression.is_some() || body.pipeline_id.is_some() {
        let Some(user) = user else {
            return Err(ApiError::forbidden(
                "user_required",
                "schedules are created by their owner",
            ));
        };
        return create(&db, &ctx, &body, &user).await.map(Json);
    }
    if !service {
        return Err(ApiError::forbidden(
            "service_role_required",
            "processing due schedules is for the scheduler: call it with the service_role key",
        ));
    }
    process_due(&db, &ctx, &setup, &body).await.map(Json)
}

async fn create(db: &ServiceDb, ctx: &Ctx, body: &ProcessRequest, user: &str) -> Result<Value, ApiError> {
    let need = |field: &str| {
        ApiError::unprocessable(
            "request failed validation",
            json!({ "fields": [{ "field": field, "code": "required", "message": format!("{field} is required") }] }),
        )
    };
    let pipeline = body.pipeline_id.as_deref().ok_or_else(|| need("pipeline_id"))?;
    let expr = body.cron_expression.as_deref().ok_or_else(|| need("cron_expression"))?;
    let zone = body.timezone.as_deref().unwrap_or("UTC");
    let schedule = Schedule::new(expr, zone).map_err(cron_error)?;
    let now = ctx.clock().now_ms() / 1000;
    let upcoming: Vec<String> = schedule
        .upcoming(now, 5)
        .into_iter()
        .map(|t| format_rfc3339_ms(t * 1000))
        .collect();
    let first = upcoming.first().cloned().ok_or_else(|| {
        cron_error(CronError {
            field: "expression",
            value: expr.to_string(),
            message: "never runs within eight years".into(),
        })
    })?;
    let row: Value = db
        .rpc(
            "scheduled_job_create",
            &json!({ "p_user": user, "p_pipeline": pipeline, "p_cron": expr.trim(), "p_timezone": zone,
                     "p_next_run_at": first, "p_catch_up": body.catch_up, "p_max_retries": body.max_retries }),
        )
        .await
        .map_err(|e| match e.code() {
            Some("23505") => ApiError::conflict("schedule_exists", "this pipeline already has this schedule"),
            _ => map_db_error(e),
        })?;
    Ok(json!({ "schedule": row, "next_runs": upcoming }))
}

async fn run_now(db: &ServiceDb, setup: &PipelineSetup, job: &str, user: Option<&str>) -> Result<Value, ApiError> {
    let mut q = db.from("scheduled_jobs").select("id,pipeline_id,user_id").eq("id", job);
    if let Some(u) = user {
        q = q.eq("user_id", u);
    }
    let rows: Vec<Value> = db.execute(q).await.map_err(ApiError::from)?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("schedule_not_found", "no such schedule"))?;
    let started: Value = db
        .rpc(
            "pipeline_run_start",
            &json!({ "p_user": row["user_id"], "p_pipeline": row["pipeline_id"], "p_trigger": "manual",
                     "p_max_attempts": setup.pipeline.step_max_attempts,
                     "p_backoff_base_ms": setup.pipeline.retry_base_ms }),
        )
        .await
        .map_err(map_db_error)?;
    Ok(json!({ "scheduled_job_id": job, "run": started }))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

async fn process_due(
    db: &ServiceDb,
    ctx: &Ctx,
    setup: &PipelineSetup,
    body: &ProcessRequest,
) -> Result<Value, ApiError> {
    let env = ctx.env();
    let (budget, _) = edgeworks_queue::call_budget_ms(body.max_duration_ms.unwrap_or(DEFAULT_BUDGET_MS), |k| {
        env.get(k).map(str::to_string)
    });
    let batch = body.batch_size.unwrap_or(200);
    let started = ctx.elapsed_ms();
    let (mut fired, mut skipped, mut duplicates, mut deactivated, mut batches) = (0i64, 0i64, 0i64, 0i64, 0u32);
    let mut lateness: Vec<f64> = Vec::new();
    loop {
        let claimed: Claimed = db
            .rpc(
                "scheduled_jobs_claim_due",
                &json!({ "p_limit": batch, "p_lease_seconds": CLAIM_LEASE_SECONDS }),
            )
            .await
            .map_err(map_db_error)?;
        if claimed.schedules.is_empty() {
            break;
        }
        batches += 1;
        // The database's clock decides what is due; decisions use the same one.
        let now = parse_rfc3339_ms(&claimed.now).unwrap_or_else(|_| ctx.clock().now_ms()) / 1000;
        let items: Vec<Value> = claimed
            .schedules
            .iter()
            .map(|s| decide(s, now, setup.pipeline.schedule_grace_secs))
            .collect();
        let out: Value = db
            .rpc("scheduled_jobs_fire", &json!({ "p_items": items }))
            .await
            .map_err(map_db_error)?;
        fired += out["fired"].as_i64().unwrap_or(0);
        skipped += out["skipped"].as_i64().unwrap_or(0);
        duplicates += out["duplicates"].as_i64().unwrap_or(0);
        deactivated += out["deactivated"].as_i64().unwrap_or(0);
        if let Some(runs) = out["runs"].as_array() {
            lateness.extend(runs.iter().filter_map(|r| r["lateness_ms"].as_f64()));
        }
        if (claimed.schedules.len() as u32) < batch || ctx.elapsed_ms().saturating_sub(started) >= budget {
            break;
        }
    }
    lateness.sort_by(f64::total_cmp);
    if fired + deactivated > 0 {
        ctx.log().info(
            "schedules processed",
            json!({ "fired": fired, "deactivated": deactivated, "duplicates": duplicates }),
        );
    }
    Ok(json!({
        "fired": fired, "skipped": skipped, "duplicates": duplicates, "deactivated": deactivated,
        "batches": batches, "processing_time_ms": ctx.elapsed_ms().saturating_sub(started),
        "lateness_ms": { "p50": percentile(&lateness, 50.0), "p95": percentile(&lateness, 95.0),
                         "max": lateness.last() },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(expr: &str, zone: &str, due: &str) -> ClaimedSchedule {
        ClaimedSchedule {
            id: "s1".into(),
            claim_token: "c1".into(),
            cron_expression: expr.into(),
            timezone: zone.into(),
            catch_up: "once".into(),
            next_run_at: due.into(),
        }
    }

    fn secs(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap() / 1000
    }

    #[test]
    fn an_on_time_schedule_fires_for_its_exact_stored_time_and_moves_on() {
        let d = decide(
            &claimed("*/5 * * * *", "UTC", "2026-01-01T10:05:00.000000+00:00"),
            secs("2026-01-01T10:05:01Z"),
            60,
        );
        assert_eq!(d["fire"], true);
        assert_eq!(d["due_at"], "2026-01-01T10:05:00.000000+00:00");
        assert_eq!(d["scheduled_for"], "2026-01-01T10:05:00.000000+00:00");
        assert_eq!(d["next_run_at"], "2026-01-01T10:10:00.000Z");
    }

    #[test]
    fn an_invalid_stored_schedule_is_turned_off_with_a_reason() {
        let d = decide(
            &claimed("61 * * * *", "UTC", "2026-01-01T10:05:00Z"),
            secs("2026-01-01T10:05:01Z"),
            60,
        );
        assert_eq!(d["fire"], false);
        assert!(d["error"].as_str().unwrap().contains("minute"));
        let z = decide(&claimed("* * * * *", "Nowhere/Land", "2026-01-01T10:05:00Z"), 0, 60);
        assert!(z["error"].as_str().unwrap().contains("timezone"));
    }

    #[test]
    fn a_cron_error_is_a_422_naming_the_field() {
        let e = cron_error(Schedule::new("* * *", "UTC").unwrap_err());
        assert_eq!(e.status(), 422);
        assert_eq!(e.details().unwrap()["fields"][0]["field"], "cron_expression");
    }
}
