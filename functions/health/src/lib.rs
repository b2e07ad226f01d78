//! `health`: GET /functions/v1/health — build identity and a timed PostgREST
//! round trip. 200 when the database answers, 503 with the reason when not.

use edgeworks_auth::ratelimit::Limit;
use edgeworks_core::{ApiError, Method, Request, Response};
use edgeworks_db::DbError;
use edgeworks_runtime::{export_handler, Ctx, Options};
use edgeworks_service::{rate_limit, service_db};
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: Option<&str> = option_env!("EDGEWORKS_GIT_COMMIT");
const BUILT_AT: Option<&str> = option_env!("EDGEWORKS_BUILD_TIME");

/// Health is public, so it is limited per client IP.
const LIMIT: Limit = Limit {
    capacity: 120,
    refill_per_sec: 2.0,
};

async fn health(req: Request, ctx: Ctx) -> Result<Response, ApiError> {
    let decision = rate_limit(&ctx, &req, None, "health", LIMIT, 1).await?;
    let mut response = check(&ctx).await?;
    if let Some(d) = decision {
        d.apply(&mut response.headers);
    }
    Ok(response)
}

async fn check(ctx: &Ctx) -> Result<Response, ApiError> {
    let db = service_db(ctx)?;

    let started = ctx.elapsed_ms();
    let ping: Result<Value, DbError> = db.rpc("health_ping", &json!({})).await;
    let latency_ms = ctx.elapsed_ms().saturating_sub(started);

    let build =
        json!({ "version": VERSION, "commit": COMMIT.unwrap_or("unknown"), "built_at": BUILT_AT.unwrap_or("unknown") });
    match ping {
        Ok(row) => Ok(Response::ok(&json!({
            "status": "ok",
            "function": ctx.function(),
            "build": build,
            "database": { "ok": true, "latency_ms": latency_ms, "server_time": row.get("server_time"), "server_version": row.get("server_version") },
        }))),
        Err(e) => {
            let reason = match &e {
                DbError::Transport(t) => format!("PostgREST unreachable: {t}"),
                DbError::Api { status, message, .. } => format!("PostgREST answered {status}: {message}"),
                DbError::Decode(m) => format!("unexpected answer: {m}"),
            };
            ctx.log().warn("database check failed", json!({ "reason": reason }));
            Err(
                ApiError::unavailable("database_unavailable", "the database did not answer the health check")
                    .with_details(json!({ "reason": reason, "latency_ms": latency_ms, "build": build })),
            )
        }
    }
}

export_handler!(
    health,
    Options {
        methods: &[Method::Get, Method::Head],
        ..Options::default()
    }
);
