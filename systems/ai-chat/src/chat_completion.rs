//! chat-completion's endpoints:
//!
//! | method and path | body / query | what |
//! |---|---|---|
//! | `POST /chat-completion` | [`CompletionRequest`] | an answer, JSON or (`stream: true`) SSE |
//! | `GET /chat-completion?stream_id=` | `Last-Event-ID` header (or `last_event_id`) | the rest of a stream from its log |
//! | `POST /chat-completion/stop` | `{stream_id}` | stop a stream; its partial answer is kept |
//! | `PUT /chat-completion/keys` | `{provider, api_key}` | store the caller's own key, sealed |
//! | `DELETE /chat-completion/keys?provider=` | | remove it |

use std::rc::Rc;

use edgeworks_core::{ApiError, Method};
use edgeworks_db::Db;
use edgeworks_input::input;
use edgeworks_input::validate::Field;
use edgeworks_llm::call::CallSpec;
use edgeworks_llm::prompt::{Message, Role};
use edgeworks_runtime::{sse, Ctx, HostHttp, Reply};
use edgeworks_service::{FromRequest, Json, LastEventId, Parts, Query, Route, ServiceDb, Settings, User};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::answer::{answer_buffered, to_sse, Attempt, Live, Producer, TERMINAL_EVENTS};
use crate::keys::{check_api_key, Sealed};
use crate::ledger::{self, begin, DbLedger, Ledger};
use crate::request::{Candidate, CompletionRequest};
use crate::settings::AiSettings;

/// All of chat-completion's endpoints; 60 calls burst, one a second after.
/// Streams the provider's answer as it arrives and finishes the stream's
/// bookkeeping in the background: it links those host capabilities.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post, Method::Put, Method::Delete])
    .rate_limit("60/1")
    .capabilities(edgeworks_runtime::caps::STREAMING_FETCH | edgeworks_runtime::caps::BACKGROUND);

/// Keep-alive comment interval of event streams.
const KEEP_ALIVE_MS: u32 = 15_000;
/// How often a resuming reader polls the log while the producer runs.
const RESUME_POLL_MS: u32 = 200;
/// A producer silent this long is gone (its isolate ended).
const PRODUCER_LOST_MS: i64 = 30_000;
/// Settlement comes just before the last event is saved; a settled stream
/// without its last event is waited for this long.
const FINISH_GRACE_MS: i64 = 3_000;

input! {
    /// `POST /stop`.
    pub struct StopRequest {
        /// The stream to stop.
        pub stream_id: String = Field::uuid().required(),
    }
}

input! {
    /// `PUT /keys`.
    pub struct KeyRequest {
        /// Which provider the key is for.
        pub provider: String = Field::string().required().one_of(&["openai", "anthropic", "mistral", "gemini"]),
        /// The key.
        pub api_key: String = Field::string().required().max_chars(512),
    }
}

input! {
    /// `DELETE /keys?provider=`.
    pub struct KeyQuery {
        /// Which provider.
        pub provider: String = Field::string().required().one_of(&["openai", "anthropic", "mistral", "gemini"]),
    }
}

input! {
    /// `GET ?stream_id=`.
    pub struct ResumeQuery {
        /// The stream to resume.
        pub stream_id: String = Field::uuid().required(),
        /// For clients that cannot set `Last-Event-ID`.
        pub last_event_id: Option<String> = Field::string().max_chars(12),
    }
}

/// Which endpoint a request is for, its input validated.
pub enum Endpoint {
    /// A completion.
    Complete(CompletionRequest),
    /// Stop a stream.
    Stop(StopRequest),
    /// Resume a stream after an event id.
    Resume {
        /// The stream.
        stream_id: String,
        /// The last event the client saw.
        after: u32,
    },
    /// Store a key.
    PutKey(KeyRequest),
    /// Delete a key.
    DeleteKey(KeyQuery),
}

fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

