//! chat-submit: the request, its validation and cleaning, and the one SQL
//! call that creates or locks the session, enforces the question limit and
//! enqueues the job atomically.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_db::{Db, DbError};
use edgeworks_input::sanitize::{clean_text, CleanOptions, Denylist};
use edgeworks_input::validate::{Field, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use edgeworks_core::{Method, Response};
use edgeworks_runtime::{Ctx, Env};
use edgeworks_service::{FromEnv, FromRequest, Parts, RateTicket, Route, ServiceDb, Settings as Loaded, User};

use crate::settings::Settings;

/// POST, signed-in users, 30 burst / one every 2 s; the token is taken by
/// `chat_submit_limited`, in the same SQL call as the submit.
pub const ROUTE: Route = Route::new(&[Method::Post]).rate_limit("30/0.5").limit_in_sql();

/// The built-in denylist plus `CONTENT_DENYLIST=category:term|term;...`.
pub struct ContentPolicy(pub Denylist);

impl FromEnv for ContentPolicy {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let mut list = Denylist::default_list();
        if let Some(extra) = env.get("CONTENT_DENYLIST") {
            let parsed = Denylist::parse(extra).map_err(|_| {
                ApiError::new(
                    500,
                    "misconfigured",
                    "CONTENT_DENYLIST is not in the category:term|term;... format",
                )
            })?;
            list.extend(parsed);
        }
        Ok(ContentPolicy(list))
    }
}

/// The question, validated, cleaned and checked against the denylist.
pub struct Question(pub SubmitRequest);

/// The request body's schema for this deployment's settings, built once per
/// isolate.
pub struct QuestionSchema(pub Schema);

impl FromEnv for QuestionSchema {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        let settings = Loaded::<Settings>::load(env)?;
        Ok(QuestionSchema(schema(&settings)))
    }
}

impl FromRequest for Question {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let schema = Loaded::<QuestionSchema>::load(parts.ctx.env())?;
        let policy = Loaded::<ContentPolicy>::load(parts.ctx.env())?;
        prepare_with(&parts.req.body, &schema.0 .0, &policy.0 .0).map(Question)
    }
}

/// The client's `Idempotency-Key` header, if it sent one: 1 to 255 printable
/// ASCII characters (what Stripe-style clients send), else 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// Checks a header value.
    pub fn parse(value: Option<&str>) -> Result<IdempotencyKey, ApiError> {
        let Some(key) = value else {
            return Ok(IdempotencyKey(None));
        };
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ApiError::unprocessable(
                "request failed validation",
                json!({ "fields": [{ "field": "Idempotency-Key", "code": "invalid_format",
                                     "message": "use 1 to 255 printable ASCII characters without spaces" }] }),
            ));
        }
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

impl FromRequest for IdempotencyKey {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        IdempotencyKey::parse(parts.req.headers.get("idempotency-key"))
    }
}

/// The handler: one SQL call creates or locks the session, enforces the
/// question limit, stores the question and enqueues the job. With an
/// Idempotency-Key, a retry within 24 hours gets the first answer again
/// (marked `Idempotent-Replayed: true`) and creates nothing.
pub async fn handle(
    user: User,
    settings: Loaded<Settings>,
    key: IdempotencyKey,
    Question(body): Question,
    ticket: Option<RateTicket>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    let done = submit_limited(&db, ticket.as_ref(), &user.id, &body, &settings, key.0.as_deref()).await?;
    let estimate = crate::estimate_duration_ms(
        done.queue_position,
        done.avg_processing_ms,
        done.samples,
        done.active_workers,
        settings.prior_duration_ms,
    );
    ctx.log().info_with(
        "question queued",
        &QueuedLog {
            job_id: &done.job_id,
            position: done.queue_position,
            session_id: &done.session_id,
        },
    );
    let answer = Response::json(
        200,
        &Answer {
            data: Queued {
                estimated_duration_ms: estimate,
                job_id: &done.job_id,
                questions_remaining: done.max_questions.saturating_sub(done.question_count),
                queue_position: done.queue_position,
                session_id: &done.session_id,
                status: "pending",
            },
            success: true,
        },
    );
    Ok(if done.replayed {
        answer.with_header("idempotent-replayed", "true")
    } else {
        answer
    })
}

/// The `{"success": true, "data": ...}` answer, serialised straight from
/// these types (keys in the order a JSON object tree would give them).
#[derive(Serialize)]
struct Answer<'a> {
    data: Queued<'a>,
    success: bool,
}

