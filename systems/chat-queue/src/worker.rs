//! The worker side: claim chat jobs, build each prompt (field system prompt,
//! the session's history within a token budget, the question), call the
//! provider, and either store the answer and complete the job in one SQL
//! call, or hand the failure back to the queue: retryable provider errors
//! (429, 5xx, timeouts) are retried with backoff honouring `Retry-After`,
//! the rest fail at once with a clear reason.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::{Db, DbError};
use edgeworks_llm::chat::ChatProvider;
use edgeworks_llm::gemini::GeminiClient;
use edgeworks_llm::prompt::{build_conversation, fill_template, Conversation, Message, Role};
use edgeworks_queue::{ClaimRequest, ClaimedJob, JobQueue, QueueError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::settings::Settings;
use crate::{KIND, QUEUE};

/// What happened to one claimed job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed {
        message_id: String,
    },
    /// Handed back for another attempt after its backoff.
    Retrying {
        error: String,
    },
    Failed {
        error: String,
    },
    /// Our lease ended (expired, cancelled): another worker owns the job now.
    LeaseLost,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    pub claimed: u32,
    pub processed: u32,
    pub failed: u32,
    /// Diagnostic lines for the function's log (no secrets: provider errors
    /// never carry keys).
    pub events: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct FieldRow {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    history_token_budget: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct HistoryRow {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct QuestionRow {
    content: String,
}

#[derive(Debug, Deserialize)]
struct JobContext {
    field: Option<FieldRow>,
    question: QuestionRow,
    #[serde(default)]
    history: Vec<HistoryRow>,
}

pub struct Worker<'a, C: HttpClient> {
    pub db: &'a Db<C>,
    pub http: &'a C,
    pub provider: &'a ChatProvider,
    pub worker_id: &'a str,
    pub settings: &'a Settings,
    /// Today's date (YYYY-MM-DD) for the `{date}` placeholder.
    pub today: &'a str,
}

impl<C: HttpClient> Worker<'_, C> {
    fn queue(&self) -> JobQueue<'_, C> {
        JobQueue::new(self.db)
    }

    /// Claims up to `batch` chat jobs, or exactly `job_id` when given.
    pub async fn claim(&self, batch: u32, job_id: Option<&str>) -> Result<Vec<ClaimedJob>, ApiError> {
        match job_id {
            Some(id) => {
                // Only a chat job of this queue: any other job named here is left
                // alone and the caller answers 409.
                let args = json!({
                    "p_job": id,
                    "p_worker": self.worker_id,
                    "p_queues": [QUEUE],
                    "p_kinds": [KIND],
                    "p_lease_seconds": self.settings.lease_seconds,
                });
                self.db.rpc("claim_job", &args).await.map_err(ApiError::from)
            }
            None => {
                let req = ClaimRequest::new(self.worker_id, &[QUEUE])
                    .kinds(&[KIND])
                    .batch(batch)
                    .lease_seconds(self.settings.lease_seconds);
                self.queue().claim(&req).await.map_err(queue_error)
            }
        }
    }

    /// Claims and processes one batch; one job's failure never stops the rest.
    /// The batch's jobs run concurrently: each mostly waits on the provider,
    /// so a batch takes about as long as its slowest job, not their sum.
    pub async fn run_batch(&self, batch: u32, job_id: Option<&str>) -> Result<BatchReport, ApiError> {
        let jobs = self.claim(batch, job_id).await?;
        let outcomes = futures_util::future::join_all(jobs.iter().map(|job| self.process(job))).await;
        let mut report = BatchReport {
            claimed: jobs.len() as u32,
            ..BatchReport::default()
        };
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            match outcome {
                JobOutcome::Completed { .. } => report.processed += 1,
                JobOutcome::Failed { .. } => report.failed += 1,
                JobOutcome::Retrying { .. } | JobOutcome::LeaseLost => {}
            }
            report
                .events
                .push(json!({ "job_id": job.id, "attempt": job.attempts, "outcome": describe(outcome) }));
        }
        Ok(report)
    }

    /// Whether a chat job is waiting and due now.
    pub async fn next_job_available(&self) -> Result<bool, ApiError> {
        let stats = self.queue().stats(QUEUE).await.map_err(queue_error)?;
        Ok(stats
            .pending
            .saturating_sub(stats.blocked)
            .saturating_sub(stats.delayed)
            > 0
            || (stats.retrying > 0 && stats.delayed == 0))
    }

    pub async fn process(&self, job: &ClaimedJob) -> JobOutcome {
        let lease = job.lease();
        let ctx_args = json!({ "p_job": job.id, "p_lease_token": lease.token });
        let context: JobContext = match self.db.rpc("chat_job_context", &ctx_args).await {
            Ok(c) => c,
            Err(e) if e.code() == Some("EQ409") => return JobOutcome::LeaseLost,
            Err(e) => {
                return self
                    .give_back(
                        job,
                        &format!("could not load the job's context: {}", db_reason(&e)),
                        true,
                        None,
                    )
                    .await
            }
        };
        let conversation = match self.conversation(&context) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .give_back(job, &format!("{}: {}", e.code(), e.message()), false, None)
                    .await
            }
        };
        let provider = self.provider_for(context.field.as_ref());
        match provider.complete(self.http, &conversation).await {
            Ok(done) => {
                let args = json!({
                    "p_job": job.id,
                    "p_lease_token": lease.token,
                    "p_content": done.text,
                    "p_model": done.model,
                    "p_provider": done.provider,
                    "p_prompt_tokens": done.usage.prompt_tokens,
                    "p_completion_tokens": done.usage.completion_tokens,
                    "p_total_tokens": done.usage.total_tokens,
                    "p_finish_reason": done.finish_reason.as_str(),
                });
                match self.db.rpc::<Value>("chat_complete", &args).await {
                    Ok(v) => JobOutcome::Completed {
                        message_id: v
                            .get("message_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    },
                    Err(e) if e.code() == Some("EQ409") => JobOutcome::LeaseLost,
                    Err(e) => {
                        self.give_back(
                            job,
                            &format!("could not store the answer: {}", db_reason(&e)),
                            true,
                            None,
                        )
                        .await
                    }
                }
            }
            Err(e) => {
                let reason = format!("{}: {}", e.code(), e);
                let retry_after = e.retry_after_ms().map(|ms| ms.min(i32::MAX as u64) as u32);
                self.give_back(job, &reason, e.is_retryable(), retry_after).await
            }
        }
    }

    fn conversation(&self, context: &JobContext) -> Result<Conversation, ApiError> {
        let field_name = context
            .field
            .as_ref()
            .and_then(|f| f.name.as_deref())
            .unwrap_or("General");
        let template = context
            .field
            .as_ref()
            .and_then(|f| f.system_prompt.as_deref())
            .unwrap_or("");
        let system = fill_template(template, &[("field_name", field_name), ("date", self.today)])?;
        let history: Vec<Message> = context
            .history
            .iter()
            .filter_map(|h| {
                Role::parse(&h.role).map(|role| Message {
                    role,
                    content: h.content.clone(),
                })
            })
            .collect();
        let budget = context
            .field
            .as_ref()
            .and_then(|f| f.history_token_budget)
            .filter(|b| *b > 0)
            .unwrap_or(self.settings.prompt_budget_tokens);
        Ok(build_conversation(
            &system,
            &history,
            &context.question.content,
            budget,
        )?)
    }

    /// A field's model settings override the deployment's.
    fn provider_for(&self, field: Option<&FieldRow>) -> ChatProvider {
        match (self.provider, field) {
            (ChatProvider::Gemini(g), Some(f)) => {
                let mut cfg = g.config().clone();
                if let Some(m) = f.model.as_deref().filter(|m| !m.trim().is_empty()) {
                    cfg.model = m.trim().to_string();
                }
                if let Some(t) = f.temperature {
                    cfg.temperature = t;
                }
                if let Some(n) = f.max_output_tokens {
                    cfg.max_output_tokens = n;
                }
                if let Some(p) = f.top_p {
                    cfg.top_p = p;
                }
                if let Some(k) = f.top_k {
                    cfg.top_k = k;
                }
                ChatProvider::Gemini(GeminiClient::new(cfg))
            }
            (p, _) => p.clone(),
        }
    }

    /// Returns the job to the queue: retried after backoff when `retryable`
    /// and attempts remain, failed otherwise; the failure is logged to
    /// error_logs when final.
    async fn give_back(
        &self,
        job: &ClaimedJob,
        reason: &str,
        retryable: bool,
        retry_after_ms: Option<u32>,
    ) -> JobOutcome {
        let lease = job.lease();
        match self.queue().fail(&lease, reason, retryable, retry_after_ms).await {
            Ok(after) => {
                if after.status.as_str() == "retrying" {
                    JobOutcome::Retrying {
                        error: reason.to_string(),
                    }
                } else {
                    let _ = self
                        .db
                        .rpc::<Value>(
                            "chat_log_error",
                            &json!({
                                "p_function": "chat-worker",
                                "p_code": if retryable { "attempts_exhausted" } else { "job_failed" },
                                "p_message": reason,
                                "p_job": job.id,
                                "p_details": { "attempts": after.attempts, "worker_id": self.worker_id },
                            }),
                        )
                        .await;
                    JobOutcome::Failed {
                        error: reason.to_string(),
                    }
                }
            }
            Err(QueueError::LeaseLost { .. }) => JobOutcome::LeaseLost,
            // The lease will expire and the job will be requeued: nothing is lost.
            Err(e) => JobOutcome::Retrying {
                error: format!("{reason}; the failure could not be recorded ({e}); the lease will expire"),
            },
        }
    }
}

fn describe(o: &JobOutcome) -> Value {
    match o {
        JobOutcome::Completed { message_id } => json!({ "completed": message_id }),
        JobOutcome::Retrying { error } => json!({ "retrying": error }),
        JobOutcome::Failed { error } => json!({ "failed": error }),
        JobOutcome::LeaseLost => json!("lease_lost"),
    }
}

fn db_reason(e: &DbError) -> String {
    match e {
        DbError::Transport(t) => format!("database unreachable ({t})"),
        other => other.to_string(),
    }
}

fn queue_error(e: QueueError) -> ApiError {
    match e {
        QueueError::Forbidden => ApiError::forbidden("forbidden", "not allowed to use the queue"),
        QueueError::InvalidArgument(m) => ApiError::new(422, "invalid_argument", m),
        QueueError::Db(d) => ApiError::from(d),
        other => ApiError::new(409, "queue_conflict", other.to_string()),
    }
}
