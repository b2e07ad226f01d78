//! OAuth 2.0 with each platform, as its documentation specifies: the
//! authorisation URL, the code exchange, refresh, the profile, revocation
//! and (Twitter/X, LinkedIn) publishing a text post. Pure: each function
//! builds a [`Request`] or reads a [`Response`]; sending is the caller's.
//!
//! Platform quirks handled here:
//! * Instagram: the Instagram API with Instagram Login (the Basic Display
//!   API the seed names was shut down on 4 December 2024). The code gives a
//!   one-hour token (answered flat or as `{"data": [...]}`, with a numeric
//!   `user_id`), exchanged at once for a 60-day one (`ig_exchange_token`);
//!   there is no refresh token: the long-lived token refreshes itself
//!   (`ig_refresh_token`). No revocation endpoint.
//! * Twitter/X: PKCE (S256) is required; a confidential client
//!   authenticates with HTTP Basic; refresh tokens are single-use and
//!   rotate (so two concurrent refreshes would lose the connection: the
//!   reason refresh is single-flight).
//! * LinkedIn: OpenID Connect `userinfo` for the profile; refresh tokens
//!   only for approved partners (without one, the token is used until it
//!   expires, then the user reconnects).
//! * TikTok: `client_key`, not `client_id`; comma-separated scopes; errors
//!   may come with HTTP 200 and an `error` field.
//! * Google: `access_type=offline` and `prompt=consent` to get a refresh
//!   token; a refresh answer carries no new refresh token (keep the old).
//! * Facebook: the code exchange is a GET; the short token is exchanged for
//!   a 60-day one (`fb_exchange_token`); long-lived user tokens cannot be
//!   refreshed, only replaced by connecting again.
//!
//! Base URLs: each platform's hosts can be replaced by one base URL
//! (`OAUTH_<PLATFORM>_BASE_URL`), keeping the documented paths, which is
//! how the tests point them at fake servers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use edgeworks_core::http::Headers;
use edgeworks_core::{Method, Request, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// The platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Instagram API with Instagram Login.
    Instagram,
    /// Twitter / X (OAuth 2.0 with PKCE).
    Twitter,
    /// LinkedIn.
    Linkedin,
    /// TikTok (Login Kit v2).
    Tiktok,
    /// Google.
    Google,
    /// Facebook Login.
    Facebook,
}

/// The names clients send.
pub const PLATFORM_NAMES: &[&str] = &["instagram", "twitter", "linkedin", "tiktok", "google", "facebook"];

impl Platform {
    /// Every platform.
    pub const ALL: [Platform; 6] = [
        Platform::Instagram,
        Platform::Twitter,
        Platform::Linkedin,
        Platform::Tiktok,
        Platform::Google,
        Platform::Facebook,
    ];

    /// From its name (`x` is Twitter).
    pub fn parse(s: &str) -> Option<Platform> {
        Some(match s {
            "instagram" => Platform::Instagram,
            "twitter" | "x" => Platform::Twitter,
            "linkedin" => Platform::Linkedin,
            "tiktok" => Platform::Tiktok,
            "google" => Platform::Google,
            "facebook" => Platform::Facebook,
            _ => return None,
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Instagram => "instagram",
            Platform::Twitter => "twitter",
            Platform::Linkedin => "linkedin",
            Platform::Tiktok => "tiktok",
            Platform::Google => "google",
            Platform::Facebook => "facebook",
        }
    }

    /// The upper-case word in its environment variables.
    pub fn env_word(self) -> &'static str {
        match self {
            Platform::Instagram => "INSTAGRAM",
            Platform::Twitter => "TWITTER",
            Platform::Linkedin => "LINKEDIN",
            Platform::Tiktok => "TIKTOK",
            Platform::Google => "GOOGLE",
            Platform::Facebook => "FACEBOOK",
        }
    }

    /// Whether the flow uses PKCE.
    pub fn uses_pkce(self) -> bool {
        matches!(self, Platform::Twitter)
    }

    /// Scopes asked for when the deployment names none.
    pub fn default_scopes(self) -> &'static [&'static str] {
        match self {
            Platform::Instagram => &["instagram_business_basic", "instagram_business_content_publish"],
            Platform::Twitter => &["tweet.read", "tweet.write", "users.read", "offline.access"],
            Platform::Linkedin => &["openid", "profile", "w_member_social"],
            Platform::Tiktok => &["user.info.basic", "video.publish"],
            Platform::Google => &["openid", "email", "profile"],
            Platform::Facebook => &["public_profile", "pages_show_list", "pages_manage_posts"],
        }
    }
}

