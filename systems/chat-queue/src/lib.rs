//! edgeworks-chat: the chat job queue of seed 000, shared by chat-submit,
//! chat-process, chat-status and queue-worker.
//!
//! It owns the request shapes, the settings, the mapping of the chat SQL
//! functions' errors to client errors, and the worker loop body (claim,
//! build the prompt, call the provider, store or retry). Everything is
//! generic over the HTTP client, so it runs on fetch in the functions and
//! against local fake servers in native tests. It never touches js-sys.

pub mod settings;
pub mod submit;
pub mod worker;

pub use settings::Settings;

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::{ApiError, Rng};
use edgeworks_llm::chat::ChatProvider;

/// What a chat worker needs besides its database and HTTP client: the
/// settings, the provider (Gemini with a key, the offline provider without),
/// its id and today's date for the prompt.
pub struct WorkerSetup {
    pub settings: Settings,
    pub provider: ChatProvider,
    pub worker_id: String,
    pub today: String,
}

impl WorkerSetup {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        worker_id: String,
        now_ms: i64,
    ) -> Result<WorkerSetup, ApiError> {
        let settings = Settings::from_lookup(&lookup)?;
        let provider =
            ChatProvider::from_lookup(&lookup).map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
        let today = edgeworks_core::time::format_rfc3339_ms(now_ms)
            .get(..10)
            .unwrap_or("1970-01-01")
            .to_string();
        Ok(WorkerSetup {
            settings,
            provider,
            worker_id,
            today,
        })
    }

    pub fn worker<'a, C: edgeworks_core::http_client::HttpClient>(
        &'a self,
        db: &'a edgeworks_db::Db<C>,
        http: &'a C,
    ) -> worker::Worker<'a, C> {
        worker::Worker {
            db,
            http,
            provider: &self.provider,
            worker_id: &self.worker_id,
            settings: &self.settings,
            today: &self.today,
        }
    }
}

/// A worker id for callers that did not name one: `<prefix>-<8 hex>`.
pub fn worker_id(prefix: &str, rng: &mut impl Rng) -> String {
    format!("{prefix}-{}", &uuid_v4(rng)[..8])
}

/// The worker id of this isolate: drawn once, then the same for every request
/// it serves, so a scheduler calling `queue-worker` every few seconds keeps
/// heartbeating one `workers` row instead of adding one per call. (An isolate
/// is one function's instance; a re-instantiated one draws a new id, and the
/// old row is reaped once it has been silent long enough.)
pub fn isolate_worker_id(prefix: &str, rng: &mut impl Rng) -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| worker_id(prefix, rng)).clone()
}

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
    fn an_isolate_keeps_one_worker_id() {
        struct Counter(u8);
        impl Rng for Counter {
            fn fill(&mut self, buf: &mut [u8]) {
                self.0 = self.0.wrapping_add(1);
                buf.fill(self.0);
            }
        }
        let mut rng = Counter(0);
        let first = isolate_worker_id("queue-worker", &mut rng);
        assert!(first.starts_with("queue-worker-"));
        assert_eq!(isolate_worker_id("queue-worker", &mut rng), first);
        assert_ne!(worker_id("queue-worker", &mut rng), first);
    }

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
