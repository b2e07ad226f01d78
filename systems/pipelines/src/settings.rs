//! Deployment settings, read once per isolate from the environment. A
//! missing secret is not an error here: the endpoint that needs it answers
//! 503 `not_configured` naming the variable (never its value).

use edgeworks_core::ApiError;
use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;

use crate::oauth::{AppConfig, Platform};
use crate::replicate::DEFAULT_SVD_VERSION;
use crate::secrets::TokenSealer;

fn misconfigured(name: &str, why: &str) -> ApiError {
    ApiError::new(500, "misconfigured", format!("{name} {why}"))
}

fn number<T: std::str::FromStr + PartialOrd>(env: &Env, name: &str, default: T, min: T, max: T) -> Result<T, ApiError> {
    match env.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(misconfigured(name, "is out of range")),
        },
    }
}

/// The answer when a feature's secret is not set.
pub fn not_configured(name: &str) -> ApiError {
    ApiError::unavailable("not_configured", format!("this deployment has not set {name}"))
}

/// How runs, steps and schedules behave.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Attempts per step job (`PIPELINES_STEP_MAX_ATTEMPTS`, 3).
    pub step_max_attempts: u32,
    /// First retry delay of a step (`PIPELINES_RETRY_BASE_MS`, 1000).
    pub retry_base_ms: u32,
    /// First retry delay of a failed scheduled run
    /// (`PIPELINES_SCHEDULE_RETRY_BASE_MS`, 60000), doubling per retry.
    pub schedule_retry_base_ms: u32,
    /// How late a schedule may fire and still count as on time
    /// (`PIPELINES_SCHEDULE_GRACE_SECONDS`, 60).
    pub schedule_grace_secs: i64,
}

impl FromEnv for PipelineSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(PipelineSettings {
            step_max_attempts: number(env, "PIPELINES_STEP_MAX_ATTEMPTS", 3, 1, 20)?,
            retry_base_ms: number(env, "PIPELINES_RETRY_BASE_MS", 1000, 1, 3_600_000)?,
            schedule_retry_base_ms: number(env, "PIPELINES_SCHEDULE_RETRY_BASE_MS", 60_000, 1, 3_600_000)?,
            schedule_grace_secs: number(env, "PIPELINES_SCHEDULE_GRACE_SECONDS", 60, 0, 86_400)?,
        })
    }
}

/// OAuth settings.
pub struct OAuthSettings {
    /// Signs `state` and derives PKCE verifiers (`OAUTH_STATE_SECRET`).
    pub state_secret: Option<Vec<u8>>,
    /// Seals tokens (`OAUTH_TOKEN_KEYS`).
    pub sealer: Option<TokenSealer>,
    /// Refresh this long before expiry (`OAUTH_REFRESH_MARGIN_SECONDS`, 300).
    pub refresh_margin_secs: u32,
    /// How long a `state` is good for (`OAUTH_STATE_TTL_SECONDS`, 600).
    pub state_ttl_secs: i64,
    apps: Vec<(Platform, AppConfig)>,
}

impl OAuthSettings {
    /// The app registration of a platform, or 503 naming what is missing.
    pub fn app(&self, p: Platform) -> Result<&AppConfig, ApiError> {
        self.apps.iter().find(|(q, _)| *q == p).map(|(_, a)| a).ok_or_else(|| {
            not_configured(&format!(
                "OAUTH_{}_CLIENT_ID / _CLIENT_SECRET / OAUTH_REDIRECT_URI",
                p.env_word()
            ))
        })
    }

    /// The state secret, or 503.
    pub fn state_secret(&self) -> Result<&[u8], ApiError> {
        self.state_secret
            .as_deref()
            .ok_or_else(|| not_configured("OAUTH_STATE_SECRET"))
    }

    /// The sealer, or 503.
    pub fn sealer(&self) -> Result<&TokenSealer, ApiError> {
        self.sealer.as_ref().ok_or_else(|| not_configured("OAUTH_TOKEN_KEYS"))
    }
}

