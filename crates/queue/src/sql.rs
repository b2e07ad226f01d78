//! Typed calls to the Postgres job queue (`supabase/migrations/*_job_queue.sql`).
//!
//! Every method is one `/rpc` round trip to one atomic SQL function; this
//! module only shapes arguments, decodes rows and turns the queue's SQLSTATEs
//! into [`QueueError`] variants. The state machine and the retry schedule it
//! relies on are in [`crate::state`].
//!
//! Which key to use: workers and system work (enqueue, claim, complete, fail,
//! stats, cleanup) run with the service-role key; `cancel` and `position` also
//! work with a user's JWT, and then only on that user's own jobs.

use crate::state::{Backoff, JobStatus};
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ids::is_uuid;
use edgeworks_core::ApiError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use edgeworks_db::{Db, DbError};

/// SQLSTATE of a refused lease token (`complete_job`, `fail_job`, `extend_lease`,
/// `report_progress`): the job is no longer processing under that token.
pub const SQLSTATE_LEASE_LOST: &str = "EQ409";
/// SQLSTATE of an unknown job, or one the caller may not see.
pub const SQLSTATE_JOB_NOT_FOUND: &str = "EQ404";
/// SQLSTATE `invalid_parameter_value`: an argument the queue's checks refuse.
pub const SQLSTATE_INVALID_ARGUMENT: &str = "22023";
/// SQLSTATE `insufficient_privilege`: the key's role may not call the function.
pub const SQLSTATE_FORBIDDEN: &str = "42501";

#[derive(Debug, Clone, PartialEq)]
pub enum QueueError {
    /// The lease token is stale or foreign: the lease expired and the job was
    /// requeued, or it was cancelled or already finished. The worker must drop
    /// the job; retrying the call cannot succeed.
    LeaseLost { job_id: String, message: String },
    /// No such job, or not the caller's.
    NotFound { job_id: String },
    /// An argument the queue refuses (checked here or by the SQL function).
    InvalidArgument(String),
    /// The key's role may not call this function (a user calling claim, say).
    Forbidden,
    /// Anything else: transport, unexpected SQL error, undecodable answer.
    Db(DbError),
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::LeaseLost { job_id, message } => {
                write!(f, "lease lost for job {job_id}: {message}")
            }
            QueueError::NotFound { job_id } => write!(f, "job {job_id} not found"),
            QueueError::InvalidArgument(m) => write!(f, "invalid queue argument: {m}"),
            QueueError::Forbidden => f.write_str("not allowed to use this queue function"),
            QueueError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for QueueError {}

/// The one mapping from queue errors to HTTP errors, for every function.
impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::LeaseLost { .. } => {
                ApiError::conflict("lease_lost", "the job is no longer held under this lease")
            }
            QueueError::NotFound { .. } => ApiError::not_found("job_not_found", "job not found"),
            QueueError::InvalidArgument(m) => ApiError::bad_request("invalid_job_request", m),
            QueueError::Forbidden => ApiError::forbidden("forbidden", "not allowed"),
            QueueError::Db(db) => ApiError::from(db),
        }
    }
}

fn classify(e: DbError, job_id: Option<&str>) -> QueueError {
    let job_id = job_id.unwrap_or("").to_string();
    match &e {
        DbError::Api {
            code: Some(c), message, ..
        } => match c.as_str() {
            SQLSTATE_LEASE_LOST => QueueError::LeaseLost {
                job_id,
                message: message.clone(),
            },
            SQLSTATE_JOB_NOT_FOUND => QueueError::NotFound { job_id },
            // invalid_parameter_value (our checks), invalid_text_representation
            // (a malformed uuid or number), check_violation.
            SQLSTATE_INVALID_ARGUMENT | "22P02" | "23514" => QueueError::InvalidArgument(message.clone()),
            SQLSTATE_FORBIDDEN => QueueError::Forbidden,
            _ => QueueError::Db(e),
        },
        DbError::Api { status: 401 | 403, .. } => QueueError::Forbidden,
        _ => QueueError::Db(e),
    }
}

/// A job row as the queue functions return it (all columns of `public.jobs`).
/// Timestamps are kept as the ISO 8601 strings PostgREST sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub seq: i64,
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub backoff_base_ms: i32,
    pub backoff_cap_ms: i32,
    pub run_at: String,
    pub pending_dependencies: i32,
    pub worker_id: Option<String>,
    pub lease_token: Option<String>,
    pub lease_expires_at: Option<String>,
    pub progress: i16,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub dedup_key: Option<String>,
    pub owner_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

/// A job a worker holds: what it needs to do the work and to report back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: String,
    pub lease_expires_at: String,
    pub owner_id: Option<String>,
    pub created_at: String,
}

