//! Google Gemini over its REST API (`generateContent`).
//!
//! Request building and response parsing are pure functions of the
//! configuration, the [`Conversation`] and the HTTP response; the call itself
//! goes through whatever `HttpClient` the caller passes (fetch in the edge
//! runtime, a local fake server in tests).
//!
//! Wire format, as documented by Google for `v1beta`:
//! - `POST {base}/v1beta/models/{model}:generateContent`, key in the
//!   `x-goog-api-key` header (never in the URL, where it would end up in
//!   access logs);
//! - body `{contents: [{role: "user"|"model", parts: [{text}]}],
//!   systemInstruction: {parts: [{text}]}, generationConfig: {temperature,
//!   maxOutputTokens, topP, topK}}`;
//! - answer `{candidates: [{content: {parts: [{text, thought?}]},
//!   finishReason}], promptFeedback: {blockReason}, usageMetadata:
//!   {promptTokenCount, candidatesTokenCount, thoughtsTokenCount,
//!   totalTokenCount}, modelVersion}`;
//! - failure `{error: {code, message, status, details: [...]}}`, where a 429
//!   may carry a `google.rpc.RetryInfo` detail with `retryDelay: "17s"`.
//!
//! Configuration (environment, read through a lookup closure):
//! `GEMINI_API_KEY` (required), `GEMINI_MODEL` (default `gemini-2.0-flash`),
//! `GEMINI_TEMPERATURE` (0.7), `GEMINI_MAX_TOKENS` (2048), `GEMINI_TOP_P`
//! (0.8), `GEMINI_TOP_K` (40), `GEMINI_BASE_URL`, `GEMINI_TIMEOUT_MS`
//! (30000). The sampling defaults are the values the seed documents.

use std::fmt;

use crate::prompt::{estimate_tokens, Conversation, Role};
use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::redact::{redact_patterns, REDACTED};
use edgeworks_core::{Method, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::chat::{env_var, Completion, ConfigError, FinishReason, ProviderError, ProviderErrorKind, Usage};

pub const PROVIDER: &str = "gemini";
pub const DEFAULT_MODEL: &str = "gemini-2.0-flash";
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 2048;
pub const DEFAULT_TOP_P: f64 = 0.8;
pub const DEFAULT_TOP_K: u32 = 40;
/// Upper bound for `GEMINI_TIMEOUT_MS`: the longest an edge function may run.
pub const MAX_TIMEOUT_MS: u32 = 400_000;

/// Provider messages are kept for clients, but not without bound.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Finish reasons meaning a content filter withheld the answer.
const BLOCKING_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
];

#[derive(Clone, PartialEq)]
pub struct GeminiConfig {
    pub api_key: String,
    /// Scheme and host, no trailing slash.
    pub base_url: String,
    pub model: String,
    pub temperature: f64,
    pub max_output_tokens: u32,
    pub top_p: f64,
    pub top_k: u32,
    pub timeout_ms: u32,
}

/// The key is never printed, not even in debug output.
impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("api_key", &REDACTED)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("top_p", &self.top_p)
            .field("top_k", &self.top_k)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl GeminiConfig {
    /// Reads the `GEMINI_*` variables (see the module doc). Every problem is
    /// reported with the variable's name and never its value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let api_key =
            env_var(&lookup, "GEMINI_API_KEY").ok_or_else(|| ConfigError::new("GEMINI_API_KEY", "is not set"))?;
        let model = match env_var(&lookup, "GEMINI_MODEL") {
            Some(m) => normalize_model(&m)?,
            None => DEFAULT_MODEL.to_string(),
        };
        let base_url = match env_var(&lookup, "GEMINI_BASE_URL") {
            Some(u) => normalize_base_url(&u)?,
            None => DEFAULT_BASE_URL.to_string(),
        };
        Ok(GeminiConfig {
            api_key,
            base_url,
            model,
            temperature: float_var(&lookup, "GEMINI_TEMPERATURE", DEFAULT_TEMPERATURE, 0.0, 2.0)?,
            max_output_tokens: whole_var(&lookup, "GEMINI_MAX_TOKENS", DEFAULT_MAX_OUTPUT_TOKENS, 1, u32::MAX)?,
            top_p: float_var(&lookup, "GEMINI_TOP_P", DEFAULT_TOP_P, 0.0, 1.0)?,
            top_k: whole_var(&lookup, "GEMINI_TOP_K", DEFAULT_TOP_K, 1, u32::MAX)?,
            timeout_ms: whole_var(&lookup, "GEMINI_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 1, MAX_TIMEOUT_MS)?,
        })
    }
}

