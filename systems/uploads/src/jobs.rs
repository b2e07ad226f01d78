//! The upload job kinds the queue's worker runs: `upload_parse` and
//! `upload_embed`, each enqueued (in SQL) when the step before it finished.
//!
//! A step goes to its external service when the owner's feature flag says so
//! (`llama_parse_integration`, `external_embedding`): the job then only marks
//! the step as waiting, and that service's signed webhook finishes it.
//! Otherwise the built-in step runs and finishes it here. The built-in steps
//! record that the step ran; they extract no text and compute no vectors
//! (that is the external services' work).

use edgeworks_core::http_client::HttpClient;
use edgeworks_db::{Db, DbError};
use edgeworks_queue::{ClaimedJob, JobContext, JobHandler, JobOutcome, RetryPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::webhook::{EXTERNAL_EMBEDDING_FLAG, LLAMA_PARSE_FLAG};
use crate::QUEUE;

/// A job's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct StepInput {
    /// The document.
    pub document_id: String,
    /// Its owner (for the feature flags).
    pub user_id: String,
}

/// Parse a verified document.
pub struct UploadParse;
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

async fn run_step<C: HttpClient>(
    step: &str,
    flag: &str,
    service: &str,
    input: StepInput,
    cx: &JobContext<'_, C>,
) -> JobOutcome {
    let external = match flag_on(cx.db, flag, &input.user_id).await {
        Ok(on) => on,
        Err(e) => return retry_or_fail(e),
    };
    if external {
        // The service's webhook finishes the step; the wait shows as progress 0 of the step.
        return JobOutcome::Complete(Some(json!({ "awaiting_webhook": service, "step": step })));
    }
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

impl<C: HttpClient> JobHandler<C> for UploadParse {
    const QUEUE: &'static str = QUEUE;
    const KIND: &'static str = "upload_parse";
    type Input = StepInput;

    async fn run(&self, _job: &ClaimedJob, input: StepInput, cx: &JobContext<'_, C>) -> JobOutcome {
        run_step("parse", LLAMA_PARSE_FLAG, "llamaparse", input, cx).await
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
        run_step("embed", EXTERNAL_EMBEDDING_FLAG, "embedding", input, cx).await
    }

    async fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) {
        record_failure("embed", job, reason, cx).await;
    }
}

/// Every upload job kind, for the worker's accepted `job_types`.
pub const JOB_KINDS: &[&str] = &["upload_parse", "upload_embed"];
