//! The `pipeline_step` job kind: one step of one run per attempt.
//!
//! `pipeline_step_begin` picks the run's first step without a succeeded
//! history row (so a retried or resumed run continues after its last
//! finished step), the step runs, and `pipeline_step_finish` stores its
//! result, completes the job and enqueues the next step in one
//! transaction. A step that fails for good stops the run with its reason
//! (`pipeline_step_failed`, from `on_final_failure`).
//!
//! Steps:
//! * `generate-content` `{prompt, system?}`: text from the chat provider
//!   (Gemini with a key, the labelled offline provider without).
//! * `post-to-platform` `{platform, text?}`: posts the text (default: the
//!   last generated content) with the user's connection. The post carries
//!   the idempotency key sha256(run, step, platform) in `posting_queue`: a
//!   retry finds its earlier post and reuses it; an attempt whose outcome
//!   is unknown (no answer from the platform) is never repeated.
//! * `schedule-pipeline` `{cron_expression, timezone?}`: makes sure the
//!   pipeline has that schedule (idempotent) and reports its next runs;
//!   without config, reports the pipeline's existing schedules.

use edgeworks_core::time::format_rfc3339_ms;
use edgeworks_core::{ApiError, Clock};
use edgeworks_db::Db;
use edgeworks_llm::chat::ChatProvider;
use edgeworks_llm::prompt::build_conversation;
use edgeworks_queue::{Backoff, ClaimedJob, JobContext, JobHandler, JobOutcome, RetryPolicy, SQLSTATE_LEASE_LOST};
use edgeworks_runtime::{Ctx, HostHttp};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cron::Schedule;
use crate::oauth::{self, Platform};
use crate::settings::{OAuthSettings, PipelineSettings};
use crate::tokens;

/// The queue pipeline jobs travel on.
pub const QUEUE: &str = "pipelines";
/// The step job kind.
pub const KIND: &str = "pipeline_step";

/// A step job's payload.
#[derive(Debug, Deserialize)]
pub struct StepPayload {
    /// The run.
    pub run_id: String,
}

#[derive(Debug, Deserialize)]
struct StepDef {
    id: String,
    position: i64,
    step_type: String,
    #[serde(default)]
    config: Value,
}

#[derive(Debug, Deserialize)]
struct Begun {
    action: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    pipeline: Value,
    #[serde(default)]
    step: Option<StepDef>,
    #[serde(default)]
    previous: Vec<Value>,
}

/// How a step attempt ended, before it becomes a job outcome.
enum StepError {
    /// Try again later (after backoff), while attempts remain.
    Retry(String),
    /// Cannot succeed: stop the run.
    Fail(String),
}

/// The `pipeline_step` job kind.
pub struct PipelineStep<'a> {
    /// Effects (clock, HTTP, sleep, logs).
    pub ctx: Ctx,
    /// Step retry settings.
    pub settings: &'a PipelineSettings,
    /// For posting.
    pub oauth: &'a OAuthSettings,
    /// For generating.
    pub provider: &'a ChatProvider,
}

/// The idempotency key of a post: one per (run, step, platform).
pub fn post_key(run: &str, step: &str, platform: &str) -> String {
    hex::encode(Sha256::digest(format!("{run}:{step}:{platform}").as_bytes()))
}

