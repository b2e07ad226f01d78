//! One chat call to any of the four providers: [`CallSpec`] names the
//! provider, model, key, base URL and sampling; [`build_request`] writes that
//! provider's wire format (buffered or streamed); [`parse_completion`],
//! [`parse_error`] and [`StreamDecoder`] read its answers, failures and
//! event streams into the provider-neutral [`Completion`], [`ProviderError`]
//! and [`Delta`].
//!
//! Wire formats (each provider's API reference):
//! - OpenAI: `POST /v1/chat/completions`, `Authorization: Bearer`; streams
//!   ask for usage with `stream_options.include_usage` (see [`crate::openai`]).
//! - Mistral: the same path and shape; usage arrives in the last chunk
//!   unasked (see [`crate::openai`]).
//! - Anthropic: `POST /v1/messages`, `x-api-key`, `anthropic-version`
//!   (see [`crate::anthropic`]).
//! - Gemini: `generateContent` / `streamGenerateContent?alt=sse`, through the
//!   existing [`crate::gemini::GeminiClient`].
//!
//! The key never appears in an error, a `Debug` print or a URL.

use std::fmt;

use edgeworks_core::http_client::TransportError;
use edgeworks_core::redact::{redact_patterns, REDACTED};
use edgeworks_core::{Request, Response};

use crate::chat::{Completion, ConfigError, ProviderError, ProviderErrorKind};
use crate::gemini::{GeminiClient, GeminiConfig, DEFAULT_TOP_K, DEFAULT_TOP_P};
use crate::prompt::Conversation;
use crate::stream::{Delta, SseDecoder};
use crate::{anthropic, openai};

/// The providers chat-completion speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Mistral chat completions.
    Mistral,
    /// Google Gemini.
    Gemini,
}

impl Provider {
    /// Every provider, in a fixed order.
    pub const ALL: [Provider; 4] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Mistral,
        Provider::Gemini,
    ];

    /// The name used in requests, tables and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Mistral => "mistral",
            Provider::Gemini => "gemini",
        }
    }

    /// Parses a provider name (case-insensitive; `claude` and `google` are aliases).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Some(Provider::OpenAi),
            "anthropic" | "claude" => Some(Provider::Anthropic),
            "mistral" => Some(Provider::Mistral),
            "gemini" | "google" => Some(Provider::Gemini),
            _ => None,
        }
    }

    /// The public API's base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Mistral => "https://api.mistral.ai",
            Provider::Gemini => crate::gemini::DEFAULT_BASE_URL,
        }
    }
}

/// Everything one call needs besides the conversation.
#[derive(Clone, PartialEq)]
pub struct CallSpec {
    /// Which API.
    pub provider: Provider,
    /// The model id (checked by the caller against the price table).
    pub model: String,
    /// The key to send (the user's own or the platform's).
    pub api_key: String,
    /// Scheme and host, no trailing slash.
    pub base_url: String,
    /// Sampling temperature, when the client set one.
    pub temperature: Option<f64>,
    /// Output limit (also the reservation's worst case).
    pub max_tokens: u32,
    /// Deadline for the answer's headers (buffered: the whole answer).
    pub timeout_ms: u32,
}

/// The key is never printed.
impl fmt::Debug for CallSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSpec")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("api_key", &REDACTED)
            .field("base_url", &self.base_url)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl CallSpec {
    fn gemini(&self) -> GeminiClient {
        GeminiClient::new(GeminiConfig {
            api_key: self.api_key.clone(),
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            temperature: self.temperature.unwrap_or(crate::gemini::DEFAULT_TEMPERATURE),
            max_output_tokens: self.max_tokens,
            top_p: DEFAULT_TOP_P,
            top_k: DEFAULT_TOP_K,
            timeout_ms: self.timeout_ms,
        })
    }

    /// Text from outside with this call's key (and anything credential
    /// shaped) removed and its length bounded.
    pub fn scrub(&self, text: &str) -> String {
        scrub(&self.api_key, text)
    }
}

/// A provider base URL from `var`: `https://` anywhere; plain `http://`
/// only to this machine (the fake servers in tests), since the API key
/// travels in a header. No query or fragment; the trailing slash dropped.
pub fn check_base_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim().trim_end_matches('/');
    let host_of = |rest: &str| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.starts_with('[') {
            authority
                .split_once(']')
                .map(|(h, _)| format!("{h}]"))
                .unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or("").to_string()
        }
    };
    let ok = if let Some(rest) = url.strip_prefix("https://") {
        !host_of(rest).is_empty()
    } else if let Some(rest) = url.strip_prefix("http://") {
        matches!(host_of(rest).as_str(), "127.0.0.1" | "localhost" | "[::1]")
    } else {
        false
    };
    if ok && !url.contains(['?', '#']) {
        Ok(url.to_string())
    } else {
        Err(ConfigError::new(
            var,
            "must be an https:// URL (http:// only for 127.0.0.1 or localhost), without query",
        ))
    }
}