fn float_var(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, ConfigError> {
    let Some(raw) = env_var(lookup, name) else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError::new(name, format!("must be a number from {min} to {max}"))),
    }
}

fn whole_var(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(raw) = env_var(lookup, name) else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ if max == u32::MAX => Err(ConfigError::new(
            name,
            format!("must be a whole number of at least {min}"),
        )),
        _ => Err(ConfigError::new(
            name,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

/// Accepts `gemini-2.0-flash`, `models/gemini-2.0-flash`, and the seed's
/// `gemini_pro` spelling: Gemini model ids never contain underscores, so an
/// underscore can only mean a dash. The id goes into the URL path, so only
/// the characters model ids use are allowed.
fn normalize_model(raw: &str) -> Result<String, ConfigError> {
    let id = raw.strip_prefix("models/").unwrap_or(raw).replace('_', "-");
    let valid =
        !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(id)
    } else {
        Err(ConfigError::new(
            "GEMINI_MODEL",
            "must be a model id such as gemini-2.0-flash (letters, digits, '-', '.')",
        ))
    }
}

fn normalize_base_url(raw: &str) -> Result<String, ConfigError> {
    crate::call::check_base_url("GEMINI_BASE_URL", raw)
}

/// A Gemini client for one configuration.
#[derive(Debug, Clone)]
pub struct GeminiClient {
    config: GeminiConfig,
}

impl GeminiClient {
    pub fn new(config: GeminiConfig) -> Self {
        GeminiClient { config }
    }

    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// `{base}/v1beta/models/{model}:generateContent`; carries no secret.
    pub fn endpoint(&self) -> String {
        format!(
            "{}/v1beta/models/{}:generateContent",
            self.config.base_url, self.config.model
        )
    }

    /// The JSON body for `conversation`. Consecutive messages with the same
    /// role become one turn with several parts (some models insist on
    /// alternating turns); blank messages are left out (the API rejects
    /// empty parts).
    pub fn request_body(&self, conversation: &Conversation) -> Value {
        let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for m in &conversation.messages {
            if m.content.trim().is_empty() {
                continue;
            }
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "model",
            };
            let part = json!({ "text": m.content });
            match contents.last_mut() {
                Some((r, parts)) if *r == role => parts.push(part),
                _ => contents.push((role, vec![part])),
            }
        }
        let contents: Vec<Value> = contents
            .into_iter()
            .map(|(role, parts)| json!({ "role": role, "parts": parts }))
            .collect();
        let mut body = json!({
            "contents": contents,
            "generationConfig": {
                "temperature": self.config.temperature,
                "maxOutputTokens": self.config.max_output_tokens,
                "topP": self.config.top_p,
                "topK": self.config.top_k,
            },
        });
        if !conversation.system.trim().is_empty() {
            body["systemInstruction"] = json!({ "parts": [{ "text": conversation.system }] });
        }
        body
    }

    /// `{base}/v1beta/models/{model}:streamGenerateContent?alt=sse`: the
    /// same body, answered as server-sent events, one `GenerateContentResponse`
    /// per event (usage in the chunks, cumulative; no end marker).
    pub fn build_stream_request(&self, conversation: &Conversation) -> Request {
        let mut req = self.build_request(conversation);
        req.url = format!(
            "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
            self.config.base_url, self.config.model
        );
        req.headers.set("accept", "text/event-stream");
        req
    }

    /// A non-2xx answer as a typed failure.
    pub fn parse_error(&self, resp: &Response) -> ProviderError {
        self.error_from_status(resp)
    }

    pub fn build_request(&self, conversation: &Conversation) -> Request {
        let mut req = Request::new(Method::Post, self.endpoint());
        req.headers.set("content-type", "application/json");
        req.headers.set("x-goog-api-key", self.config.api_key.as_str());
        // Serialising a `Value` cannot fail; an empty body would only earn a 400.
        req.body = serde_json::to_vec(&self.request_body(conversation)).unwrap_or_default();
        req
    }

    pub async fn complete<C: HttpClient>(
        &self,
        http: &C,
        conversation: &Conversation,
    ) -> Result<Completion, ProviderError> {
        let req = self.build_request(conversation);
        match http.send(req, self.config.timeout_ms).await {
            Ok(resp) => self.parse_response(conversation, &resp),
            Err(e) => Err(self.transport_error(e)),
        }
    }

    pub fn transport_error(&self, e: TransportError) -> ProviderError {
        let kind = match e {
            TransportError::Timeout { after_ms } => ProviderErrorKind::Timeout { after_ms },
            TransportError::Network(m) => ProviderErrorKind::Network {
                message: self.scrub(&m),
            },
        };
        ProviderError::new(PROVIDER, kind)
    }

    /// Turns an HTTP response into an answer or a typed failure.
    /// `conversation` is only used to estimate usage when the provider
    /// reports none.
    pub fn parse_response(&self, conversation: &Conversation, resp: &Response) -> Result<Completion, ProviderError> {
        if (200..300).contains(&resp.status) {
            self.parse_success(conversation, &resp.body)
        } else {
            Err(self.error_from_status(resp))
        }
    }

    fn parse_success(&self, conversation: &Conversation, body: &[u8]) -> Result<Completion, ProviderError> {
        let err = |kind| ProviderError::new(PROVIDER, kind);
        let wire: WireResponse = serde_json::from_slice(body).map_err(|e| {
            err(ProviderErrorKind::Decode {
                message: self.scrub(&format!("not a generateContent response: {e}")),
            })
        })?;
        if let Some(reason) = wire.prompt_feedback.and_then(|p| p.block_reason) {
            return Err(err(ProviderErrorKind::PromptBlocked { reason }));
        }
        let Some(candidate) = wire.candidates.unwrap_or_default().into_iter().next() else {
            return Err(err(ProviderErrorKind::EmptyResponse { finish_reason: None }));
        };
        let finish = candidate.finish_reason;
        if let Some(reason) = finish.as_deref().filter(|r| BLOCKING_FINISH_REASONS.contains(r)) {
            return Err(err(ProviderErrorKind::SafetyBlocked {
                reason: reason.to_string(),
            }));
        }
        // Thinking models return their reasoning as parts marked `thought`;
        // only the answer parts are the reply.
        let text: String = candidate
            .content
            .and_then(|c| c.parts)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.thought != Some(true))
            .filter_map(|p| p.text)
            .collect();
        if text.trim().is_empty() {
            return Err(err(ProviderErrorKind::EmptyResponse { finish_reason: finish }));
        }
        let finish_reason = match finish.as_deref() {
            Some("STOP") => FinishReason::Stop,
            Some("MAX_TOKENS") => FinishReason::MaxTokens,
            Some(other) => FinishReason::Other(other.to_string()),
            None => FinishReason::Other("FINISH_REASON_UNSPECIFIED".to_string()),
        };
        let usage = match wire.usage_metadata {
            Some(u) => {
                let prompt = clamp_u32(u.prompt_token_count.unwrap_or(0));
                // Thinking tokens are billed as output.
                let completion = clamp_u32(
                    u.candidates_token_count
                        .unwrap_or(0)
                        .saturating_add(u.thoughts_token_count.unwrap_or(0)),
                );
                Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: u
                        .total_token_count
                        .map(clamp_u32)
                        .unwrap_or_else(|| prompt.saturating_add(completion)),
                    estimated: false,
                }
            }
            None => {
                let prompt = conversation.estimated_tokens;
                let completion = estimate_tokens(&text);
                Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt.saturating_add(completion),
                    estimated: true,
                }
            }
        };
        Ok(Completion {
            text,
            model: wire
                .model_version
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| self.config.model.clone()),
            finish_reason,
            usage,
            provider: PROVIDER,
        })
    }

    fn error_from_status(&self, resp: &Response) -> ProviderError {
        let status = resp.status;
        let error = error_object(&resp.body);
        let message = error
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(|m| self.scrub(m))
            .unwrap_or_else(|| format!("HTTP {status} without an error message"));
        let kind = match status {
            429 => ProviderErrorKind::RateLimited {
                retry_after_ms: retry_after_header_ms(resp).max(error.as_ref().and_then(retry_info_ms)),
                message,
            },
            401 | 403 => ProviderErrorKind::Auth { status, message },
            400 if error.as_ref().is_some_and(is_key_problem) => ProviderErrorKind::Auth { status, message },
            408 | 500..=599 => ProviderErrorKind::ServerError { status, message },
            400..=499 => ProviderErrorKind::BadRequest { status, message },
            _ => ProviderErrorKind::Decode {
                message: format!("unexpected HTTP status {status}"),
            },
        };
        ProviderError::new(PROVIDER, kind)
    }

    /// Removes the API key (and anything credential-shaped) from text that
    /// came from outside, and bounds its length.
    fn scrub(&self, text: &str) -> String {
        let key = self.config.api_key.as_str();
        let text = if key.is_empty() {
            text.to_string()
        } else {
            text.replace(key, REDACTED)
        };
        let text = redact_patterns(&text);
        match text.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text,
        }
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The `error` object of a failure body. Some Google front ends wrap the
/// body in a one-element array; both shapes are accepted.
fn error_object(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match v {
        Value::Array(items) => items.into_iter().next()?,
        other => other,
    };
    v.get("error").filter(|e| e.is_object()).cloned()
}

