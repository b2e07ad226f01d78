//! The money and the log, through the migration's SQL functions: one call
//! reserves the worst case and creates the rows ([`begin`]), saves stream
//! events and the partial answer ([`Ledger::save`]), settles from usage or
//! the reservation ([`Ledger::finish`]); plus stop, stream reads and keys.
//! The cost rules themselves live in SQL (migration 20261201001500) so two
//! isolates cannot disagree about them.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::{Db, DbError};
use edgeworks_runtime::LocalFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::request::Candidate;

/// What [`begin`] created.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Begun {
    /// The conversation (new or continued).
    pub conversation_id: String,
    /// The saved user message.
    pub user_message_id: Option<String>,
    /// The assistant message being written.
    pub message_id: String,
    /// Its stream log.
    pub stream_id: String,
    /// USD held against the budget until settlement (decimal text, exact).
    pub reserved_usd: String,
}

/// How a call ended, for settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The provider finished the answer.
    Completed,
    /// The user stopped it; the partial answer is kept.
    Stopped,
    /// The provider failed; any partial answer is kept.
    Failed,
}

impl Status {
    /// The SQL spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }
}

/// One saved stream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Its SSE id.
    pub seq: u32,
    /// Its SSE event name.
    pub event: String,
    /// Its JSON data.
    pub data: String,
}

/// The settlement of a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FinishCall {
    /// How it ended.
    #[serde(skip)]
    pub status: Option<Status>,
    /// The answer (partial or whole).
    pub content: String,
    /// Which provider and model answered (priced), if any did.
    pub provider: Option<String>,
    /// The requested model id (the price table's key).
    pub model: Option<String>,
    /// The provider's usage; both or neither.
    pub usage: Option<(u32, u32)>,
    /// The failure, if any.
    pub error: Option<Value>,
}

/// What was charged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Settlement {
    /// USD, exact decimal text.
    pub cost_usd: String,
    /// `provider`, `reservation` or `none`.
    pub usage_source: String,
}

/// Maps the ai-chat SQL functions' errors to client errors.
pub fn map_error(e: DbError) -> ApiError {
    let details = match &e {
        DbError::Api { details, .. } => details.clone(),
        _ => None,
    };
    match (e.code(), e.message()) {
        (Some("EC402"), _) => {
            let d: Value = details
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(Value::Null);
            ApiError::new(
                402,
                "budget_exceeded",
                "this request's worst-case cost does not fit in your remaining budget",
            )
            .with_details(d)
        }
        (Some("EC404"), "conversation_not_found") => {
            ApiError::not_found("conversation_not_found", "no such conversation of yours")
        }
        (Some("EC404"), "stream_not_found") => ApiError::not_found("stream_not_found", "no such stream of yours"),
        (Some("EC404"), "session_not_found") => ApiError::not_found("session_not_found", "no such session of yours"),
        (Some("EC404"), m) => ApiError::not_found("not_found", m.to_string()),
        (Some("EC422"), "model_not_priced") => ApiError::unprocessable(
            "this model has no price, so its cost cannot be reserved",
            json!({ "fields": [{ "field": "model", "code": "model_not_priced",
                                 "message": details.unwrap_or_default() }] }),
        ),
        (Some("22023"), m) => ApiError::new(422, "invalid_argument", m.to_string()),
        (Some("23503"), _) => ApiError::unauthorized(
            "user_not_found",
            "the token's user does not exist (deleted?); sign in again",
        ),
        _ => ApiError::from(e),
    }
}

/// Reserves and creates the rows, in one SQL call.
#[allow(clippy::too_many_arguments)]
pub async fn begin<C: HttpClient>(
    db: &Db<C>,
    user_id: &str,
    candidates: &[Candidate],
    prompt_tokens: u32,
    max_tokens: u32,
    default_limit_usd: f64,
    stream: bool,
    user_message: Option<&str>,
    conversation_id: Option<&str>,
    title: Option<&str>,
) -> Result<Begun, ApiError> {
    let candidates: Vec<Value> = candidates
        .iter()
        .map(|c| json!({ "provider": c.provider.as_str(), "model": c.model }))
        .collect();
    db.rpc(
        "ai_chat_begin",
        &json!({
            "p_user": user_id,
            "p_candidates": candidates,
            "p_prompt_tokens": prompt_tokens,
            "p_max_tokens": max_tokens,
            "p_default_limit_usd": default_limit_usd,
            "p_stream": stream,
            "p_user_message": user_message,
            "p_conversation": conversation_id,
            "p_title": title,
        }),
    )
    .await
    .map_err(map_error)
}