#[derive(Serialize)]
struct Queued<'a> {
    estimated_duration_ms: u64,
    job_id: &'a str,
    questions_remaining: u32,
    queue_position: u32,
    session_id: &'a str,
    status: &'static str,
}

/// The fields of the "question queued" log line.
#[derive(Serialize)]
struct QueuedLog<'a> {
    job_id: &'a str,
    position: u32,
    session_id: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubmitRequest {
    pub session_id: String,
    pub message: String,
    pub field_id: Option<String>,
    pub priority: Option<i64>,
}

pub fn schema(settings: &Settings) -> Schema {
    Schema::object()
        .field("session_id", Field::string().required().non_blank().max_chars(128))
        .field(
            "message",
            Field::string()
                .required()
                .non_blank()
                .max_chars(settings.max_message_chars),
        )
        .field("field_id", Field::string().non_blank().max_chars(100))
        .field("priority", Field::integer().range(0, 10))
}

fn is_session_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// When the message is the only thing wrong, a client gets a code it can act
/// on without reading the field list: `empty_message` or `message_too_long`.
/// Every other validation failure stays `validation_failed` with all fields.
fn message_error(e: ApiError) -> ApiError {
    let Some(fields) = e
        .details()
        .and_then(|d| d.get("fields"))
        .and_then(serde_json::Value::as_array)
    else {
        return e;
    };
    let [only] = fields.as_slice() else { return e };
    if only.get("field").and_then(serde_json::Value::as_str) != Some("message") {
        return e;
    }
    let (code, message) = match only.get("code").and_then(serde_json::Value::as_str) {
        Some("required") | Some("blank") => ("empty_message", "the message is empty"),
        Some("too_long") => ("message_too_long", "the message is longer than this deployment accepts"),
        _ => return e,
    };
    let details = e.details().cloned().unwrap_or_default();
    ApiError::new(422, code, message).with_details(details)
}

/// Validates, cleans and checks the message; returns the request to store.
pub fn prepare(body: &[u8], settings: &Settings, denylist: &Denylist) -> Result<SubmitRequest, ApiError> {
    prepare_with(body, &schema(settings), denylist)
}

/// [`prepare`] against a schema built beforehand (by [`schema`]).
pub fn prepare_with(body: &[u8], schema: &Schema, denylist: &Denylist) -> Result<SubmitRequest, ApiError> {
    let mut req: SubmitRequest = schema.parse(body).map_err(message_error)?;
    let field_error = |field: &str, code: &str, message: &str| {
        ApiError::unprocessable(
            "request body failed validation",
            json!({ "fields": [{ "field": field, "code": code, "message": message }] }),
        )
    };
    if !is_session_id(req.session_id.trim()) {
        return Err(field_error(
            "session_id",
            "invalid_format",
            "use 1 to 128 of the characters A-Z a-z 0-9 _ . : -",
        ));
    }
    req.session_id = req.session_id.trim().to_string();
    if let Some(f) = &req.field_id {
        if !is_session_id(f.trim()) {
            return Err(field_error(
                "field_id",
                "invalid_format",
                "use the characters A-Z a-z 0-9 _ . : -",
            ));
        }
        req.field_id = Some(f.trim().to_string());
    }
    let cleaned = clean_text(&req.message, &CleanOptions::default());
    if cleaned.trim().is_empty() {
        return Err(ApiError::new(
            422,
            "message_has_no_text",
            "the message has no visible text after removing control and invisible characters",
        ));
    }
    denylist.check_field("message", &cleaned)?;
    req.message = cleaned;
    Ok(req)
}

/// What chat_submit answers (the timing fields feed the estimate).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Submitted {
    pub job_id: String,
    pub status: String,
    pub queue_position: u32,
    pub session_id: String,
    pub question_count: u32,
    pub max_questions: u32,
    #[serde(default)]
    pub avg_processing_ms: f64,
    #[serde(default)]
    pub samples: u32,
    #[serde(default)]
    pub active_workers: u32,
    /// True when an Idempotency-Key's first answer came back.
    #[serde(default)]
    pub replayed: bool,
    /// `chat_submit_limited`'s decision on the rate-limit token, if it
    /// took one (read by [`RateTicket::settle_member`]).
    #[serde(default, skip_serializing)]
    pub rate_limit: Option<Value>,
}

