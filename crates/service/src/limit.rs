//! The shared rate limit: one SQL call (`rate_limit_take`) per request.

use edgeworks_auth::ratelimit::{limit_key, ClientIpSource, Decision, Limit};
use edgeworks_core::{ApiError, Request};
use edgeworks_runtime::Ctx;
use serde::Deserialize;
use serde_json::json;

use crate::caller::{service_db, Caller};

#[derive(Deserialize)]
struct TakeRow {
    allowed: bool,
    tokens: f64,
}

/// Takes `cost` tokens from this caller's bucket for `scope` (the function
/// name): keyed by user id when signed in, else by client IP.
///
/// When the limiter's database call fails we let the request through and log
/// it (fail open): the limiter guards against abuse, and refusing every
/// request while PostgREST hiccups would turn a blip into an outage. The
/// work behind the limiter needs the same database, so an outage still stops
/// real work; only the limit is skipped. Returns the decision (its headers go
/// on the reply) or the 429 error.
pub async fn rate_limit(
    ctx: &Ctx,
    req: &Request,
    caller: Option<&Caller>,
    scope: &str,
    limit: Limit,
    cost: u32,
) -> Result<Option<Decision>, ApiError> {
    if caller.is_some_and(|c| c.principal.is_service_role) {
        return Ok(None); // workers and schedulers are not rate limited
    }
    let env = ctx.env();
    let user = caller.and_then(|c| c.principal.user_id.as_deref());
    let source =
        ClientIpSource::from_lookup(env.lookup()).map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
    let key = format!("{scope}:{}", limit_key(user, &req.headers, &source));
    let db = service_db(ctx)?;
    let args = json!({
        "p_key": key,
        "p_cost": cost,
        "p_capacity": limit.capacity,
        "p_refill_per_sec": limit.refill_per_sec,
    });
    match db.rpc::<Vec<TakeRow>>("rate_limit_take", &args).await {
        Ok(rows) => {
            let Some(row) = rows.first() else {
                ctx.log()
                    .warn("rate limiter returned no row; allowing", json!({ "scope": scope }));
                return Ok(None);
            };
            let decision = Decision::from_tokens(row.allowed, row.tokens, cost, limit);
            decision.check()?;
            Ok(Some(decision))
        }
        Err(e) => {
            ctx.log().warn(
                "rate limiter unavailable; allowing (fail open)",
                json!({ "scope": scope, "error": e.to_string() }),
            );
            Ok(None)
        }
    }
}
