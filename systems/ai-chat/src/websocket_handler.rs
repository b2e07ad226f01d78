//! websocket-handler: a live room per conversation, for its owner's
//! devices and tabs.
//!
//! Connect: `GET /functions/v1/websocket-handler?conversation_id=<uuid>`
//! with the access token in `Sec-WebSocket-Protocol` (beside a protocol
//! name, e.g. `["ai-chat", token]`) or `?access_token=`; to resume, add
//! `&session=<session_token>&last_seq=<last seq the client has>`. A room is
//! its conversation's owner's only: anyone else gets 404 before any upgrade.
//!
//! On connect the server sends `{"type":"welcome", session_id,
//! session_token, last_seq, room_seq}` and then, on a resume, every message
//! after `last_seq` from the log. Messages a client posts are validated,
//! rate-limited per connection, stored with the room's next sequence number
//! (`ai_room_post`) and broadcast through Realtime on the private channel
//! `ai-room:<id>`, which every socket of the room (in any isolate) has
//! joined with the user's token; each socket delivers in sequence order,
//! reading any gap from the log, so nothing is lost or repeated. Typing
//! indicators are broadcast only. Presence lives in `user_sessions`
//! (heartbeat every 30 s, marked disconnected on close or after two
//! silent minutes). The platform's wall clock ends every socket; the
//! session token (one-time: each connect issues the next) and `last_seq`
//! carry a client across.

use std::rc::Rc;

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::{ApiError, Method, Request as HttpRequest};
use edgeworks_db::Db;
use edgeworks_input::input;
use edgeworks_input::validate::Field;
use edgeworks_runtime::{Ctx, Host, HostHttp, Logger, Message, Reply, WebSocket};
use edgeworks_service::caller::presented_token;
use edgeworks_service::{FromRequest, Parts, Query, Route, ServiceDb, User, WebSocketUpgrade};
use futures_util::future::{select_all, LocalBoxFuture};
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ledger;
use crate::room::{self, ClientMessage, ConnLimit, Incoming, Order};

/// GET (the upgrade), signed-in users, 30 connects burst / one a second.
/// Relays a Realtime subscription (an outbound socket) and streams answers.
pub const ROUTE: Route = Route::new(&[Method::Get]).rate_limit("30/1").capabilities(
    edgeworks_runtime::caps::OUTBOUND_SOCKETS
        | edgeworks_runtime::caps::STREAMING_FETCH
        | edgeworks_runtime::caps::BACKGROUND,
);

/// Per connection: this many frames at once, then this many a second.
const FRAME_BURST: u32 = 20;
const FRAMES_PER_SEC: f64 = 5.0;
/// Refused frames after which the connection is closed (1008).
const MAX_REFUSALS: u32 = 50;
const TICK_MS: u32 = 1_000;
const REALTIME_HEARTBEAT_MS: i64 = 25_000;
const PRESENCE_HEARTBEAT_MS: i64 = 30_000;
/// Without Realtime (it refused or dropped us), the log is read this often.
const POLL_MS: i64 = 1_000;

input! {
    /// The upgrade's query.
    pub struct Connect {
        /// The room.
        pub conversation_id: String = Field::uuid().required(),
        /// The session token of an earlier connection, to resume it.
        pub session: Option<String> = Field::string().min_chars(64).max_chars(64),
        /// The last sequence number the client has.
        pub last_seq: Option<i64> = Field::integer().range(0, i64::MAX),
    }
}

/// The token the caller presented (already verified by the pipeline), for
/// joining Realtime as the user.
pub struct AccessToken(pub String);