/// Maps the chat SQL functions' SQLSTATEs to client errors.
pub fn map_chat_error(e: DbError) -> ApiError {
    match e.code() {
        Some("EC401") => ApiError::unauthorized(
            "user_not_found",
            "the token's user does not exist (deleted?); sign in again",
        ),
        Some("EC403") => ApiError::forbidden("session_forbidden", "this session belongs to another user"),
        Some("EC404") if e.message() == "field_not_found" => ApiError::not_found("field_not_found", "no such field"),
        Some("EC404") if e.message() == "session_not_found" => {
            ApiError::not_found("session_not_found", "no such session")
        }
        Some("EC404") => ApiError::not_found("job_not_found", "no such job"),
        Some("EC409") if e.message() == "job_not_cancellable" => ApiError::conflict(
            "job_not_cancellable",
            "only a question that has not started can be cancelled",
        ),
        Some("EC409") => ApiError::conflict(
            "session_field_mismatch",
            "this session was started with another field_id",
        ),
        Some("EC422") => ApiError::new(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request in the last 24 hours",
        ),
        Some("EC410") => ApiError::new(
            410,
            "session_expired",
            "this session is past its maximum age; start a new one",
        ),
        Some("EC429") => {
            let limit = match &e {
                DbError::Api { details: Some(d), .. } => d.parse::<u32>().ok(),
                _ => None,
            };
            ApiError::new(
                429,
                "question_limit_reached",
                "this session has reached its question limit",
            )
            .with_details(json!({ "max_questions": limit }))
        }
        Some("22023") => ApiError::new(422, "invalid_argument", e.message().to_string()),
        _ => ApiError::from(e),
    }
}

/// One round trip: session, limit, message and job, atomically.
pub async fn submit<C: HttpClient>(
    db: &Db<C>,
    user_id: &str,
    req: &SubmitRequest,
    settings: &Settings,
    idempotency_key: Option<&str>,
) -> Result<Submitted, ApiError> {
    db.rpc_with("chat_submit", &submit_args(user_id, req, settings, idempotency_key))
        .await
        .map_err(map_chat_error)
}

/// [`submit`] with the caller's rate-limit token taken in the same SQL call
/// (`chat_submit_limited`): refused, nothing is created and the answer is
/// the 429.
pub async fn submit_limited<C: HttpClient>(
    db: &Db<C>,
    ticket: Option<&RateTicket>,
    user_id: &str,
    req: &SubmitRequest,
    settings: &Settings,
    idempotency_key: Option<&str>,
) -> Result<Submitted, ApiError> {
    let args = LimitedArgs {
        submit: submit_args(user_id, req, settings, idempotency_key),
        rate: RateTicket::args(ticket),
    };
    let (status, body) = match (db.rpc_send("chat_submit_limited", &args).await, ticket) {
        (Ok(answer), _) => answer,
        (Err(e), Some(t)) => return Err(map_chat_error(t.settle_error(e)?)),
        (Err(e), None) => return Err(map_chat_error(e)),
    };
    // The work's answer decodes straight into its type; an answer that does
    // not (a refusal is only `{"rate_limit": ...}`) is read as JSON first,
    // so the decision in it is settled before the shape is judged.
    let mut done = match edgeworks_db::decode::<Submitted>(status, &body) {
        Ok(done) => done,
        Err(_) => {
            let mut answer: Value = edgeworks_db::decode(status, &body).map_err(ApiError::from)?;
            if let Some(t) = ticket {
                t.settle(&mut answer)?;
            }
            return serde_json::from_value(answer).map_err(|e| ApiError::from(DbError::Decode(e.to_string())));
        }
    };
    let rate_limit = done.rate_limit.take();
    if let Some(t) = ticket {
        t.settle_member(rate_limit.as_ref())?;
    }
    Ok(done)
}

/// `chat_submit`'s arguments; a `None` is left out (its SQL default applies).
#[derive(Serialize)]
struct SubmitArgs<'a> {
    p_user: &'a str,
    p_session_id: &'a str,
    p_message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    p_field_id: Option<&'a str>,
    p_priority: i64,
    p_max_questions: u32,
    p_session_max_age_seconds: u32,
    p_max_attempts: u32,
    p_backoff_base_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    p_idempotency_key: Option<&'a str>,
}