/// One platform's app registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// The client id (`client_key` at TikTok).
    pub client_id: String,
    /// The client secret. Never logged.
    pub client_secret: String,
    /// The registered redirect URI.
    pub redirect_uri: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Replaces every host of the platform (tests), keeping paths.
    pub base_url: Option<String>,
}

const GRAPH_VERSION: &str = "v21.0";

impl AppConfig {
    fn url(&self, documented: &str) -> String {
        match &self.base_url {
            Some(base) => {
                let path = documented
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or("/");
                format!("{}{}", base.trim_end_matches('/'), path)
            }
            None => documented.to_string(),
        }
    }
}

const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, FORM).to_string()
}

/// `k=v&...`, form-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_post(url: String, pairs: &[(&str, &str)]) -> Request {
    let mut req = Request::new(Method::Post, url);
    req.headers.set("content-type", "application/x-www-form-urlencoded");
    req.headers.set("accept", "application/json");
    req.body = form(pairs).into_bytes();
    req
}

fn get(url: String, query: &[(&str, &str)]) -> Request {
    let url = if query.is_empty() {
        url
    } else {
        format!("{url}?{}", form(query))
    };
    let mut req = Request::new(Method::Get, url);
    req.headers.set("accept", "application/json");
    req
}

fn bearer(mut req: Request, token: &str) -> Request {
    req.headers.set("authorization", format!("Bearer {token}"));
    req
}

fn basic(mut req: Request, app: &AppConfig) -> Request {
    let creds = STANDARD.encode(format!("{}:{}", app.client_id, app.client_secret));
    req.headers.set("authorization", format!("Basic {creds}"));
    req
}

/// Where the user is sent to grant access.
pub fn authorization_url(p: Platform, app: &AppConfig, state: &str, pkce_challenge: Option<&str>) -> String {
    let scopes_space = app.scopes.join(" ");
    let scopes_comma = app.scopes.join(",");
    let mut q: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("redirect_uri", &app.redirect_uri),
        ("state", state),
    ];
    let base = match p {
        Platform::Instagram => {
            q.extend([("client_id", app.client_id.as_str()), ("scope", scopes_comma.as_str())]);
            app.url("https://www.instagram.com/oauth/authorize")
        }
        Platform::Twitter => {
            q.extend([("client_id", app.client_id.as_str()), ("scope", scopes_space.as_str())]);
            if let Some(c) = pkce_challenge {
                q.extend([("code_challenge", c), ("code_challenge_method", "S256")]);
            }
            app.url("https://x.com/i/oauth2/authorize")
        }
        Platform::Linkedin => {
            q.extend([("client_id", app.client_id.as_str()), ("scope", scopes_space.as_str())]);
            app.url("https://www.linkedin.com/oauth/v2/authorization")
        }
        Platform::Tiktok => {
            q.extend([("client_key", app.client_id.as_str()), ("scope", scopes_comma.as_str())]);
            app.url("https://www.tiktok.com/v2/auth/authorize/")
        }
        Platform::Google => {
            q.extend([
                ("client_id", app.client_id.as_str()),
                ("scope", scopes_space.as_str()),
                ("access_type", "offline"),
                ("prompt", "consent"),
                ("include_granted_scopes", "true"),
            ]);
            app.url("https://accounts.google.com/o/oauth2/v2/auth")
        }
        Platform::Facebook => {
            q.extend([("client_id", app.client_id.as_str()), ("scope", scopes_comma.as_str())]);
            app.url(&format!("https://www.facebook.com/{GRAPH_VERSION}/dialog/oauth"))
        }
    };
    format!("{base}?{}", form(&q))
}