impl FromRequest for AccessToken {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        presented_token(&parts.req)
            .map(AccessToken)
            .ok_or_else(|| ApiError::unauthorized("missing_token", "send the access token"))
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[derive(Deserialize)]
struct Opened {
    session_id: String,
    last_seq: i64,
    room_seq: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct RoomEvent {
    seq: i64,
    payload: Value,
    created_at: Value,
}

/// The handler: the room is checked and the session opened before the
/// upgrade, so a refusal is an ordinary HTTP error.
pub async fn handle(
    user: User,
    Query(q): Query<Connect>,
    upgrade: WebSocketUpgrade,
    AccessToken(token): AccessToken,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Reply, ApiError> {
    let mut raw = [0u8; 32];
    ctx.host().fill_random(&mut raw);
    let session_token = hex::encode(raw);
    let resume_hash = q.session.as_deref().map(sha256_hex);
    let opened: Opened = db
        .rpc(
            "ai_session_open",
            &json!({ "p_user": user.id, "p_conversation": q.conversation_id,
                     "p_token_hash": sha256_hex(&session_token), "p_resume_hash": resume_hash }),
        )
        .await
        .map_err(ledger::map_error)?;
    // A resume continues after what the client says it has (it may have
    // received more than the server recorded); a new session starts now.
    let after = match (&q.session, q.last_seq) {
        (Some(_), Some(n)) => n,
        (Some(_), None) => opened.last_seq,
        (None, _) => opened.room_seq,
    };
    let env = ctx.env();
    let config = RoomConfig {
        supabase_url: env.get("SUPABASE_URL").unwrap_or_default().to_string(),
        anon_key: env.get("SUPABASE_ANON_KEY").unwrap_or_default().to_string(),
        service_key: env.get("SUPABASE_SERVICE_ROLE_KEY").unwrap_or_default().to_string(),
    };
    let session = Session {
        host: ctx.host(),
        http: ctx.http(),
        db: db.0,
        log: ctx.log().clone(),
        user_id: user.id.clone(),
        conversation_id: q.conversation_id.clone(),
        session_id: opened.session_id.clone(),
        token,
        config,
        delivered: after,
    };
    let welcome = json!({
        "type": "welcome", "session_id": opened.session_id, "session_token": session_token,
        "conversation_id": q.conversation_id, "last_seq": after, "room_seq": opened.room_seq,
    });
    Ok(upgrade.on_upgrade(move |ws| session.run(ws, welcome)))
}

struct RoomConfig {
    supabase_url: String,
    anon_key: String,
    service_key: String,
}

struct Session {
    host: Rc<dyn Host>,
    http: HostHttp,
    db: Db<HostHttp>,
    log: Logger,
    user_id: String,
    conversation_id: String,
    session_id: String,
    token: String,
    config: RoomConfig,
    delivered: i64,
}

enum Wake {
    Client(Option<Message>),
    Realtime(Option<Message>),
    Tick,
}

fn error_frame(code: &str, message: &str) -> String {
    json!({ "type": "error", "code": code, "message": message }).to_string()
}

impl Session {
    async fn run(mut self, ws: WebSocket, welcome: Value) {
        let topic = room::topic(&self.conversation_id);
        // Joined before the welcome: a client that has its welcome hears
        // everything broadcast from then on (typing is never stored).
        let mut realtime = self.join_realtime(&topic).await;
        ws.send_text(welcome.to_string());
        // Anything after the client's last seq, including what was posted
        // while it joined, comes from the log.
        self.catch_up(&ws).await;
        let mut limit = ConnLimit::new(FRAME_BURST, FRAMES_PER_SEC, self.host.now_ms());
        let mut refusals = 0u32;
        let mut reference = 10u64;
        let now = self.host.now_ms();
        let (mut last_rt_beat, mut last_presence, mut last_poll) = (now, now, now);
        loop {
            let wake = {
                let client: LocalBoxFuture<'_, Wake> = ws.recv().map(Wake::Client).boxed_local();
                let rt: LocalBoxFuture<'_, Wake> = match &realtime {
                    Some(r) => r.recv().map(Wake::Realtime).boxed_local(),
                    None => futures_util::future::pending().boxed_local(),
                };
                let tick: LocalBoxFuture<'_, Wake> = self.host.sleep(TICK_MS).map(|_| Wake::Tick).boxed_local();
                select_all([client, rt, tick]).await.0
            };
            match wake {
                Wake::Client(None) => break,
                Wake::Client(Some(Message::Binary(_))) => {
                    ws.send_text(error_frame("binary_not_supported", "send JSON text frames"));
                }
                Wake::Client(Some(Message::Text(text))) => {
                    if let Err(retry_ms) = limit.take(self.host.now_ms()) {
                        refusals += 1;
                        ws.send_text(
                            json!({ "type": "error", "code": "rate_limited",
                                    "message": "too many frames on this connection", "retry_after_ms": retry_ms })
                            .to_string(),
                        );
                    } else {
                        match room::parse_client(&text) {
                            Ok(m) => self.on_client(&ws, m).await,
                            Err((code, message)) => {
                                refusals += 1;
                                ws.send_text(error_frame(code, &message));
                            }
                        }
                    }
                    if refusals >= MAX_REFUSALS {
                        ws.close(1008, "too many refused frames");
                        break;
                    }
                }
                Wake::Realtime(None) => {
                    self.log
                        .warn("realtime dropped the room; reading the log instead", json!({}));
                    realtime = None;
                }
                Wake::Realtime(Some(Message::Text(text))) => match room::parse_incoming(&topic, &text, 1) {
                    Incoming::Broadcast { event, payload } => self.on_broadcast(&ws, &event, payload).await,
                    Incoming::ChannelClosed => realtime = None,
                    _ => {}
                },
                Wake::Realtime(Some(Message::Binary(_))) => {}
                Wake::Tick => {}
            }
            let now = self.host.now_ms();
            if let Some(r) = &realtime {
                if now - last_rt_beat >= REALTIME_HEARTBEAT_MS {
                    reference += 1;
                    r.send_text(room::heartbeat_frame(reference));
                    last_rt_beat = now;
                }
            } else if now - last_poll >= POLL_MS {
                self.catch_up(&ws).await;
                last_poll = now;
            }
            if now - last_presence >= PRESENCE_HEARTBEAT_MS {
                self.touch(true).await;
                last_presence = now;
            }
        }
        self.touch(false).await;
        drop(realtime);
    }

    /// Joins the room's channel as the user; `None` (logged) if Realtime
    /// is unreachable or refuses, in which case the log is polled.
    async fn join_realtime(&self, topic: &str) -> Option<WebSocket> {
        let url = room::realtime_url(&self.config.supabase_url, &self.config.anon_key);
        let rt = match self.host.connect_websocket(&url, &[]).await {
            Ok(rt) => rt,
            Err(e) => {
                self.log.warn("realtime unreachable", json!({ "error": e.to_string() }));
                return None;
            }
        };
        rt.send_text(room::join_frame(topic, &self.token, 1));
        let deadline = self.host.now_ms() + 5_000;
        loop {
            let frame = {
                let next = rt.recv().boxed_local();
                let timeout = self.host.sleep(1_000).boxed_local();
                match futures_util::future::select(next, timeout).await {
                    futures_util::future::Either::Left((m, _)) => Some(m),
                    futures_util::future::Either::Right(_) => None,
                }
            };
            match frame {
                Some(Some(Message::Text(t))) => {
                    if let Incoming::Joined(result) = room::parse_incoming(topic, &t, 1) {
                        return match result {
                            Ok(()) => Some(rt),
                            Err(reason) => {
                                self.log.warn("realtime refused the room", json!({ "reason": reason }));
                                None
                            }
                        };
                    }
                }
                Some(None) => return None,
                _ => {}
            }
            if self.host.now_ms() > deadline {
                self.log.warn("realtime did not answer the join", json!({}));
                return None;
            }
        }
    }

    fn deliver(&mut self, ws: &WebSocket, e: &RoomEvent) {
        let mut frame = json!({ "type": "message", "seq": e.seq, "created_at": e.created_at });
        if let (Some(f), Some(p)) = (frame.as_object_mut(), e.payload.as_object()) {
            for (k, v) in p {
                f.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        ws.send_text(frame.to_string());
        self.delivered = e.seq;
    }

    /// Delivers everything after `delivered` from the log, in order.
    async fn catch_up(&mut self, ws: &WebSocket) {
        loop {
            let page: Result<Vec<RoomEvent>, _> = self
                .db
                .rpc(
                    "ai_room_read",
                    &json!({ "p_user": self.user_id, "p_conversation": self.conversation_id,
                             "p_after": self.delivered }),
                )
                .await;
            let Ok(page) = page else {
                return;
            };
            let full = page.len() >= 200;
            for e in &page {
                if room::order(self.delivered, e.seq) != Order::Duplicate {
                    self.deliver(ws, e);
                }
            }
            if !full {
                return;
            }
        }
    }

    async fn on_broadcast(&mut self, ws: &WebSocket, event: &str, payload: Value) {
        match event {
            "message" => {
                let Ok(e) = serde_json::from_value::<RoomEvent>(payload) else {
                    return;
                };
                match room::order(self.delivered, e.seq) {
                    Order::Next => self.deliver(ws, &e),
                    Order::Duplicate => {}
                    Order::Gap => self.catch_up(ws).await,
                }
            }
            // Others' typing only: a tab does not need its own indicator back.
            "typing" if payload.get("session_id").and_then(Value::as_str) != Some(self.session_id.as_str()) => {
                ws.send_text(
                    json!({ "type": "typing", "session_id": payload.get("session_id"),
                            "typing": payload.get("typing") })
                    .to_string(),
                );
            }
            _ => {}
        }
    }

    async fn on_client(&mut self, ws: &WebSocket, m: ClientMessage) {
        match m {
            ClientMessage::Ping => {
                ws.send_text(json!({ "type": "pong" }).to_string());
            }
            ClientMessage::Typing(typing) => {
                self.broadcast("typing", json!({ "session_id": self.session_id, "typing": typing }))
                    .await;
            }
            ClientMessage::Post { content, client_id } => {
                let payload = json!({ "content": content, "user_id": self.user_id,
                                      "session_id": self.session_id, "client_id": client_id });
                let posted: Result<Value, _> = self
                    .db
                    .rpc(
                        "ai_room_post",
                        &json!({ "p_user": self.user_id, "p_conversation": self.conversation_id,
                                 "p_kind": "message", "p_payload": payload }),
                    )
                    .await;
                let Ok(posted) = posted else {
                    ws.send_text(error_frame(
                        "not_stored",
                        "the message could not be stored; send it again",
                    ));
                    return;
                };
                let seq = posted.get("seq").and_then(Value::as_i64).unwrap_or(0);
                ws.send_text(json!({ "type": "ack", "client_id": client_id, "seq": seq }).to_string());
                let event = json!({ "seq": seq, "payload": payload, "created_at": posted.get("created_at") });
                self.broadcast("message", event.clone()).await;
                // This socket delivers its own message like any other: in order.
                if let Ok(e) = serde_json::from_value::<RoomEvent>(event) {
                    match room::order(self.delivered, e.seq) {
                        Order::Next => self.deliver(ws, &e),
                        Order::Duplicate => {}
                        Order::Gap => self.catch_up(ws).await,
                    }
                }
            }
        }
    }

    /// Sends on the room's private channel through Realtime's REST API
    /// (service role), reaching every socket of the room in any isolate.
    async fn broadcast(&self, event: &str, payload: Value) {
        let mut req = HttpRequest::new(
            Method::Post,
            format!(
                "{}/realtime/v1/api/broadcast",
                self.config.supabase_url.trim_end_matches('/')
            ),
        );
        req.headers.set("content-type", "application/json");
        req.headers.set("apikey", self.config.service_key.as_str());
        req.headers
            .set("authorization", format!("Bearer {}", self.config.service_key));
        req.body = json!({ "messages": [{ "topic": room::topic(&self.conversation_id), "event": event,
                                          "payload": payload, "private": true }] })
        .to_string()
        .into_bytes();
        match self.http.send(req, 5_000).await {
            Ok(r) if r.status < 300 => {}
            Ok(r) => self.log.warn("room broadcast refused", json!({ "status": r.status })),
            Err(e) => self
                .log
                .warn("room broadcast failed", json!({ "error": e.to_string() })),
        }
    }

    async fn touch(&self, connected: bool) {
        let _: Result<Value, _> = self
            .db
            .rpc(
                "ai_session_touch",
                &json!({ "p_user": self.user_id, "p_session": self.session_id,
                         "p_last_seq": self.delivered, "p_connected": connected }),
            )
            .await;
    }
}
