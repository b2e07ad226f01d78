//! social-connect (a signed-in user): OAuth connections to Instagram,
//! Twitter/X, LinkedIn, TikTok, Google and Facebook.
//!
//! * `GET ?platform=<p>` or `POST {action: "authorize", platform}`: the
//!   platform's authorisation URL with a signed, expiring, single-use
//!   `state` (and a PKCE challenge for Twitter/X).
//! * `POST {platform, code, state}` (the seed's callback): the state is
//!   checked (signature, expiry, this user, this platform, never used),
//!   the code exchanged, the profile read, the tokens sealed and stored;
//!   the answer is the connection without any token.
//! * `POST {action: "refresh", platform}`: a usable token, refreshed ahead
//!   of expiry by exactly one of any number of concurrent callers.
//! * `POST {action: "disconnect", platform}` or `DELETE ?platform=`: revoke
//!   at the platform and delete.
//! * `GET` without a platform: the user's connections.

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_input::validate::Field;
use edgeworks_input::validate::Validate;
use edgeworks_runtime::Ctx;
use edgeworks_service::{Route, ServiceDb, Settings, User};

use crate::Incoming;
use serde_json::{json, Value};

use crate::oauth::{self, Platform, PLATFORM_NAMES};
use crate::secrets::{self, StateClaims};
use crate::settings::OAuthSettings;
use crate::tokens::{self, map_db_error};

/// GET, POST, DELETE; signed-in users; 60 burst, one a second.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post, Method::Delete]).rate_limit("60/1");

edgeworks_input::input! {
    /// What a user sends.
    pub struct ConnectRequest {
        /// The platform.
        pub platform: Option<String> = Field::string().one_of(PLATFORM_NAMES),
        /// authorize | callback | refresh | disconnect (default: callback
        /// when a code is sent, authorize otherwise).
        pub action: Option<String> = Field::string().one_of(&["authorize", "callback", "refresh", "disconnect"]),
        /// The code the platform sent to the redirect URI.
        pub code: Option<String> = Field::string().non_blank().max_chars(2048),
        /// The state the platform sent back.
        pub state: Option<String> = Field::string().non_blank().max_chars(1024),
    }
}

fn need(field: &str, message: &str) -> ApiError {
    ApiError::unprocessable(
        "request failed validation",
        json!({ "fields": [{ "field": field, "code": "required", "message": message }] }),
    )
}

/// The handler.
pub async fn handle(
    user: User,
    settings: Settings<OAuthSettings>,
    Incoming(req): Incoming,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<edgeworks_service::Json<Value>, ApiError> {
    let method = req.method;
    let schema = ConnectRequest::schema();
    let body: ConnectRequest = match method {
        Method::Post => schema.parse(if req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &req.body
        })?,
        _ => schema.parse_value(schema.object_from_query(req.query()))?,
    };
    let platform = body.platform.as_deref().and_then(Platform::parse);
    let action = match (method, body.action.as_deref()) {
        (_, Some(a)) => a,
        (Method::Delete, None) => "disconnect",
        (Method::Get, None) if platform.is_none() => "list",
        (_, None) if body.code.is_some() => "callback",
        (_, None) => "authorize",
    };
    if action == "list" {
        let rows: Vec<Value> = db
            .execute(
                db.from("oauth_connections")
                    .select("*")
                    .eq("user_id", &user.id)
                    .order("platform"),
            )
            .await
            .map_err(ApiError::from)?;
        let list: Vec<Value> = rows.iter().map(tokens::public_connection).collect();
        return Ok(edgeworks_service::Json(json!({ "connections": list })));
    }
    let p = platform.ok_or_else(|| {
        need(
            "platform",
            "one of instagram, twitter, linkedin, tiktok, google, facebook",
        )
    })?;
    let data = match action {
        "authorize" => authorize(&settings, &ctx, &user.id, p)?,
        "callback" => {
            let code = body
                .code
                .as_deref()
                .ok_or_else(|| need("code", "the code the platform sent"))?;
            let state = body
                .state
                .as_deref()
                .ok_or_else(|| need("state", "the state the platform sent back"))?;
            callback(&db, &settings, &ctx, &user.id, p, code, state).await?
        }
        "refresh" => {
            let token = tokens::access_token(&db, &ctx, &settings, &user.id, p).await?;
            // The token itself stays here: only facts about it leave.
            json!({ "platform": p.as_str(), "status": "active", "refreshed": token.refreshed,
                    "token_expires_at": token.expires_at })
        }
        _ => tokens::disconnect(&db, &ctx, &settings, &user.id, p).await?,
    };
    Ok(edgeworks_service::Json(data))
}

fn authorize(settings: &OAuthSettings, ctx: &Ctx, user: &str, p: Platform) -> Result<Value, ApiError> {
    let app = settings.app(p)?;
    let secret = settings.state_secret()?;
    let now = ctx.clock().now_ms() / 1000;
    let nonce = uuid_v4(&mut ctx.rng()).replace('-', "");
    let claims = StateClaims {
        u: user.to_string(),
        p: p.as_str().to_string(),
        n: nonce,
        e: now + settings.state_ttl_secs,
    };
    let state = secrets::sign_state(secret, &claims);
    let challenge = p
        .uses_pkce()
        .then(|| secrets::pkce_challenge(&secrets::pkce_verifier(secret, &claims.n)));
    Ok(json!({
        "platform": p.as_str(),
        "authorization_url": oauth::authorization_url(p, app, &state, challenge.as_deref()),
        "state": state,
        "redirect_uri": app.redirect_uri,
        "expires_at": edgeworks_core::time::format_rfc3339_ms(claims.e * 1000),
    }))
}

async fn callback(
    db: &edgeworks_db::Db<edgeworks_runtime::HostHttp>,
    settings: &OAuthSettings,
    ctx: &Ctx,
    user: &str,
    p: Platform,
    code: &str,
    state: &str,
) -> Result<Value, ApiError> {
    let secret = settings.state_secret()?;
    let now = ctx.clock().now_ms() / 1000;
    let claims = secrets::verify_state(secret, state, user, p.as_str(), now).map_err(|e| {
        ctx.log().warn(
            "oauth state refused",
            json!({ "platform": p.as_str(), "reason": e.code() }),
        );
        ApiError::bad_request(
            e.code(),
            match e {
                secrets::StateError::Invalid => "the state is not one this service issued",
                secrets::StateError::Expired => "the state has expired; start the connection again",
                secrets::StateError::Mismatch => "the state was issued to another user or platform",
            },
        )
    })?;
    let first: bool = db
        .rpc(
            "oauth_state_consume",
            &json!({ "p_nonce": claims.n, "p_user": user, "p_platform": p.as_str(),
                     "p_expires_at": edgeworks_core::time::format_rfc3339_ms(claims.e * 1000) }),
        )
        .await
        .map_err(map_db_error)?;
    if !first {
        ctx.log()
            .warn("oauth state replayed", json!({ "platform": p.as_str() }));
        return Err(ApiError::bad_request(
            "state_replayed",
            "this state was already used; start the connection again",
        ));
    }
    let verifier = p.uses_pkce().then(|| secrets::pkce_verifier(secret, &claims.n));
    let row = tokens::connect(db, ctx, settings, user, p, code, verifier.as_deref()).await?;
    ctx.log().info(
        "oauth connected",
        json!({ "platform": p.as_str(), "connection_id": row["id"] }),
    );
    Ok(json!({ "connection": tokens::public_connection(&row) }))
}
