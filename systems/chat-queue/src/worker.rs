//! The chat job kind, registered with the queue's one worker: build each prompt (field system prompt,
//! the session's history within a token budget, the question), call the
//! provider, and either store the answer and complete the job in one SQL
//! call, or hand the failure back to the queue: retryable provider errors
//! (429, 5xx, timeouts) are retried with backoff honouring `Retry-After`,
//! the rest fail at once with a clear reason.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::DbError;
use edgeworks_llm::chat::ChatProvider;
use edgeworks_llm::gemini::GeminiClient;
use edgeworks_llm::prompt::{build_conversation, fill_template, Conversation, Message, Role};
use edgeworks_queue::{ClaimedJob, JobContext, JobHandler, JobOutcome, RetryPolicy, SQLSTATE_LEASE_LOST};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::settings::Settings;
use crate::{KIND, QUEUE};

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
struct ChatContext {
    field: Option<FieldRow>,
    question: QuestionRow,
    #[serde(default)]
    history: Vec<HistoryRow>,
}

/// The chat job kind: answer one question with the configured provider.
pub struct ChatCompletion<'a> {
    /// Deployment settings.
    pub settings: &'a Settings,
    /// Gemini with a key, the offline provider without.
    pub provider: &'a ChatProvider,
    /// Today's date (YYYY-MM-DD) for the `{date}` placeholder.
    pub today: &'a str,
}

impl<C: HttpClient> JobHandler<C> for ChatCompletion<'_> {
    const QUEUE: &'static str = QUEUE;
    const KIND: &'static str = KIND;
    /// The question lives in the database (chat_job_context), not the payload.
    type Input = serde_json::Value;

    async fn run(&self, job: &ClaimedJob, _input: serde_json::Value, cx: &JobContext<'_, C>) -> JobOutcome {
        self.process(job, cx).await
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.settings.max_attempts,
            backoff: edgeworks_queue::Backoff {
                base_ms: u64::from(self.settings.retry_base_ms),
                ..edgeworks_queue::Backoff::DEFAULT
            },
        }
    }

    /// A job that failed for good is logged to error_logs for operators.
    async fn on_final_failure(&self, job: &ClaimedJob, reason: &str, cx: &JobContext<'_, C>) {
        let _ = cx
            .db
            .rpc::<Value>(
                "chat_log_error",
                &json!({
                    "p_function": "chat-worker",
                    "p_code": if job.has_attempts_left() { "job_failed" } else { "attempts_exhausted" },
                    "p_message": reason,
                    "p_job": job.id,
                    "p_details": { "attempts": job.attempts, "worker_id": cx.worker_id },
                }),
            )
            .await;
    }
}

impl ChatCompletion<'_> {
    async fn process<C: HttpClient>(&self, job: &ClaimedJob, cx: &JobContext<'_, C>) -> JobOutcome {
        let lease = job.lease();
        let ctx_args = json!({ "p_job": job.id, "p_lease_token": lease.token });
        let context: ChatContext = match cx.db.rpc("chat_job_context", &ctx_args).await {
            Ok(c) => c,
            Err(e) if e.code() == Some(SQLSTATE_LEASE_LOST) => return JobOutcome::LeaseLost,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: format!("could not load the job's context: {}", db_reason(&e)),
                    retry_after_ms: None,
                }
            }
        };
        let conversation = match self.conversation(&context) {
            Ok(c) => c,
            Err(e) => {
                return JobOutcome::Fail {
                    reason: format!("{}: {}", e.code(), e.message()),
                }
            }
        };
        let provider = self.provider_for(context.field.as_ref());
        match provider.complete(cx.http, &conversation).await {
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
                match cx.db.rpc::<Value>("chat_complete", &args).await {
                    Ok(_) => JobOutcome::Completed,
                    Err(e) if e.code() == Some(SQLSTATE_LEASE_LOST) => JobOutcome::LeaseLost,
                    Err(e) => JobOutcome::Retry {
                        reason: format!("could not store the answer: {}", db_reason(&e)),
                        retry_after_ms: None,
                    },
                }
            }
            Err(e) => {
                let reason = format!("{}: {}", e.code(), e);
                let retry_after = e.retry_after_ms().map(|ms| ms.min(i32::MAX as u64) as u32);
                if e.is_retryable() {
                    JobOutcome::Retry {
                        reason,
                        retry_after_ms: retry_after,
                    }
                } else {
                    JobOutcome::Fail { reason }
                }
            }
        }
    }

    fn conversation(&self, context: &ChatContext) -> Result<Conversation, ApiError> {
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
}

fn db_reason(e: &DbError) -> String {
    match e {
        DbError::Transport(t) => format!("database unreachable ({t})"),
        other => other.to_string(),
    }
}