/// The code exchange.
pub fn token_request(p: Platform, app: &AppConfig, code: &str, pkce_verifier: Option<&str>) -> Request {
    let common = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", app.redirect_uri.as_str()),
    ];
    match p {
        Platform::Instagram => form_post(
            app.url("https://api.instagram.com/oauth/access_token"),
            &[
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                common[0],
                common[1],
                common[2],
            ],
        ),
        Platform::Twitter => {
            let mut pairs = vec![common[0], common[1], common[2], ("client_id", app.client_id.as_str())];
            if let Some(v) = pkce_verifier {
                pairs.push(("code_verifier", v));
            }
            basic(form_post(app.url("https://api.x.com/2/oauth2/token"), &pairs), app)
        }
        Platform::Linkedin => form_post(
            app.url("https://www.linkedin.com/oauth/v2/accessToken"),
            &[
                common[0],
                common[1],
                common[2],
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
            ],
        ),
        Platform::Tiktok => form_post(
            app.url("https://open.tiktokapis.com/v2/oauth/token/"),
            &[
                ("client_key", &app.client_id),
                ("client_secret", &app.client_secret),
                common[0],
                common[1],
                common[2],
            ],
        ),
        Platform::Google => form_post(
            app.url("https://oauth2.googleapis.com/token"),
            &[
                common[0],
                common[1],
                common[2],
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
            ],
        ),
        Platform::Facebook => get(
            app.url(&format!(
                "https://graph.facebook.com/{GRAPH_VERSION}/oauth/access_token"
            )),
            &[
                ("client_id", &app.client_id),
                ("redirect_uri", &app.redirect_uri),
                ("client_secret", &app.client_secret),
                ("code", code),
            ],
        ),
    }
}

/// The exchange of a short-lived token for a long-lived one, where the
/// platform has one (Instagram, Facebook).
pub fn long_lived_request(p: Platform, app: &AppConfig, short_token: &str) -> Option<Request> {
    match p {
        Platform::Instagram => Some(get(
            app.url("https://graph.instagram.com/access_token"),
            &[
                ("grant_type", "ig_exchange_token"),
                ("client_secret", &app.client_secret),
                ("access_token", short_token),
            ],
        )),
        Platform::Facebook => Some(get(
            app.url(&format!(
                "https://graph.facebook.com/{GRAPH_VERSION}/oauth/access_token"
            )),
            &[
                ("grant_type", "fb_exchange_token"),
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                ("fb_exchange_token", short_token),
            ],
        )),
        _ => None,
    }
}

/// A refresh, or `None` when the platform (or this connection) cannot.
pub fn refresh_request(p: Platform, app: &AppConfig, access: &str, refresh: Option<&str>) -> Option<Request> {
    match p {
        Platform::Instagram => Some(get(
            app.url("https://graph.instagram.com/refresh_access_token"),
            &[("grant_type", "ig_refresh_token"), ("access_token", access)],
        )),
        Platform::Facebook => None,
        Platform::Twitter => refresh.map(|r| {
            basic(
                form_post(
                    app.url("https://api.x.com/2/oauth2/token"),
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", r),
                        ("client_id", &app.client_id),
                    ],
                ),
                app,
            )
        }),
        Platform::Linkedin => refresh.map(|r| {
            form_post(
                app.url("https://www.linkedin.com/oauth/v2/accessToken"),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", r),
                    ("client_id", &app.client_id),
                    ("client_secret", &app.client_secret),
                ],
            )
        }),
        Platform::Tiktok => refresh.map(|r| {
            form_post(
                app.url("https://open.tiktokapis.com/v2/oauth/token/"),
                &[
                    ("client_key", &app.client_id),
                    ("client_secret", &app.client_secret),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", r),
                ],
            )
        }),
        Platform::Google => refresh.map(|r| {
            form_post(
                app.url("https://oauth2.googleapis.com/token"),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", r),
                    ("client_id", &app.client_id),
                    ("client_secret", &app.client_secret),
                ],
            )
        }),
    }
}

