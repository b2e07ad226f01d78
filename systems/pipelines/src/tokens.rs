//! Platform tokens after the connection: a usable access token for a
//! user's platform, refreshed single-flight (see the migration's header:
//! one caller gets a lease on the connection's row and refreshes, the
//! others wait and read the result), and revocation.
//!
//! Tokens are opened only in memory, for the one call that needs them;
//! they never enter a log line, an error message or a response.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::time::{format_rfc3339_ms, parse_rfc3339_ms};
use edgeworks_core::{ApiError, Clock, Rng};
use edgeworks_db::{Db, DbError};
use edgeworks_runtime::Ctx;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::oauth::{self, OAuthError, Platform};
use crate::secrets::{token_binding, TokenSealer};
use crate::settings::OAuthSettings;

/// Deadline for one call to a platform.
pub const PLATFORM_TIMEOUT_MS: u32 = 15_000;
/// How long a refresh lease lasts if its holder never reports back.
const LEASE_SECONDS: u32 = 30;
/// How often a waiter asks again, and for how long in all.
const WAIT_STEP_MS: u32 = 100;
const WAIT_TOTAL_MS: u32 = 20_000;

/// A usable access token (never Debug-printed with its value).
pub struct AccessToken {
    /// The token.
    pub token: String,
    /// Whether this call refreshed it.
    pub refreshed: bool,
    /// When it expires (RFC 3339), if known.
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken([REDACTED], refreshed: {})", self.refreshed)
    }
}

#[derive(Debug, Deserialize)]
struct Acquired {
    state: String,
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(default)]
    lease: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// The one mapping of this system's SQLSTATEs to client errors.
pub fn map_db_error(e: DbError) -> ApiError {
    match (e.code(), e.message()) {
        (Some("EP404"), m) => ApiError::not_found(m, m.replace('_', " ")),
        (Some("EP409"), m) => ApiError::conflict(m, m.replace('_', " ")),
        (Some("22023"), m) => ApiError::new(422, "invalid_argument", m.to_string()),
        _ => ApiError::from(e),
    }
}

fn reconnect(platform: Platform, why: &str) -> ApiError {
    ApiError::new(
        409,
        "connection_needs_reconnect",
        format!(
            "the {} connection can no longer be used ({why}); connect it again",
            platform.as_str()
        ),
    )
}

fn sealer_error() -> ApiError {
    // A key was removed before its tokens were resealed: operators' problem.
    ApiError::new(
        500,
        "token_unreadable",
        "a stored token could not be decrypted with the configured keys",
    )
}

/// Seals a fresh token for storage.
pub fn seal(sealer: &TokenSealer, rng: &mut dyn Rng, user: &str, p: Platform, kind: &str, token: &str) -> String {
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce);
    sealer.seal(token, &token_binding(user, p.as_str(), kind), nonce)
}

fn expiry(now_ms: i64, expires_in: Option<i64>) -> Option<String> {
    expires_in
        .filter(|s| *s > 0)
        .map(|s| format_rfc3339_ms(now_ms + s.min(10 * 365 * 86_400) * 1000))
}

/// Sends a platform request, turning transport failures into transient errors.
pub async fn send<C: HttpClient>(
    http: &C,
    req: edgeworks_core::Request,
) -> Result<edgeworks_core::Response, OAuthError> {
    http.send(req, PLATFORM_TIMEOUT_MS)
        .await
        .map_err(|e| OAuthError::transport(&e.to_string()))
}

/// A usable access token for `user` on `p`: read, or refreshed by exactly
/// one caller while concurrent callers wait for its result.
pub async fn access_token(
    db: &Db<impl HttpClient>,
    ctx: &Ctx,
    settings: &OAuthSettings,
    user: &str,
    p: Platform,
) -> Result<AccessToken, ApiError> {
    let sealer = settings.sealer()?;
    let open = |sealed: &str, kind: &str| {
        sealer
            .open(sealed, &token_binding(user, p.as_str(), kind))
            .map_err(|_| sealer_error())
    };
    let mut waited = 0u32;
    loop {
        let got: Acquired = db
            .rpc(
                "oauth_token_acquire",
                &json!({ "p_user": user, "p_platform": p.as_str(),
                          "p_margin_seconds": settings.refresh_margin_secs, "p_lease_seconds": LEASE_SECONDS }),
            )
            .await
            .map_err(map_db_error)?;
        match got.state.as_str() {
            "fresh" => {
                return Ok(AccessToken {
                    token: open(got.access_token.as_deref().unwrap_or(""), "access")?,
                    refreshed: false,
                    expires_at: got.expires_at,
                })
            }
            "wait" if waited < WAIT_TOTAL_MS => {
                ctx.sleep(WAIT_STEP_MS).await;
                waited += WAIT_STEP_MS;
            }
            "wait" => {
                return Err(ApiError::unavailable(
                    "token_refresh_in_progress",
                    "another request is renewing this connection's token; try again shortly",
                ))
            }
            "refresh" => return refresh(db, ctx, settings, sealer, user, p, got).await,
            _ => return Err(reconnect(p, got.status.as_deref().unwrap_or("unusable"))),
        }
    }
}

