//! What every chat provider shares: the typed result ([`Completion`]), the
//! typed failure ([`ProviderError`]) with its retry policy, configuration
//! errors, and [`ChatProvider`], which picks Gemini or the offline provider
//! from the environment.
//!
//! The retry decision lives here, next to the error, so the job queue never
//! has to look at HTTP statuses: it asks `is_retryable()` and
//! `retry_after_ms()`.

use std::fmt;

use crate::prompt::Conversation;
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use serde::Serialize;

use crate::gemini::{GeminiClient, GeminiConfig};
use crate::offline::OfflineProvider;

/// Token counts for one call. `estimated` is true when the numbers come
/// from `crate::prompt::estimate_tokens` rather than the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub estimated: bool,
}

/// Why the model stopped. Anything other than a natural stop or the output
/// limit keeps the provider's own spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// The answer was cut at the output limit; the text is partial.
    MaxTokens,
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "STOP",
            FinishReason::MaxTokens => "MAX_TOKENS",
            FinishReason::Other(s) => s,
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub text: String,
    /// The model that answered (the provider's reported version when given).
    pub model: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// `"gemini"` or `"offline"`: stored with every answer so an offline
    /// reply can never pass for a real one.
    pub provider: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// HTTP 429. `retry_after_ms` comes from `Retry-After` or the provider's
    /// own retry hint, whichever is longer.
    RateLimited {
        retry_after_ms: Option<u64>,
        message: String,
    },
    /// 5xx or 408: the provider failed or is overloaded.
    ServerError { status: u16, message: String },
    /// No answer within the deadline; the call was aborted.
    Timeout { after_ms: u32 },
    /// The provider could not be reached.
    Network { message: String },
    /// The provider refused the request as invalid (400, 404, other 4xx).
    BadRequest { status: u16, message: String },
    /// The API key is missing, wrong, expired or lacks permission.
    Auth { status: u16, message: String },
    /// The answer was withheld by the provider's content filters.
    SafetyBlocked { reason: String },
    /// The question itself was blocked; no answer was generated.
    PromptBlocked { reason: String },
    /// A 2xx with no answer text.
    EmptyResponse { finish_reason: Option<String> },
    /// A 2xx whose body is not the documented format.
    Decode { message: String },
}

/// A failed provider call. Messages are the provider's own (clients are
/// told what the provider said) with any secret scrubbed before the error
/// is built, so `Display` and `Debug` are safe to log and return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub provider: &'static str,
    pub kind: ProviderErrorKind,
}

impl ProviderError {
    pub fn new(provider: &'static str, kind: ProviderErrorKind) -> Self {
        ProviderError { provider, kind }
    }

    /// Whether trying the same request later can succeed: rate limits,
    /// server errors, timeouts, network failures and empty answers are
    /// transient; a rejected request, a bad key or a content block is not.
    pub fn is_retryable(&self) -> bool {
        use ProviderErrorKind::*;
        match self.kind {
            RateLimited { .. } | ServerError { .. } | Timeout { .. } | Network { .. } | EmptyResponse { .. } => true,
            BadRequest { .. } | Auth { .. } | SafetyBlocked { .. } | PromptBlocked { .. } | Decode { .. } => false,
        }
    }