/// Revocation at the platform, where it has one.
pub fn revoke_request(p: Platform, app: &AppConfig, access: &str) -> Option<Request> {
    match p {
        Platform::Instagram => None,
        Platform::Twitter => Some(basic(
            form_post(
                app.url("https://api.x.com/2/oauth2/revoke"),
                &[
                    ("token", access),
                    ("token_type_hint", "access_token"),
                    ("client_id", &app.client_id),
                ],
            ),
            app,
        )),
        Platform::Linkedin => Some(form_post(
            app.url("https://www.linkedin.com/oauth/v2/revoke"),
            &[
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                ("token", access),
            ],
        )),
        Platform::Tiktok => Some(form_post(
            app.url("https://open.tiktokapis.com/v2/oauth/revoke/"),
            &[
                ("client_key", &app.client_id),
                ("client_secret", &app.client_secret),
                ("token", access),
            ],
        )),
        Platform::Google => Some(form_post(
            app.url("https://oauth2.googleapis.com/revoke"),
            &[("token", access)],
        )),
        Platform::Facebook => {
            let mut req = get(
                app.url(&format!("https://graph.facebook.com/{GRAPH_VERSION}/me/permissions")),
                &[("access_token", access)],
            );
            req.method = Method::Delete;
            Some(req)
        }
    }
}

/// The signed-in account's profile.
pub fn profile_request(p: Platform, app: &AppConfig, access: &str) -> Request {
    match p {
        Platform::Instagram => get(
            app.url(&format!("https://graph.instagram.com/{GRAPH_VERSION}/me")),
            &[
                ("fields", "user_id,username,name,profile_picture_url"),
                ("access_token", access),
            ],
        ),
        Platform::Twitter => bearer(
            get(
                app.url("https://api.x.com/2/users/me"),
                &[("user.fields", "profile_image_url")],
            ),
            access,
        ),
        Platform::Linkedin => bearer(get(app.url("https://api.linkedin.com/v2/userinfo"), &[]), access),
        Platform::Tiktok => bearer(
            get(
                app.url("https://open.tiktokapis.com/v2/user/info/"),
                &[("fields", "open_id,union_id,avatar_url,display_name")],
            ),
            access,
        ),
        Platform::Google => bearer(
            get(app.url("https://openidconnect.googleapis.com/v1/userinfo"), &[]),
            access,
        ),
        Platform::Facebook => get(
            app.url(&format!("https://graph.facebook.com/{GRAPH_VERSION}/me")),
            &[("fields", "id,name,picture"), ("access_token", access)],
        ),
    }
}

/// Publishing a text post, where supported without media.
pub fn post_request(p: Platform, app: &AppConfig, access: &str, author_id: &str, text: &str) -> Option<Request> {
    match p {
        Platform::Twitter => {
            let mut req = bearer(
                Request::new(Method::Post, app.url("https://api.x.com/2/tweets")),
                access,
            );
            req.headers.set("content-type", "application/json");
            req.body = json!({ "text": text }).to_string().into_bytes();
            Some(req)
        }
        Platform::Linkedin => {
            let mut req = bearer(
                Request::new(Method::Post, app.url("https://api.linkedin.com/rest/posts")),
                access,
            );
            req.headers.set("content-type", "application/json");
            req.headers.set("linkedin-version", "202405");
            req.headers.set("x-restli-protocol-version", "2.0.0");
            req.body = json!({
                "author": format!("urn:li:person:{author_id}"),
                "commentary": text,
                "visibility": "PUBLIC",
                "distribution": { "feedDistribution": "MAIN_FEED", "targetEntities": [], "thirdPartyDistributionChannels": [] },
                "lifecycleState": "PUBLISHED",
                "isReshareDisabledByAuthor": false,
            })
            .to_string()
            .into_bytes();
            Some(req)
        }
        _ => None,
    }
}

