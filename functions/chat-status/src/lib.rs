//! `chat-status` (GET query or POST body `{job_id?, session_id?, limit?}`):
//! one job (status, progress, result, error, estimated completion, queue
//! position, timings, retries) or a session's jobs with `session_stats`.
//! A user sees only their own jobs (the SQL functions check the caller).

use edgeworks_auth::ratelimit::Limit;
use edgeworks_chat_queue::estimate_duration_ms;
use edgeworks_chat_queue::submit::map_chat_error;
use edgeworks_chat_queue::Settings;
use edgeworks_core::time::{format_rfc3339_ms, parse_rfc3339_ms};
use edgeworks_core::{ApiError, Clock, Method, Request, Response};
use edgeworks_input::validate::{Field, Schema};
use edgeworks_runtime::{export_handler, Ctx, Options};
use edgeworks_service::{authenticate, rate_limit};
use serde_json::{json, Map, Value};

const LIMIT: Limit = Limit {
    capacity: 120,
    refill_per_sec: 4.0,
};

fn query_body(req: &Request) -> Result<Value, ApiError> {
    let mut m = Map::new();
    for (k, v) in req.query() {
        let value = if k == "limit" {
            v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v))
        } else {
            Value::String(v)
        };
        m.insert(k, value);
    }
    Ok(Value::Object(m))
}

fn timing(v: &Value, key: &str) -> f64 {
    v.get("timing")
        .and_then(|t| t.get(key))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// Drops nulls and internal fields and adds `estimated_completion`.
fn present(mut job: Value, timing_src: &Value, now_ms: i64, prior_ms: u64) -> Value {
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

async fn chat_status(req: Request, ctx: Ctx) -> Result<Response, ApiError> {
    let schema = Schema::object()
        .field("job_id", Field::uuid())
        .field("session_id", Field::string().non_blank().max_chars(128))
        .field("limit", Field::integer().range(1, 100));
    let input = if req.method == Method::Get {
        query_body(&req)?
    } else {
        edgeworks_core::http::parse_json(&req.body)?
    };
    schema.validate(&input)?;
    let job_id = input.get("job_id").and_then(Value::as_str).map(str::to_string);
    let session_id = input.get("session_id").and_then(Value::as_str).map(str::to_string);
    if job_id.is_none() && session_id.is_none() {
        return Err(ApiError::unprocessable(
            "request failed validation",
            json!({ "fields": [{ "field": "job_id", "code": "required", "message": "send job_id or session_id" }] }),
        ));
    }
    let caller = authenticate(&ctx, &req).await?;
    if !caller.principal.is_service_role {
        caller.user_id()?;
    }
    let decision = rate_limit(&ctx, &req, Some(&caller), "chat-status", LIMIT, 1).await?;
    let env = ctx.env();
    let prior = Settings::from_lookup(|k| env.get(k).map(str::to_string))?.prior_duration_ms;
    let db = caller.db(&ctx)?;
    let now = ctx.clock().now_ms();

    let data = if let Some(job_id) = job_id {
        let v: Value = db
            .rpc("chat_job_status", &json!({ "p_job": job_id }))
            .await
            .map_err(map_chat_error)?;
        json!({ "job": present(v.clone(), &v, now, prior) })
    } else {
        let limit = input.get("limit").and_then(Value::as_i64).unwrap_or(10);
        let v: Value = db
            .rpc(
                "chat_session_status",
                &json!({ "p_session_id": session_id, "p_limit": limit }),
            )
            .await
            .map_err(map_chat_error)?;
        let jobs: Vec<Value> = v
            .get("jobs")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|j| present(j.clone(), &v, now, prior)).collect())
            .unwrap_or_default();
        json!({ "session_id": v.get("session_id"), "jobs": jobs, "session_stats": v.get("session_stats") })
    };
    let mut response = Response::ok(&data);
    if let Some(d) = decision {
        d.apply(&mut response.headers);
    }
    Ok(response)
}

export_handler!(
    chat_status,
    Options {
        methods: &[Method::Get, Method::Post],
        ..Options::default()
    }
);