/// Where a producer saves and settles (the database in production, a
/// recorder in tests).
pub trait Ledger {
    /// Appends `events` and the answer so far; answers whether the owner asked to stop.
    fn save<'a>(
        &'a self,
        events: &'a [LoggedEvent],
        content: Option<&'a str>,
    ) -> LocalFuture<'a, Result<bool, ApiError>>;
    /// Settles the call.
    fn finish<'a>(&'a self, call: &'a FinishCall) -> LocalFuture<'a, Result<Settlement, ApiError>>;
}

/// The database ledger of one answer.
pub struct DbLedger<C: HttpClient> {
    /// Service-role PostgREST.
    pub db: Db<C>,
    /// The answer's message.
    pub message_id: String,
    /// Its stream log (streams only).
    pub stream_id: String,
    /// Where a failed save is reported (the producer carries on and saves
    /// the same events again on its next flush).
    pub log: Option<edgeworks_runtime::Logger>,
}

#[derive(Deserialize)]
struct SaveAck {
    stop_requested: bool,
}

impl<C: HttpClient> Ledger for DbLedger<C> {
    fn save<'a>(
        &'a self,
        events: &'a [LoggedEvent],
        content: Option<&'a str>,
    ) -> LocalFuture<'a, Result<bool, ApiError>> {
        Box::pin(async move {
            let saved: Result<SaveAck, DbError> = self
                .db
                .rpc(
                    "ai_stream_append",
                    &json!({ "p_stream": self.stream_id, "p_events": events, "p_content": content }),
                )
                .await;
            match saved {
                Ok(ack) => Ok(ack.stop_requested),
                Err(e) => {
                    if let Some(log) = &self.log {
                        log.warn(
                            "stream save failed; retrying on the next flush",
                            json!({ "stream_id": self.stream_id, "error": e.message(), "events": events.len() }),
                        );
                    }
                    Err(map_error(e))
                }
            }
        })
    }

    fn finish<'a>(&'a self, call: &'a FinishCall) -> LocalFuture<'a, Result<Settlement, ApiError>> {
        Box::pin(async move {
            let status = call.status.as_ref().unwrap_or(&Status::Failed);
            self.db
                .rpc(
                    "ai_chat_finish",
                    &json!({
                        "p_message": self.message_id,
                        "p_status": status.as_str(),
                        "p_content": call.content,
                        "p_provider": call.provider,
                        "p_model": call.model,
                        "p_prompt_tokens": call.usage.map(|u| u.0),
                        "p_completion_tokens": call.usage.map(|u| u.1),
                        "p_error": call.error,
                    }),
                )
                .await
                .map_err(map_error)
        })
    }
}

/// Events of the caller's stream after `after`, with its status.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamPage {
    /// streaming | completed | stopped | failed.
    pub status: String,
    /// Events in order.
    pub events: Vec<LoggedEvent>,
    /// Milliseconds since the producer last saved.
    pub silent_ms: i64,
}

/// Reads the caller's stream log.
pub async fn read_stream<C: HttpClient>(
    db: &Db<C>,
    user_id: &str,
    stream_id: &str,
    after: u32,
) -> Result<StreamPage, ApiError> {
    db.rpc(
        "ai_stream_read",
        &json!({ "p_user": user_id, "p_stream": stream_id, "p_after": after }),
    )
    .await
    .map_err(map_error)
}

/// Asks the producer of the caller's stream to stop.
pub async fn request_stop<C: HttpClient>(db: &Db<C>, user_id: &str, stream_id: &str) -> Result<Value, ApiError> {
    db.rpc("ai_chat_stop", &json!({ "p_user": user_id, "p_stream": stream_id }))
        .await
        .map_err(map_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, message: &str, details: Option<&str>) -> DbError {
        DbError::Api {
            status: 400,
            code: Some(code.into()),
            message: message.into(),
            details: details.map(str::to_string),
            hint: None,
        }
    }

    #[test]
    fn an_exceeded_budget_is_a_402_with_the_figures() {
        let e = map_error(api(
            "EC402",
            "budget_exceeded",
            Some(r#"{"limit_usd":"1.00","spent_usd":"0.5","reserved_usd":"0.4","needed_usd":"0.2"}"#),
        ));
        assert_eq!((e.status(), e.code()), (402, "budget_exceeded"));
        assert_eq!(e.details().unwrap()["needed_usd"], "0.2");
    }

    #[test]
    fn another_users_conversation_is_indistinguishable_from_none() {
        let e = map_error(api("EC404", "conversation_not_found", None));
        assert_eq!((e.status(), e.code()), (404, "conversation_not_found"));
    }

    #[test]
    fn an_unpriced_model_is_a_422_naming_it() {
        let e = map_error(api("EC422", "model_not_priced", Some("openai/gpt-9")));
        assert_eq!(e.status(), 422);
        assert_eq!(e.details().unwrap()["fields"][0]["message"], "openai/gpt-9");
    }
}
