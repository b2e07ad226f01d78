//! The worker's settings, from the environment:
//!
//! - `MEDIA_WORKER_DB_URL` (or `EDGEWORKS_DB_URL`, `SUPABASE_DB_URL`): Postgres,
//!   for claims, heartbeats and LISTEN. The session runs as `MEDIA_WORKER_DB_ROLE`
//!   (default `service_role`), so it can do only what the service role may.
//! - `SUPABASE_URL` (job-callback at `/functions/v1/job-callback`, or
//!   `MEDIA_CALLBACK_URL`), `SUPABASE_ANON_KEY` (the gateway's apikey).
//! - `MEDIA_WORKER_SECRET` (`whsec_...`): reports are signed with it; without
//!   it they carry `SUPABASE_SERVICE_ROLE_KEY` as bearer.
//! - `MEDIA_WORKER_QUEUES` (default `sdxl_queue,wan_queue`),
//!   `MEDIA_WORKER_CONCURRENCY` (jobs at once, default 1),
//!   `MEDIA_WORKER_WAKE` (`notify`: LISTEN jobs_<queue> plus a 5 s safety
//!   poll; `poll`: the seed's 2 s / 5 s polling), `MEDIA_WORKER_LEASE_SECONDS`
//!   (30; heartbeats every third of it), `MEDIA_WORKER_ID`.
//! - `MEDIA_BACKEND` (`local` | `openai`), `MEDIA_BACKEND_URL`,
//!   `MEDIA_BACKEND_API_KEY`, `MEDIA_BACKEND_MODEL`.

use std::time::Duration;

/// How an idle worker learns of new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// LISTEN on `jobs_<queue>`, with a slow safety poll.
    Notify,
    /// Poll each queue at the seed's interval.
    Poll,
}

/// Which backend renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The deterministic renderer, in process.
    Local,
    /// An OpenAI-compatible image API.
    OpenAi {
        /// Base URL, e.g. `https://api.openai.com`.
        base_url: String,
        /// Bearer key (never logged).
        api_key: String,
        /// Model name sent with each request.
        model: String,
    },
}

/// Settings. Not `Debug`: it holds secrets.
#[derive(Clone)]
pub struct Config {
    /// Postgres URL.
    pub db_url: String,
    /// Role the DB session assumes (empty: none).
    pub db_role: String,
    /// job-callback's URL.
    pub callback_url: String,
    /// The gateway's apikey header.
    pub anon_key: Option<String>,
    /// Standard Webhooks key bytes.
    pub webhook_key: Option<Vec<u8>>,
    /// Bearer for reports when there is no webhook key.
    pub service_key: Option<String>,
    /// Queues served.
    pub queues: Vec<String>,
    /// Jobs at once.
    pub concurrency: usize,
    /// Wake-up mode.
    pub wake: Wake,
    /// Lease length.
    pub lease_seconds: u32,
    /// This worker's id.
    pub worker_id: String,
    /// Renderer.
    pub backend: Backend,
}

/// Names what is configured, never the secrets or the database password.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("callback_url", &self.callback_url)
            .field("signed_reports", &self.webhook_key.is_some())
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("wake", &self.wake)
            .field("lease_seconds", &self.lease_seconds)
            .field("worker_id", &self.worker_id)
            .field(
                "backend",
                &match &self.backend {
                    Backend::Local => "local".to_string(),
                    Backend::OpenAi { base_url, .. } => format!("openai at {base_url}"),
                },
            )
            .finish_non_exhaustive()
    }
}

/// The seed's polling interval for a queue.
pub fn poll_interval(queue: &str) -> Duration {
    if queue == "sdxl_queue" {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    }
}

