//! A conversation's live room, as pure logic: the client protocol's
//! messages and their validation, the per-connection rate limit, delivery
//! in sequence order (duplicates dropped, gaps detected), and the few
//! Phoenix-channel frames (Realtime's protocol, serializer 1.0.0) a socket
//! needs to hear the room's broadcasts from other isolates.
//!
//! Client → server: `{"type":"message","content":"...","client_id":"..."?}`,
//! `{"type":"typing","typing":true}`, `{"type":"ping"}`.
//! Server → client: `welcome`, `message` (with `seq`), `typing`, `ack`,
//! `pong`, `error` (see `websocket_handler`).

use serde_json::{json, Value};

/// Longest message content, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// Largest client frame, in bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// The Realtime channel of a conversation's room.
pub fn topic(conversation_id: &str) -> String {
    format!("ai-room:{conversation_id}")
}

/// What a client sent, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// A chat message for the room.
    Post {
        /// Its text.
        content: String,
        /// The client's own id for it, echoed in the ack.
        client_id: Option<String>,
    },
    /// Typing started or stopped.
    Typing(bool),
    /// Keep-alive.
    Ping,
}

/// Why a client frame was refused: `(code, message)`.
pub type Refusal = (&'static str, String);

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    (code, message.into())
}

/// Parses and validates one text frame.
pub fn parse_client(text: &str) -> Result<ClientMessage, Refusal> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(refuse(
            "frame_too_large",
            format!("frames are at most {MAX_FRAME_BYTES} bytes"),
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|_| refuse("invalid_json", "a frame is one JSON object"))?;
    match v.get("type").and_then(Value::as_str) {
        Some("message") => {
            let content = v
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| refuse("invalid_message", "content must be a string"))?;
            if content.contains('\0') {
                return Err(refuse("invalid_message", "content must not contain NUL"));
            }
            // Control characters other than line breaks and tabs have no
            // place in chat text (they hide or reorder what others see).
            let content: String = content
                .chars()
                .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
                .collect();
            let content = content.trim().to_string();
            if content.is_empty() {
                return Err(refuse("invalid_message", "content is empty"));
            }
            if content.chars().count() > MAX_MESSAGE_CHARS {
                return Err(refuse(
                    "invalid_message",
                    format!("content is at most {MAX_MESSAGE_CHARS} characters"),
                ));
            }
            let client_id = match v.get("client_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(s.clone())
                }
                Some(_) => return Err(refuse("invalid_message", "client_id is 1-64 visible ASCII characters")),
            };
            Ok(ClientMessage::Post { content, client_id })
        }
        Some("typing") => match v.get("typing") {
            Some(Value::Bool(b)) => Ok(ClientMessage::Typing(*b)),
            None => Ok(ClientMessage::Typing(true)),
            _ => Err(refuse("invalid_message", "typing must be true or false")),
        },
        Some("ping") => Ok(ClientMessage::Ping),
        Some(other) => Err(refuse(
            "unknown_type",
            format!("unknown type {:?}", other.chars().take(32).collect::<String>()),
        )),
        None => Err(refuse("invalid_message", "a frame needs a type")),
    }
}

/// A token bucket per connection: `capacity` frames at once, `per_sec`
/// after. Time comes in, so tests are deterministic.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last_ms: i64,
}

impl ConnLimit {
    /// A full bucket at `now_ms`.
    pub fn new(capacity: u32, per_sec: f64, now_ms: i64) -> ConnLimit {
        ConnLimit {
            capacity: f64::from(capacity),
            per_ms: per_sec / 1000.0,
            tokens: f64::from(capacity),
            last_ms: now_ms,
        }
    }

    /// Takes a token; `Err(ms)` until one is available.
    pub fn take(&mut self, now_ms: i64) -> Result<(), u64> {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.per_ms > 0.0 {
            Err(((1.0 - self.tokens) / self.per_ms).ceil() as u64)
        } else {
            Err(u64::MAX)
        }
    }
}

/// What to do with a room message of sequence number `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The next one: deliver it.
    Next,
    /// Already delivered: drop it.
    Duplicate,
    /// Some before it were missed: read them from the log first.
    Gap,
}

/// Where a socket is in the room's sequence.
pub fn order(delivered: i64, seq: i64) -> Order {
    if seq <= delivered {
        Order::Duplicate
    } else if seq == delivered + 1 {
        Order::Next
    } else {
        Order::Gap
    }
}

/// Realtime's websocket URL for `supabase_url` (http → ws, https → wss).
pub fn realtime_url(supabase_url: &str, apikey: &str) -> String {
    let base = supabase_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    let mut url = format!("{base}/realtime/v1/websocket?apikey=");
    edgeworks_db::query_encode(apikey, &mut url);
    url.push_str("&vsn=1.0.0");
    url
}

/// `phx_join` of a private channel with the user's token.
pub fn join_frame(topic: &str, access_token: &str, reference: u64) -> String {
    json!({
        "topic": format!("realtime:{topic}"),
        "event": "phx_join",
        "payload": {
            "config": { "broadcast": { "self": false, "ack": false }, "presence": { "key": "" }, "private": true },
            "access_token": access_token,
        },
        "ref": reference.to_string(),
        "join_ref": reference.to_string(),
    })
    .to_string()
}

/// The connection heartbeat Realtime expects every 25-30 s.
pub fn heartbeat_frame(reference: u64) -> String {
    json!({ "topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": reference.to_string() }).to_string()
}