/// Provider messages are kept for clients, but not without bound.
const MAX_MESSAGE_CHARS: usize = 1000;

pub(crate) fn scrub(key: &str, text: &str) -> String {
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

/// The HTTP request for `conversation`, streamed or not.
pub fn build_request(spec: &CallSpec, conversation: &Conversation, stream: bool) -> Request {
    match spec.provider {
        Provider::OpenAi | Provider::Mistral => openai::build_request(spec, conversation, stream),
        Provider::Anthropic => anthropic::build_request(spec, conversation, stream),
        Provider::Gemini if stream => spec.gemini().build_stream_request(conversation),
        Provider::Gemini => spec.gemini().build_request(conversation),
    }
}

/// A buffered answer (any status) as a completion or a typed failure.
pub fn parse_completion(
    spec: &CallSpec,
    conversation: &Conversation,
    resp: &Response,
) -> Result<Completion, ProviderError> {
    if !(200..300).contains(&resp.status) {
        return Err(parse_error(spec, resp));
    }
    match spec.provider {
        Provider::OpenAi | Provider::Mistral => openai::parse_completion(spec, &resp.body),
        Provider::Anthropic => anthropic::parse_completion(spec, &resp.body),
        Provider::Gemini => spec.gemini().parse_response(conversation, resp),
    }
}

/// A non-2xx answer as a typed failure (429 with its Retry-After, 5xx and
/// Anthropic's 529 retryable, key problems apart).
pub fn parse_error(spec: &CallSpec, resp: &Response) -> ProviderError {
    match spec.provider {
        Provider::OpenAi | Provider::Mistral => openai::parse_error(spec, resp),
        Provider::Anthropic => anthropic::parse_error(spec, resp),
        Provider::Gemini => spec.gemini().parse_error(resp),
    }
}

/// A transport failure as a provider failure (retryable).
pub fn transport_error(spec: &CallSpec, e: TransportError) -> ProviderError {
    let kind = match e {
        TransportError::Timeout { after_ms } => ProviderErrorKind::Timeout { after_ms },
        TransportError::Network(m) => ProviderErrorKind::Network {
            message: spec.scrub(&m),
        },
    };
    ProviderError::new(spec.provider.as_str(), kind)
}

/// `Retry-After` (delta-seconds) or OpenAI's `retry-after-ms`, in ms.
pub(crate) fn retry_after_ms(resp: &Response) -> Option<u64> {
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let ms = resp
        .headers
        .get("retry-after-ms")
        .map(str::trim)
        .filter(|v| digits(v))
        .and_then(|v| v.parse::<u64>().ok());
    let secs = resp
        .headers
        .get("retry-after")
        .map(str::trim)
        .filter(|v| digits(v))
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX / 1000).saturating_mul(1000));
    ms.max(secs)
}

/// The failure kind for an HTTP status, shared by the providers whose
/// bodies carry only a message.
pub(crate) fn kind_for_status(status: u16, message: String, retry_after_ms: Option<u64>) -> ProviderErrorKind {
    match status {
        429 => ProviderErrorKind::RateLimited {
            retry_after_ms,
            message,
        },
        401 | 403 => ProviderErrorKind::Auth { status, message },
        408 | 500..=599 => ProviderErrorKind::ServerError { status, message },
        400..=499 => ProviderErrorKind::BadRequest { status, message },
        _ => ProviderErrorKind::Decode {
            message: format!("unexpected HTTP status {status}"),
        },
    }
}

/// Reads one provider's event stream into deltas.
pub struct StreamDecoder {
    spec_provider: Provider,
    key: String,
    sse: SseDecoder,
    done: bool,
    anthropic: anthropic::StreamState,
}

impl StreamDecoder {
    /// A decoder for a stream answered by `spec`'s provider.
    pub fn new(spec: &CallSpec) -> StreamDecoder {
        StreamDecoder {
            spec_provider: spec.provider,
            key: spec.api_key.clone(),
            sse: SseDecoder::new(),
            done: false,
            anthropic: anthropic::StreamState::default(),
        }
    }

    fn error(&self, kind: ProviderErrorKind) -> Delta {
        Delta::Error(ProviderError::new(self.spec_provider.as_str(), kind))
    }

