//! One worker for every system: each job kind is a [`JobHandler`] type
//! registered with a [`Registry`]; the worker claims across every
//! registered queue and kind in one call and dispatches each job to its
//! handler, then records the outcome under the claim's lease.

use std::future::Future;
use std::pin::Pin;

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::Db;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::sql::{ClaimRequest, ClaimedJob, JobQueue, QueueError};
use crate::state::{Backoff, JobStatus};

/// What one attempt of a job came to.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Done; the worker completes the job with this result.
    Complete(Option<Value>),
    /// Done, and the handler already completed the job in its own SQL call
    /// (atomically with its data, under the lease).
    Completed,
    /// Failed; retried after backoff (never before `retry_after_ms`) while
    /// attempts remain.
    Retry {
        /// Stored on the job.
        reason: String,
        /// The upstream's `Retry-After`.
        retry_after_ms: Option<u32>,
    },
    /// Failed for good.
    Fail {
        /// Stored on the job.
        reason: String,
    },
    /// Our lease ended (expired, cancelled): another worker owns the job now.
    LeaseLost,
}

/// How often and how fast a kind retries. Written on the job at enqueue
/// (SQL applies it), so changing it affects new jobs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the job fails.
    pub max_attempts: u32,
    /// Delay schedule between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::DEFAULT,
        }
    }
}

/// What a handler may use while it runs.
pub struct JobContext<'a, C: HttpClient> {
    /// The database as the service role.
    pub db: &'a Db<C>,
    /// The one HTTP client.
    pub http: &'a C,
    /// The claiming worker's id.
    pub worker_id: &'a str,
}

/// A job kind. Its input is the job's payload, deserialised.
pub trait JobHandler<C: HttpClient> {
    /// The queue its jobs travel on.
    const QUEUE: &'static str;
    /// The job kind.
    const KIND: &'static str;
    /// The payload's type; a payload that does not fit fails the job at once.
    type Input: DeserializeOwned;

    /// Runs one attempt.
    fn run(&self, job: &ClaimedJob, input: Self::Input, cx: &JobContext<'_, C>) -> impl Future<Output = JobOutcome>;

    /// Attempts and backoff for new jobs of this kind.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Called once when a job of this kind has failed for good.
    fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) -> impl Future<Output = ()> {
        let _ = (job, reason, cx);
        async {}
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A registered handler with its input type erased.
trait Registered<C: HttpClient> {
    fn queue(&self) -> &'static str;
    fn kind(&self) -> &'static str;
    fn run<'a>(&'a self, job: &'a ClaimedJob, cx: &'a JobContext<'a, C>) -> Boxed<'a, JobOutcome>;
    fn on_final_failure<'a>(&'a self, job: &'a ClaimedJob, reason: &'a str, cx: &'a JobContext<'a, C>)
        -> Boxed<'a, ()>;
}

impl<C: HttpClient, H: JobHandler<C>> Registered<C> for H {
    fn queue(&self) -> &'static str {
        H::QUEUE
    }
    fn kind(&self) -> &'static str {
        H::KIND
    }
    fn run<'a>(&'a self, job: &'a ClaimedJob, cx: &'a JobContext<'a, C>) -> Boxed<'a, JobOutcome> {
        Box::pin(async move {
            match serde_json::from_value::<H::Input>(job.payload.clone()) {
                Ok(input) => JobHandler::run(self, job, input, cx).await,
                Err(e) => JobOutcome::Fail {
                    reason: format!("payload does not fit {}: {e}", H::KIND),
                },
            }
        })
    }
    fn on_final_failure<'a>(
        &'a self,
        job: &'a ClaimedJob,
        reason: &'a str,
        cx: &'a JobContext<'a, C>,
    ) -> Boxed<'a, ()> {
        Box::pin(JobHandler::on_final_failure(self, job, reason, cx))
    }
}

/// The job kinds one worker runs.
pub struct Registry<'h, C: HttpClient> {
    handlers: Vec<Box<dyn Registered<C> + 'h>>,
}

impl<C: HttpClient> Default for Registry<'_, C> {
    fn default() -> Self {
        Registry { handlers: Vec::new() }
    }
}

impl<'h, C: HttpClient> Registry<'h, C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind.
    pub fn register<H: JobHandler<C> + 'h>(mut self, handler: H) -> Self {
        self.handlers.push(Box::new(handler));
        self
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.iter().map(|h| h.kind()).collect()
    }

    /// Every queue a registered kind travels on, once each.
    pub fn queues(&self) -> Vec<&'static str> {
        let mut q: Vec<&'static str> = self.handlers.iter().map(|h| h.queue()).collect();
        q.sort_unstable();
        q.dedup();
        q
    }

    fn handler(&self, job: &ClaimedJob) -> Option<&(dyn Registered<C> + 'h)> {
        self.handlers
            .iter()
            .find(|h| h.kind() == job.kind && h.queue() == job.queue)
            .map(|h| h.as_ref())
    }
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// Jobs claimed.
    pub claimed: u32,
    /// Completed.
    pub processed: u32,
    /// Failed for good.
    pub failed: u32,
    /// One line per job for the function's log (never secrets).
    pub events: Vec<Value>,
}

/// A worker: a registry, a database and an id.
pub struct Worker<'a, 'h, C: HttpClient> {
    /// The kinds it runs.
    pub registry: &'a Registry<'h, C>,
    /// What handlers get.
    pub cx: JobContext<'a, C>,
    /// How long a claim holds a job.
    pub lease_seconds: u32,
}