async fn refresh(
    db: &Db<impl HttpClient>,
    ctx: &Ctx,
    settings: &OAuthSettings,
    sealer: &TokenSealer,
    user: &str,
    p: Platform,
    got: Acquired,
) -> Result<AccessToken, ApiError> {
    let connection = got.connection_id.clone().unwrap_or_default();
    let lease = got.lease.clone().unwrap_or_default();
    let binding = |kind: &str| token_binding(user, p.as_str(), kind);
    let access = sealer
        .open(got.access_token.as_deref().unwrap_or(""), &binding("access"))
        .map_err(|_| sealer_error())?;
    let refresh_token = match got.refresh_token.as_deref() {
        Some(sealed) => Some(sealer.open(sealed, &binding("refresh")).map_err(|_| sealer_error())?),
        None => None,
    };
    let now_ms = ctx.clock().now_ms();
    let still_valid = got
        .expires_at
        .as_deref()
        .and_then(|e| parse_rfc3339_ms(e).ok())
        .is_some_and(|e| e > now_ms);
    let (conn_ref, lease_ref) = (&connection, &lease);
    let release = |reason: String, permanent: bool| async move {
        let (connection, lease) = (conn_ref, lease_ref);
        let _ = db
            .rpc::<Value>(
                "oauth_token_refresh_failed",
                &json!({ "p_connection": connection, "p_lease": lease, "p_reason": reason, "p_permanent": permanent }),
            )
            .await;
    };
    let app = settings.app(p)?;
    let Some(req) = oauth::refresh_request(p, app, &access, refresh_token.as_deref()) else {
        // The platform (Facebook) or this grant (LinkedIn without a refresh
        // token) cannot be refreshed: use it until it expires, then reconnect.
        if still_valid {
            release("this platform's tokens cannot be refreshed".into(), false).await;
            return Ok(AccessToken {
                token: access,
                refreshed: false,
                expires_at: got.expires_at,
            });
        }
        release("the token expired and this platform cannot refresh it".into(), true).await;
        return Err(reconnect(p, "token expired"));
    };
    let answer = match send(&ctx.http(), req).await {
        Ok(resp) => oauth::parse_token(&resp),
        Err(e) => Err(e),
    };
    match answer {
        Ok(tokens) => {
            let mut rng = ctx.rng();
            let sealed_access = seal(sealer, &mut rng, user, p, "access", &tokens.access_token);
            let sealed_refresh = tokens
                .refresh_token
                .as_deref()
                .map(|r| seal(sealer, &mut rng, user, p, "refresh", r));
            let expires_at = expiry(ctx.clock().now_ms(), tokens.expires_in);
            db.rpc::<Value>(
                "oauth_token_refreshed",
                &json!({ "p_connection": connection, "p_lease": lease, "p_access_token": sealed_access,
                         "p_refresh_token": sealed_refresh, "p_expires_at": expires_at }),
            )
            .await
            .map_err(map_db_error)?;
            ctx.log().info(
                "oauth token refreshed",
                json!({ "platform": p.as_str(), "connection_id": connection }),
            );
            Ok(AccessToken {
                token: tokens.access_token,
                refreshed: true,
                expires_at,
            })
        }
        Err(e) if oauth::refresh_failed_for_good(&e) => {
            ctx.log().warn(
                "oauth refresh failed for good",
                json!({ "platform": p.as_str(), "connection_id": connection, "code": e.code, "status": e.status }),
            );
            release(format!("{}: {}", e.code, e.message), true).await;
            Err(reconnect(p, &e.code))
        }
        Err(e) => {
            ctx.log().warn(
                "oauth refresh failed, will retry",
                json!({ "platform": p.as_str(), "connection_id": connection, "code": e.code, "status": e.status }),
            );
            release(format!("{}: {}", e.code, e.message), false).await;
            if still_valid {
                Ok(AccessToken {
                    token: access,
                    refreshed: false,
                    expires_at: got.expires_at,
                })
            } else {
                Err(ApiError::unavailable(
                    "platform_unavailable",
                    format!("{} did not renew the token ({})", p.as_str(), e.code),
                ))
            }
        }
    }
}

