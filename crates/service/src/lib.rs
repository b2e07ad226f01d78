//! edgeworks-service: what every function does between parsing a request and
//! its own logic: verify the caller's JWT (HS256 secret, or ES256/RS256 from
//! the project's JWKS, cached per isolate), take a rate-limit token from the
//! shared Postgres bucket, and open PostgREST handles as the caller or as the
//! service role. Decisions live in `edgeworks-core`; this crate only wires
//! them to the runtime's environment, clock and HTTP client.

use std::sync::{Mutex, OnceLock};

use edgeworks_auth::jwt::{jwks_url, verify_with_remote_jwks, Jwks, JwksCache, Principal, TokenPolicy, Verifier};
use edgeworks_auth::ratelimit::{limit_key, ClientIpSource, Decision, Limit};
use edgeworks_core::{ApiError, Clock, Request};
use edgeworks_db::Db;
use edgeworks_runtime::{Ctx, FetchClient};
use serde::Deserialize;
use serde_json::json;

/// The verified caller of a request, with the token it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    token: String,
}

impl Caller {
    /// The signed-in user's id, or 401/403 when the caller is not a user.
    pub fn user_id(&self) -> Result<&str, ApiError> {
        match self.principal.user_id.as_deref() {
            Some(id) if self.principal.is_authenticated() => Ok(id),
            _ if self.principal.is_service_role => Err(ApiError::forbidden(
                "user_required",
                "this endpoint acts for a signed-in user; call it with the user's access token",
            )),
            _ => Err(ApiError::unauthorized(
                "user_required",
                "sign in: this endpoint needs a user's access token",
            )),
        }
    }

    pub fn require_service_role(&self) -> Result<(), ApiError> {
        if self.principal.is_service_role {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "service_role_required",
                "this endpoint is for workers and schedulers: call it with the service_role key",
            ))
        }
    }

    /// PostgREST as this caller: RLS applies.
    pub fn db(&self, ctx: &Ctx) -> Result<Db<FetchClient>, ApiError> {
        let env = ctx.env();
        let apikey = env
            .first_of(&["SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY"])
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    "misconfigured",
                    "the function is missing configuration: SUPABASE_ANON_KEY",
                )
            })?;
        Ok(Db::new(ctx.http(), &rest_url(ctx)?, apikey, &self.token))
    }
}

fn rest_url(ctx: &Ctx) -> Result<String, ApiError> {
    Ok(format!(
        "{}/rest/v1",
        ctx.env().require("SUPABASE_URL")?.trim_end_matches('/')
    ))
}

/// PostgREST as the service role (system work: queues, limits, callbacks).
pub fn service_db(ctx: &Ctx) -> Result<Db<FetchClient>, ApiError> {
    let key = ctx.env().require("SUPABASE_SERVICE_ROLE_KEY")?;
    Ok(Db::new(ctx.http(), &rest_url(ctx)?, key, key))
}

fn jwks_cache() -> &'static Mutex<JwksCache> {
    static CACHE: OnceLock<Mutex<JwksCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(JwksCache::default()))
}

/// Verifies the bearer token. A request without one is 401 `missing_token`;
/// every way a token can be bad has its own 401 code (see core::jwt),
/// including a user token's subject, audience and issuer (`JWT_AUDIENCES`,
/// `JWT_ISSUERS`, default `{SUPABASE_URL}/auth/v1`).
pub async fn authenticate(ctx: &Ctx, req: &Request) -> Result<Caller, ApiError> {
    let token = req
        .bearer_token()
        .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <access token>"))?
        .to_string();
    let env = ctx.env();
    let verifier = Verifier::new(
        env.first_of(&["SUPABASE_JWT_SECRET", "JWT_SECRET"])
            .map(|s| s.as_bytes().to_vec()),
    );
    let now_ms = ctx.clock().now_ms();
    let claims = if let Some(static_jwks) = env.get("SUPABASE_JWKS") {
        let jwks = Jwks::parse(static_jwks)
            .map_err(|_| ApiError::new(500, "misconfigured", "SUPABASE_JWKS is not a valid JWKS document"))?;
        verifier.verify(&token, Some(&jwks), now_ms.div_euclid(1000))?
    } else {
        let url = jwks_url(env.require("SUPABASE_URL")?);
        verify_with_remote_jwks(&ctx.http(), &url, jwks_cache(), &verifier, &token, now_ms).await?
    };
    let policy = TokenPolicy::from_lookup(|k| env.get(k).map(str::to_string));
    let principal = Principal::from_claims(&claims, &policy)?;
    Ok(Caller { principal, token })
}

#[derive(Deserialize)]
struct TakeRow {
    allowed: bool,
    tokens: f64,
}

/// Takes `cost` tokens from this caller's bucket for `scope` (usually the
/// function name): keyed by user id when signed in, else by client IP.
///
/// When the limiter's database call fails we let the request through and log
/// it (fail open): the limiter guards against abuse, and refusing every
/// request while PostgREST hiccups would turn a blip into an outage. The
/// work behind the limiter needs the same database, so an outage still stops
/// real work; only the limit is skipped. Returns the decision (its headers go
/// on the response) or the 429 error.
pub async fn rate_limit(
    ctx: &Ctx,
    req: &Request,
    caller: Option<&Caller>,
    scope: &str,
    default: Limit,
    cost: u32,
) -> Result<Option<Decision>, ApiError> {
    let env = ctx.env();
    let limit = Limit::for_function(scope, |k| env.get(k).map(str::to_string), default)
        .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
    let user = caller.and_then(|c| c.principal.user_id.as_deref());
    if caller.is_some_and(|c| c.principal.is_service_role) {
        return Ok(None); // workers and schedulers are not rate limited
    }
    let source = ClientIpSource::from_lookup(|k| env.get(k).map(str::to_string))
        .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
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
