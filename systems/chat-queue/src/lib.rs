//! edgeworks-chat-queue: the chat job queue of seed 000 (chat-submit,
//! chat-process, chat-status, and its job kind in queue-worker).
//!
//! It owns the request types, the settings, the handlers and routes of its
//! functions, the mapping of the chat SQL functions' errors to client
//! errors, and the chat job kind ([`ChatCompletion`]: build the prompt, call
//! the provider, store or retry) it registers with the queue's one worker.
//! Logic is generic over the HTTP client or takes a `Ctx`, so it runs
//! natively against fake servers in tests. It never touches js-sys, and
//! never writes queue rows except through the queue's SQL API.

pub mod process;
pub mod settings;
pub mod status;
pub mod submit;
pub mod worker;

pub use settings::Settings;
pub use worker::ChatCompletion;

use edgeworks_core::ApiError;
use edgeworks_llm::chat::ChatProvider;
use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;

impl FromEnv for Settings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Settings::from_lookup(env.lookup())
    }
}

/// What the chat job kind needs besides its database and HTTP client: the
/// settings, the provider (Gemini with a key, the offline provider without)
/// and today's date for the prompt. Parsed once per isolate.
pub struct ChatSetup {
    /// Deployment settings.
    pub settings: Settings,
    /// The provider.
    pub provider: ChatProvider,
}

impl FromEnv for ChatSetup {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(ChatSetup {
            settings: Settings::from_lookup(env.lookup())?,
            provider: ChatProvider::from_lookup(env.lookup())
                .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?,
        })
    }
}

impl ChatSetup {
    /// The chat job handler, for a worker's registry.
    pub fn handler<'a>(&'a self, today: &'a str) -> ChatCompletion<'a> {
        ChatCompletion {
            settings: &self.settings,
            provider: &self.provider,
            today,
        }
    }
}

/// `YYYY-MM-DD` of `now_ms`, for the prompt's `{date}`.
pub fn today(now_ms: i64) -> String {
    edgeworks_core::time::format_rfc3339_ms(now_ms)
        .get(..10)
        .unwrap_or("1970-01-01")
        .to_string()
}

pub use edgeworks_queue::{isolate_worker_id, worker_id};

/// The queue and job kind chat questions travel on.
pub const QUEUE: &str = "chat";
pub const KIND: &str = "chat_completion";

/// Milliseconds until a job at `queue_position` is likely done, from recent
/// real processing times: the jobs ahead are shared among the live workers
/// (at least one), then this one runs. With no completed job in the window
/// yet, `prior_ms` stands in for the average.
pub fn estimate_duration_ms(
    queue_position: u32,
    avg_processing_ms: f64,
    samples: u32,
    active_workers: u32,
    prior_ms: u64,
) -> u64 {
    let avg = if samples == 0 || !avg_processing_ms.is_finite() || avg_processing_ms <= 0.0 {
        prior_ms as f64
    } else {
        avg_processing_ms
    };
    let workers = active_workers.max(1) as f64;
    let ahead = queue_position.saturating_sub(1) as f64;
    (avg * (ahead / workers).ceil() + avg).round().min(u64::MAX as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_one_job_when_first_in_line() {
        assert_eq!(estimate_duration_ms(1, 1200.0, 10, 1, 2000), 1200);
    }

    #[test]
    fn jobs_ahead_are_shared_among_workers() {
        assert_eq!(estimate_duration_ms(5, 1000.0, 10, 2, 2000), 3000);
        assert_eq!(estimate_duration_ms(5, 1000.0, 10, 1, 2000), 5000);
    }

    #[test]
    fn prior_stands_in_without_samples() {
        assert_eq!(estimate_duration_ms(1, 0.0, 0, 0, 2000), 2000);
        assert_eq!(estimate_duration_ms(1, 5.0, 0, 0, 2000), 2000);
    }
}