/// Completes a connection: exchanges the code, upgrades to a long-lived
/// token where the platform has one, reads the profile, seals and stores.
/// Returns the stored connection row (no tokens).
pub async fn connect(
    db: &Db<impl HttpClient>,
    ctx: &Ctx,
    settings: &OAuthSettings,
    user: &str,
    p: Platform,
    code: &str,
    pkce_verifier: Option<&str>,
) -> Result<Value, ApiError> {
    let app = settings.app(p)?;
    let sealer = settings.sealer()?;
    let http = ctx.http();
    let platform_error = |stage: &str, e: OAuthError| {
        ctx.log().warn(
            "oauth exchange failed",
            json!({ "platform": p.as_str(), "stage": stage, "code": e.code, "status": e.status }),
        );
        if e.transient {
            ApiError::unavailable(
                "platform_unavailable",
                format!("{} did not answer; try again", p.as_str()),
            )
        } else {
            ApiError::bad_request(
                "oauth_exchange_failed",
                format!("{} refused the {stage}: {}", p.as_str(), e.code),
            )
        }
    };
    let resp = send(&http, oauth::token_request(p, app, code, pkce_verifier))
        .await
        .map_err(|e| platform_error("code", e))?;
    let mut tokens = oauth::parse_token(&resp).map_err(|e| platform_error("code", e))?;
    if let Some(req) = oauth::long_lived_request(p, app, &tokens.access_token) {
        let resp = send(&http, req)
            .await
            .map_err(|e| platform_error("long-lived token exchange", e))?;
        let long = oauth::parse_token(&resp).map_err(|e| platform_error("long-lived token exchange", e))?;
        tokens.access_token = long.access_token;
        tokens.expires_in = long.expires_in.or(tokens.expires_in);
    }
    let resp = send(&http, oauth::profile_request(p, app, &tokens.access_token))
        .await
        .map_err(|e| platform_error("profile", e))?;
    let profile = oauth::parse_profile(p, &resp).map_err(|e| platform_error("profile", e))?;
    let mut rng = ctx.rng();
    let sealed_access = seal(sealer, &mut rng, user, p, "access", &tokens.access_token);
    let sealed_refresh = tokens
        .refresh_token
        .as_deref()
        .map(|r| seal(sealer, &mut rng, user, p, "refresh", r));
    let row: Value = db
        .rpc(
            "oauth_connection_save",
            &json!({
                "p_user": user, "p_platform": p.as_str(),
                "p_platform_user_id": profile.id, "p_username": profile.username,
                "p_display_name": profile.name,
                "p_profile": { "picture": profile.picture },
                "p_scopes": if tokens.scopes.is_empty() { app.scopes.clone() } else { tokens.scopes.clone() },
                "p_access_token": sealed_access, "p_refresh_token": sealed_refresh,
                "p_expires_at": expiry(ctx.clock().now_ms(), tokens.expires_in),
            }),
        )
        .await
        .map_err(map_db_error)?;
    Ok(row)
}

/// Disconnects: revokes at the platform (best effort: a platform that is
/// down must not keep the user connected) and deletes the tokens.
pub async fn disconnect(
    db: &Db<impl HttpClient>,
    ctx: &Ctx,
    settings: &OAuthSettings,
    user: &str,
    p: Platform,
) -> Result<Value, ApiError> {
    let gone: Value = db
        .rpc(
            "oauth_connection_delete",
            &json!({ "p_user": user, "p_platform": p.as_str() }),
        )
        .await
        .map_err(map_db_error)?;
    let mut revoked = false;
    if let (Ok(app), Ok(sealer), Some(sealed)) = (settings.app(p), settings.sealer(), gone["access_token"].as_str()) {
        if let Ok(access) = sealer.open(sealed, &token_binding(user, p.as_str(), "access")) {
            if let Some(req) = oauth::revoke_request(p, app, &access) {
                revoked = matches!(send(&ctx.http(), req).await, Ok(r) if (200..300).contains(&r.status));
            }
        }
    }
    Ok(
        json!({ "platform": p.as_str(), "disconnected": true, "revoked_at_platform": revoked,
               "connection_id": gone["connection_id"] }),
    )
}

/// The rows clients see: never a token column (the table has none).
pub fn public_connection(row: &Value) -> Value {
    let keep = [
        "id",
        "platform",
        "platform_user_id",
        "username",
        "display_name",
        "profile",
        "scopes",
        "status",
        "token_expires_at",
        "refreshed_at",
        "last_error",
        "created_at",
        "updated_at",
    ];
    let mut out = serde_json::Map::new();
    for k in keep {
        if let Some(v) = row.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_answer_keeps_only_its_public_fields() {
        let row = json!({ "id": "c1", "platform": "twitter", "status": "active", "access_token": "v1.k1.x.y",
                          "refresh_token": "v1.k1.a.b", "user_id": "u1" });
        let out = public_connection(&row);
        assert_eq!(out, json!({ "id": "c1", "platform": "twitter", "status": "active" }));
    }

    #[test]
    fn an_access_token_never_prints() {
        let t = AccessToken {
            token: "at-secret".into(),
            refreshed: true,
            expires_at: None,
        };
        assert!(!format!("{t:?}").contains("at-secret"));
    }

    #[test]
    fn expiry_is_now_plus_the_platforms_seconds() {
        assert_eq!(expiry(0, Some(60)).as_deref(), Some("1970-01-01T00:01:00.000Z"));
        assert_eq!(expiry(0, Some(0)), None);
        assert_eq!(expiry(0, None), None);
    }
}