impl Config {
    /// From any lookup; `default_id` names the worker when `MEDIA_WORKER_ID` is unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, default_id: &str) -> Result<Config, String> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let db_url = get("MEDIA_WORKER_DB_URL")
            .or_else(|| get("EDGEWORKS_DB_URL"))
            .or_else(|| get("SUPABASE_DB_URL"))
            .ok_or("set MEDIA_WORKER_DB_URL (or EDGEWORKS_DB_URL / SUPABASE_DB_URL)")?;
        let callback_url = match get("MEDIA_CALLBACK_URL") {
            Some(u) => u,
            None => format!(
                "{}/functions/v1/job-callback",
                get("SUPABASE_URL")
                    .ok_or("set SUPABASE_URL or MEDIA_CALLBACK_URL")?
                    .trim_end_matches('/')
            ),
        };
        let webhook_key = match get("MEDIA_WORKER_SECRET") {
            Some(s) => Some(
                edgeworks_auth::standard_webhooks::secret_key(&s)
                    .ok_or("MEDIA_WORKER_SECRET is not whsec_<base64> or a raw secret")?,
            ),
            None => None,
        };
        let service_key = get("SUPABASE_SERVICE_ROLE_KEY");
        if webhook_key.is_none() && service_key.is_none() {
            return Err("set MEDIA_WORKER_SECRET (or SUPABASE_SERVICE_ROLE_KEY) to authenticate reports".into());
        }
        let queues: Vec<String> = get("MEDIA_WORKER_QUEUES")
            .unwrap_or_else(|| "sdxl_queue,wan_queue".into())
            .split(',')
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
        if queues.is_empty() || queues.iter().any(|q| q != "sdxl_queue" && q != "wan_queue") {
            return Err("MEDIA_WORKER_QUEUES names sdxl_queue and/or wan_queue".into());
        }
        let number = |k: &str, default: u32, min: u32, max: u32| -> Result<u32, String> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or(format!("{k} must be a whole number from {min} to {max}")),
            }
        };
        let wake = match get("MEDIA_WORKER_WAKE").as_deref() {
            None | Some("notify") => Wake::Notify,
            Some("poll") => Wake::Poll,
            Some(_) => return Err("MEDIA_WORKER_WAKE is notify or poll".into()),
        };
        let backend = match get("MEDIA_BACKEND").as_deref() {
            None | Some("local") => Backend::Local,
            Some("openai") => Backend::OpenAi {
                base_url: get("MEDIA_BACKEND_URL")
                    .ok_or("MEDIA_BACKEND=openai needs MEDIA_BACKEND_URL")?
                    .trim_end_matches('/')
                    .to_string(),
                api_key: get("MEDIA_BACKEND_API_KEY").ok_or("MEDIA_BACKEND=openai needs MEDIA_BACKEND_API_KEY")?,
                model: get("MEDIA_BACKEND_MODEL").unwrap_or_else(|| "gpt-image-1".into()),
            },
            Some(_) => return Err("MEDIA_BACKEND is local or openai".into()),
        };
        Ok(Config {
            db_url,
            db_role: get("MEDIA_WORKER_DB_ROLE").unwrap_or_else(|| "service_role".into()),
            callback_url,
            anon_key: get("SUPABASE_ANON_KEY"),
            webhook_key,
            service_key,
            queues,
            concurrency: number("MEDIA_WORKER_CONCURRENCY", 1, 1, 64)? as usize,
            wake,
            lease_seconds: number("MEDIA_WORKER_LEASE_SECONDS", 30, 3, 3600)?,
            worker_id: get("MEDIA_WORKER_ID").unwrap_or_else(|| default_id.to_string()),
            backend,
        })
    }

    /// How long an idle worker waits before claiming again without a wake-up.
    pub fn idle_wait(&self) -> Duration {
        match self.wake {
            // A notification can be lost (a LISTEN connection that dropped);
            // the safety poll bounds the damage.
            Wake::Notify => Duration::from_secs(5),
            Wake::Poll => self
                .queues
                .iter()
                .map(|q| poll_interval(q))
                .min()
                .unwrap_or(Duration::from_secs(5)),
        }
    }

    /// Heartbeat period: a third of the lease, so two can be lost.
    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease_seconds) * 1000 / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |k| map.get(k).cloned(), "media-worker-1")
    }

    const BASE: &[(&str, &str)] = &[
        ("EDGEWORKS_DB_URL", "postgresql://x@127.0.0.1/db"),
        ("SUPABASE_URL", "http://127.0.0.1:54321/"),
        ("MEDIA_WORKER_SECRET", "whsec_c2VjcmV0"),
    ];

    #[test]
    fn defaults_serve_both_queues_with_notify_wake_up() {
        let c = from(BASE).unwrap();
        assert_eq!(c.callback_url, "http://127.0.0.1:54321/functions/v1/job-callback");
        assert_eq!(c.queues, vec!["sdxl_queue", "wan_queue"]);
        assert_eq!((c.wake, c.concurrency, c.lease_seconds), (Wake::Notify, 1, 30));
        assert_eq!(c.webhook_key.as_deref(), Some(&b"secret"[..]));
        assert_eq!(c.db_role, "service_role");
        assert_eq!(c.heartbeat_every(), Duration::from_secs(10));
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut pairs = BASE.to_vec();
        pairs.push(("MEDIA_BACKEND", "openai"));
        pairs.push(("MEDIA_BACKEND_URL", "http://127.0.0.1:9"));
        pairs.push(("MEDIA_BACKEND_API_KEY", "sk-very-secret"));
        pairs.push(("SUPABASE_SERVICE_ROLE_KEY", "service-key-secret"));
        let shown = format!("{:?}", from(&pairs).unwrap());
        for secret in [
            "sk-very-secret",
            "service-key-secret",
            "c2VjcmV0",
            "secret\"",
            "postgresql://",
        ] {
            assert!(!shown.contains(secret), "{shown} shows {secret}");
        }
        assert!(shown.contains("signed_reports: true"));
    }

    #[test]
    fn polling_uses_the_seeds_intervals() {
        let mut both = BASE.to_vec();
        both.push(("MEDIA_WORKER_WAKE", "poll"));
        assert_eq!(from(&both).unwrap().idle_wait(), Duration::from_secs(2));
        both.push(("MEDIA_WORKER_QUEUES", "wan_queue"));
        assert_eq!(from(&both).unwrap().idle_wait(), Duration::from_secs(5));
    }

    #[test]
    fn missing_or_bad_settings_are_named() {
        assert!(from(&[]).unwrap_err().contains("MEDIA_WORKER_DB_URL"));
        let no_auth = [BASE[0], BASE[1]];
        assert!(from(&no_auth).unwrap_err().contains("MEDIA_WORKER_SECRET"));
        let mut bad = BASE.to_vec();
        bad.push(("MEDIA_WORKER_QUEUES", "chat"));
        assert!(from(&bad).is_err());
        let mut openai = BASE.to_vec();
        openai.push(("MEDIA_BACKEND", "openai"));
        assert!(from(&openai).unwrap_err().contains("MEDIA_BACKEND_URL"));
    }
}