impl FromRequest for Endpoint {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let segment = last_segment(parts.req.path()).to_string();
        let method = parts.req.method;
        match (method, segment.as_str()) {
            (Method::Post, "stop") => Ok(Endpoint::Stop(Json::<StopRequest>::from_request(parts).await?.0)),
            (Method::Put | Method::Post, "keys") => {
                Ok(Endpoint::PutKey(Json::<KeyRequest>::from_request(parts).await?.0))
            }
            (Method::Delete, "keys") => Ok(Endpoint::DeleteKey(Query::<KeyQuery>::from_request(parts).await?.0)),
            (Method::Get, _) => {
                let q = Query::<ResumeQuery>::from_request(parts).await?.0;
                let header = LastEventId::from_request(parts).await?.0;
                let raw = header.or(q.last_event_id).unwrap_or_else(|| "0".into());
                let after = raw.trim().parse::<u32>().map_err(|_| {
                    ApiError::bad_request(
                        "bad_last_event_id",
                        "Last-Event-ID must be an event id from this stream",
                    )
                })?;
                Ok(Endpoint::Resume {
                    stream_id: q.stream_id,
                    after,
                })
            }
            (Method::Post, _) => Ok(Endpoint::Complete(
                Json::<CompletionRequest>::from_request(parts).await?.0,
            )),
            _ => Err(ApiError::not_found(
                "no_such_endpoint",
                "no such chat-completion endpoint",
            )),
        }
    }
}

/// The handler.
pub async fn handle(
    user: User,
    settings: Settings<AiSettings>,
    endpoint: Endpoint,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::Complete(body) => complete(&user, &settings, body, db.0, &ctx).await,
        Endpoint::Stop(s) => {
            let v = ledger::request_stop(&db, &user.id, &s.stream_id).await?;
            Ok(ok(json!({ "stream_id": v["stream_id"], "message_id": v["message_id"],
                          "status": if v["status"] == "streaming" { json!("stopping") } else { v["status"].clone() } })))
        }
        Endpoint::Resume { stream_id, after } => resume(&user, db.0, &ctx, stream_id, after).await,
        Endpoint::PutKey(k) => put_key(&user, &settings, &db, &ctx, k).await,
        Endpoint::DeleteKey(k) => {
            db.execute::<Value>(
                db.from("ai_user_api_keys")
                    .eq("user_id", &user.id)
                    .eq("provider", &k.provider)
                    .delete(),
            )
            .await
            .map_err(ledger::map_error)?;
            Ok(ok(json!({ "provider": k.provider, "deleted": true })))
        }
    }
}

fn ok(data: Value) -> Reply {
    edgeworks_core::Response::ok(&data).into()
}

async fn put_key(
    user: &User,
    settings: &AiSettings,
    db: &Db<HostHttp>,
    ctx: &Ctx,
    k: KeyRequest,
) -> Result<Reply, ApiError> {
    check_api_key(&k.api_key)?;
    let keyring = settings.keyring.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "user_keys_disabled",
            "storing your own keys is not enabled on this deployment",
        )
    })?;
    let mut nonce = [0u8; 12];
    ctx.host().fill_random(&mut nonce);
    let sealed = keyring.seal(&user.id, &k.provider, &k.api_key, nonce)?;
    db.rpc::<Value>(
        "ai_key_put",
        &json!({ "p_user": user.id, "p_provider": k.provider, "p_key_id": sealed.key_id,
                 "p_nonce": sealed.nonce, "p_ciphertext": sealed.ciphertext }),
    )
    .await
    .map_err(ledger::map_error)?;
    ctx.log().info(
        "user key stored",
        json!({ "provider": k.provider, "key_id": sealed.key_id }),
    );
    Ok(ok(
        json!({ "provider": k.provider, "stored": true, "key_id": sealed.key_id }),
    ))
}

#[derive(Deserialize)]
struct SealedRow {
    provider: String,
    #[serde(flatten)]
    sealed: Sealed,
}

#[derive(Deserialize)]
struct HistoryRow {
    role: String,
    content: String,
}

