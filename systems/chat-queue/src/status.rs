//! chat-status (GET query or POST body `{job_id?, session_id?, limit?}`):
//! one job (status, progress, result, error, estimated completion, queue
//! position, timings, retries) or a session's jobs with `session_stats`.
//! A user sees only their own jobs: the SQL functions check the caller,
//! so the query runs with the caller's token.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::time::{format_rfc3339_ms, parse_rfc3339_ms};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_db::Db;
use edgeworks_input::validate::Field;
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, FromRequest, Json, JsonOrQuery, Parts, Route, Settings, UserDb};
use serde_json::{json, Value};

use crate::estimate_duration_ms;
use crate::submit::map_chat_error;

/// GET or POST reads, DELETE `{job_id}` cancels a question that has not
/// started; the job's owner (or the service role), 120 burst / 4 per second.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post, Method::Delete])
    .access(Access::UserOrService)
    .rate_limit("120/4");

edgeworks_input::input! {
    /// One job, or one session's jobs.
    pub struct StatusQuery {
        /// A job id.
        pub job_id: Option<String> = Field::uuid(),
        /// A session id.
        pub session_id: Option<String> = Field::string().non_blank().max_chars(128),
        /// Jobs per session (default 10).
        pub limit: Option<i64> = Field::integer().range(1, 100),
    } check = job_or_session
}

fn job_or_session(q: &StatusQuery) -> Result<(), ApiError> {
    if q.job_id.is_none() && q.session_id.is_none() {
        return Err(ApiError::unprocessable(
            "request failed validation",
            json!({ "fields": [{ "field": "job_id", "code": "required", "message": "send job_id or session_id" }] }),
        ));
    }
    Ok(())
}

/// The request's method: DELETE cancels, GET and POST read.
pub struct Verb(pub Method);

impl FromRequest for Verb {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(Verb(parts.req.method))
    }
}

/// The handler.
pub async fn handle(
    db: UserDb,
    settings: Settings<crate::Settings>,
    Verb(method): Verb,
    JsonOrQuery(query): JsonOrQuery<StatusQuery>,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let now = ctx.clock().now_ms();
    if method == Method::Delete {
        return cancel(&db, &query, now, settings.prior_duration_ms).await.map(Json);
    }
    status(&db, &query, now, settings.prior_duration_ms).await.map(Json)
}

/// Cancels the owner's question if it has not started (chat_cancel checks
/// the caller and the state): its place in the session is given back and
/// the session's next question may run. Answers the job as it now stands.
pub async fn cancel<C: HttpClient>(
    db: &Db<C>,
    query: &StatusQuery,
    now_ms: i64,
    prior_ms: u64,
) -> Result<Value, ApiError> {
    let Some(job_id) = &query.job_id else {
        return Err(ApiError::unprocessable(
            "request failed validation",
            json!({ "fields": [{ "field": "job_id", "code": "required", "message": "name the job to cancel" }] }),
        ));
    };
    let v: Value = db
        .rpc("chat_cancel", &json!({ "p_job": job_id }))
        .await
        .map_err(map_chat_error)?;
    Ok(json!({ "job": present(v.clone(), &v, now_ms, prior_ms) }))
}

