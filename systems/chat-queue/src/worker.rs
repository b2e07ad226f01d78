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

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_db::Db;
    use edgeworks_llm::offline::OfflineProvider;
    use edgeworks_queue::{Registry, Worker};
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};

    const JOB: &str = "00000000-0000-4000-8000-0000000000aa";
    const TOKEN: &str = "00000000-0000-4000-8000-0000000000bb";

    fn claimed() -> ClaimedJob {
        ClaimedJob {
            id: JOB.into(),
            queue: QUEUE.into(),
            kind: KIND.into(),
            payload: json!({}),
            priority: 0,
            attempts: 1,
            max_attempts: 4,
            lease_token: TOKEN.into(),
            lease_expires_at: "2026-01-01T00:02:00+00:00".into(),
            owner_id: None,
            created_at: "2026-01-01T00:00:00+00:00".into(),
        }
    }

    fn job_row(status: &str) -> String {
        json!({
            "id": JOB, "seq": 1, "queue": QUEUE, "kind": KIND, "payload": {}, "priority": 0,
            "status": status, "attempts": 1, "max_attempts": 4, "backoff_base_ms": 1000,
            "backoff_cap_ms": 600000, "run_at": "2026-01-01T00:00:01+00:00", "pending_dependencies": 0,
            "worker_id": null, "lease_token": null, "lease_expires_at": null, "progress": 0, "result": null,
            "last_error": "x", "dedup_key": null, "owner_id": null, "created_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:00+00:00", "started_at": null, "completed_at": null
        })
        .to_string()
    }

    const CONTEXT: &str = r#"{"field":{"name":"Physics","system_prompt":"You teach {field_name} on {date}."},
        "question":{"content":"Why is the sky blue?"},"history":[{"role":"user","content":"Hi"}]}"#;

    /// Runs one claimed chat job through the queue's worker against `server` as PostgREST.
    fn run(server: &FakeServer) -> (JobOutcome, bool) {
        let settings = Settings::default();
        let provider = ChatProvider::Offline(OfflineProvider);
        let db = Db::new(NativeClient, &server.base_url, "service", "service");
        let registry = Registry::new().register(ChatCompletion {
            settings: &settings,
            provider: &provider,
            today: "2026-01-01",
        });
        let worker = Worker::new(&registry, &db, &NativeClient, "w1", 60);
        block_on(worker.process(&claimed()))
    }

    fn body(req: &edgeworks_core::Request) -> Value {
        serde_json::from_slice(&req.body).unwrap_or(Value::Null)
    }

    #[test]
    fn a_question_is_answered_and_stored_under_the_claims_lease() {
        let server = FakeServer::start(|req, _| match req.url.rsplit('/').next() {
            Some("chat_job_context") => json_response(200, CONTEXT),
            Some("chat_complete") => json_response(200, r#"{"message_id":"m1"}"#),
            other => json_response(404, &format!(r#"{{"message":"unexpected {other:?}"}}"#)),
        });
        assert_eq!(run(&server), (JobOutcome::Completed, false));
        let reqs = server.requests();
        assert_eq!(
            reqs.len(),
            2,
            "context, then the answer with the job's completion in one call"
        );
        let stored = body(&reqs[1]);
        assert_eq!(stored["p_lease_token"], TOKEN);
        assert_eq!(stored["p_provider"], "offline");
        assert!(stored["p_content"].as_str().is_some_and(|c| !c.is_empty()));
    }

    #[test]
    fn an_answer_that_cannot_be_stored_goes_back_to_the_queue_for_a_retry() {
        let server = FakeServer::start(|req, _| match req.url.rsplit('/').next() {
            Some("chat_job_context") => json_response(200, CONTEXT),
            Some("chat_complete") => json_response(503, r#"{"message":"database restarting"}"#),
            Some("fail_job") => json_response(200, &job_row("retrying")),
            other => json_response(404, &format!(r#"{{"message":"unexpected {other:?}"}}"#)),
        });
        let (outcome, final_failure) = run(&server);
        assert!(matches!(outcome, JobOutcome::Retry { .. }), "{outcome:?}");
        assert!(!final_failure);
        let failed = body(&server.requests()[2]);
        assert_eq!(
            (failed["p_retryable"].clone(), failed["p_lease_token"].clone()),
            (json!(true), json!(TOKEN))
        );
    }

    #[test]
    fn a_lost_lease_stops_the_job_without_another_write() {
        let server = FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"EQ409","message":"lease lost","details":null,"hint":null}"#,
            )
        });
        assert_eq!(run(&server), (JobOutcome::LeaseLost, false));
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn a_template_with_an_unknown_placeholder_fails_for_good_and_is_logged() {
        let server = FakeServer::start(|req, _| match req.url.rsplit('/').next() {
            Some("chat_job_context") => json_response(
                200,
                r#"{"field":{"system_prompt":"{nope}"},"question":{"content":"q"},"history":[]}"#,
            ),
            Some("fail_job") => json_response(200, &job_row("failed")),
            Some("chat_log_error") => json_response(200, "null"),
            other => json_response(404, &format!(r#"{{"message":"unexpected {other:?}"}}"#)),
        });
        let (outcome, final_failure) = run(&server);
        assert!(matches!(outcome, JobOutcome::Fail { .. }), "{outcome:?}");
        assert!(final_failure);
        let calls: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.url.rsplit('/').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(calls, ["chat_job_context", "fail_job", "chat_log_error"]);
        assert_eq!(body(&server.requests()[1])["p_retryable"], json!(false));
    }
}