/// An invalid or expired key comes back as 400 INVALID_ARGUMENT with an
/// `ErrorInfo` detail whose reason starts with `API_KEY_`.
fn is_key_problem(error: &Value) -> bool {
    error.get("details").and_then(Value::as_array).is_some_and(|details| {
        details.iter().any(|d| {
            d.get("reason")
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("API_KEY_"))
        })
    })
}

/// `Retry-After` as delta-seconds. The HTTP-date form would need a clock and
/// is not used by Google's APIs, so it is ignored.
fn retry_after_header_ms(resp: &Response) -> Option<u64> {
    let v = resp.headers.get("retry-after")?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX / 1000).saturating_mul(1000))
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail.
fn retry_info_ms(error: &Value) -> Option<u64> {
    error
        .get("details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(parse_duration_ms)
}

/// A protobuf JSON duration (`"17s"`, `"0.250s"`, `"1.5s"`) in milliseconds,
/// rounded up so a retry never comes early.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let secs = s.trim().strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return None;
    }
    let whole_ms = if whole.is_empty() {
        0
    } else {
        whole.parse::<u64>().unwrap_or(u64::MAX / 1000).saturating_mul(1000)
    };
    let millis: u64 = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |acc, b| acc * 10 + u64::from(b - b'0'));
    let round_up = u64::from(frac.bytes().skip(3).any(|b| b != b'0'));
    Some(whole_ms.saturating_add(millis).saturating_add(round_up))
}