impl ClaimedJob {
    /// The proof of ownership `complete`, `fail`, `extend_lease` and
    /// `report_progress` ask for.
    pub fn lease(&self) -> Lease {
        Lease {
            job_id: self.id.clone(),
            token: self.lease_token.clone(),
        }
    }

    /// Whether a failure now would be retried (given a retryable error).
    pub fn has_attempts_left(&self) -> bool {
        self.attempts < self.max_attempts
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub token: String,
}

/// One entry of `complete_many`, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub job_id: String,
    /// False when the lease was lost (or the job is gone): someone else owns
    /// the outcome, drop this result.
    pub completed: bool,
    /// The job's status now; None when it no longer exists.
    pub status: Option<JobStatus>,
}

/// `queue_stats`: counts now, timings over the last `window_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub queue: String,
    /// Waiting, including delayed and blocked jobs.
    pub pending: i64,
    pub processing: i64,
    pub retrying: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Pending jobs still waiting for a dependency.
    pub blocked: i64,
    /// Waiting jobs whose run_at (delay or backoff) is in the future.
    pub delayed: i64,
    pub completed_in_window: i64,
    pub avg_processing_ms: Option<f64>,
    pub p95_processing_ms: Option<f64>,
    /// Age of the oldest job that is due and claimable; None when there is none.
    pub oldest_pending_age_ms: Option<f64>,
    pub active_workers: i64,
    pub window_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Active,
    Idle,
    Stopped,
}

impl WorkerStatus {
    fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Active => "active",
            WorkerStatus::Idle => "idle",
            WorkerStatus::Stopped => "stopped",
        }
    }
}

/// A row of `public.workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    pub queues: Vec<String>,
    pub status: WorkerStatus,
    pub metadata: Value,
    pub jobs_done: i64,
    pub jobs_failed: i64,
    pub started_at: String,
    pub last_heartbeat_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub jobs_deleted: i64,
    pub workers_deleted: i64,
}

/// A job to enqueue. `NewJob::new(queue, kind, payload)` then the setters.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub delay_ms: u32,
    pub max_attempts: u32,
    pub dedup_key: Option<String>,
    pub depends_on: Vec<String>,
    pub owner: Option<String>,
    pub backoff: Backoff,
}

impl NewJob {
    pub fn new(queue: &str, kind: &str, payload: Value) -> NewJob {
        NewJob {
            queue: queue.to_string(),
            kind: kind.to_string(),
            payload,
            priority: 0,
            delay_ms: 0,
            max_attempts: 5,
            dedup_key: None,
            depends_on: Vec::new(),
            owner: None,
            backoff: Backoff::DEFAULT,
        }
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    pub fn delay_ms(mut self, delay_ms: u32) -> Self {
        self.delay_ms = delay_ms;
        self
    }
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }
    pub fn dedup_key(mut self, key: &str) -> Self {
        self.dedup_key = Some(key.to_string());
        self
    }
    pub fn depends_on(mut self, job_ids: &[&str]) -> Self {
        self.depends_on = job_ids.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn owner(mut self, user_id: &str) -> Self {
        self.owner = Some(user_id.to_string());
        self
    }
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks what the SQL function would otherwise reject with a less
    /// specific error, and what cannot be represented in its int arguments.
    fn validate(&self) -> Result<(), QueueError> {
        let int = |v: u64, name: &str| {
            if v > i32::MAX as u64 {
                Err(QueueError::InvalidArgument(format!("{name} is too large")))
            } else {
                Ok(())
            }
        };
        int(self.delay_ms as u64, "delay_ms")?;
        int(self.max_attempts as u64, "max_attempts")?;
        int(self.backoff.base_ms, "backoff base_ms")?;
        int(self.backoff.cap_ms, "backoff cap_ms")?;
        for id in self.depends_on.iter().chain(self.owner.iter()) {
            if !is_uuid(id) {
                return Err(QueueError::InvalidArgument(format!("{id:?} is not a uuid")));
            }
        }
        Ok(())
    }

    /// The fields without the `p_` prefix: one element of `enqueue_jobs`.
    fn to_item(&self) -> Value {
        json!({
            "queue": self.queue,
            "kind": self.kind,
            "payload": self.payload,
            "priority": self.priority,
            "delay_ms": self.delay_ms,
            "max_attempts": self.max_attempts,
            "dedup_key": self.dedup_key,
            "depends_on": self.depends_on,
            "owner": self.owner,
            "backoff_base_ms": self.backoff.base_ms,
            "backoff_cap_ms": self.backoff.cap_ms,
        })
    }

    /// Named arguments of `enqueue_job`.
    fn to_args(&self) -> Value {
        let mut args = serde_json::Map::new();
        if let Value::Object(item) = self.to_item() {
            for (k, v) in item {
                args.insert(format!("p_{k}"), v);
            }
        }
        Value::Object(args)
    }
}

/// What `claim` asks for. `ClaimRequest::new(worker, queues)` claims one job
/// with a 60 s lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub worker: String,
    pub queues: Vec<String>,
    pub kinds: Option<Vec<String>>,
    pub batch: u32,
    pub lease_seconds: u32,
}