/// The attempts for `candidates`: the user's own key where stored, else
/// the platform's; a provider with neither is left out.
async fn attempts(
    user: &User,
    settings: &AiSettings,
    db: &Db<HostHttp>,
    candidates: &[Candidate],
    temperature: Option<f64>,
    max_tokens: u32,
) -> Result<Vec<Attempt>, ApiError> {
    let rows: Vec<SealedRow> = db
        .execute(
            db.from("ai_user_api_keys")
                .select("provider,key_id,nonce,ciphertext")
                .eq("user_id", &user.id),
        )
        .await
        .map_err(ledger::map_error)?;
    let mut out = Vec::new();
    for c in candidates {
        let own = rows.iter().find(|r| r.provider == c.provider.as_str());
        let key = match (own, settings.keyring.as_ref()) {
            (Some(row), Some(ring)) => Some(ring.open(&user.id, &row.provider, &row.sealed).map_err(|_| {
                ApiError::conflict(
                    "user_key_unreadable",
                    format!("your stored {} key cannot be opened; store it again", row.provider),
                )
            })?),
            (Some(row), None) => {
                return Err(ApiError::conflict(
                    "user_key_unreadable",
                    format!("your stored {} key cannot be opened; store it again", row.provider),
                ))
            }
            (None, _) => settings.platform_key(c.provider).cloned(),
        };
        if let Some(key) = key {
            out.push(Attempt {
                candidate: c.clone(),
                spec: CallSpec {
                    provider: c.provider,
                    model: c.model.clone(),
                    api_key: key.0,
                    base_url: settings.base_url(c.provider).to_string(),
                    temperature,
                    max_tokens,
                    timeout_ms: settings.upstream_timeout_ms,
                },
            });
        }
    }
    if out.is_empty() {
        return Err(ApiError::unavailable(
            "provider_not_configured",
            "none of the requested providers has a key (the platform's or your own)",
        ));
    }
    Ok(out)
}

async fn history(db: &Db<HostHttp>, user_id: &str, conversation_id: &str) -> Result<Vec<Message>, ApiError> {
    // Newest 100 answered messages, oldest first; another user's conversation
    // reads as empty here and is refused by the reservation call.
    let rows: Vec<HistoryRow> = db
        .execute(
            db.from("messages")
                .select("role,content")
                .eq("conversation_id", conversation_id)
                .eq("user_id", user_id)
                .in_("status", ["complete", "stopped"])
                .neq("content", "")
                // A question and its answer are written in one transaction
                // (same created_at): the question goes first.
                .order("created_at.desc,role.asc")
                .limit(100),
        )
        .await
        .map_err(ledger::map_error)?;
    Ok(rows
        .into_iter()
        .rev()
        .filter_map(|r| {
            Role::parse(&r.role).map(|role| Message {
                role,
                content: r.content,
            })
        })
        .collect())
}

async fn complete(
    user: &User,
    settings: &AiSettings,
    body: CompletionRequest,
    db: Db<HostHttp>,
    ctx: &Ctx,
) -> Result<Reply, ApiError> {
    let max_tokens = body.max_tokens.unwrap_or(settings.default_max_tokens);
    if max_tokens > settings.max_tokens_limit {
        return Err(ApiError::unprocessable(
            "the request has invalid fields",
            json!({ "fields": [{ "field": "max_tokens", "code": "too_large",
                                 "message": format!("at most {}", settings.max_tokens_limit) }] }),
        ));
    }
    let candidates = body.candidates();
    // Independent reads, in parallel: both stand between the request and its first token.
    let saved = async {
        match (&body.conversation_id, &body.message) {
            (Some(id), Some(_)) => history(&db, &user.id, id).await,
            _ => Ok(Vec::new()),
        }
    };
    let keys = attempts(user, settings, &db, &candidates, body.temperature, max_tokens);
    let (saved, keys) = futures_util::future::join(saved, keys).await;
    let conversation = body.conversation(saved?);
    let attempts = keys?;
    let priced: Vec<Candidate> = attempts.iter().map(|a| a.candidate.clone()).collect();
    let stream = body.stream.unwrap_or(false);
    let begun = begin(
        &db,
        &user.id,
        &priced,
        conversation.estimated_tokens,
        max_tokens,
        settings.default_budget_usd,
        stream,
        body.user_message(),
        body.conversation_id.as_deref(),
        body.title.as_deref().or(body.user_message()),
    )
    .await?;
    ctx.log().info(
        "completion reserved",
        json!({ "message_id": begun.message_id, "reserved_usd": begun.reserved_usd,
                "candidates": priced.iter().map(|c| format!("{}/{}", c.provider.as_str(), c.model)).collect::<Vec<_>>(),
                "stream": stream }),
    );
    let ledger = DbLedger {
        db,
        message_id: begun.message_id.clone(),
        stream_id: begun.stream_id.clone(),
        log: Some(ctx.log().clone()),
    };
    if !stream {
        let answer = answer_buffered(ctx.host().as_ref(), &attempts, &conversation).await;
        let settled = ledger.finish(&answer.finish).await?;
        if let Some(e) = answer.error {
            return Err(ApiError::from(&e).with_details(json!({
                "message_id": begun.message_id, "conversation_id": begun.conversation_id,
                "fallbacks": answer.fallbacks, "cost_usd": settled.cost_usd,
            })));
        }
        let f = answer.finish;
        return Ok(ok(json!({
            "conversation_id": begun.conversation_id,
            "user_message_id": begun.user_message_id,
            "message_id": begun.message_id,
            "content": f.content,
            "provider": f.provider,
            "model": f.model,
            "finish_reason": answer.finish_reason.as_ref().map(|r| r.as_str()),
            "usage": f.usage.map(|(p, c)| json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c })),
            "cost_usd": settled.cost_usd,
            "usage_source": settled.usage_source,
            "reserved_usd": begun.reserved_usd,
            "fallbacks": answer.fallbacks,
        })));
    }
    let live = Live::new();
    let reader = live.reader();
    let producer = Producer::new(
        ctx.host(),
        Rc::new(ledger),
        live,
        settings.stream_flush_ms,
        settings.stream_idle_ms,
    );
    let start = json!({
        "conversation_id": begun.conversation_id, "user_message_id": begun.user_message_id,
        "message_id": begun.message_id, "stream_id": begun.stream_id, "reserved_usd": begun.reserved_usd,
    });
    let log = ctx.log().clone();
    let work = Box::pin(async move {
        let settled = producer.run(attempts, conversation, start).await;
        log.info(
            "completion settled",
            json!({ "cost_usd": settled.cost_usd, "usage_source": settled.usage_source }),
        );
    });
    let mut reply = match ctx.host().spawn(work) {
        Ok(()) => sse(ctx, reader, KEEP_ALIVE_MS),
        // A host without background work: the response drives the producer.
        Err(work) => {
            let driver = futures_util::stream::once(work).filter_map(|_| async { None });
            sse(ctx, futures_util::stream::select(reader, driver), KEEP_ALIVE_MS)
        }
    };
    reply.headers.set("x-stream-id", begun.stream_id.as_str());
    Ok(reply)
}