/// The answer for `query` at `now_ms`.
pub async fn status<C: HttpClient>(
    db: &Db<C>,
    query: &StatusQuery,
    now_ms: i64,
    prior_ms: u64,
) -> Result<Value, ApiError> {
    if let Some(job_id) = &query.job_id {
        let v: Value = db
            .rpc("chat_job_status", &json!({ "p_job": job_id }))
            .await
            .map_err(map_chat_error)?;
        return Ok(json!({ "job": present(v.clone(), &v, now_ms, prior_ms) }));
    }
    let v: Value = db
        .rpc(
            "chat_session_status",
            &json!({ "p_session_id": query.session_id, "p_limit": query.limit.unwrap_or(10) }),
        )
        .await
        .map_err(map_chat_error)?;
    let jobs: Vec<Value> = v
        .get("jobs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|j| present(j.clone(), &v, now_ms, prior_ms)).collect())
        .unwrap_or_default();
    Ok(json!({ "session_id": v.get("session_id"), "jobs": jobs, "session_stats": v.get("session_stats") }))
}

fn timing(v: &Value, key: &str) -> f64 {
    v.get("timing")
        .and_then(|t| t.get(key))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// Drops nulls and internal fields and adds `estimated_completion`.
pub fn present(mut job: Value, timing_src: &Value, now_ms: i64, prior_ms: u64) -> Value {
    let status = job.get("status").and_then(Value::as_str).unwrap_or("").to_string();
    let avg = timing(timing_src, "avg_processing_ms");
    let samples = timing(timing_src, "samples") as u32;
    let workers = timing(timing_src, "active_workers") as u32;
    let eta_ms = match status.as_str() {
        "pending" | "retrying" => {
            let position = job.get("queue_position").and_then(Value::as_u64).unwrap_or(1).max(1) as u32;
            let wait_until = job
                .get("run_at")
                .and_then(Value::as_str)
                .and_then(|s| parse_rfc3339_ms(s).ok())
                .unwrap_or(now_ms)
                .max(now_ms);
            Some(wait_until + estimate_duration_ms(position, avg, samples, workers, prior_ms) as i64)
        }
        "processing" => {
            let started = job
                .get("started_at")
                .and_then(Value::as_str)
                .and_then(|s| parse_rfc3339_ms(s).ok())
                .unwrap_or(now_ms);
            Some((started + estimate_duration_ms(1, avg, samples, workers, prior_ms) as i64).max(now_ms))
        }
        _ => None,
    };
    if let Some(obj) = job.as_object_mut() {
        obj.remove("timing");
        obj.remove("run_at");
        if let Some(eta) = eta_ms {
            obj.insert("estimated_completion".into(), json!(format_rfc3339_ms(eta)));
        }
        obj.retain(|_, v| !v.is_null());
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_waiting_job_gets_an_eta_after_its_run_at_and_loses_internal_fields() {
        let job = json!({
            "status": "retrying", "queue_position": 3, "run_at": "2026-01-01T00:00:10.000Z",
            "timing": { "avg_processing_ms": 1000.0, "samples": 5, "active_workers": 1 }, "error": null,
        });
        let out = present(job.clone(), &job, NOW, 2000);
        assert_eq!(out["estimated_completion"], "2026-01-01T00:00:13.000Z");
        assert!(out.get("timing").is_none() && out.get("run_at").is_none() && out.get("error").is_none());
    }

    #[test]
    fn a_running_job_is_never_estimated_in_the_past_and_a_finished_one_not_at_all() {
        let running = json!({ "status": "processing", "started_at": "2025-12-31T00:00:00.000Z" });
        assert_eq!(
            present(running.clone(), &running, NOW, 2000)["estimated_completion"],
            "2026-01-01T00:00:00.000Z"
        );
        let done = json!({ "status": "completed" });
        assert!(present(done.clone(), &done, NOW, 2000)
            .get("estimated_completion")
            .is_none());
    }

    #[test]
    fn neither_job_nor_session_is_a_422() {
        let q = StatusQuery {
            job_id: None,
            session_id: None,
            limit: None,
        };
        assert_eq!(job_or_session(&q).unwrap_err().status(), 422);
    }

    #[test]
    fn a_session_query_asks_postgrest_for_the_session_and_presents_each_job() {
        let server = FakeServer::start(|req, _| {
            assert!(req.url.ends_with("/rpc/chat_session_status"));
            json_response(
                200,
                r#"{"session_id":"s1","session_stats":{"total":1},
                "timing":{"avg_processing_ms":0,"samples":0,"active_workers":0},
                "jobs":[{"id":"j1","status":"pending","queue_position":1,"result":null}]}"#,
            )
        });
        let db = Db::new(NativeClient, &server.base_url, "anon", "token");
        let q = StatusQuery {
            job_id: None,
            session_id: Some("s1".into()),
            limit: Some(5),
        };
        let out = block_on(status(&db, &q, NOW, 2000)).unwrap();
        assert_eq!(out["jobs"][0]["estimated_completion"], "2026-01-01T00:00:02.000Z");
        assert!(out["jobs"][0].get("result").is_none());
        let sent: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(sent, json!({ "p_session_id": "s1", "p_limit": 5 }));
    }

    #[test]
    fn cancel_needs_a_job_and_maps_a_running_job_to_409() {
        let server = FakeServer::start(|req, _| {
            assert!(req.url.ends_with("/rpc/chat_cancel"));
            json_response(
                400,
                r#"{"code":"EC409","message":"job_not_cancellable","details":"processing","hint":null}"#,
            )
        });
        let db = Db::new(NativeClient, &server.base_url, "anon", "token");
        let none = StatusQuery {
            job_id: None,
            session_id: Some("s1".into()),
            limit: None,
        };
        assert_eq!(block_on(cancel(&db, &none, NOW, 2000)).unwrap_err().status(), 422);
        assert!(server.requests().is_empty(), "nothing is asked without a job id");
        let q = StatusQuery {
            job_id: Some("00000000-0000-4000-8000-000000000000".into()),
            session_id: None,
            limit: None,
        };
        let e = block_on(cancel(&db, &q, NOW, 2000)).unwrap_err();
        assert_eq!((e.status(), e.code()), (409, "job_not_cancellable"));
    }

    #[test]
    fn another_users_job_is_a_404_not_a_leak() {
        let server = FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"EC404","message":"job_not_found","details":null,"hint":null}"#,
            )
        });
        let db = Db::new(NativeClient, &server.base_url, "anon", "token");
        let q = StatusQuery {
            job_id: Some("00000000-0000-4000-8000-000000000000".into()),
            session_id: None,
            limit: None,
        };
        let e = block_on(status(&db, &q, NOW, 2000)).unwrap_err();
        assert_eq!((e.status(), e.code()), (404, "job_not_found"));
    }
}
