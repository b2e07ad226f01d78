//! The upload job kinds the queue's worker runs: `upload_parse` and
//! `upload_embed`, each enqueued (in SQL) when the step before it finished.
//!
//! A step goes to its external service when the owner's feature flag says so
//! (`llama_parse_integration`, `external_embedding`), and that service's
//! signed webhook finishes it. For parsing with LlamaParse configured
//! (`UPLOAD_LLAMA_PARSE_API_KEY`), the job submits the document by a
//! presigned download URL and records LlamaParse's job id, which the webhook
//! must name; the embedding service has no client here, so its step waits
//! for its webhook. Otherwise the built-in step runs and finishes it here.
//! The built-in steps record that the step ran; they extract no text and
//! compute no vectors (that is the external services' work).

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::{Db, DbError};
use edgeworks_queue::{ClaimedJob, JobContext, JobHandler, JobOutcome, RetryPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;
use edgeworks_storage::{ObjectKey, S3Client, S3Config, SigningTime};

use crate::llamaparse::{LlamaParse, SubmitError};
use crate::webhook::{EXTERNAL_EMBEDDING_FLAG, LLAMA_PARSE_FLAG};
use crate::QUEUE;

/// What the upload jobs need from the environment, parsed once per isolate.
#[derive(Debug, Clone, Default)]
pub struct UploadJobs {
    /// LlamaParse, when a key is configured.
    pub llama: Option<LlamaParse>,
    /// Storage, to give LlamaParse a download URL.
    pub s3: Option<S3Config>,
    /// Where LlamaParse reports: `{SUPABASE_URL}/functions/v1/processing-webhook`.
    pub webhook_url: Option<String>,
}

impl UploadJobs {
    /// Reads the settings; a broken storage configuration leaves LlamaParse unused.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> UploadJobs {
        UploadJobs {
            llama: LlamaParse::from_lookup(&lookup),
            s3: S3Config::from_lookup(&lookup).ok(),
            webhook_url: lookup("SUPABASE_URL")
                .map(|u| format!("{}/functions/v1/processing-webhook", u.trim_end_matches('/'))),
        }
    }

    /// The parse job handler, for a worker run that started at `now_secs`.
    pub fn parse_handler(&self, now_secs: i64) -> UploadParse<'_> {
        UploadParse { setup: self, now_secs }
    }
}

impl FromEnv for UploadJobs {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(UploadJobs::from_lookup(env.lookup()))
    }
}

/// A job's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct StepInput {
    /// The document.
    pub document_id: String,
    /// Its owner (for the feature flags).
    pub user_id: String,
}

/// Parse a verified document.
pub struct UploadParse<'a> {
    /// Settings.
    pub setup: &'a UploadJobs,
    /// When this worker run started (for signing the download URL).
    pub now_secs: i64,
}
/// Embed a parsed document.
pub struct UploadEmbed;

async fn flag_on<C: HttpClient>(db: &Db<C>, name: &str, user: &str) -> Result<bool, DbError> {
    let rows: Vec<edgeworks_uploads_protocol::flags::FeatureFlag> = db
        .execute(
            db.from("feature_flags")
                .select("name,is_enabled,rollout_percentage,target_user_ids")
                .eq("name", name),
        )
        .await?;
    Ok(rows.first().is_some_and(|f| f.is_on_for(user)))
}

fn retry_or_fail(e: DbError) -> JobOutcome {
    match e {
        DbError::Transport(_) | DbError::Api { status: 500..=599, .. } => JobOutcome::Retry {
            reason: format!("database: {e}"),
            retry_after_ms: None,
        },
        other => JobOutcome::Fail {
            reason: format!("database refused: {other}"),
        },
    }
}

/// Finishes `step` with the built-in implementation.
async fn finish_built_in<C: HttpClient>(step: &str, input: &StepInput, cx: &JobContext<'_, C>) -> JobOutcome {
    let finished = cx
        .db
        .rpc::<Value>(
            "upload_step_finished",
            &json!({ "p_document": input.document_id, "p_step": step, "p_source": "internal" }),
        )
        .await;
    match finished {
        Ok(r) => JobOutcome::Complete(Some(json!({ "step": step, "next_job_id": r["next_job_id"] }))),
        // Finished or moved on already (a webhook, a duplicate job): nothing to do.
        Err(DbError::Api { code: Some(c), .. }) if c == "EU409" || c == "EU404" => {
            JobOutcome::Complete(Some(json!({ "step": step, "skipped": c })))
        }
        Err(e) => retry_or_fail(e),
    }
}

