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
        let claimed = match job_id {
            Some(id) => {
                let all = self.registry.kinds();
                self.queue()
                    .claim_one(
                        id,
                        self.cx.worker_id,
                        &self.registry.queues(),
                        kinds.unwrap_or(&all),
                        self.lease_seconds,
                    )
                    .await
            }
            None => self.queue().claim(&self.claim_request(batch, kinds)).await,
        };
        claimed.map_err(ApiError::from)
    }

    /// What `claim` asks for without a job id; a chained completion asks
    /// for the same.
    fn claim_request(&self, batch: u32, kinds: Option<&[&str]>) -> ClaimRequest {
        let all = self.registry.kinds();
        ClaimRequest::new(self.cx.worker_id, &self.registry.queues())
            .kinds(kinds.unwrap_or(&all))
            .batch(batch)
            .lease_seconds(self.lease_seconds)
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
        Ok(self.run_jobs(jobs, None).await.0)
    }

    /// Runs claimed jobs concurrently, as `run_batch` does. With `next =
    /// Some((batch, kinds))` the batch's last completion also claims the
    /// next batch (as `claim(batch, None, kinds)` would) in the same call
    /// (`complete_and_claim`), saving a round trip and a commit per batch.
    /// The first job's outcome is therefore recorded last, once every other
    /// job has been given back, so the next batch's leases start only when
    /// this batch is done.
    ///
    /// Returns the report (the same as `run_batch`'s for these jobs) and the
    /// jobs claimed by the chained completion: `Some` (maybe empty: nothing
    /// due now) when it went through, `None` when the chain did not happen
    /// (not asked, no jobs, the first job did not end in `Complete`, its
    /// lease was lost, or the call failed and the result was recorded alone).
    pub async fn run_jobs(
        &self,
        jobs: Vec<ClaimedJob>,
        next: Option<(u32, Option<&[&str]>)>,
    ) -> (BatchReport, Option<Vec<ClaimedJob>>) {
        let (outcomes, claimed) = match (next, jobs.split_first()) {
            (Some((batch, kinds)), Some((first, rest))) => {
                let ((handler, outcome), mut outcomes) = futures_util::future::join(
                    self.attempt(first),
                    futures_util::future::join_all(rest.iter().map(|job| self.process(job))),
                )
                .await;
                let req = self.claim_request(batch, kinds);
                let (first_outcome, claimed) = self.give_back_and_claim(handler, first, outcome, &req).await;
                outcomes.insert(0, first_outcome);
                (outcomes, claimed)
            }
            _ => (
                futures_util::future::join_all(jobs.iter().map(|job| self.process(job))).await,
                None,
            ),
        };
        (report(&jobs, &outcomes), claimed)
    }

    /// Runs one job and records its outcome; also says whether it failed for good.
    pub async fn process(&self, job: &ClaimedJob) -> (JobOutcome, bool) {
        let (handler, outcome) = self.attempt(job).await;
        self.give_back(handler, job, outcome).await
    }

    /// Runs one job's handler without recording the outcome.
    async fn attempt(&self, job: &ClaimedJob) -> (Option<&'a (dyn Registered<C> + 'h)>, JobOutcome) {
        let Some(handler) = self.registry.handler(job) else {
            // Claimed by kind, so only a registry/claim mismatch lands here.
            let reason = format!("no handler for {}/{}", job.queue, job.kind);
            return (None, JobOutcome::Fail { reason });
        };
        (Some(handler), handler.run(job, &self.cx).await)
    }

    /// `give_back`, except that a `Complete` is recorded with
    /// `complete_and_claim(req)`; also returns the jobs that claimed.
    async fn give_back_and_claim(
        &self,
        handler: Option<&'a (dyn Registered<C> + 'h)>,
        job: &ClaimedJob,
        outcome: JobOutcome,
        req: &ClaimRequest,
    ) -> ((JobOutcome, bool), Option<Vec<ClaimedJob>>) {
        let JobOutcome::Complete(result) = &outcome else {
            return (self.give_back(handler, job, outcome).await, None);
        };
        match self
            .queue()
            .complete_and_claim(&job.lease(), result.as_ref(), req)
            .await
        {
            Ok(claimed) => ((outcome, false), Some(claimed)),
            Err(QueueError::LeaseLost { .. }) => ((JobOutcome::LeaseLost, false), None),
            // The call is one transaction and failed whole: the lease still
            // holds, so the result is recorded alone and the caller claims.
            Err(_) => (self.give_back(handler, job, outcome).await, None),
        }
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

/// The report of a batch: `outcomes[i]` is `jobs[i]`'s.
fn report(jobs: &[ClaimedJob], outcomes: &[(JobOutcome, bool)]) -> BatchReport {
    let mut report = BatchReport {
        claimed: jobs.len() as u32,
        ..BatchReport::default()
    };
    for (job, (outcome, final_failure)) in jobs.iter().zip(outcomes) {
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
    report
}

fn describe(o: &JobOutcome, final_failure: bool) -> Value {
    match o {
        JobOutcome::Complete(_) | JobOutcome::Completed => json!("completed"),
        JobOutcome::Retry { reason, .. } if !final_failure => json!({ "retrying": reason }),
        JobOutcome::Retry { reason, .. } | JobOutcome::Fail { reason } => json!({ "failed": reason }),
        JobOutcome::LeaseLost => json!("lease_lost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::tests::db;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};

    /// Ends each job as its payload's `"outcome"` says.
    struct Scripted;

    impl<C: HttpClient> JobHandler<C> for Scripted {
        const QUEUE: &'static str = "test";
        const KIND: &'static str = "scripted";
        type Input = Value;

        async fn run(&self, _job: &ClaimedJob, input: Value, _cx: &JobContext<'_, C>) -> JobOutcome {
            match input["outcome"].as_str() {
                Some("fail") => JobOutcome::Fail {
                    reason: "scripted failure".into(),
                },
                _ => JobOutcome::Complete(Some(json!({"done": true}))),
            }
        }
    }

    fn job(n: u32, outcome: &str) -> ClaimedJob {
        ClaimedJob {
            id: format!("00000000-0000-4000-8000-00000000000{n}"),
            queue: "test".into(),
            kind: "scripted".into(),
            payload: json!({ "outcome": outcome }),
            priority: 0,
            attempts: 1,
            max_attempts: 3,
            lease_token: format!("10000000-0000-4000-8000-00000000000{n}"),
            lease_expires_at: "2026-11-22T00:01:00+00:00".into(),
            owner_id: None,
            created_at: "2026-11-22T00:00:00+00:00".into(),
        }
    }

    /// A `public.jobs` row of job `n` in `status`.
    fn job_row(n: u32, status: &str) -> String {
        json!({
            "id": format!("00000000-0000-4000-8000-00000000000{n}"), "seq": n, "queue": "test",
            "kind": "scripted", "payload": {}, "priority": 0, "status": status, "attempts": 1,
            "max_attempts": 3, "backoff_base_ms": 1000, "backoff_cap_ms": 600000,
            "run_at": "2026-11-22T00:00:00+00:00", "pending_dependencies": 0, "worker_id": "w1",
            "lease_token": format!("10000000-0000-4000-8000-00000000000{n}"),
            "lease_expires_at": "2026-11-22T00:01:00+00:00", "progress": 0, "result": null,
            "last_error": null, "dedup_key": null, "owner_id": null,
            "created_at": "2026-11-22T00:00:00+00:00", "updated_at": "2026-11-22T00:00:00+00:00",
            "started_at": "2026-11-22T00:00:00+00:00", "completed_at": null
        })
        .to_string()
    }

    /// PostgREST answering each queue function; `chained` answers
    /// `complete_job_and_claim`.
    fn queue_server(chained: impl Fn() -> (u16, String) + Send + Sync + 'static) -> FakeServer {
        FakeServer::start(move |req, _| match req.url.rsplit('/').next() {
            Some("complete_job_and_claim") => {
                let (status, body) = chained();
                json_response(status, &body)
            }
            Some("complete_job") => json_response(200, &job_row(1, "completed")),
            // max_attempts is not reached on attempt 1, but a Fail is final.
            Some("fail_job") => json_response(200, &job_row(1, "failed")),
            _ => json_response(404, r#"{"code":"PGRST202","message":"no such function"}"#),
        })
    }

    /// The `/rpc/...` path and JSON body of every request, in order.
    fn calls(server: &FakeServer) -> Vec<(String, Value)> {
        server
            .requests()
            .iter()
            .map(|r| {
                let path = r
                    .url
                    .split_once("/rest/v1")
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default();
                (path, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            })
            .collect()
    }

    fn paths(server: &FakeServer) -> Vec<String> {
        calls(server).into_iter().map(|(p, _)| p).collect()
    }

    fn run(
        server: &FakeServer,
        jobs: Vec<ClaimedJob>,
        next: Option<(u32, Option<&[&str]>)>,
    ) -> (BatchReport, Option<Vec<ClaimedJob>>) {
        let db = db(server);
        let registry = Registry::new().register(Scripted);
        let worker = Worker::new(&registry, &db, &NativeClient, "w1", 30);
        block_on(worker.run_jobs(jobs, next))
    }

    #[test]
    fn a_chained_batch_of_one_completes_and_claims_in_one_call() {
        let server = queue_server(|| (200, format!("[{}]", job_row(2, "processing"))));
        let (report, next) = run(&server, vec![job(1, "complete")], Some((4, None)));
        let (path, args) = calls(&server).remove(0);
        assert_eq!(paths(&server), vec!["/rpc/complete_job_and_claim"]);
        assert_eq!(path, "/rpc/complete_job_and_claim");
        assert_eq!(
            args,
            json!({"p_job": job(1, "").id, "p_lease_token": job(1, "").lease_token,
                   "p_result": {"done": true}, "p_worker": "w1", "p_queues": ["test"],
                   "p_kinds": ["scripted"], "p_batch": 4, "p_lease_seconds": 30})
        );
        let next = next.unwrap_or_default();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].id, job(2, "").id);
        assert_eq!((report.claimed, report.processed, report.failed), (1, 1, 0));
    }

    #[test]
    fn the_chained_claim_asks_for_the_kinds_given() {
        let server = queue_server(|| (200, "[]".into()));
        let (_, next) = run(&server, vec![job(1, "complete")], Some((2, Some(&["scripted"]))));
        assert_eq!(next, Some(Vec::new()));
        assert_eq!(calls(&server)[0].1["p_kinds"], json!(["scripted"]));
    }

    #[test]
    fn without_next_the_completion_is_complete_job_alone() {
        let server = queue_server(|| (200, "[]".into()));
        let (report, next) = run(&server, vec![job(1, "complete")], None);
        assert_eq!(paths(&server), vec!["/rpc/complete_job"]);
        assert_eq!(next, None);
        assert_eq!(report.processed, 1);
    }

    #[test]
    fn an_empty_batch_chains_nothing() {
        let server = queue_server(|| (200, "[]".into()));
        let (report, next) = run(&server, Vec::new(), Some((4, None)));
        assert!(server.requests().is_empty());
        assert_eq!((report, next), (BatchReport::default(), None));
    }

    #[test]
    fn a_failed_chained_call_falls_back_to_complete_job() {
        let server = queue_server(|| {
            (
                500,
                r#"{"code":"XX000","message":"boom","details":null,"hint":null}"#.into(),
            )
        });
        let (report, next) = run(&server, vec![job(1, "complete")], Some((4, None)));
        assert_eq!(paths(&server), vec!["/rpc/complete_job_and_claim", "/rpc/complete_job"]);
        assert_eq!(next, None);
        assert_eq!(
            (report.processed, report.events[0]["outcome"].clone()),
            (1, json!("completed"))
        );
    }

    #[test]
    fn a_lost_lease_on_the_chained_call_drops_the_result_without_completing_again() {
        let server = queue_server(|| {
            (
                400,
                r#"{"code":"EQ409","message":"lease lost","details":null,"hint":null}"#.into(),
            )
        });
        let (report, next) = run(&server, vec![job(1, "complete")], Some((4, None)));
        assert_eq!(paths(&server), vec!["/rpc/complete_job_and_claim"]);
        assert_eq!(next, None);
        assert_eq!(report.processed, 0);
        assert_eq!(report.events[0]["outcome"], "lease_lost");
    }

    #[test]
    fn the_first_job_is_given_back_last_and_the_report_matches_an_unchained_run() {
        let jobs = vec![job(1, "complete"), job(2, "fail"), job(3, "complete")];
        let chained = queue_server(|| (200, "[]".into()));
        let (chained_report, next) = run(&chained, jobs.clone(), Some((3, None)));
        assert_eq!(
            paths(&chained),
            vec!["/rpc/fail_job", "/rpc/complete_job", "/rpc/complete_job_and_claim"]
        );
        assert_eq!(calls(&chained)[2].1["p_job"], json!(jobs[0].id));
        assert_eq!(next, Some(Vec::new()));

        let plain = queue_server(|| (200, "[]".into()));
        let (plain_report, _) = run(&plain, jobs, None);
        assert_eq!(chained_report, plain_report);
        assert_eq!(
            (plain_report.claimed, plain_report.processed, plain_report.failed),
            (3, 2, 1)
        );
    }

    #[test]
    fn a_first_job_that_does_not_complete_is_given_back_as_usual_and_chains_nothing() {
        let server = queue_server(|| (200, "[]".into()));
        let (report, next) = run(&server, vec![job(1, "fail")], Some((4, None)));
        assert_eq!(paths(&server), vec!["/rpc/fail_job"]);
        assert_eq!(next, None);
        assert_eq!(report.failed, 1);
    }
}