/// One event of a `streamGenerateContent?alt=sse` stream as deltas. `key`
/// is scrubbed from any message passed on.
pub fn decode_stream_event(key: &str, e: &crate::stream::SseEvent) -> Vec<crate::stream::Delta> {
    use crate::stream::Delta;
    let fail = |kind| vec![Delta::Error(ProviderError::new(PROVIDER, kind))];
    if let Some(error) = error_object(e.data.as_bytes()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(|m| crate::call::scrub(key, m))
            .unwrap_or_else(|| "error in stream".into());
        return fail(ProviderErrorKind::ServerError { status: 500, message });
    }
    let Ok(wire) = serde_json::from_str::<WireResponse>(&e.data) else {
        return fail(ProviderErrorKind::Decode {
            message: "a stream chunk is not a GenerateContentResponse".into(),
        });
    };
    if let Some(reason) = wire.prompt_feedback.and_then(|p| p.block_reason) {
        return fail(ProviderErrorKind::PromptBlocked { reason });
    }
    let mut out = Vec::new();
    if let Some(m) = wire.model_version.filter(|m| !m.trim().is_empty()) {
        out.push(Delta::Model(m));
    }
    let candidate = wire.candidates.unwrap_or_default().into_iter().next();
    let mut finish = None;
    if let Some(c) = candidate {
        let text: String = c
            .content
            .and_then(|c| c.parts)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.thought != Some(true))
            .filter_map(|p| p.text)
            .collect();
        if !text.is_empty() {
            out.push(Delta::Text(text));
        }
        finish = c.finish_reason;
    }
    if let Some(u) = wire.usage_metadata {
        out.push(Delta::Usage {
            prompt_tokens: u.prompt_token_count.map(clamp_u32),
            completion_tokens: u
                .candidates_token_count
                .map(|c| clamp_u32(c.saturating_add(u.thoughts_token_count.unwrap_or(0)))),
        });
    }
    match finish.as_deref() {
        Some(r) if BLOCKING_FINISH_REASONS.contains(&r) => {
            out.push(Delta::Error(ProviderError::new(
                PROVIDER,
                ProviderErrorKind::SafetyBlocked { reason: r.to_string() },
            )));
        }
        Some("STOP") => out.push(Delta::Finish(FinishReason::Stop)),
        Some("MAX_TOKENS") => out.push(Delta::Finish(FinishReason::MaxTokens)),
        Some(other) => out.push(Delta::Finish(FinishReason::Other(other.to_string()))),
        None => {}
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    candidates: Option<Vec<WireCandidate>>,
    prompt_feedback: Option<WirePromptFeedback>,
    usage_metadata: Option<WireUsage>,
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    parts: Option<Vec<WirePart>>,
}