/// `chat_submit_limited`'s: `chat_submit`'s and the rate-limit token's.
#[derive(Serialize)]
struct LimitedArgs<'a> {
    #[serde(flatten)]
    submit: SubmitArgs<'a>,
    #[serde(flatten)]
    rate: edgeworks_service::RateArgs<'a>,
}

fn submit_args<'a>(
    user_id: &'a str,
    req: &'a SubmitRequest,
    settings: &Settings,
    idempotency_key: Option<&'a str>,
) -> SubmitArgs<'a> {
    SubmitArgs {
        p_user: user_id,
        p_session_id: &req.session_id,
        p_message: &req.message,
        p_field_id: req.field_id.as_deref(),
        p_priority: req.priority.unwrap_or(0),
        p_max_questions: settings.max_questions,
        p_session_max_age_seconds: settings.session_max_age_seconds,
        p_max_attempts: settings.max_attempts,
        p_backoff_base_ms: settings.retry_base_ms,
        p_idempotency_key: idempotency_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(body: &str) -> Result<SubmitRequest, ApiError> {
        prepare(body.as_bytes(), &Settings::default(), &Denylist::default_list())
    }

    #[test]
    fn a_plain_question_is_accepted_and_cleaned() {
        let r = prep(r#"{"session_id":"test-session","message":"  Hello,\r\nworld!\u200b "}"#).unwrap();
        assert_eq!(r.session_id, "test-session");
        assert_eq!(r.message, "Hello,\nworld!");
    }

    #[test]
    fn each_bad_input_has_its_own_code() {
        assert_eq!(
            prep(r#"{"session_id":"s","message":""}"#).unwrap_err().code(),
            "empty_message"
        );
        let long = format!(r#"{{"session_id":"s","message":"{}"}}"#, "a".repeat(20_000));
        let too_long = prep(&long).unwrap_err();
        assert_eq!((too_long.status(), too_long.code()), (422, "message_too_long"));
        assert_eq!(
            prep(r#"{"session_id":"s","message":"\u0001\u0002\u200b"}"#)
                .unwrap_err()
                .code(),
            "message_has_no_text"
        );
        assert_eq!(
            prep(r#"{"session_id":5,"message":"hi"}"#).unwrap_err().code(),
            "validation_failed"
        );
        assert_eq!(
            prep(r#"{"session_id":"a b","message":"hi"}"#).unwrap_err().code(),
            "validation_failed"
        );
        assert_eq!(prep("{not json").unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn all_field_errors_come_at_once() {
        let e = prep(r#"{"session_id":7,"message":false,"priority":99}"#).unwrap_err();
        assert_eq!(e.details().unwrap()["fields"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn sql_errors_map_to_distinct_client_errors() {
        let api = |code: &str, message: &str| DbError::Api {
            status: 400,
            code: Some(code.into()),
            message: message.into(),
            details: Some("10".into()),
            hint: None,
        };
        let limit = map_chat_error(api("EC429", "question_limit_reached"));
        assert_eq!((limit.status(), limit.code()), (429, "question_limit_reached"));
        assert_eq!(limit.details().unwrap()["max_questions"], 10);
        assert_eq!(map_chat_error(api("EC403", "session_forbidden")).status(), 403);
        let gone = map_chat_error(api("EC401", "user_not_found"));
        assert_eq!((gone.status(), gone.code()), (401, "user_not_found"));
        assert_eq!(map_chat_error(api("EC410", "session_expired")).status(), 410);
        assert_eq!(
            map_chat_error(api("EC404", "field_not_found")).code(),
            "field_not_found"
        );
        let reused = map_chat_error(api("EC422", "idempotency_key_reused"));
        assert_eq!((reused.status(), reused.code()), (422, "idempotency_key_reused"));
        let running = map_chat_error(api("EC409", "job_not_cancellable"));
        assert_eq!((running.status(), running.code()), (409, "job_not_cancellable"));
        assert_eq!(
            map_chat_error(api("EC409", "session_field_mismatch")).code(),
            "session_field_mismatch"
        );
    }

    // submit_limited against a fake PostgREST: the arguments it sends and
    // how it reads the answer with the rate-limit decision in it.

    use edgeworks_auth::ratelimit::Limit;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};

    const SUBMITTED: &str = r#"{"job_id": "j1", "status": "pending", "samples": 0, "session_id": "s1",
        "queue_position": 2, "max_questions": 10, "active_workers": 1, "question_count": 3,
        "avg_processing_ms": 0, "rate_limit": {"allowed": true, "tokens": 4.5}}"#;

    fn limited(status: u16, answer: &'static str, ticket: Option<&RateTicket>) -> (Result<Submitted, ApiError>, Value) {
        let server = FakeServer::start(move |_, _| json_response(status, answer));
        let db = Db::new(NativeClient, &format!("{}/rest/v1", server.base_url), "k", "k");
        let req = SubmitRequest {
            session_id: "s1".into(),
            message: "hi".into(),
            field_id: None,
            priority: None,
        };
        let result = block_on(submit_limited(&db, ticket, "u1", &req, &Settings::default(), None));
        let sent = serde_json::from_slice(&server.requests()[0].body).unwrap();
        (result, sent)
    }

    fn ticket() -> RateTicket {
        RateTicket::new(
            "chat-submit:user:u1".into(),
            1,
            Limit::parse("5/1", "RATE_LIMIT_X").unwrap(),
        )
    }

    #[test]
    fn a_limited_submit_sends_the_work_and_the_token_and_reads_both_answers() {
        let t = ticket();
        let (result, sent) = limited(200, SUBMITTED, Some(&t));
        let done = result.unwrap();
        assert_eq!(
            (done.job_id.as_str(), done.queue_position, done.question_count),
            ("j1", 2, 3)
        );
        assert!(
            done.rate_limit.is_none(),
            "the decision is the ticket's, not the answer's"
        );
        let d = t.decision().expect("the ticket was spent");
        assert_eq!((d.allowed, d.remaining), (true, 4));
        assert_eq!(
            sent,
            json!({"p_user": "u1", "p_session_id": "s1", "p_message": "hi", "p_priority": 0,
                   "p_max_questions": 10, "p_session_max_age_seconds": 86_400, "p_max_attempts": 4,
                   "p_backoff_base_ms": 1_000, "p_rate_key": "chat-submit:user:u1", "p_rate_cost": 1,
                   "p_rate_capacity": 5, "p_rate_refill_per_sec": 1.0}),
            "absent optional arguments are left out, not sent as null"
        );
    }

    #[test]
    fn without_a_ticket_no_rate_arguments_are_sent() {
        let (result, sent) = limited(200, SUBMITTED, None);
        assert_eq!(result.unwrap().job_id, "j1");
        assert!(sent.get("p_rate_key").is_none());
        assert!(sent.get("p_field_id").is_none());
    }

    #[test]
    fn a_refusal_in_the_answer_is_429() {
        let t = ticket();
        let (result, _) = limited(200, r#"{"rate_limit": {"allowed": false, "tokens": 0.25}}"#, Some(&t));
        let Err(e) = result else {
            panic!("a refusal was accepted")
        };
        assert_eq!((e.status(), e.code()), (429, "rate_limited"));
    }

    #[test]
    fn an_answer_of_another_shape_is_a_500() {
        let t = ticket();
        let (result, _) = limited(200, r#"{"rate_limit": {"allowed": true, "tokens": 3}}"#, Some(&t));
        let Err(e) = result else {
            panic!("a shapeless answer was accepted")
        };
        assert_eq!(e.status(), 500);
        let (result, _) = limited(200, r#"{"job_id": 7}"#, Some(&ticket()));
        assert_eq!(result.map(|_| ()).unwrap_err().status(), 500);
        let (result, _) = limited(200, r#"{"job_id": 7, "rate_limit": "odd"}"#, Some(&t));
        assert_eq!(result.map(|_| ()).unwrap_err().status(), 500);
    }

    #[test]
    fn an_idempotency_key_is_printable_ascii_up_to_255() {
        assert_eq!(IdempotencyKey::parse(None).unwrap(), IdempotencyKey(None));
        assert_eq!(
            IdempotencyKey::parse(Some("retry-7f3a")).unwrap(),
            IdempotencyKey(Some("retry-7f3a".into()))
        );
        for bad in ["", "has space", "tab\there", "caf\u{e9}"] {
            assert_eq!(IdempotencyKey::parse(Some(bad)).unwrap_err().status(), 422, "{bad:?}");
        }
        assert_eq!(IdempotencyKey::parse(Some(&"k".repeat(256))).unwrap_err().status(), 422);
        assert!(IdempotencyKey::parse(Some(&"k".repeat(255))).is_ok());
    }
}