    /// The provider's requested wait before retrying, if it gave one.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self.kind {
            ProviderErrorKind::RateLimited { retry_after_ms, .. } => retry_after_ms,
            _ => None,
        }
    }

    /// A stable machine-readable name for the failure (stored on failed jobs).
    pub fn code(&self) -> &'static str {
        use ProviderErrorKind::*;
        match self.kind {
            RateLimited { .. } => "provider_rate_limited",
            ServerError { .. } => "provider_unavailable",
            Timeout { .. } => "provider_timeout",
            Network { .. } => "provider_unreachable",
            BadRequest { .. } => "provider_rejected",
            Auth { .. } => "provider_auth_failed",
            SafetyBlocked { .. } => "content_blocked",
            PromptBlocked { .. } => "prompt_blocked",
            EmptyResponse { .. } => "provider_empty_response",
            Decode { .. } => "provider_bad_response",
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProviderErrorKind::*;
        let p = self.provider;
        match &self.kind {
            RateLimited {
                retry_after_ms: Some(ms),
                message,
            } => write!(f, "{p} rate limit reached (retry after {ms} ms): {message}"),
            RateLimited {
                retry_after_ms: None,
                message,
            } => write!(f, "{p} rate limit reached: {message}"),
            ServerError { status, message } => {
                write!(f, "{p} failed with HTTP {status}: {message}")
            }
            Timeout { after_ms } => write!(f, "{p} did not answer within {after_ms} ms"),
            Network { message } => write!(f, "could not reach {p}: {message}"),
            BadRequest { status, message } => {
                write!(f, "{p} rejected the request (HTTP {status}): {message}")
            }
            Auth { status, message } => {
                write!(f, "{p} refused the API key (HTTP {status}): {message}")
            }
            SafetyBlocked { reason } => {
                write!(f, "{p} withheld the answer for safety reasons ({reason})")
            }
            PromptBlocked { reason } => write!(f, "{p} blocked the question ({reason})"),
            EmptyResponse { finish_reason: Some(r) } => write!(f, "{p} returned no answer text (finish reason {r})"),
            EmptyResponse { finish_reason: None } => write!(f, "{p} returned no answer text"),
            Decode { message } => write!(f, "{p} sent an unreadable response: {message}"),
        }
    }
}

impl std::error::Error for ProviderError {}

impl From<&ProviderError> for ApiError {
    /// For functions that answer a provider failure directly. Blocks are the
    /// caller's content (422); everything else is an upstream failure.
    fn from(e: &ProviderError) -> Self {
        use ProviderErrorKind::*;
        let msg = e.to_string();
        match &e.kind {
            RateLimited { retry_after_ms, .. } => {
                let err = ApiError::unavailable(e.code(), msg);
                match retry_after_ms {
                    Some(ms) => err.with_header("retry-after", ms.div_ceil(1000).to_string()),
                    None => err,
                }
            }
            Timeout { .. } => ApiError::new(504, e.code(), msg),
            SafetyBlocked { .. } | PromptBlocked { .. } => ApiError::new(422, e.code(), msg),
            _ => ApiError::upstream(e.code(), msg),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        ApiError::from(&e)
    }
}

/// A configuration variable is unusable. Names the variable and what is
/// expected, never the value (it may be a secret, or near one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            variable,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::new(500, "misconfigured", format!("the function is misconfigured: {e}"))
    }
}

