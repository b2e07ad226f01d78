//! Who is calling: the bearer token verified (HS256 secret, or ES256/RS256
//! from the project's JWKS, cached per isolate) and turned into a
//! [`Caller`]. On a WebSocket upgrade the token may instead come in the
//! `Sec-WebSocket-Protocol` list or the `access_token` query parameter,
//! because browsers cannot set headers on `new WebSocket(...)`.

use std::sync::{Mutex, OnceLock};

use edgeworks_auth::jwt::{jwks_url, verify_with_remote_jwks, Jwks, JwksCache, Principal, TokenPolicy, Verifier};
use edgeworks_core::{ApiError, Clock, Request};
use edgeworks_db::{Db, Endpoint};
use edgeworks_runtime::{Ctx, Env, HostHttp};

use crate::extract::{FromEnv, Settings};

/// The verified caller of a request, with the token it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the token says.
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

    /// Ok for the service role, 403 otherwise.
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
    pub fn db(&self, ctx: &Ctx) -> Result<Db<HostHttp>, ApiError> {
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
pub fn service_db(ctx: &Ctx) -> Result<Db<HostHttp>, ApiError> {
    let endpoint = Settings::<ServiceEndpoint>::load(ctx.env())?;
    Ok(Db::at(ctx.http(), &endpoint.0 .0))
}

/// The service role's PostgREST endpoint, built once per isolate (the shim
/// hands every request the same environment).
struct ServiceEndpoint(Endpoint);

impl FromEnv for ServiceEndpoint {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let key = env.require("SUPABASE_SERVICE_ROLE_KEY")?;
        let url = env.require("SUPABASE_URL")?.trim_end_matches('/');
        Ok(ServiceEndpoint(Endpoint::new(&format!("{url}/rest/v1"), key, key)))
    }
}

fn jwks_cache() -> &'static Mutex<JwksCache> {
    static CACHE: OnceLock<Mutex<JwksCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(JwksCache::default()))
}

/// Whether the request asks for a WebSocket.
pub fn is_websocket_upgrade(req: &Request) -> bool {
    req.headers
        .get("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// A subprotocol entry that is a JWT (three base64url parts) rather than a
/// protocol name.
fn looks_like_jwt(s: &str) -> bool {
    s.split('.').count() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The offered subprotocols of a WebSocket upgrade: `(protocols, token)`.
/// A client sends its token as one entry (`new WebSocket(url, ["edgeworks", jwt])`);
/// the others are real protocol names, one of which the reply echoes.
pub fn websocket_protocols(req: &Request) -> (Vec<String>, Option<String>) {
    let mut protocols = Vec::new();
    let mut token = None;
    for entry in req.headers.get("sec-websocket-protocol").unwrap_or("").split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if looks_like_jwt(entry) {
            token.get_or_insert_with(|| entry.to_string());
        } else {
            protocols.push(entry.to_string());
        }
    }
    (protocols, token)
}

/// The token a request presents: the bearer header; on a WebSocket upgrade
/// also a subprotocol entry or `?access_token=` (never on other requests:
/// tokens in URLs end up in logs).
pub fn presented_token(req: &Request) -> Option<String> {
    if let Some(t) = req.bearer_token() {
        return Some(t.to_string());
    }
    if !is_websocket_upgrade(req) {
        return None;
    }
    websocket_protocols(req)
        .1
        .or_else(|| req.query_param("access_token").filter(|t| !t.is_empty()))
}

/// Verifies the presented token. A request without one is 401
/// `missing_token`; every way a token can be bad has its own 401 code (see
/// `edgeworks_auth::jwt`), including a user token's subject, audience and
/// issuer (`JWT_AUDIENCES`, `JWT_ISSUERS`, default `{SUPABASE_URL}/auth/v1`).
pub async fn authenticate(ctx: &Ctx, req: &Request) -> Result<Caller, ApiError> {
    let token = presented_token(req)
        .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <access token>"))?;
    let setup = Settings::<TokenSetup>::load(ctx.env())?;
    let now_ms = ctx.clock().now_ms();
    let claims = if let Some(jwks) = &setup.static_jwks {
        setup.verifier.verify(&token, Some(jwks), now_ms.div_euclid(1000))?
    } else {
        let url = match &setup.jwks_url {
            Some(url) => url,
            None => ctx.env().require("SUPABASE_URL")?,
        };
        verify_with_remote_jwks(&ctx.http(), url, jwks_cache(), &setup.verifier, &token, now_ms).await?
    };
    let principal = Principal::from_claims(&claims, &setup.policy)?;
    Ok(Caller { principal, token })
}

/// What verifying a token takes from the environment, derived once per
/// isolate (the shim hands every request the same one): the HS256 secret,
/// `SUPABASE_JWKS` parsed when set, the project's JWKS URL, and the
/// audiences and issuers accepted.
struct TokenSetup {
    verifier: Verifier,
    static_jwks: Option<Jwks>,
    /// `None` without SUPABASE_URL (refused when a token needs it).
    jwks_url: Option<String>,
    policy: TokenPolicy,
}

impl FromEnv for TokenSetup {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let static_jwks = match env.get("SUPABASE_JWKS") {
            Some(doc) => Some(
                Jwks::parse(doc)
                    .map_err(|_| ApiError::new(500, "misconfigured", "SUPABASE_JWKS is not a valid JWKS document"))?,
            ),
            None => None,
        };
        Ok(TokenSetup {
            verifier: Verifier::new(
                env.first_of(&["SUPABASE_JWT_SECRET", "JWT_SECRET"])
                    .map(|s| s.as_bytes().to_vec()),
            ),
            static_jwks,
            jwks_url: env.get("SUPABASE_URL").map(jwks_url),
            policy: TokenPolicy::from_lookup(env.lookup()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::Method;

    fn upgrade(protocols: &str, query: &str) -> Request {
        let mut r = Request::new(Method::Get, format!("http://h/functions/v1/ws{query}"));
        r.headers.set("upgrade", "websocket");
        r.headers.set("sec-websocket-protocol", protocols);
        r
    }

    #[test]
    fn a_websocket_token_comes_from_the_subprotocol_list_or_the_query() {
        let r = upgrade("edgeworks, aaa.bbb.ccc", "");
        assert_eq!(presented_token(&r).as_deref(), Some("aaa.bbb.ccc"));
        assert_eq!(websocket_protocols(&r).0, vec!["edgeworks".to_string()]);
        let q = upgrade("edgeworks", "?access_token=x.y.z");
        assert_eq!(presented_token(&q).as_deref(), Some("x.y.z"));
    }

    #[test]
    fn a_query_token_is_ignored_outside_websocket_upgrades() {
        let r = Request::new(Method::Get, "http://h/functions/v1/f?access_token=x.y.z");
        assert_eq!(presented_token(&r), None);
    }
}