impl UploadParse<'_> {
    /// Submits the document to LlamaParse and records the job id.
    async fn submit<C: HttpClient>(&self, llama: &LlamaParse, input: &StepInput, cx: &JobContext<'_, C>) -> JobOutcome {
        let (Some(config), Some(webhook_url)) = (&self.setup.s3, &self.setup.webhook_url) else {
            return JobOutcome::Fail {
                reason: "LlamaParse is configured but storage or SUPABASE_URL is not".into(),
            };
        };
        let doc = match cx
            .db
            .rpc::<Value>("upload_document_by_id", &json!({ "p_document": input.document_id }))
            .await
        {
            Ok(d) => d,
            Err(e) => return retry_or_fail(e),
        };
        let (Some(bucket), Some(key)) = (
            doc["storage_bucket"].as_str(),
            doc["storage_key"].as_str().and_then(|k| ObjectKey::parse(k).ok()),
        ) else {
            return JobOutcome::Fail {
                reason: "the document has no readable storage key".into(),
            };
        };
        let Some(at) = SigningTime::from_unix_secs(self.now_secs) else {
            return JobOutcome::Fail {
                reason: "no signing time".into(),
            };
        };
        // LlamaParse fetches the document itself: the bytes never pass through here.
        let s3 = S3Client::new(config.clone(), cx.http);
        let url = match s3.presign_get(bucket, &key, 3600, at) {
            Ok(u) => u.url,
            Err(e) => {
                return JobOutcome::Fail {
                    reason: format!("presigning the download failed: {e}"),
                }
            }
        };
        match llama.submit(cx.http, &url, webhook_url).await {
            Ok(job_id) => {
                let recorded = cx
                    .db
                    .rpc::<Value>(
                        "upload_parse_submitted",
                        &json!({ "p_document": input.document_id, "p_job_id": job_id }),
                    )
                    .await;
                match recorded {
                    Ok(_) => JobOutcome::Complete(Some(
                        json!({ "awaiting_webhook": "llamaparse", "llama_parse_job_id": job_id }),
                    )),
                    Err(e) => retry_or_fail(e),
                }
            }
            Err(SubmitError::Transient { reason, retry_after_ms }) => JobOutcome::Retry { reason, retry_after_ms },
            Err(SubmitError::Refused(reason)) => JobOutcome::Fail { reason },
        }
    }
}

async fn record_failure<C: HttpClient>(step: &str, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) {
    let Some(doc) = job.payload.get("document_id").and_then(Value::as_str) else {
        return;
    };
    let _ = cx
        .db
        .rpc::<Value>(
            "upload_step_failed",
            &json!({ "p_document": doc, "p_step": step, "p_error": reason, "p_retryable": false }),
        )
        .await;
}

impl<C: HttpClient> JobHandler<C> for UploadParse<'_> {
    const QUEUE: &'static str = QUEUE;
    const KIND: &'static str = "upload_parse";
    type Input = StepInput;

    async fn run(&self, _job: &ClaimedJob, input: StepInput, cx: &JobContext<'_, C>) -> JobOutcome {
        match flag_on(cx.db, LLAMA_PARSE_FLAG, &input.user_id).await {
            Err(e) => retry_or_fail(e),
            Ok(false) => finish_built_in("parse", &input, cx).await,
            Ok(true) => match &self.setup.llama {
                Some(llama) => self.submit(llama, &input, cx).await,
                // No client configured: whatever relays LlamaParse's result sends the webhook.
                None => JobOutcome::Complete(Some(json!({ "awaiting_webhook": "llamaparse", "step": "parse" }))),
            },
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    }

    async fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) {
        record_failure("parse", job, reason, cx).await;
    }
}

impl<C: HttpClient> JobHandler<C> for UploadEmbed {
    const QUEUE: &'static str = QUEUE;
    const KIND: &'static str = "upload_embed";
    type Input = StepInput;

    async fn run(&self, _job: &ClaimedJob, input: StepInput, cx: &JobContext<'_, C>) -> JobOutcome {
        match flag_on(cx.db, EXTERNAL_EMBEDDING_FLAG, &input.user_id).await {
            Err(e) => retry_or_fail(e),
            Ok(false) => finish_built_in("embed", &input, cx).await,
            // The embedding service's webhook finishes the step.
            Ok(true) => JobOutcome::Complete(Some(json!({ "awaiting_webhook": "embedding", "step": "embed" }))),
        }
    }

    async fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) {
        record_failure("embed", job, reason, cx).await;
    }
}

/// Every upload job kind, for the worker's accepted `job_types`.
pub const JOB_KINDS: &[&str] = &["upload_parse", "upload_embed"];