/// Reads `name` through `lookup`, treating empty or blank values as unset
/// (the runtime passes unset secrets as empty strings).
pub fn env_var(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The chat provider for this deployment.
#[derive(Debug, Clone)]
pub enum ChatProvider {
    Gemini(GeminiClient),
    Offline(OfflineProvider),
}

impl ChatProvider {
    /// `AI_PROVIDER=gemini|offline` decides when set; otherwise Gemini when
    /// `GEMINI_API_KEY` is set and the offline provider when it is not, so a
    /// local stack works end to end without a key.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let choice = env_var(&lookup, "AI_PROVIDER").map(|v| v.to_ascii_lowercase());
        match choice.as_deref() {
            Some("offline") => Ok(ChatProvider::Offline(OfflineProvider)),
            Some("gemini") => Ok(ChatProvider::Gemini(GeminiClient::new(GeminiConfig::from_lookup(
                &lookup,
            )?))),
            Some(_) => Err(ConfigError::new("AI_PROVIDER", "must be \"gemini\" or \"offline\"")),
            None if env_var(&lookup, "GEMINI_API_KEY").is_some() => Ok(ChatProvider::Gemini(GeminiClient::new(
                GeminiConfig::from_lookup(&lookup)?,
            ))),
            None => Ok(ChatProvider::Offline(OfflineProvider)),
        }
    }

    /// `"gemini"` or `"offline"`.
    pub fn name(&self) -> &'static str {
        match self {
            ChatProvider::Gemini(_) => crate::gemini::PROVIDER,
            ChatProvider::Offline(_) => crate::offline::PROVIDER,
        }
    }

    /// The configured model (the answer's `model` may name a precise version).
    pub fn model(&self) -> &str {
        match self {
            ChatProvider::Gemini(g) => &g.config().model,
            ChatProvider::Offline(_) => crate::offline::MODEL,
        }
    }

    pub async fn complete<C: HttpClient>(
        &self,
        http: &C,
        conversation: &Conversation,
    ) -> Result<Completion, ProviderError> {
        match self {
            ChatProvider::Gemini(g) => g.complete(http, conversation).await,
            ChatProvider::Offline(o) => Ok(o.complete(conversation)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn no_key_selects_the_offline_provider() {
        let p = ChatProvider::from_lookup(lookup(&[("GEMINI_API_KEY", "  ")])).unwrap();
        assert_eq!(p.name(), "offline");
        assert_eq!(p.model(), "offline");
    }

    #[test]
    fn a_key_selects_gemini() {
        let p = ChatProvider::from_lookup(lookup(&[("GEMINI_API_KEY", "AIzaTestKey123456")])).unwrap();
        assert_eq!(p.name(), "gemini");
        assert_eq!(p.model(), "gemini-2.0-flash");
    }

    #[test]
    fn ai_provider_overrides_the_choice() {
        let p = ChatProvider::from_lookup(lookup(&[
            ("GEMINI_API_KEY", "AIzaTestKey123456"),
            ("AI_PROVIDER", "Offline"),
        ]))
        .unwrap();
        assert_eq!(p.name(), "offline");
        let err = ChatProvider::from_lookup(lookup(&[("AI_PROVIDER", "gemini")])).unwrap_err();
        assert_eq!(err.variable, "GEMINI_API_KEY");
        let err = ChatProvider::from_lookup(lookup(&[("AI_PROVIDER", "openai")])).unwrap_err();
        assert_eq!(err.variable, "AI_PROVIDER");
    }

    #[test]
    fn retry_policy_follows_the_kind() {
        let e = |kind| ProviderError::new("gemini", kind);
        let m = || "m".to_string();
        assert!(e(ProviderErrorKind::RateLimited {
            retry_after_ms: Some(2000),
            message: m()
        })
        .is_retryable());
        assert!(e(ProviderErrorKind::ServerError {
            status: 503,
            message: m()
        })
        .is_retryable());
        assert!(e(ProviderErrorKind::Timeout { after_ms: 1 }).is_retryable());
        assert!(e(ProviderErrorKind::Network { message: m() }).is_retryable());
        assert!(!e(ProviderErrorKind::BadRequest {
            status: 400,
            message: m()
        })
        .is_retryable());
        assert!(!e(ProviderErrorKind::Auth {
            status: 403,
            message: m()
        })
        .is_retryable());
        assert!(!e(ProviderErrorKind::SafetyBlocked { reason: m() }).is_retryable());
        assert!(!e(ProviderErrorKind::PromptBlocked { reason: m() }).is_retryable());
    }

    #[test]
    fn rate_limit_becomes_503_with_retry_after_seconds() {
        let e = ProviderError::new(
            "gemini",
            ProviderErrorKind::RateLimited {
                retry_after_ms: Some(1500),
                message: "quota".into(),
            },
        );
        assert_eq!(e.retry_after_ms(), Some(1500));
        let r = ApiError::from(&e).into_response("r");
        assert_eq!(r.status, 503);
        assert_eq!(r.headers.get("retry-after"), Some("2"));
    }

    #[test]
    fn config_error_names_the_variable() {
        let api: ApiError = ConfigError::new("GEMINI_TOP_K", "must be a whole number").into();
        assert_eq!(api.status(), 500);
        assert_eq!(api.code(), "misconfigured");
        assert!(api.message().contains("GEMINI_TOP_K must be a whole number"));
    }
}
