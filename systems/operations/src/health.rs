//! health: GET /functions/v1/health — build identity and a timed PostgREST
//! round trip. 200 when the database answers, 503 with the reason when not.
//! The rate-limit token is taken in the same SQL call (`health_check`), so a
//! successful request is one round trip.

use edgeworks_core::{ApiError, Method, Response};
use edgeworks_db::DbError;
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, RateTicket, Route, ServiceDb};
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: Option<&str> = option_env!("EDGEWORKS_GIT_COMMIT");
const BUILT_AT: Option<&str> = option_env!("EDGEWORKS_BUILD_TIME");

/// Public, so limited per client IP; the token is taken by `health_check`.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Head])
    .access(Access::Public)
    .rate_limit("120/2")
    .limit_in_sql();

/// The handler.
pub async fn health(ticket: Option<RateTicket>, db: ServiceDb, ctx: Ctx) -> Result<Response, ApiError> {
    let mut args = json!({});
    RateTicket::add_args(ticket.as_ref(), &mut args);
    let started = ctx.elapsed_ms();
    let ping: Result<Value, DbError> = db.rpc("health_check", &args).await;
    let latency_ms = ctx.elapsed_ms().saturating_sub(started);
    // A refused token is the 429, before anything else is said.
    let ping = match (ping, &ticket) {
        (Ok(mut row), Some(t)) => {
            t.settle(&mut row)?;
            Ok(row)
        }
        (ping, _) => ping,
    };

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