impl<'a, 'h, C: HttpClient> Worker<'a, 'h, C> {
    /// A worker named `worker_id` running `registry` over `db` and `http`.
    pub fn new(
        registry: &'a Registry<'h, C>,
        db: &'a Db<C>,
        http: &'a C,
        worker_id: &'a str,
        lease_seconds: u32,
    ) -> Self {
        Worker {
            registry,
            cx: JobContext { db, http, worker_id },
            lease_seconds,
        }
    }

    fn queue(&self) -> JobQueue<'_, C> {
        JobQueue::new(self.cx.db)
    }

    /// Claims up to `batch` jobs of `kinds` (default: every registered kind),
    /// or exactly `job_id` when given.
    pub async fn claim(
        &self,
        batch: u32,
        job_id: Option<&str>,
        kinds: Option<&[&str]>,
    ) -> Result<Vec<ClaimedJob>, ApiError> {
        let all = self.registry.kinds();
        let kinds = kinds.unwrap_or(&all);
        let queues = self.registry.queues();
        let claimed = match job_id {
            Some(id) => {
                self.queue()
                    .claim_one(id, self.cx.worker_id, &queues, kinds, self.lease_seconds)
                    .await
            }
            None => {
                let req = ClaimRequest::new(self.cx.worker_id, &queues)
                    .kinds(kinds)
                    .batch(batch)
                    .lease_seconds(self.lease_seconds);
                self.queue().claim(&req).await
            }
        };
        claimed.map_err(ApiError::from)
    }

    /// Claims and runs one batch; one job's failure never stops the rest.
    /// The jobs run concurrently: each mostly waits on I/O, so a batch takes
    /// about as long as its slowest job.
    pub async fn run_batch(
        &self,
        batch: u32,
        job_id: Option<&str>,
        kinds: Option<&[&str]>,
    ) -> Result<BatchReport, ApiError> {
        let jobs = self.claim(batch, job_id, kinds).await?;
        let outcomes = futures_util::future::join_all(jobs.iter().map(|job| self.process(job))).await;
        let mut report = BatchReport {
            claimed: jobs.len() as u32,
            ..BatchReport::default()
        };
        for (job, (outcome, final_failure)) in jobs.iter().zip(&outcomes) {
            match outcome {
                JobOutcome::Complete(_) | JobOutcome::Completed => report.processed += 1,
                JobOutcome::Fail { .. } | JobOutcome::Retry { .. } if *final_failure => report.failed += 1,
                _ => {}
            }
            report.events.push(json!({
                "job_id": job.id, "kind": job.kind, "attempt": job.attempts,
                "outcome": describe(outcome, *final_failure),
            }));
        }
        Ok(report)
    }

    /// Runs one job and records its outcome; also says whether it failed for good.
    pub async fn process(&self, job: &ClaimedJob) -> (JobOutcome, bool) {
        let Some(handler) = self.registry.handler(job) else {
            // Claimed by kind, so only a registry/claim mismatch lands here.
            let reason = format!("no handler for {}/{}", job.queue, job.kind);
            return self.give_back(None, job, JobOutcome::Fail { reason }).await;
        };
        let outcome = handler.run(job, &self.cx).await;
        self.give_back(Some(handler), job, outcome).await
    }

    async fn give_back<'s>(
        &'s self,
        handler: Option<&'s (dyn Registered<C> + '_)>,
        job: &ClaimedJob,
        outcome: JobOutcome,
    ) -> (JobOutcome, bool) {
        let lease = job.lease();
        let (reason, retryable, retry_after) = match &outcome {
            JobOutcome::Completed | JobOutcome::LeaseLost => return (outcome, false),
            JobOutcome::Complete(result) => {
                return match self.queue().complete(&lease, result.as_ref()).await {
                    Ok(_) => (outcome, false),
                    Err(QueueError::LeaseLost { .. }) => (JobOutcome::LeaseLost, false),
                    // The lease will expire and the job be retried: nothing is lost.
                    Err(e) => (
                        JobOutcome::Retry {
                            reason: format!("the result could not be recorded ({e}); the lease will expire"),
                            retry_after_ms: None,
                        },
                        false,
                    ),
                };
            }
            JobOutcome::Retry { reason, retry_after_ms } => (reason.clone(), true, *retry_after_ms),
            JobOutcome::Fail { reason } => (reason.clone(), false, None),
        };
        match self.queue().fail(&lease, &reason, retryable, retry_after).await {
            Ok(after) if after.status == JobStatus::Retrying => (outcome, false),
            Ok(_) => {
                if let Some(h) = handler {
                    h.on_final_failure(job, &reason, &self.cx).await;
                }
                (outcome, true)
            }
            Err(QueueError::LeaseLost { .. }) => (JobOutcome::LeaseLost, false),
            // The lease will expire and the job will be requeued: nothing is lost.
            Err(e) => (
                JobOutcome::Retry {
                    reason: format!("{reason}; the failure could not be recorded ({e}); the lease will expire"),
                    retry_after_ms: None,
                },
                false,
            ),
        }
    }

    /// Whether a job of a registered queue is waiting and due now.
    pub async fn next_job_available(&self) -> Result<bool, ApiError> {
        for q in self.registry.queues() {
            let stats = self.queue().stats(q).await?;
            let due = stats
                .pending
                .saturating_sub(stats.blocked)
                .saturating_sub(stats.delayed)
                > 0
                || (stats.retrying > 0 && stats.delayed == 0);
            if due {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn describe(o: &JobOutcome, final_failure: bool) -> Value {
    match o {
        JobOutcome::Complete(_) | JobOutcome::Completed => json!("completed"),
        JobOutcome::Retry { reason, .. } if !final_failure => json!({ "retrying": reason }),
        JobOutcome::Retry { reason, .. } | JobOutcome::Fail { reason } => json!({ "failed": reason }),
        JobOutcome::LeaseLost => json!("lease_lost"),
    }
}
