//! Anthropic's Messages API.
//!
//! - `POST {base}/v1/messages`, headers `x-api-key`, `anthropic-version:
//!   2023-06-01`, `content-type: application/json`;
//! - body `{model, max_tokens, system?, messages: [{role: user|assistant,
//!   content}], temperature?, stream}` (the system prompt is a top-level
//!   field, not a message; consecutive same-role messages are merged);
//! - answer `{id, type: "message", model, content: [{type: "text", text}],
//!   stop_reason: end_turn|max_tokens|stop_sequence, usage: {input_tokens,
//!   output_tokens}}`;
//! - stream: named events `message_start` (input tokens), `content_block_*`
//!   (`text_delta`), `message_delta` (stop reason, cumulative output
//!   tokens), `message_stop`, `ping`, and `error` (`overloaded_error`, ...);
//! - failure `{type: "error", error: {type, message}}`: 429
//!   `rate_limit_error` with `retry-after`, 529 `overloaded_error`, 500
//!   `api_error`, 401 `authentication_error`, 403 `permission_error`.

use edgeworks_core::{Method, Request, Response};
use serde_json::{json, Value};

use crate::call::{kind_for_status, retry_after_ms, scrub, CallSpec};
use crate::chat::{Completion, FinishReason, ProviderError, ProviderErrorKind, Usage};
use crate::prompt::{Conversation, Role};
use crate::stream::{Delta, SseEvent};

/// The API version the wire format above is documented for.
pub const API_VERSION: &str = "2023-06-01";
const PROVIDER: &str = "anthropic";

/// The JSON body.
pub fn request_body(spec: &CallSpec, conversation: &Conversation, stream: bool) -> Value {
    let mut turns: Vec<(&str, String)> = Vec::new();
    for m in &conversation.messages {
        if m.content.trim().is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match turns.last_mut() {
            Some((r, text)) if *r == role => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            _ => turns.push((role, m.content.clone())),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "messages": messages,
        "stream": stream,
    });
    if !conversation.system.trim().is_empty() {
        body["system"] = json!(conversation.system);
    }
    if let Some(t) = spec.temperature {
        // Anthropic takes 0..=1; the request schema allows up to 2 for others.
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    body
}

/// The request.
pub fn build_request(spec: &CallSpec, conversation: &Conversation, stream: bool) -> Request {
    let mut req = Request::new(Method::Post, format!("{}/v1/messages", spec.base_url));
    req.headers.set("content-type", "application/json");
    req.headers.set("x-api-key", spec.api_key.as_str());
    req.headers.set("anthropic-version", API_VERSION);
    if stream {
        req.headers.set("accept", "text/event-stream");
    }
    req.body = serde_json::to_vec(&request_body(spec, conversation, stream)).unwrap_or_default();
    req
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::MaxTokens,
        other => FinishReason::Other(other.to_string()),
    }
}

fn count(v: &Value, key: &str) -> Option<u32> {
    v.get(key)?.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A 2xx body.
pub fn parse_completion(spec: &CallSpec, body: &[u8]) -> Result<Completion, ProviderError> {
    let err = |kind| ProviderError::new(PROVIDER, kind);
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        err(ProviderErrorKind::Decode {
            message: format!("not a message: {e}"),
        })
    })?;
    let text: String = v
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let stop = v.get("stop_reason").and_then(Value::as_str);
    if text.is_empty() {
        return Err(err(ProviderErrorKind::EmptyResponse {
            finish_reason: stop.map(str::to_string),
        }));
    }
    let usage = v.get("usage").filter(|u| u.is_object());
    let (prompt, completion) = (
        usage.and_then(|u| count(u, "input_tokens")),
        usage.and_then(|u| count(u, "output_tokens")),
    );
    Ok(Completion {
        text,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&spec.model)
            .to_string(),
        finish_reason: stop.map(finish_reason).unwrap_or(FinishReason::Stop),
        usage: Usage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            total_tokens: prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0)),
            estimated: prompt.is_none() || completion.is_none(),
        },
        provider: PROVIDER,
    })
}

fn error_of(key: &str, v: &Value) -> (Option<String>, Option<String>) {
    let e = v.get("error");
    let kind = e
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(|m| scrub(key, m));
    (kind, message)
}