impl ClaimRequest {
    pub fn new(worker: &str, queues: &[&str]) -> ClaimRequest {
        ClaimRequest {
            worker: worker.to_string(),
            queues: queues.iter().map(|s| s.to_string()).collect(),
            kinds: None,
            batch: 1,
            lease_seconds: 60,
        }
    }
    pub fn kinds(mut self, kinds: &[&str]) -> Self {
        self.kinds = Some(kinds.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }
    pub fn lease_seconds(mut self, seconds: u32) -> Self {
        self.lease_seconds = seconds;
        self
    }
}

/// The job queue, reached through one PostgREST role.
pub struct JobQueue<'a, C: HttpClient> {
    db: &'a Db<C>,
}

impl<'a, C: HttpClient> JobQueue<'a, C> {
    pub fn new(db: &'a Db<C>) -> Self {
        JobQueue { db }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        function: &str,
        args: &Value,
        job_id: Option<&str>,
    ) -> Result<T, QueueError> {
        let raw: Value = self.db.rpc(function, args).await.map_err(|e| classify(e, job_id))?;
        decode(function, raw)
    }

    /// For functions returning one row: PostgREST answers with an object;
    /// a one-element array is accepted too.
    async fn call_row<T: DeserializeOwned>(
        &self,
        function: &str,
        args: &Value,
        job_id: Option<&str>,
    ) -> Result<T, QueueError> {
        let raw: Value = self.call(function, args, job_id).await?;
        let raw = match raw {
            Value::Array(mut rows) if rows.len() == 1 => rows.remove(0),
            other => other,
        };
        decode(function, raw)
    }

    /// Enqueues one job. With a dedup key, an unfinished job holding the same
    /// key in the same queue comes back instead of a new one.
    pub async fn enqueue(&self, job: &NewJob) -> Result<Job, QueueError> {
        job.validate()?;
        self.call_row("enqueue_job", &job.to_args(), None).await
    }

    /// Enqueues up to 1000 jobs in one transaction; rows in input order.
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Job>, QueueError> {
        for job in jobs {
            job.validate()?;
        }
        let items: Vec<Value> = jobs.iter().map(NewJob::to_item).collect();
        self.call("enqueue_jobs", &json!({ "p_jobs": items }), None).await
    }

