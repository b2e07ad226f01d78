//! Deployment settings of the AI chat platform, read once per isolate.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `MISTRAL_API_KEY` | unset | platform keys (a provider without one and without the user's own key is skipped) |
//! | `AI_GEMINI_API_KEY` (else `GEMINI_API_KEY`) | unset | Gemini's platform key |
//! | `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`, `MISTRAL_BASE_URL`, `AI_GEMINI_BASE_URL` (else `GEMINI_BASE_URL`) | the public APIs | where each provider is reached |
//! | `AI_DEFAULT_BUDGET_USD` | 5 | a new user's spend limit |
//! | `AI_MAX_TOKENS` / `AI_MAX_TOKENS_LIMIT` | 1024 / 16384 | output tokens when the request names none / at most |
//! | `AI_UPSTREAM_TIMEOUT_MS` | 60000 | until a provider's answer (headers) arrives |
//! | `AI_STREAM_IDLE_MS` | 60000 | longest silence inside a stream before it is failed |
//! | `AI_STREAM_FLUSH_MS` | 100 | how often a stream's events are saved (and the stop flag read) |
//! | `AI_KEY_ENCRYPTION_KEYS` | unset | see [`crate::keys`]; without it users cannot store keys |

use edgeworks_core::ApiError;
use edgeworks_llm::call::{check_base_url, Provider};
use edgeworks_llm::chat::env_var;
use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;

use crate::keys::{ApiKey, Keyring};

/// The settings.
#[derive(Debug, Clone)]
pub struct AiSettings {
    base_urls: [String; 4],
    platform_keys: [Option<ApiKey>; 4],
    /// A new user's spend limit in USD.
    pub default_budget_usd: f64,
    /// Output tokens when the request names none.
    pub default_max_tokens: u32,
    /// The most output tokens a request may ask for.
    pub max_tokens_limit: u32,
    /// Deadline for a provider's answer headers.
    pub upstream_timeout_ms: u32,
    /// Longest silence inside a stream.
    pub stream_idle_ms: u32,
    /// How often stream events are saved.
    pub stream_flush_ms: u32,
    /// For users' own keys.
    pub keyring: Option<Keyring>,
}

fn index(p: Provider) -> usize {
    match p {
        Provider::OpenAi => 0,
        Provider::Anthropic => 1,
        Provider::Mistral => 2,
        Provider::Gemini => 3,
    }
}

fn misconfigured(message: impl Into<String>) -> ApiError {
    ApiError::new(500, "misconfigured", message)
}

fn number<T: std::str::FromStr + PartialOrd + Copy>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    match env_var(lookup, name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(misconfigured(format!("{name} is out of range or not a number"))),
        },
    }
}

impl AiSettings {
    /// Reads the variables through `lookup`; errors name the variable only.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AiSettings, ApiError> {
        let var = |names: &[&'static str]| names.iter().find_map(|n| env_var(&lookup, n).map(|v| (*n, v)));
        let mut base_urls: [String; 4] = Provider::ALL.map(|p| p.default_base_url().to_string());
        let mut platform_keys: [Option<ApiKey>; 4] = Default::default();
        for p in Provider::ALL {
            let (url_vars, key_vars): (&[&'static str], &[&'static str]) = match p {
                Provider::OpenAi => (&["OPENAI_BASE_URL"], &["OPENAI_API_KEY"]),
                Provider::Anthropic => (&["ANTHROPIC_BASE_URL"], &["ANTHROPIC_API_KEY"]),
                Provider::Mistral => (&["MISTRAL_BASE_URL"], &["MISTRAL_API_KEY"]),
                Provider::Gemini => (
                    &["AI_GEMINI_BASE_URL", "GEMINI_BASE_URL"],
                    &["AI_GEMINI_API_KEY", "GEMINI_API_KEY"],
                ),
            };
            if let Some((name, raw)) = var(url_vars) {
                base_urls[index(p)] = check_base_url(name, &raw).map_err(|e| misconfigured(e.to_string()))?;
            }
            platform_keys[index(p)] = var(key_vars).map(|(_, k)| ApiKey(k.trim().to_string()));
        }
        let keyring = match env_var(&lookup, crate::keys::KEYS_VAR) {
            Some(raw) => Some(Keyring::parse(&raw).map_err(misconfigured)?),
            None => None,
        };
        let max_tokens_limit = number(&lookup, "AI_MAX_TOKENS_LIMIT", 16_384u32, 1, 1_000_000)?;
        Ok(AiSettings {
            base_urls,
            platform_keys,
            default_budget_usd: number(&lookup, "AI_DEFAULT_BUDGET_USD", 5.0f64, 0.0, 1.0e9)?,
            default_max_tokens: number(&lookup, "AI_MAX_TOKENS", 1024u32, 1, max_tokens_limit)?,
            max_tokens_limit,
            upstream_timeout_ms: number(&lookup, "AI_UPSTREAM_TIMEOUT_MS", 60_000u32, 100, 400_000)?,
            stream_idle_ms: number(&lookup, "AI_STREAM_IDLE_MS", 60_000u32, 100, 400_000)?,
            stream_flush_ms: number(&lookup, "AI_STREAM_FLUSH_MS", 100u32, 10, 10_000)?,
            keyring,
        })
    }

    /// Where `p` is reached.
    pub fn base_url(&self, p: Provider) -> &str {
        &self.base_urls[index(p)]
    }

    /// The platform's key for `p`, if configured.
    pub fn platform_key(&self, p: Provider) -> Option<&ApiKey> {
        self.platform_keys[index(p)].as_ref()
    }
}

impl FromEnv for AiSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        AiSettings::from_lookup(env.lookup())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn base_urls_and_keys_come_from_each_providers_variables() {
        let s = AiSettings::from_lookup(lookup(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:4000/"),
            ("OPENAI_API_KEY", "sk-platform"),
            ("GEMINI_BASE_URL", "http://127.0.0.1:1"),
            ("AI_GEMINI_BASE_URL", "http://127.0.0.1:2"),
        ]))
        .unwrap();
        assert_eq!(s.base_url(Provider::OpenAi), "http://127.0.0.1:4000");
        assert_eq!(s.base_url(Provider::Gemini), "http://127.0.0.1:2");
        assert_eq!(s.base_url(Provider::Anthropic), "https://api.anthropic.com");
        assert_eq!(
            s.platform_key(Provider::OpenAi).map(|k| k.0.as_str()),
            Some("sk-platform")
        );
        assert!(s.platform_key(Provider::Mistral).is_none());
        assert!(!format!("{s:?}").contains("sk-platform"));
    }

    #[test]
    fn a_plain_http_base_url_off_this_machine_is_refused() {
        let e = AiSettings::from_lookup(lookup(&[("MISTRAL_BASE_URL", "http://evil.example")])).unwrap_err();
        assert_eq!(e.code(), "misconfigured");
        assert!(e.message().contains("MISTRAL_BASE_URL"));
    }
}