/// A frame from Realtime, as far as a room cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The reply to our join: ok, or the refusal's reason.
    Joined(Result<(), String>),
    /// A broadcast on the room: its event and payload.
    Broadcast {
        /// `message` or `typing`.
        event: String,
        /// What was sent.
        payload: Value,
    },
    /// The server closed the channel (token expired, kicked).
    ChannelClosed,
    /// Anything else (heartbeat replies, presence).
    Other,
}

/// Reads one frame of the room's channel `topic`.
pub fn parse_incoming(topic: &str, text: &str, join_ref: u64) -> Incoming {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Incoming::Other;
    };
    let ours = v.get("topic").and_then(Value::as_str) == Some(&format!("realtime:{topic}"));
    match v.get("event").and_then(Value::as_str) {
        Some("phx_reply") if ours && v.get("ref").and_then(Value::as_str) == Some(&join_ref.to_string()) => {
            let payload = v.get("payload");
            if payload.and_then(|p| p.get("status")).and_then(Value::as_str) == Some("ok") {
                Incoming::Joined(Ok(()))
            } else {
                let reason = payload
                    .and_then(|p| p.get("response"))
                    .and_then(|r| r.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("join refused")
                    .to_string();
                Incoming::Joined(Err(reason))
            }
        }
        Some("broadcast") if ours => {
            let p = v.get("payload");
            Incoming::Broadcast {
                event: p
                    .and_then(|p| p.get("event"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                payload: p.and_then(|p| p.get("payload")).cloned().unwrap_or(Value::Null),
            }
        }
        Some("phx_close") | Some("phx_error") if ours => Incoming::ChannelClosed,
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_trimmed_stripped_of_control_characters_and_bounded() {
        assert_eq!(
            parse_client(r#"{"type":"message","content":"  hi\u0007 there\n ","client_id":"c1"}"#),
            Ok(ClientMessage::Post {
                content: "hi there".into(),
                client_id: Some("c1".into())
            })
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            parse_client(&json!({"type": "message", "content": long}).to_string())
                .unwrap_err()
                .0,
            "invalid_message"
        );
        assert_eq!(
            parse_client(r#"{"type":"message","content":"a\u0000"}"#).unwrap_err().0,
            "invalid_message"
        );
        assert_eq!(
            parse_client(r#"{"type":"message","content":"  "}"#).unwrap_err().0,
            "invalid_message"
        );
        assert_eq!(parse_client("not json").unwrap_err().0, "invalid_json");
        assert_eq!(parse_client(r#"{"type":"admin"}"#).unwrap_err().0, "unknown_type");
        assert_eq!(
            parse_client(&"x".repeat(MAX_FRAME_BYTES + 1)).unwrap_err().0,
            "frame_too_large"
        );
    }

    #[test]
    fn typing_and_ping_parse() {
        assert_eq!(
            parse_client(r#"{"type":"typing","typing":false}"#),
            Ok(ClientMessage::Typing(false))
        );
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert!(parse_client(r#"{"type":"typing","typing":"yes"}"#).is_err());
    }

    #[test]
    fn the_connection_limit_allows_a_burst_then_the_refill_rate() {
        let mut l = ConnLimit::new(3, 2.0, 0);
        assert!(l.take(0).is_ok() && l.take(0).is_ok() && l.take(0).is_ok());
        assert_eq!(l.take(0), Err(500));
        assert!(l.take(499).is_err());
        assert!(l.take(500).is_ok());
    }

    #[test]
    fn delivery_is_in_sequence_with_duplicates_dropped_and_gaps_seen() {
        assert_eq!(order(4, 5), Order::Next);
        assert_eq!(order(4, 4), Order::Duplicate);
        assert_eq!(order(4, 2), Order::Duplicate);
        assert_eq!(order(4, 7), Order::Gap);
    }

    #[test]
    fn realtime_frames_join_privately_and_broadcasts_are_read_for_our_topic_only() {
        let join: Value = serde_json::from_str(&join_frame("ai-room:c", "jwt", 1)).unwrap();
        assert_eq!(join["topic"], "realtime:ai-room:c");
        assert_eq!(join["payload"]["config"]["private"], true);
        assert_eq!(join["payload"]["access_token"], "jwt");
        let ok =
            r#"{"topic":"realtime:ai-room:c","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#;
        assert_eq!(parse_incoming("ai-room:c", ok, 1), Incoming::Joined(Ok(())));
        let no = r#"{"topic":"realtime:ai-room:c","event":"phx_reply","payload":{"status":"error","response":{"reason":"Unauthorized"}},"ref":"1"}"#;
        assert_eq!(
            parse_incoming("ai-room:c", no, 1),
            Incoming::Joined(Err("Unauthorized".into()))
        );
        let b = r#"{"topic":"realtime:ai-room:c","event":"broadcast","payload":{"type":"broadcast","event":"message","payload":{"seq":3}},"ref":null}"#;
        assert_eq!(
            parse_incoming("ai-room:c", b, 1),
            Incoming::Broadcast {
                event: "message".into(),
                payload: json!({"seq": 3})
            }
        );
        assert_eq!(parse_incoming("ai-room:other", b, 1), Incoming::Other);
        assert_eq!(
            realtime_url("http://127.0.0.1:54321/", "a.b+c"),
            "ws://127.0.0.1:54321/realtime/v1/websocket?apikey=a.b%2Bc&vsn=1.0.0"
        );
    }
}
