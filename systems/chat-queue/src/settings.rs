//! Chat settings from the function's environment, with the seed's defaults.

use edgeworks_core::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Questions per session (`CHAT_MAX_QUESTIONS`, seed: 10).
    pub max_questions: u32,
    /// A session's maximum age (`CHAT_SESSION_MAX_AGE_SECONDS`, default a day).
    pub session_max_age_seconds: u32,
    /// Longest accepted message, in characters (`CHAT_MAX_MESSAGE_CHARS`).
    pub max_message_chars: usize,
    /// Attempts per job before it fails (`CHAT_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// First retry delay ceiling; doubles per attempt (`CHAT_RETRY_BASE_MS`).
    pub retry_base_ms: u32,
    /// How long a worker holds a job (`CHAT_LEASE_SECONDS`).
    pub lease_seconds: u32,
    /// Prompt budget when the field sets none (`CHAT_PROMPT_BUDGET_TOKENS`).
    pub prompt_budget_tokens: u32,
    /// The estimate used before any job has completed (`CHAT_PRIOR_DURATION_MS`).
    pub prior_duration_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_questions: 10,
            session_max_age_seconds: 86_400,
            max_message_chars: 4_000,
            max_attempts: 4,
            retry_base_ms: 1_000,
            lease_seconds: 120,
            prompt_budget_tokens: 8_000,
            prior_duration_ms: 2_000,
        }
    }
}

use edgeworks_service::env_number as read;

impl Settings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ApiError> {
        let d = Settings::default();
        Ok(Settings {
            max_questions: read(&lookup, "CHAT_MAX_QUESTIONS", d.max_questions, 1, 1000)?,
            session_max_age_seconds: read(
                &lookup,
                "CHAT_SESSION_MAX_AGE_SECONDS",
                d.session_max_age_seconds,
                60,
                31_536_000,
            )?,
            max_message_chars: read(&lookup, "CHAT_MAX_MESSAGE_CHARS", d.max_message_chars, 1, 100_000)?,
            max_attempts: read(&lookup, "CHAT_MAX_ATTEMPTS", d.max_attempts, 1, 100)?,
            retry_base_ms: read(&lookup, "CHAT_RETRY_BASE_MS", d.retry_base_ms, 0, 600_000)?,
            lease_seconds: read(&lookup, "CHAT_LEASE_SECONDS", d.lease_seconds, 5, 3_600)?,
            prompt_budget_tokens: read(
                &lookup,
                "CHAT_PROMPT_BUDGET_TOKENS",
                d.prompt_budget_tokens,
                100,
                2_000_000,
            )?,
            prior_duration_ms: read(&lookup, "CHAT_PRIOR_DURATION_MS", d.prior_duration_ms, 1, 3_600_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(s.max_questions, 10);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Settings::from_lookup(|k| (k == "CHAT_MAX_QUESTIONS").then(|| "0".to_string())).unwrap_err();
        assert_eq!(e.status(), 500);
        assert!(e.message().contains("CHAT_MAX_QUESTIONS"));
    }
}