/// How a platform call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status (0: no response).
    pub status: u16,
    /// The platform's error code (`invalid_grant`, `190`, ...).
    pub code: String,
    /// The platform's description (never a token).
    pub message: String,
    /// Whether trying again later could work (429, 5xx, no answer).
    pub transient: bool,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl OAuthError {
    /// A transport failure: nothing was answered.
    pub fn transport(detail: &str) -> OAuthError {
        OAuthError {
            status: 0,
            code: "unreachable".into(),
            message: detail.chars().take(200).collect(),
            transient: true,
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads any platform's error body: RFC 6749 `{error, error_description}`,
/// Graph `{error: {message, type, code}}`, Instagram's
/// `{error_type, code, error_message}`, TikTok's `{error: {code, message}}`.
fn error_of(resp: &Response, body: &Value) -> Option<OAuthError> {
    let status = resp.status;
    let (code, message) = if let Some(e) = body.get("error").and_then(Value::as_object) {
        let code = e.get("code").and_then(text_of).unwrap_or_else(|| "error".into());
        if code == "ok" {
            return (status >= 400).then(|| OAuthError {
                status,
                code: "http_error".into(),
                message: format!("HTTP {status}"),
                transient: status == 429 || status >= 500,
            });
        }
        (code, e.get("message").and_then(text_of).unwrap_or_default())
    } else if let Some(code) = body.get("error").and_then(text_of) {
        (
            code,
            body.get("error_description").and_then(text_of).unwrap_or_default(),
        )
    } else if let Some(t) = body.get("error_type").and_then(text_of) {
        (
            body.get("code").and_then(text_of).unwrap_or(t),
            body.get("error_message").and_then(text_of).unwrap_or_default(),
        )
    } else if status >= 400 {
        (
            "http_error".to_string(),
            body.get("detail")
                .or_else(|| body.get("message"))
                .and_then(text_of)
                .unwrap_or_else(|| format!("HTTP {status}")),
        )
    } else {
        return None;
    };
    Some(OAuthError {
        status,
        code,
        message: message.chars().take(300).collect(),
        transient: status == 429 || status >= 500,
    })
}

fn json_of(resp: &Response) -> Result<Value, OAuthError> {
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    if let Some(e) = error_of(resp, &body) {
        return Err(e);
    }
    if body.is_null() {
        return Err(OAuthError {
            status: resp.status,
            code: "bad_response".into(),
            message: "the platform's answer is not JSON".into(),
            transient: resp.status >= 500,
        });
    }
    Ok(body)
}

/// Tokens a platform answered with.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// A refresh token, if the platform gave one.
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: Option<i64>,
    /// Granted scopes, as the platform lists them.
    pub scopes: Vec<String>,
    /// The account id when the token answer carries it (Instagram, TikTok).
    pub account_id: Option<String>,
}

// Tokens never reach a log through Debug.
impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[REDACTED]"))
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Reads a token answer (code exchange, long-lived exchange or refresh).
pub fn parse_token(resp: &Response) -> Result<TokenSet, OAuthError> {
    let body = json_of(resp)?;
    // Instagram Login may wrap the answer in {"data": [ ... ]}; TikTok may
    // put it under "data".
    let t = match body.get("data") {
        Some(Value::Array(items)) => items.first().cloned().unwrap_or(Value::Null),
        Some(obj @ Value::Object(_)) if obj.get("access_token").is_some() => obj.clone(),
        _ => body,
    };
    let access_token = t
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError {
            status: resp.status,
            code: "bad_response".into(),
            message: "the token answer has no access_token".into(),
            transient: false,
        })?
        .to_string();
    let scopes = t
        .get("scope")
        .or_else(|| t.get("permissions"))
        .map(|v| match v {
            Value::String(s) => s
                .split([' ', ','])
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    Ok(TokenSet {
        access_token,
        refresh_token: t
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        expires_in: t
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok())),
        scopes,
        account_id: t.get("user_id").or_else(|| t.get("open_id")).and_then(text_of),
    })
}

/// An account as the platform describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The platform's id for the account.
    pub id: String,
    /// Handle, when the platform has one.
    pub username: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Picture URL.
    pub picture: Option<String>,
}

/// Reads a profile answer.
pub fn parse_profile(p: Platform, resp: &Response) -> Result<Profile, OAuthError> {
    let body = json_of(resp)?;
    let s = |v: &Value, k: &str| v.get(k).and_then(text_of);
    let profile = match p {
        Platform::Instagram => Profile {
            id: s(&body, "user_id").or_else(|| s(&body, "id")).unwrap_or_default(),
            username: s(&body, "username"),
            name: s(&body, "name"),
            picture: s(&body, "profile_picture_url"),
        },
        Platform::Twitter => {
            let d = body.get("data").cloned().unwrap_or(Value::Null);
            Profile {
                id: s(&d, "id").unwrap_or_default(),
                username: s(&d, "username"),
                name: s(&d, "name"),
                picture: s(&d, "profile_image_url"),
            }
        }
        Platform::Linkedin | Platform::Google => Profile {
            id: s(&body, "sub").unwrap_or_default(),
            username: s(&body, "email"),
            name: s(&body, "name"),
            picture: s(&body, "picture"),
        },
        Platform::Tiktok => {
            let u = body.pointer("/data/user").cloned().unwrap_or(Value::Null);
            Profile {
                id: s(&u, "open_id").unwrap_or_default(),
                username: None,
                name: s(&u, "display_name"),
                picture: s(&u, "avatar_url"),
            }
        }
        Platform::Facebook => Profile {
            id: s(&body, "id").unwrap_or_default(),
            username: None,
            name: s(&body, "name"),
            picture: body.pointer("/picture/data/url").and_then(text_of),
        },
    };
    if profile.id.is_empty() {
        return Err(OAuthError {
            status: resp.status,
            code: "bad_response".into(),
            message: "the profile answer has no account id".into(),
            transient: false,
        });
    }
    Ok(profile)
}