    /// Claims up to `req.batch` jobs (highest priority, then oldest) under a
    /// lease; an empty vector means nothing is due.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, QueueError> {
        let args = json!({
            "p_worker": req.worker,
            "p_queues": req.queues,
            "p_kinds": req.kinds,
            "p_batch": req.batch,
            "p_lease_seconds": req.lease_seconds,
        });
        self.call("claim_jobs", &args, None).await
    }

    /// Claims exactly `job_id` if it is due and of one of `queues`/`kinds`;
    /// an empty vector means it is not claimable (running, finished, not yet
    /// due, or of another kind).
    pub async fn claim_one(
        &self,
        job_id: &str,
        worker: &str,
        queues: &[&str],
        kinds: &[&str],
        lease_seconds: u32,
    ) -> Result<Vec<ClaimedJob>, QueueError> {
        let args = json!({
            "p_job": job_id,
            "p_worker": worker,
            "p_queues": queues,
            "p_kinds": kinds,
            "p_lease_seconds": lease_seconds,
        });
        self.call("claim_job", &args, Some(job_id)).await
    }

    /// Marks a held job completed. `QueueError::LeaseLost` means someone else
    /// owns the outcome now: drop the result.
    pub async fn complete(&self, lease: &Lease, result: Option<&Value>) -> Result<Job, QueueError> {
        let args = json!({
            "p_job": lease.job_id,
            "p_lease_token": lease.token,
            "p_result": result,
        });
        self.call_row("complete_job", &args, Some(&lease.job_id)).await
    }

    /// Completes a held job as `complete` does and claims the next jobs as
    /// `claim(req)` would, in one transaction (`complete_job_and_claim`): a
    /// worker's last completion of a batch fetches its next batch without a
    /// second round trip and commit. Both happen or neither does: after any
    /// error the lease still holds and `complete` can record the result
    /// alone. `QueueError::LeaseLost` as for `complete`: drop the result.
    /// An empty vector means the job is completed and nothing is due; jobs
    /// this completion unblocks are claimable from the next call on.
    pub async fn complete_and_claim(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        req: &ClaimRequest,
    ) -> Result<Vec<ClaimedJob>, QueueError> {
        let args = json!({
            "p_job": lease.job_id,
            "p_lease_token": lease.token,
            "p_result": result,
            "p_worker": req.worker,
            "p_queues": req.queues,
            "p_kinds": req.kinds,
            "p_batch": req.batch,
            "p_lease_seconds": req.lease_seconds,
        });
        self.call("complete_job_and_claim", &args, Some(&lease.job_id)).await
    }

    /// Completes several held jobs in one transaction (`complete_jobs`). A
    /// stale lease is not an error here: its entry comes back with
    /// `completed == false` and the job's current status.
    pub async fn complete_many(&self, completions: &[(Lease, Option<Value>)]) -> Result<Vec<Completion>, QueueError> {
        let items: Vec<Value> = completions
            .iter()
            .map(|(lease, result)| json!({ "job": lease.job_id, "lease_token": lease.token, "result": result }))
            .collect();
        self.call("complete_jobs", &json!({ "p_completions": items }), None)
            .await
    }

    /// Reports a failed attempt. Retryable failures with attempts left come
    /// back `Retrying` with `run_at` set by the backoff (never sooner than
    /// `retry_after_ms`); otherwise `Failed`, and dependents fail with it.
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
        retry_after_ms: Option<u32>,
    ) -> Result<Job, QueueError> {
        if retry_after_ms.is_some_and(|ms| ms > i32::MAX as u32) {
            return Err(QueueError::InvalidArgument("retry_after_ms is too large".into()));
        }
        let args = json!({
            "p_job": lease.job_id,
            "p_lease_token": lease.token,
            "p_error": error,
            "p_retryable": retryable,
            "p_retry_after_ms": retry_after_ms,
        });
        self.call_row("fail_job", &args, Some(&lease.job_id)).await
    }

    /// Renews a lease for `seconds` from now; returns the new expiry.
    pub async fn extend_lease(&self, lease: &Lease, seconds: u32) -> Result<String, QueueError> {
        let args = json!({
            "p_job": lease.job_id,
            "p_lease_token": lease.token,
            "p_lease_seconds": seconds,
        });
        self.call("extend_lease", &args, Some(&lease.job_id)).await
    }

    /// Records progress (0 to 100) of a held job.
    pub async fn report_progress(&self, lease: &Lease, progress: u8) -> Result<u8, QueueError> {
        if progress > 100 {
            return Err(QueueError::InvalidArgument("progress must be between 0 and 100".into()));
        }
        let args = json!({
            "p_job": lease.job_id,
            "p_lease_token": lease.token,
            "p_progress": progress,
        });
        self.call("report_progress", &args, Some(&lease.job_id)).await
    }

    /// Cancels a job that has not finished (a finished one comes back as it
    /// is). With a user's JWT, only that user's jobs.
    pub async fn cancel(&self, job_id: &str) -> Result<Job, QueueError> {
        check_uuid(job_id)?;
        self.call_row("cancel_job", &json!({ "p_job": job_id }), Some(job_id))
            .await
    }

    /// 1 = next to be claimed; 0 = being processed; None = finished, or still
    /// waiting for a dependency. With a user's JWT, only that user's jobs.
    pub async fn position(&self, job_id: &str) -> Result<Option<u32>, QueueError> {
        check_uuid(job_id)?;
        self.call("queue_position", &json!({ "p_job": job_id }), Some(job_id))
            .await
    }

    /// Counts and timings of one queue (timings over the last hour).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        self.call("queue_stats", &json!({ "p_queue": queue }), None).await
    }

    /// Requeues (or fails, when out of attempts) every job whose lease
    /// expired; returns how many. `claim` also does this for its queues.
    pub async fn requeue_expired(&self) -> Result<u32, QueueError> {
        self.call("requeue_expired_leases", &json!({}), None).await
    }

    /// Deletes up to `limit` finished jobs older than `retention_seconds`
    /// (with their events), and workers silent for as long. Call again while
    /// `jobs_deleted == limit`.
    pub async fn cleanup(&self, retention_seconds: u32, limit: u32) -> Result<CleanupReport, QueueError> {
        let args = json!({
            "p_retention_seconds": retention_seconds,
            "p_limit": limit,
        });
        self.call("cleanup_jobs", &args, None).await
    }

    /// Records that `worker` is alive (claims do this too); `queues: None`
    /// keeps the queues last reported.
    pub async fn heartbeat(
        &self,
        worker: &str,
        queues: Option<&[&str]>,
        status: WorkerStatus,
    ) -> Result<Worker, QueueError> {
        let args = json!({
            "p_worker": worker,
            "p_queues": queues,
            "p_status": status.as_str(),
        });
        self.call_row("heartbeat_worker", &args, None).await
    }
}