/// A non-2xx body. 529 (`overloaded_error`) is Anthropic's own status for
/// a busy service and is retryable like a 5xx.
pub fn parse_error(spec: &CallSpec, resp: &Response) -> ProviderError {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let (_, message) = error_of(&spec.api_key, &v);
    let message = message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("HTTP {} without an error message", resp.status));
    ProviderError::new(PROVIDER, kind_for_status(resp.status, message, retry_after_ms(resp)))
}

/// What a stream has told so far that later events refer to.
#[derive(Debug, Default)]
pub struct StreamState {
    input_tokens: Option<u32>,
}

/// One stream event.
pub fn decode_event(state: &mut StreamState, key: &str, e: &SseEvent) -> Vec<Delta> {
    let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
        return vec![Delta::Error(ProviderError::new(
            PROVIDER,
            ProviderErrorKind::Decode {
                message: "a stream event is not JSON".into(),
            },
        ))];
    };
    let kind = e
        .event
        .as_deref()
        .or_else(|| v.get("type").and_then(Value::as_str))
        .unwrap_or("");
    match kind {
        "message_start" => {
            let message = v.get("message");
            let usage = message.and_then(|m| m.get("usage"));
            state.input_tokens = usage.and_then(|u| count(u, "input_tokens"));
            let mut out = Vec::new();
            if let Some(m) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                out.push(Delta::Model(m.to_string()));
            }
            out.push(Delta::Usage {
                prompt_tokens: state.input_tokens,
                completion_tokens: None,
            });
            out
        }
        "content_block_delta" => v
            .get("delta")
            .filter(|d| d.get("type").and_then(Value::as_str) == Some("text_delta"))
            .and_then(|d| d.get("text"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| vec![Delta::Text(t.to_string())])
            .unwrap_or_default(),
        "message_delta" => {
            let mut out = Vec::new();
            if let Some(s) = v
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .and_then(Value::as_str)
            {
                out.push(Delta::Finish(finish_reason(s)));
            }
            if let Some(n) = v.get("usage").and_then(|u| count(u, "output_tokens")) {
                out.push(Delta::Usage {
                    prompt_tokens: state.input_tokens,
                    completion_tokens: Some(n),
                });
            }
            out
        }
        "message_stop" => vec![Delta::Done],
        "error" => {
            let (kind, message) = error_of(key, &v);
            let message = message.unwrap_or_else(|| "error in stream".into());
            let status = match kind.as_deref() {
                Some("overloaded_error") => 529,
                Some("rate_limit_error") => 429,
                _ => 500,
            };
            vec![Delta::Error(ProviderError::new(
                PROVIDER,
                kind_for_status(status, message, None),
            ))]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::test_support::*;
    use crate::call::Provider;

    #[test]
    fn the_system_prompt_is_top_level_and_headers_name_the_version() {
        let req = build_request(&spec(Provider::Anthropic), &conversation(), true);
        assert_eq!(req.url, "http://127.0.0.1:9/v1/messages");
        assert_eq!(req.headers.get("x-api-key"), Some("sk-secret-key-123"));
        assert_eq!(req.headers.get("anthropic-version"), Some(API_VERSION));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["system"], json!("Be brief."));
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["max_tokens"], json!(100));
        assert_eq!(body["stream"], json!(true));
    }

    #[test]
    fn a_stream_yields_text_and_input_plus_cumulative_output_usage() {
        let body = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-latest\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let d = decode_all(Provider::Anthropic, body);
        let text: String = d
            .iter()
            .filter_map(|d| match d {
                Delta::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Hello");
        assert!(d.contains(&Delta::Usage {
            prompt_tokens: Some(25),
            completion_tokens: Some(15)
        }));
        assert_eq!(d.last(), Some(&Delta::Done));
    }

    #[test]
    fn an_overloaded_error_event_is_retryable_and_a_529_status_too() {
        let body = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let d = decode_all(Provider::Anthropic, body);
        assert!(matches!(&d[0], Delta::Error(e) if e.is_retryable()));
        let r = response(
            529,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert!(parse_error(&spec(Provider::Anthropic), &r).is_retryable());
    }

    #[test]
    fn a_buffered_message_carries_exact_usage() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"4"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3}}"#;
        let c = parse_completion(&spec(Provider::Anthropic), body.as_bytes()).unwrap();
        assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (12, 3));
        assert_eq!(c.finish_reason, FinishReason::Stop);
    }
}