impl FromEnv for OAuthSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let sealer = match env.get("OAUTH_TOKEN_KEYS").filter(|v| !v.trim().is_empty()) {
            Some(spec) => {
                Some(TokenSealer::from_spec(spec).map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?)
            }
            None => None,
        };
        let state_secret = env
            .get("OAUTH_STATE_SECRET")
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec());
        if state_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(misconfigured("OAUTH_STATE_SECRET", "must be at least 32 characters"));
        }
        let mut apps = Vec::new();
        for p in Platform::ALL {
            let w = p.env_word();
            // The seed's names (TWITTER_CLIENT_ID) work too.
            let var = |suffix: &str| {
                env.first_of(&[&format!("OAUTH_{w}_{suffix}"), &format!("{w}_{suffix}")])
                    .map(str::to_string)
            };
            let (Some(client_id), Some(client_secret)) = (var("CLIENT_ID"), var("CLIENT_SECRET")) else {
                continue;
            };
            let Some(redirect_uri) = var("REDIRECT_URI").or_else(|| env.get("OAUTH_REDIRECT_URI").map(str::to_string))
            else {
                continue;
            };
            let scopes = match var("SCOPES") {
                Some(s) => s
                    .split([' ', ','])
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => p.default_scopes().iter().map(|s| s.to_string()).collect(),
            };
            apps.push((
                p,
                AppConfig {
                    client_id,
                    client_secret,
                    redirect_uri,
                    scopes,
                    base_url: env.get(&format!("OAUTH_{w}_BASE_URL")).map(str::to_string),
                },
            ));
        }
        Ok(OAuthSettings {
            state_secret,
            sealer,
            refresh_margin_secs: number(env, "OAUTH_REFRESH_MARGIN_SECONDS", 300, 0, 86_400)?,
            state_ttl_secs: number(env, "OAUTH_STATE_TTL_SECONDS", 600, 30, 3600)?,
            apps,
        })
    }
}

/// Replicate settings.
pub struct ReplicateSettings {
    /// `REPLICATE_API_TOKEN`.
    pub token: Option<String>,
    /// `REPLICATE_BASE_URL` (https://api.replicate.com).
    pub base_url: String,
    /// `REPLICATE_SVD_VERSION`.
    pub version: String,
    /// Key of `REPLICATE_WEBHOOK_SECRET` (`whsec_...`, from Replicate's
    /// `GET /v1/webhooks/default/secret`).
    pub webhook_key: Option<Vec<u8>>,
    /// Where Replicate sends the webhook (`REPLICATE_WEBHOOK_URL`, default
    /// `{SUPABASE_URL}/functions/v1/ai-replicate`).
    pub webhook_url: String,
    /// Hosts outputs may be downloaded from (`REPLICATE_DELIVERY_HOSTS`).
    pub delivery_hosts: Vec<String>,
    /// The first fallback poll (`REPLICATE_POLL_DELAY_MS`, 60000).
    pub poll_delay_ms: u32,
    /// The largest output copied (`REPLICATE_MAX_OUTPUT_BYTES`, 50 MiB, the bucket's limit).
    pub max_output_bytes: usize,
}

impl ReplicateSettings {
    /// The API token, or 503.
    pub fn token(&self) -> Result<&str, ApiError> {
        self.token
            .as_deref()
            .ok_or_else(|| not_configured("REPLICATE_API_TOKEN"))
    }
}

impl FromEnv for ReplicateSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let webhook_key = match env.get("REPLICATE_WEBHOOK_SECRET").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                edgeworks_auth::standard_webhooks::secret_key(s)
                    .ok_or_else(|| misconfigured("REPLICATE_WEBHOOK_SECRET", "is not a whsec_ secret"))?,
            ),
            None => None,
        };
        let supabase = env
            .get("SUPABASE_URL")
            .unwrap_or("http://127.0.0.1:54321")
            .trim_end_matches('/');
        Ok(ReplicateSettings {
            token: env
                .get("REPLICATE_API_TOKEN")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            base_url: env
                .get("REPLICATE_BASE_URL")
                .unwrap_or("https://api.replicate.com")
                .to_string(),
            version: env
                .get("REPLICATE_SVD_VERSION")
                .unwrap_or(DEFAULT_SVD_VERSION)
                .to_string(),
            webhook_key,
            webhook_url: env
                .get("REPLICATE_WEBHOOK_URL")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{supabase}/functions/v1/ai-replicate")),
            delivery_hosts: env
                .get("REPLICATE_DELIVERY_HOSTS")
                .unwrap_or("replicate.delivery,*.replicate.delivery")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            poll_delay_ms: number(env, "REPLICATE_POLL_DELAY_MS", 60_000, 0, 3_600_000)?,
            max_output_bytes: number(env, "REPLICATE_MAX_OUTPUT_BYTES", 50 * 1024 * 1024, 1, 50 * 1024 * 1024)?,
        })
    }
}