fn decode<T: DeserializeOwned>(function: &str, raw: Value) -> Result<T, QueueError> {
    serde_json::from_value(raw).map_err(|e| QueueError::Db(DbError::Decode(format!("{function}: {e}"))))
}

fn check_uuid(job_id: &str) -> Result<(), QueueError> {
    if is_uuid(job_id) {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!("job id {job_id:?} is not a uuid")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};

    const JOB: &str = "5b0c8f9e-7f1e-4c1e-9a44-0d7c1c1e2f3a";
    const TOKEN: &str = "0f9a6c0e-1d2b-4c3d-8e4f-5a6b7c8d9e0f";

    fn job_row(status: &str) -> String {
        json!({
            "id": JOB, "seq": 7, "queue": "chat", "kind": "chat_completion",
            "payload": {"message": "hi"}, "priority": 2, "status": status,
            "attempts": 1, "max_attempts": 5, "backoff_base_ms": 1000,
            "backoff_cap_ms": 600000, "run_at": "2026-11-22T00:00:00+00:00",
            "pending_dependencies": 0, "worker_id": "w1", "lease_token": TOKEN,
            "lease_expires_at": "2026-11-22T00:01:00+00:00", "progress": 0,
            "result": null, "last_error": null, "dedup_key": null, "owner_id": null,
            "created_at": "2026-11-22T00:00:00+00:00", "updated_at": "2026-11-22T00:00:00+00:00",
            "started_at": "2026-11-22T00:00:00+00:00", "completed_at": null
        })
        .to_string()
    }

    /// The lease the tests hold on JOB.
    fn held_lease() -> Lease {
        Lease {
            job_id: JOB.into(),
            token: TOKEN.into(),
        }
    }

    /// PostgREST refusing a stale lease, as complete_job's EQ409 reaches it.
    fn lease_lost_server() -> FakeServer {
        FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"EQ409","message":"lease lost: job is not processing under this lease token","details":"job status is retrying","hint":null}"#,
            )
        })
    }

    /// A Db against a fake PostgREST (also the worker tests').
    pub(crate) fn db(server: &FakeServer) -> Db<NativeClient> {
        Db::new(
            NativeClient,
            &format!("{}/rest/v1", server.base_url),
            "service-key",
            "service-key",
        )
    }

    fn body(server: &FakeServer, i: usize) -> (String, Value) {
        let req = &server.requests()[i];
        let path = req
            .url
            .split_once("/rest/v1")
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        (path, serde_json::from_slice(&req.body).unwrap())
    }

    #[test]
    fn enqueue_sends_every_named_argument() {
        let row = job_row("pending");
        let server = FakeServer::start(move |_, _| json_response(200, &row));
        let db = db(&server);
        let q = JobQueue::new(&db);
        let job = NewJob::new("chat", "chat_completion", json!({"message": "hi"}))
            .priority(2)
            .delay_ms(500)
            .max_attempts(3)
            .dedup_key("session-1")
            .depends_on(&[JOB])
            .owner(TOKEN)
            .backoff(Backoff {
                base_ms: 10,
                cap_ms: 100,
            });
        let got = block_on(q.enqueue(&job)).unwrap();
        assert_eq!(got.id, JOB);
        assert_eq!(got.status, JobStatus::Pending);
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/enqueue_job");
        assert_eq!(
            args,
            json!({
                "p_queue": "chat", "p_kind": "chat_completion", "p_payload": {"message": "hi"},
                "p_priority": 2, "p_delay_ms": 500, "p_max_attempts": 3,
                "p_dedup_key": "session-1", "p_depends_on": [JOB], "p_owner": TOKEN,
                "p_backoff_base_ms": 10, "p_backoff_cap_ms": 100
            })
        );
    }

    #[test]
    fn enqueue_many_sends_items_without_prefix() {
        let rows = format!("[{}]", job_row("pending"));
        let server = FakeServer::start(move |_, _| json_response(200, &rows));
        let db = db(&server);
        let jobs = block_on(JobQueue::new(&db).enqueue_many(&[NewJob::new("chat", "k", json!({}))])).unwrap();
        assert_eq!(jobs.len(), 1);
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/enqueue_jobs");
        assert_eq!(args["p_jobs"][0]["queue"], "chat");
        assert_eq!(args["p_jobs"][0]["backoff_cap_ms"], 600_000);
        assert!(args["p_jobs"][0].get("p_queue").is_none());
    }

    #[test]
    fn enqueue_rejects_a_malformed_dependency_before_any_request() {
        let server = FakeServer::start(|_, _| json_response(500, "{}"));
        let db = db(&server);
        let job = NewJob::new("chat", "k", json!({})).depends_on(&["not-a-uuid"]);
        let err = block_on(JobQueue::new(&db).enqueue(&job)).unwrap_err();
        assert!(matches!(err, QueueError::InvalidArgument(_)));
        assert!(server.requests().is_empty());
    }

    #[test]
    fn claim_decodes_leases_from_the_row_array() {
        let rows = format!("[{},{}]", job_row("processing"), job_row("processing"));
        let server = FakeServer::start(move |_, _| json_response(200, &rows));
        let db = db(&server);
        let req = ClaimRequest::new("w1", &["chat"])
            .batch(2)
            .lease_seconds(30)
            .kinds(&["chat_completion"]);
        let claimed = block_on(JobQueue::new(&db).claim(&req)).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            claimed[0].lease(),
            Lease {
                job_id: JOB.into(),
                token: TOKEN.into()
            }
        );
        assert!(claimed[0].has_attempts_left());
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/claim_jobs");
        assert_eq!(
            args,
            json!({"p_worker": "w1", "p_queues": ["chat"], "p_kinds": ["chat_completion"],
                   "p_batch": 2, "p_lease_seconds": 30})
        );
    }

    #[test]
    fn empty_claim_is_an_empty_vector() {
        let server = FakeServer::start(|_, _| json_response(200, "[]"));
        let db = db(&server);
        let claimed = block_on(JobQueue::new(&db).claim(&ClaimRequest::new("w1", &["chat"]))).unwrap();
        assert!(claimed.is_empty());
    }

    #[test]
    fn stale_lease_refusal_is_lease_lost_and_a_409() {
        let server = lease_lost_server();
        let db = db(&server);
        let lease = held_lease();
        let err = block_on(JobQueue::new(&db).complete(&lease, Some(&json!({"ok": true})))).unwrap_err();
        assert!(matches!(&err, QueueError::LeaseLost { job_id, .. } if job_id == JOB));
        let api = ApiError::from(err);
        assert_eq!((api.status(), api.code()), (409, "lease_lost"));
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/complete_job");
        assert_eq!(
            args,
            json!({"p_job": JOB, "p_lease_token": TOKEN, "p_result": {"ok": true}})
        );
    }

    #[test]
    fn complete_and_claim_sends_the_completion_and_the_claim_in_one_call() {
        let server = FakeServer::start(|_, _| json_response(200, "[]"));
        let db = db(&server);
        let lease = held_lease();
        let req = ClaimRequest::new("w1", &["chat", "maintenance"])
            .batch(3)
            .lease_seconds(45)
            .kinds(&["chat_completion"]);
        let claimed =
            block_on(JobQueue::new(&db).complete_and_claim(&lease, Some(&json!({"ok": true})), &req)).unwrap();
        assert!(claimed.is_empty());
        assert_eq!(server.requests().len(), 1);
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/complete_job_and_claim");
        assert_eq!(
            args,
            json!({"p_job": JOB, "p_lease_token": TOKEN, "p_result": {"ok": true},
                   "p_worker": "w1", "p_queues": ["chat", "maintenance"],
                   "p_kinds": ["chat_completion"], "p_batch": 3, "p_lease_seconds": 45})
        );
    }

    #[test]
    fn complete_and_claim_decodes_the_claimed_rows_to_leases() {
        let rows = format!("[{},{}]", job_row("processing"), job_row("processing"));
        let server = FakeServer::start(move |_, _| json_response(200, &rows));
        let db = db(&server);
        let lease = Lease {
            job_id: "11111111-2222-4333-8444-555555555555".into(),
            token: TOKEN.into(),
        };
        let req = ClaimRequest::new("w1", &["chat"]).batch(2);
        let claimed = block_on(JobQueue::new(&db).complete_and_claim(&lease, None, &req)).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            claimed[0].lease(),
            Lease {
                job_id: JOB.into(),
                token: TOKEN.into()
            }
        );
        assert_eq!(body(&server, 0).1["p_result"], Value::Null);
        assert_eq!(body(&server, 0).1["p_kinds"], Value::Null);
    }

    #[test]
    fn complete_and_claim_with_a_stale_lease_is_lease_lost() {
        let server = lease_lost_server();
        let db = db(&server);
        let lease = held_lease();
        let req = ClaimRequest::new("w1", &["chat"]);
        let err = block_on(JobQueue::new(&db).complete_and_claim(&lease, None, &req)).unwrap_err();
        assert!(
            matches!(&err, QueueError::LeaseLost { job_id, .. } if job_id == JOB),
            "{err:?}"
        );
        assert_eq!(body(&server, 0).0, "/rpc/complete_job_and_claim");
    }

    #[test]
    fn complete_many_reports_each_lease() {
        let other = "11111111-2222-4333-8444-555555555555";
        let body_text = format!(
            r#"[{{"job_id":"{JOB}","completed":true,"status":"completed"}},
                {{"job_id":"{other}","completed":false,"status":"cancelled"}}]"#
        );
        let server = FakeServer::start(move |_, _| json_response(200, &body_text));
        let db = db(&server);
        let leases = [
            (
                Lease {
                    job_id: JOB.into(),
                    token: TOKEN.into(),
                },
                Some(json!({"n": 1})),
            ),
            (
                Lease {
                    job_id: other.into(),
                    token: TOKEN.into(),
                },
                None,
            ),
        ];
        let got = block_on(JobQueue::new(&db).complete_many(&leases)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].completed);
        assert_eq!(got[1].status, Some(JobStatus::Cancelled));
        assert!(!got[1].completed);
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/complete_jobs");
        assert_eq!(
            args,
            json!({"p_completions": [
                {"job": JOB, "lease_token": TOKEN, "result": {"n": 1}},
                {"job": other, "lease_token": TOKEN, "result": null}
            ]})
        );
    }

    #[test]
    fn unknown_job_is_not_found_and_a_404() {
        let server = FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"EQ404","message":"job not found","details":null,"hint":null}"#,
            )
        });
        let db = db(&server);
        let err = block_on(JobQueue::new(&db).cancel(JOB)).unwrap_err();
        assert_eq!(err, QueueError::NotFound { job_id: JOB.into() });
        assert_eq!(ApiError::from(err).status(), 404);
    }

    #[test]
    fn permission_denied_is_forbidden() {
        let server = FakeServer::start(|_, _| {
            json_response(
                403,
                r#"{"code":"42501","message":"permission denied for function claim_jobs","details":null,"hint":null}"#,
            )
        });
        let db = db(&server);
        let err = block_on(JobQueue::new(&db).claim(&ClaimRequest::new("w", &["q"]))).unwrap_err();
        assert_eq!(err, QueueError::Forbidden);
        assert_eq!(ApiError::from(err).status(), 403);
    }

    #[test]
    fn sql_argument_errors_are_invalid_argument() {
        let server = FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"22023","message":"p_batch must be between 1 and 1000","details":null,"hint":null}"#,
            )
        });
        let db = db(&server);
        let err = block_on(JobQueue::new(&db).claim(&ClaimRequest::new("w", &["q"]).batch(5000))).unwrap_err();
        assert_eq!(
            err,
            QueueError::InvalidArgument("p_batch must be between 1 and 1000".into())
        );
        assert_eq!(ApiError::from(err).status(), 400);
    }

    #[test]
    fn other_database_errors_stay_internal() {
        let server = FakeServer::start(|_, _| {
            json_response(500, r#"{"code":"XX000","message":"boom","details":null,"hint":null}"#)
        });
        let db = db(&server);
        let err = block_on(JobQueue::new(&db).requeue_expired()).unwrap_err();
        assert!(matches!(err, QueueError::Db(_)));
        assert_eq!(ApiError::from(err).status(), 500);
    }

    #[test]
    fn fail_sends_retry_hint_and_decodes_retrying_row() {
        let row = job_row("retrying").replace(&format!("\"lease_token\":\"{TOKEN}\""), "\"lease_token\":null");
        let server = FakeServer::start(move |_, _| json_response(200, &row));
        let db = db(&server);
        let lease = held_lease();
        let job = block_on(JobQueue::new(&db).fail(&lease, "rate limited", true, Some(1500))).unwrap();
        assert_eq!(job.status, JobStatus::Retrying);
        assert_eq!(job.lease_token, None);
        let (path, args) = body(&server, 0);
        assert_eq!(path, "/rpc/fail_job");
        assert_eq!(
            args,
            json!({"p_job": JOB, "p_lease_token": TOKEN, "p_error": "rate limited",
                   "p_retryable": true, "p_retry_after_ms": 1500})
        );
    }

    #[test]
    fn position_is_none_for_a_null_answer() {
        let server = FakeServer::start(|req, _| {
            json_response(
                200,
                if req.url.contains("queue_position") {
                    "null"
                } else {
                    "3"
                },
            )
        });
        let db = db(&server);
        assert_eq!(block_on(JobQueue::new(&db).position(JOB)).unwrap(), None);
    }

    #[test]
    fn position_checks_the_id_locally() {
        let server = FakeServer::start(|_, _| json_response(200, "1"));
        let db = db(&server);
        let err = block_on(JobQueue::new(&db).position("42")).unwrap_err();
        assert!(matches!(err, QueueError::InvalidArgument(_)));
        assert!(server.requests().is_empty());
    }

    #[test]
    fn stats_decode_with_nulls_for_empty_windows() {
        let server = FakeServer::start(|_, _| {
            json_response(
                200,
                r#"{"queue":"chat","pending":3,"processing":1,"retrying":0,"completed":10,"failed":1,
                    "cancelled":0,"blocked":1,"delayed":0,"completed_in_window":0,
                    "avg_processing_ms":null,"p95_processing_ms":null,"oldest_pending_age_ms":12.5,
                    "active_workers":2,"window_seconds":3600}"#,
            )
        });
        let db = db(&server);
        let stats = block_on(JobQueue::new(&db).stats("chat")).unwrap();
        assert_eq!(stats.pending, 3);
        assert_eq!(stats.avg_processing_ms, None);
        assert_eq!(stats.oldest_pending_age_ms, Some(12.5));
    }

    #[test]
    fn cleanup_and_heartbeat_send_their_arguments() {
        let server = FakeServer::start(|req, _| {
            if req.url.contains("cleanup_jobs") {
                json_response(200, r#"{"jobs_deleted":5,"workers_deleted":1}"#)
            } else {
                json_response(
                    200,
                    r#"{"id":"w1","queues":["chat"],"status":"idle","metadata":{},"jobs_done":4,
                        "jobs_failed":0,"started_at":"2026-11-22T00:00:00+00:00",
                        "last_heartbeat_at":"2026-11-22T00:00:01+00:00"}"#,
                )
            }
        });
        let db = db(&server);
        let q = JobQueue::new(&db);
        let report = block_on(q.cleanup(86_400, 500)).unwrap();
        assert_eq!(
            report,
            CleanupReport {
                jobs_deleted: 5,
                workers_deleted: 1
            }
        );
        let worker = block_on(q.heartbeat("w1", Some(&["chat"]), WorkerStatus::Idle)).unwrap();
        assert_eq!(worker.status, WorkerStatus::Idle);
        assert_eq!(
            body(&server, 0).1,
            json!({"p_retention_seconds": 86_400, "p_limit": 500})
        );
        assert_eq!(
            body(&server, 1).1,
            json!({"p_worker": "w1", "p_queues": ["chat"], "p_status": "idle"})
        );
    }

    #[test]
    fn report_progress_refuses_more_than_100_locally() {
        let server = FakeServer::start(|_, _| json_response(200, "101"));
        let db = db(&server);
        let lease = held_lease();
        let err = block_on(JobQueue::new(&db).report_progress(&lease, 101)).unwrap_err();
        assert!(matches!(err, QueueError::InvalidArgument(_)));
        assert!(server.requests().is_empty());
    }

    /// Against the running local stack (`scripts/serve`): needs SUPABASE_URL and
    /// SUPABASE_SERVICE_ROLE_KEY. Run with `cargo test -p edgeworks-db -- --ignored`.
    #[test]
    #[ignore = "needs the local stack: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY"]
    fn live_enqueue_claim_complete_round_trip() {
        let url = std::env::var("SUPABASE_URL").expect("SUPABASE_URL");
        let key = std::env::var("SUPABASE_SERVICE_ROLE_KEY").expect("SUPABASE_SERVICE_ROLE_KEY");
        let db = Db::new(
            NativeClient,
            &format!("{}/rest/v1", url.trim_end_matches('/')),
            &key,
            &key,
        );
        let q = JobQueue::new(&db);
        let queue = format!("rust_live_{}", std::process::id());
        let job = block_on(q.enqueue(&NewJob::new(&queue, "probe", json!({"n": 1})))).unwrap();
        assert_eq!(block_on(q.position(&job.id)).unwrap(), Some(1));
        let claimed = block_on(q.claim(&ClaimRequest::new("rust-live", &[&queue]))).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, job.id);
        let done = block_on(q.complete(&claimed[0].lease(), Some(&json!({"ok": true})))).unwrap();
        assert_eq!(done.status, JobStatus::Completed);
        let again = block_on(q.complete(&claimed[0].lease(), None)).unwrap_err();
        assert!(matches!(again, QueueError::LeaseLost { .. }), "{again:?}");
        let stats = block_on(q.stats(&queue)).unwrap();
        assert_eq!(stats.completed, 1);
    }
}