async fn resume(user: &User, db: Db<HostHttp>, ctx: &Ctx, stream_id: String, after: u32) -> Result<Reply, ApiError> {
    // The first page is read before answering, so a wrong stream id is a 404, not an empty stream.
    let first = ledger::read_stream(&db, &user.id, &stream_id, after).await?;
    let host = ctx.host();
    let user_id = user.id.clone();
    struct State {
        db: Db<HostHttp>,
        page: Option<ledger::StreamPage>,
        after: u32,
        ended: bool,
    }
    let state = State {
        db,
        page: Some(first),
        after,
        ended: false,
    };
    let events = futures_util::stream::unfold(state, move |mut st| {
        let host = host.clone();
        let user_id = user_id.clone();
        let stream_id = stream_id.clone();
        async move {
            if st.ended {
                return None;
            }
            loop {
                let page = match st.page.take() {
                    Some(p) => p,
                    None => {
                        host.sleep(RESUME_POLL_MS).await;
                        match ledger::read_stream(&st.db, &user_id, &stream_id, st.after).await {
                            Ok(p) => p,
                            Err(_) => continue,
                        }
                    }
                };
                if !page.events.is_empty() {
                    st.after = page.events.last().map(|e| e.seq).unwrap_or(st.after);
                    st.ended = page.events.iter().any(|e| TERMINAL_EVENTS.contains(&e.event.as_str()));
                    let batch: Vec<_> = page.events.iter().map(to_sse).collect();
                    return Some((futures_util::stream::iter(batch), st));
                }
                let finished = page.status != "streaming";
                if (finished && page.silent_ms > FINISH_GRACE_MS) || page.silent_ms > PRODUCER_LOST_MS {
                    // Nothing more will come: say so once and end.
                    st.ended = true;
                    let e = edgeworks_runtime::Event::json(&json!({
                        "code": if finished { "stream_ended" } else { "stream_lost" },
                        "message": if finished { "the stream has no events after this id" }
                                   else { "the stream's producer stopped saving; the answer so far is in messages" },
                        "status": page.status,
                    }))
                    .name("error");
                    return Some((futures_util::stream::iter(vec![e]), st));
                }
            }
        }
    })
    .flatten();
    let mut reply = sse(ctx, events, KEEP_ALIVE_MS);
    reply.headers.set("x-resumed-after", after.to_string());
    Ok(reply)
}