/// Reads a publish answer: the post's id.
pub fn parse_post(p: Platform, resp: &Response) -> Result<String, OAuthError> {
    if p == Platform::Linkedin && resp.status == 201 {
        if let Some(id) = resp.headers.get("x-restli-id") {
            return Ok(id.to_string());
        }
    }
    let body = json_of(resp)?;
    body.pointer("/data/id")
        .or_else(|| body.get("id"))
        .and_then(text_of)
        .ok_or_else(|| OAuthError {
            status: resp.status,
            code: "bad_response".into(),
            message: "the post answer has no id".into(),
            transient: false,
        })
}

/// Whether a failed refresh can never succeed (the grant is gone): the
/// connection is marked and its owner asked to connect again.
pub fn refresh_failed_for_good(e: &OAuthError) -> bool {
    if e.transient {
        return false;
    }
    // RFC 6749 codes, Graph's 190 (token invalid/expired), or any other
    // 4xx the token endpoint answers to a refresh.
    matches!(
        e.code.as_str(),
        "invalid_grant" | "invalid_client" | "unauthorized_client" | "190"
    ) || (400..500).contains(&e.status)
}

/// Headers for logging a platform request: names only, never values.
pub fn header_names(h: &Headers) -> Vec<String> {
    h.iter().map(|(k, _)| k.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(base: Option<&str>) -> AppConfig {
        AppConfig {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            redirect_uri: "https://app.example.com/oauth/callback".into(),
            scopes: vec!["a".into(), "b".into()],
            base_url: base.map(str::to_string),
        }
    }

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn form_of(req: &Request) -> Vec<(String, String)> {
        let r = Request::new(Method::Get, format!("http://x/?{}", String::from_utf8_lossy(&req.body)));
        r.query()
    }

    #[test]
    fn each_platform_authorises_at_its_documented_url() {
        let want = [
            (
                Platform::Instagram,
                "https://www.instagram.com/oauth/authorize?",
                "client_id=cid",
                "scope=a%2Cb",
            ),
            (
                Platform::Twitter,
                "https://x.com/i/oauth2/authorize?",
                "code_challenge_method=S256",
                "scope=a%20b",
            ),
            (
                Platform::Linkedin,
                "https://www.linkedin.com/oauth/v2/authorization?",
                "client_id=cid",
                "scope=a%20b",
            ),
            (
                Platform::Tiktok,
                "https://www.tiktok.com/v2/auth/authorize/?",
                "client_key=cid",
                "scope=a%2Cb",
            ),
            (
                Platform::Google,
                "https://accounts.google.com/o/oauth2/v2/auth?",
                "access_type=offline",
                "prompt=consent",
            ),
            (
                Platform::Facebook,
                "https://www.facebook.com/v21.0/dialog/oauth?",
                "client_id=cid",
                "scope=a%2Cb",
            ),
        ];
        for (p, prefix, a, b) in want {
            let url = authorization_url(p, &app(None), "st.ate", Some("chal"));
            assert!(url.starts_with(prefix), "{url}");
            assert!(url.contains(a) && url.contains(b), "{url}");
            assert!(url.contains("state=st.ate"));
            assert!(url.contains("redirect_uri=https%3A%2F%2Fapp.example.com%2Foauth%2Fcallback"));
            assert!(!url.contains("csecret"));
        }
    }

    #[test]
    fn a_base_url_replaces_the_host_and_keeps_the_path() {
        let req = token_request(Platform::Tiktok, &app(Some("http://127.0.0.1:9/")), "c", None);
        assert_eq!(req.url, "http://127.0.0.1:9/v2/oauth/token/");
    }

    #[test]
    fn twitter_exchanges_with_basic_auth_and_the_pkce_verifier() {
        let req = token_request(Platform::Twitter, &app(None), "the-code", Some("verifier"));
        assert_eq!(req.url, "https://api.x.com/2/oauth2/token");
        assert_eq!(req.headers.get("authorization"), Some("Basic Y2lkOmNzZWNyZXQ="));
        let f = form_of(&req);
        assert!(f.contains(&("code_verifier".into(), "verifier".into())));
        assert!(f.contains(&("grant_type".into(), "authorization_code".into())));
        assert!(!f.iter().any(|(k, _)| k == "client_secret"));
    }

    #[test]
    fn facebook_exchanges_with_a_get_and_tiktok_with_client_key() {
        let fb = token_request(Platform::Facebook, &app(None), "c", None);
        assert_eq!(fb.method, Method::Get);
        assert!(fb
            .url
            .starts_with("https://graph.facebook.com/v21.0/oauth/access_token?client_id=cid"));
        let tt = token_request(Platform::Tiktok, &app(None), "c", None);
        assert!(form_of(&tt).contains(&("client_key".into(), "cid".into())));
    }

    #[test]
    fn instagram_tokens_parse_flat_or_wrapped_with_numeric_user_ids() {
        let flat = parse_token(&resp(
            200,
            r#"{"access_token":"IGQ","user_id":17841,"permissions":"a,b"}"#,
        ))
        .unwrap();
        assert_eq!(flat.account_id.as_deref(), Some("17841"));
        assert_eq!(flat.scopes, ["a", "b"]);
        let wrapped = parse_token(&resp(
            200,
            r#"{"data":[{"access_token":"IGQ","user_id":"17841","permissions":"a"}]}"#,
        ))
        .unwrap();
        assert_eq!(wrapped.access_token, "IGQ");
        assert!(format!("{wrapped:?}").contains("[REDACTED]") && !format!("{wrapped:?}").contains("IGQ"));
    }

    #[test]
    fn each_error_shape_is_read_and_classified() {
        let grant = parse_token(&resp(400, r#"{"error":"invalid_grant","error_description":"revoked"}"#)).unwrap_err();
        assert_eq!((grant.code.as_str(), grant.transient), ("invalid_grant", false));
        assert!(refresh_failed_for_good(&grant));
        let graph = parse_token(&resp(
            400,
            r#"{"error":{"message":"expired","type":"OAuthException","code":190}}"#,
        ))
        .unwrap_err();
        assert_eq!(graph.code, "190");
        let ig = parse_token(&resp(
            400,
            r#"{"error_type":"OAuthException","code":400,"error_message":"bad code"}"#,
        ))
        .unwrap_err();
        assert_eq!(ig.message, "bad code");
        // TikTok may answer an error with 200.
        let tt = parse_token(&resp(
            200,
            r#"{"error":"invalid_request","error_description":"x","log_id":"1"}"#,
        ))
        .unwrap_err();
        assert_eq!(tt.code, "invalid_request");
        let busy = parse_token(&resp(503, "busy")).unwrap_err();
        assert!(busy.transient && !refresh_failed_for_good(&busy));
    }

    #[test]
    fn profiles_parse_per_platform() {
        let tw = parse_profile(
            Platform::Twitter,
            &resp(
                200,
                r#"{"data":{"id":"2244994945","name":"X Dev","username":"XDevelopers"}}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            (tw.id.as_str(), tw.username.as_deref()),
            ("2244994945", Some("XDevelopers"))
        );
        let tt = parse_profile(
            Platform::Tiktok,
            &resp(200, r#"{"data":{"user":{"open_id":"o1","display_name":"T"}},"error":{"code":"ok","message":"","log_id":"l"}}"#),
        )
        .unwrap();
        assert_eq!(tt.id, "o1");
        assert!(parse_profile(Platform::Google, &resp(200, "{}")).is_err());
    }

    #[test]
    fn only_refreshable_platforms_build_a_refresh() {
        assert!(refresh_request(Platform::Facebook, &app(None), "a", Some("r")).is_none());
        assert!(refresh_request(Platform::Google, &app(None), "a", None).is_none());
        let ig = refresh_request(Platform::Instagram, &app(None), "a", None).unwrap();
        assert!(ig
            .url
            .starts_with("https://graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token"));
    }
}