#[derive(Deserialize)]
struct WirePart {
    text: Option<String>,
    thought: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    total_token_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: Vec<(&'static str, &'static str)>) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const KEY: &str = "AIzaSyTESTKEY-0123456789abcdef";

    #[test]
    fn defaults_apply_when_only_the_key_is_set() {
        let c = GeminiConfig::from_lookup(lookup(vec![("GEMINI_API_KEY", KEY)])).unwrap();
        assert_eq!(c.model, "gemini-2.0-flash");
        assert_eq!(c.base_url, "https://generativelanguage.googleapis.com");
        assert_eq!(c.temperature, 0.7);
        assert_eq!(c.max_output_tokens, 2048);
        assert_eq!(c.top_p, 0.8);
        assert_eq!(c.top_k, 40);
        assert_eq!(c.timeout_ms, 30_000);
    }

    #[test]
    fn missing_key_is_a_config_error() {
        let err = GeminiConfig::from_lookup(lookup(vec![])).unwrap_err();
        assert_eq!(err.variable, "GEMINI_API_KEY");
    }

    #[test]
    fn invalid_numbers_name_the_variable_but_not_the_value() {
        for (name, bad) in [
            ("GEMINI_TEMPERATURE", "warm-ish"),
            ("GEMINI_TEMPERATURE", "2.5"),
            ("GEMINI_TEMPERATURE", "NaN"),
            ("GEMINI_TOP_P", "1.01"),
            ("GEMINI_TOP_K", "forty"),
            ("GEMINI_TOP_K", "0"),
            ("GEMINI_MAX_TOKENS", "2048.5"),
            ("GEMINI_MAX_TOKENS", "-1"),
            ("GEMINI_TIMEOUT_MS", "999999999"),
        ] {
            let err = GeminiConfig::from_lookup(lookup(vec![("GEMINI_API_KEY", KEY), (name, bad)])).unwrap_err();
            assert_eq!(err.variable, name);
            let shown = err.to_string();
            assert!(shown.starts_with(name), "{shown}");
            assert!(!shown.contains(bad), "{shown} leaks {bad}");
        }
    }

    #[test]
    fn numbers_from_env_are_used() {
        let c = GeminiConfig::from_lookup(lookup(vec![
            ("GEMINI_API_KEY", KEY),
            ("GEMINI_TEMPERATURE", " 0.2 "),
            ("GEMINI_MAX_TOKENS", "512"),
            ("GEMINI_TOP_P", "0.95"),
            ("GEMINI_TOP_K", "8"),
            ("GEMINI_TIMEOUT_MS", "1500"),
        ]))
        .unwrap();
        assert_eq!(
            (c.temperature, c.max_output_tokens, c.top_p, c.top_k, c.timeout_ms),
            (0.2, 512, 0.95, 8, 1500)
        );
    }

    #[test]
    fn seed_style_model_names_map_to_api_ids() {
        assert_eq!(normalize_model("gemini_pro").unwrap(), "gemini-pro");
        assert_eq!(normalize_model("models/gemini-1.5-flash").unwrap(), "gemini-1.5-flash");
        assert_eq!(normalize_model("gemini_2.0_flash").unwrap(), "gemini-2.0-flash");
    }

    #[test]
    fn model_names_that_could_escape_the_path_are_rejected() {
        for bad in ["../x", "gemini?key=1", "a/b", "gemini pro", "models/"] {
            assert_eq!(normalize_model(bad).unwrap_err().variable, "GEMINI_MODEL");
        }
    }

    #[test]
    fn base_url_must_be_https_unless_loopback() {
        assert_eq!(
            normalize_base_url("https://example.test/").unwrap(),
            "https://example.test"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:5555").unwrap(),
            "http://127.0.0.1:5555"
        );
        assert!(normalize_base_url("http://localhost:8080/").is_ok());
        assert!(normalize_base_url("http://[::1]:8080").is_ok());
        for bad in [
            "http://example.test",
            "http://127.0.0.1.evil.test",
            "ftp://x",
            "https://",
            "https://h/?key=1",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let c = GeminiConfig::from_lookup(lookup(vec![("GEMINI_API_KEY", KEY)])).unwrap();
        let client = GeminiClient::new(c.clone());
        assert!(!format!("{c:?}").contains(KEY));
        assert!(!format!("{client:?}").contains(KEY));
        assert!(!client.endpoint().contains(KEY));
    }

    #[test]
    fn durations_parse_to_rounded_up_millis() {
        assert_eq!(parse_duration_ms("17s"), Some(17_000));
        assert_eq!(parse_duration_ms("0.5s"), Some(500));
        assert_eq!(parse_duration_ms("1.0001s"), Some(1001));
        assert_eq!(parse_duration_ms(".25s"), Some(250));
        assert_eq!(parse_duration_ms("3.250000000s"), Some(3250));
        for bad in ["17", "s", "-1s", "1.2.3s", "abc", ""] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn scrub_removes_the_key_and_bounds_length() {
        let client = GeminiClient::new(GeminiConfig::from_lookup(lookup(vec![("GEMINI_API_KEY", KEY)])).unwrap());
        let s = client.scrub(&format!("bad key {KEY} here"));
        assert_eq!(s, "bad key [REDACTED] here");
        let long = client.scrub(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}

#[cfg(test)]
mod stream_tests {
    use crate::call::test_support::*;
    use crate::call::{build_request, Provider};
    use crate::chat::FinishReason;
    use crate::stream::Delta;

    #[test]
    fn a_stream_request_asks_for_sse_on_stream_generate_content() {
        let req = build_request(&spec(Provider::Gemini), &conversation(), true);
        assert_eq!(
            req.url,
            "http://127.0.0.1:9/v1beta/models/m-1:streamGenerateContent?alt=sse"
        );
        assert_eq!(req.headers.get("x-goog-api-key"), Some("sk-secret-key-123"));
    }

    #[test]
    fn a_stream_yields_text_and_the_last_chunks_usage_and_ends_at_the_finish_reason() {
        let body = concat!(
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n",
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 7,\"candidatesTokenCount\": 2,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.0-flash\"}\r\n\r\n"
        );
        let d: Vec<Delta> = decode_all(Provider::Gemini, body)
            .into_iter()
            .filter(|d| !matches!(d, Delta::Model(_)))
            .collect();
        assert_eq!(
            d,
            vec![
                Delta::Text("Hel".into()),
                Delta::Usage {
                    prompt_tokens: Some(7),
                    completion_tokens: None
                },
                Delta::Text("lo".into()),
                Delta::Usage {
                    prompt_tokens: Some(7),
                    completion_tokens: Some(2)
                },
                Delta::Finish(FinishReason::Stop),
                Delta::Done
            ]
        );
    }
}