impl JobHandler<HostHttp> for PipelineStep<'_> {
    const QUEUE: &'static str = QUEUE;
    const KIND: &'static str = KIND;
    type Input = StepPayload;

    async fn run(&self, job: &ClaimedJob, input: StepPayload, cx: &JobContext<'_, HostHttp>) -> JobOutcome {
        let args = json!({ "p_job": job.id, "p_lease_token": job.lease_token, "p_run": input.run_id });
        let begun: Begun = match cx.db.rpc("pipeline_step_begin", &args).await {
            Ok(b) => b,
            Err(e) if e.code() == Some(SQLSTATE_LEASE_LOST) => return JobOutcome::LeaseLost,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: format!("could not begin the step: {e}"),
                    retry_after_ms: None,
                }
            }
        };
        let step = match (begun.action.as_str(), begun.step) {
            ("run", Some(step)) => step,
            ("done", _) => return JobOutcome::Complete(Some(json!({ "run": "succeeded" }))),
            (_, _) => return JobOutcome::Complete(Some(json!({ "stopped": begun.reason }))),
        };
        let user = begun.user_id.unwrap_or_default();
        let outcome = match step.step_type.as_str() {
            "generate-content" => self.generate(&step, &begun.pipeline).await,
            "post-to-platform" => {
                self.post(cx.db, &input.run_id, &user, &begun.pipeline, &step, &begun.previous)
                    .await
            }
            "schedule-pipeline" => self.schedule(cx.db, &user, &begun.pipeline, &step).await,
            other => Err(StepError::Fail(format!("unknown step type {other}"))),
        };
        self.ctx.log().info(
            "pipeline step attempted",
            json!({ "run_id": input.run_id, "position": step.position, "step_type": step.step_type,
                    "attempt": job.attempts, "ok": outcome.is_ok() }),
        );
        match outcome {
            Ok(result) => {
                let args = json!({ "p_job": job.id, "p_lease_token": job.lease_token, "p_run": input.run_id,
                                   "p_step": step.id, "p_result": result });
                match cx.db.rpc::<Value>("pipeline_step_finish", &args).await {
                    Ok(_) => JobOutcome::Completed,
                    Err(e) if e.code() == Some(SQLSTATE_LEASE_LOST) => JobOutcome::LeaseLost,
                    Err(e) => JobOutcome::Retry {
                        reason: format!("could not record the step: {e}"),
                        retry_after_ms: None,
                    },
                }
            }
            Err(StepError::Retry(reason)) => JobOutcome::Retry {
                reason,
                retry_after_ms: None,
            },
            Err(StepError::Fail(reason)) => JobOutcome::Fail { reason },
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.settings.step_max_attempts,
            backoff: Backoff {
                base_ms: u64::from(self.settings.retry_base_ms),
                ..Backoff::DEFAULT
            },
        }
    }

    async fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, HostHttp>) {
        let Some(run) = job.payload.get("run_id").and_then(Value::as_str) else {
            return;
        };
        let args = json!({ "p_run": run, "p_reason": reason,
                           "p_retry_base_ms": self.settings.schedule_retry_base_ms });
        if let Err(e) = cx.db.rpc::<Value>("pipeline_step_failed", &args).await {
            self.ctx.log().error(
                "could not record a failed step",
                json!({ "run_id": run, "error": e.to_string() }),
            );
        }
    }
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl PipelineStep<'_> {
    async fn generate(&self, step: &StepDef, pipeline: &Value) -> Result<Value, StepError> {
        let prompt = text_of(&step.config, "prompt")
            .or_else(|| {
                pipeline
                    .pointer("/config/prompt")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .ok_or_else(|| StepError::Fail("generate-content needs config.prompt".into()))?;
        let system = text_of(&step.config, "system").unwrap_or_default();
        let conversation = build_conversation(&system, &[], &prompt, 8000)
            .map_err(|e| StepError::Fail(format!("the prompt cannot be used: {e}")))?;
        match self.provider.complete(&self.ctx.http(), &conversation).await {
            Ok(done) => Ok(json!({ "content": done.text, "model": done.model, "provider": done.provider })),
            Err(e) if e.is_retryable() => Err(StepError::Retry(format!("{}: {e}", e.code()))),
            Err(e) => Err(StepError::Fail(format!("{}: {e}", e.code()))),
        }
    }

    async fn post(
        &self,
        db: &Db<HostHttp>,
        run: &str,
        user: &str,
        pipeline: &Value,
        step: &StepDef,
        previous: &[Value],
    ) -> Result<Value, StepError> {
        let platform_name = text_of(&step.config, "platform").unwrap_or_default();
        let platform = Platform::parse(&platform_name)
            .ok_or_else(|| StepError::Fail(format!("post-to-platform: unknown platform {platform_name:?}")))?;
        let text = text_of(&step.config, "text")
            .or_else(|| {
                previous
                    .iter()
                    .rev()
                    .find(|p| p["step_type"] == "generate-content")
                    .and_then(|p| text_of(&p["result"], "content"))
            })
            .ok_or_else(|| {
                StepError::Fail("post-to-platform has no text: set config.text or generate content first".into())
            })?;
        let key = post_key(run, &step.id, platform.as_str());
        let reserved: Value = db
            .rpc(
                "pipeline_post_reserve",
                &json!({ "p_user": user, "p_run": run, "p_step": step.id, "p_pipeline": pipeline["id"],
                         "p_platform": platform.as_str(), "p_key": key, "p_content": { "text": text } }),
            )
            .await
            .map_err(|e| StepError::Retry(format!("could not reserve the post: {e}")))?;
        let post = &reserved["post"];
        if reserved["go"] != json!(true) {
            return if post["status"] == "posted" {
                Ok(json!({ "platform": platform.as_str(), "post_id": post["external_post_id"], "reused": true }))
            } else {
                Err(StepError::Fail(format!(
                    "an earlier attempt to post to {} may have succeeded; not posting again (posting_queue {})",
                    platform.as_str(),
                    post["id"]
                )))
            };
        }
        let record = |status: &'static str, external: Option<String>, error: Option<String>| {
            let key = key.clone();
            async move {
                db.rpc::<Value>(
                    "pipeline_post_record",
                    &json!({ "p_key": key, "p_status": status, "p_external_id": external, "p_error": error }),
                )
                .await
            }
        };
        let token = match tokens::access_token(db, &self.ctx, self.oauth, user, platform).await {
            Ok(t) => t,
            Err(e) => {
                let _ = record("failed", None, Some(e.code().to_string())).await;
                return Err(if e.status() >= 500 {
                    StepError::Retry(format!("{}: {}", e.code(), e.message()))
                } else {
                    StepError::Fail(format!("{}: {}", e.code(), e.message()))
                });
            }
        };
        let author: Vec<Value> = db
            .execute(
                db.from("oauth_connections")
                    .select("platform_user_id")
                    .eq("user_id", user)
                    .eq("platform", platform.as_str()),
            )
            .await
            .unwrap_or_default();
        let author_id = author
            .first()
            .and_then(|r| r["platform_user_id"].as_str())
            .unwrap_or("")
            .to_string();
        let app = self
            .oauth
            .app(platform)
            .map_err(|e| StepError::Fail(e.message().to_string()))?;
        let Some(req) = oauth::post_request(platform, app, &token.token, &author_id, &text) else {
            let _ = record("failed", None, Some("unsupported".into())).await;
            return Err(StepError::Fail(format!(
                "posting text to {} is not supported (it needs media uploads)",
                platform.as_str()
            )));
        };
        match tokens::send(&self.ctx.http(), req).await {
            Ok(resp) => match oauth::parse_post(platform, &resp) {
                Ok(id) => {
                    let _ = record("posted", Some(id.clone()), None).await;
                    Ok(json!({ "platform": platform.as_str(), "post_id": id, "reused": false }))
                }
                // The platform answered with an error: nothing was posted.
                Err(e) => {
                    let _ = record("failed", None, Some(e.to_string())).await;
                    if e.transient {
                        Err(StepError::Retry(format!("{} answered {}", platform.as_str(), e)))
                    } else {
                        Err(StepError::Fail(format!(
                            "{} refused the post: {}",
                            platform.as_str(),
                            e
                        )))
                    }
                }
            },
            Err(e) => {
                let _ = record("unknown", None, Some(e.to_string())).await;
                Err(StepError::Fail(format!(
                    "no answer from {}: the post may or may not exist, so it is not retried",
                    platform.as_str()
                )))
            }
        }
    }

    async fn schedule(
        &self,
        db: &Db<HostHttp>,
        user: &str,
        pipeline: &Value,
        step: &StepDef,
    ) -> Result<Value, StepError> {
        let pipeline_id = pipeline["id"].as_str().unwrap_or_default();
        let now = self.ctx.clock().now_ms() / 1000;
        if let Some(expr) = text_of(&step.config, "cron_expression") {
            let zone = text_of(&step.config, "timezone").unwrap_or_else(|| "UTC".into());
            let schedule =
                Schedule::new(&expr, &zone).map_err(|e| StepError::Fail(format!("schedule-pipeline: {e}")))?;
            let next = schedule
                .next_after(now)
                .ok_or_else(|| StepError::Fail("schedule-pipeline: the expression never runs".into()))?;
            let args = json!({ "p_user": user, "p_pipeline": pipeline_id, "p_cron": expr, "p_timezone": zone,
                               "p_next_run_at": format_rfc3339_ms(next * 1000) });
            match db.rpc::<Value>("scheduled_job_create", &args).await {
                Ok(_) => {}
                // Already there (a retry of this step, or an earlier run).
                Err(e) if e.code() == Some("23505") => {}
                Err(e) => return Err(StepError::Retry(format!("could not store the schedule: {e}"))),
            }
        }
        let rows: Vec<Value> = db
            .execute(
                db.from("scheduled_jobs")
                    .select("id,cron_expression,timezone,next_run_at,is_active")
                    .eq("pipeline_id", pipeline_id),
            )
            .await
            .map_err(|e| StepError::Retry(format!("could not read the schedules: {e}")))?;
        Ok(json!({ "schedules": rows }))
    }
}

/// Turns a pipeline SQL error into a client error.
pub fn api_error(e: edgeworks_db::DbError) -> ApiError {
    tokens::map_db_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_key_is_one_per_run_step_and_platform() {
        let k = post_key("run-1", "step-1", "twitter");
        assert_eq!(k.len(), 64);
        assert_eq!(k, post_key("run-1", "step-1", "twitter"), "a retry finds its own key");
        assert_ne!(k, post_key("run-2", "step-1", "twitter"));
        assert_ne!(k, post_key("run-1", "step-2", "twitter"));
        assert_ne!(k, post_key("run-1", "step-1", "linkedin"));
    }
}