    /// Feeds a chunk of the body; returns what it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Delta> {
        let events = match self.sse.push(bytes) {
            Ok(e) => e,
            Err(_) => {
                return vec![self.error(ProviderErrorKind::Decode {
                    message: "an event-stream line exceeded 4 MiB".into(),
                })]
            }
        };
        let mut out = Vec::new();
        for e in events {
            let deltas = match self.spec_provider {
                Provider::OpenAi | Provider::Mistral => openai::decode_event(self.spec_provider, &self.key, &e),
                Provider::Anthropic => anthropic::decode_event(&mut self.anthropic, &self.key, &e),
                Provider::Gemini => crate::gemini::decode_stream_event(&self.key, &e),
            };
            for d in deltas {
                if matches!(d, Delta::Done) {
                    self.done = true;
                }
                out.push(d);
            }
        }
        out
    }

    /// The body ended. Gemini has no end marker (its stream ends after the
    /// chunk with a finish reason); the others must have sent theirs, or the
    /// stream was cut.
    pub fn finish(&mut self, saw_finish: bool) -> Vec<Delta> {
        self.sse.finish();
        if self.done || (self.spec_provider == Provider::Gemini && saw_finish) {
            return if self.done { Vec::new() } else { vec![Delta::Done] };
        }
        vec![self.error(ProviderErrorKind::ServerError {
            status: 502,
            message: "the stream ended before the provider's end marker".into(),
        })]
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::prompt::Message;

    pub fn spec(provider: Provider) -> CallSpec {
        CallSpec {
            provider,
            model: "m-1".into(),
            api_key: "sk-secret-key-123".into(),
            base_url: "http://127.0.0.1:9".into(),
            temperature: Some(0.5),
            max_tokens: 100,
            timeout_ms: 1000,
        }
    }

    pub fn conversation() -> Conversation {
        Conversation {
            system: "Be brief.".into(),
            messages: vec![Message::user("Hi"), Message::assistant("Hello"), Message::user("2+2?")],
            estimated_tokens: 10,
            dropped_messages: 0,
        }
    }

    pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut r = Response {
            status,
            headers: Default::default(),
            body: body.as_bytes().to_vec(),
        };
        for (k, v) in headers {
            r.headers.set(k, *v);
        }
        r
    }

    pub fn decode_all(provider: Provider, body: &str) -> Vec<Delta> {
        let s = spec(provider);
        let mut d = StreamDecoder::new(&s);
        let mut out = Vec::new();
        // One byte at a time: framing must not depend on chunk boundaries.
        for b in body.as_bytes() {
            out.extend(d.push(std::slice::from_ref(b)));
        }
        let saw_finish = out.iter().any(|d| matches!(d, Delta::Finish(_)));
        out.extend(d.finish(saw_finish));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let s = spec(Provider::OpenAi);
        assert!(!format!("{s:?}").contains("sk-secret-key-123"));
    }

    #[test]
    fn a_rate_limit_of_every_provider_is_retryable_with_its_retry_after() {
        for p in Provider::ALL {
            let s = spec(p);
            let body = match p {
                Provider::Anthropic => r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                Provider::Gemini => r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#,
                Provider::Mistral => r#"{"message":"Requests rate limit exceeded"}"#,
                Provider::OpenAi => {
                    r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#
                }
            };
            let e = parse_error(&s, &response(429, &[("retry-after", "3")], body));
            assert!(e.is_retryable(), "{p:?}");
            assert_eq!(e.retry_after_ms(), Some(3000), "{p:?}");
        }
    }

    #[test]
    fn a_provider_echoing_the_key_in_an_error_never_passes_it_on() {
        for p in Provider::ALL {
            let s = spec(p);
            let body = r#"{"error":{"message":"Incorrect API key provided: sk-secret-key-123","type":"invalid_request_error"},"message":"bad key sk-secret-key-123"}"#;
            let e = parse_error(&s, &response(401, &[], body));
            assert!(!e.to_string().contains("sk-secret-key-123"), "{p:?}: {e}");
            assert_eq!(e.code(), "provider_auth_failed", "{p:?}");
        }
    }

    #[test]
    fn a_stream_cut_before_its_end_marker_is_an_error() {
        for p in [Provider::OpenAi, Provider::Mistral, Provider::Anthropic] {
            let body = match p {
                Provider::Anthropic => "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
                _ => "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            };
            let deltas = decode_all(p, body);
            assert_eq!(deltas.first(), Some(&Delta::Text("Hi".into())), "{p:?}");
            assert!(
                matches!(deltas.last(), Some(Delta::Error(e)) if e.is_retryable()),
                "{p:?}: {deltas:?}"
            );
        }
    }
}
