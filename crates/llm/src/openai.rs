//! The chat-completions dialect OpenAI and Mistral share.
//!
//! - `POST {base}/v1/chat/completions`, `Authorization: Bearer <key>`;
//! - body `{model, messages: [{role: system|user|assistant, content}],
//!   temperature?, max_completion_tokens (OpenAI) | max_tokens (Mistral),
//!   stream, stream_options: {include_usage: true} (OpenAI streams only:
//!   without it a stream carries no usage at all)}`;
//! - answer `{id, model, choices: [{message: {content}, finish_reason}],
//!   usage: {prompt_tokens, completion_tokens, total_tokens}}`;
//! - stream: `data: {choices: [{delta: {content}, finish_reason}]}` chunks,
//!   usage in a last chunk (OpenAI: `choices: []`; Mistral: with the finish
//!   reason), then `data: [DONE]`; a failure mid-stream is `data: {error}`;
//! - failure: OpenAI `{error: {message, type, param, code}}`, Mistral
//!   `{object: "error", message, type, code}` or `{message}`; 429 with
//!   `retry-after` / `retry-after-ms`.

use edgeworks_core::{Method, Request, Response};
use serde_json::{json, Value};

use crate::call::{kind_for_status, retry_after_ms, scrub, CallSpec, Provider};
use crate::chat::{Completion, FinishReason, ProviderError, ProviderErrorKind, Usage};
use crate::prompt::{Conversation, Role};
use crate::stream::{Delta, SseEvent};

fn messages(conversation: &Conversation) -> Vec<Value> {
    let mut out = Vec::with_capacity(conversation.messages.len() + 1);
    if !conversation.system.trim().is_empty() {
        out.push(json!({ "role": "system", "content": conversation.system }));
    }
    for m in &conversation.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        out.push(json!({ "role": role, "content": m.content }));
    }
    out
}

/// The JSON body.
pub fn request_body(spec: &CallSpec, conversation: &Conversation, stream: bool) -> Value {
    let mut body = json!({
        "model": spec.model,
        "messages": messages(conversation),
        "stream": stream,
    });
    match spec.provider {
        Provider::Mistral => body["max_tokens"] = json!(spec.max_tokens),
        _ => body["max_completion_tokens"] = json!(spec.max_tokens),
    }
    if let Some(t) = spec.temperature {
        body["temperature"] = json!(t);
    }
    if stream && spec.provider == Provider::OpenAi {
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// The request.
pub fn build_request(spec: &CallSpec, conversation: &Conversation, stream: bool) -> Request {
    let mut req = Request::new(Method::Post, format!("{}/v1/chat/completions", spec.base_url));
    req.headers.set("content-type", "application/json");
    req.headers.set("authorization", format!("Bearer {}", spec.api_key));
    if stream {
        req.headers.set("accept", "text/event-stream");
    }
    req.body = serde_json::to_vec(&request_body(spec, conversation, stream)).unwrap_or_default();
    req
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" | "model_length" => FinishReason::MaxTokens,
        other => FinishReason::Other(other.to_string()),
    }
}

fn count(v: &Value, key: &str) -> Option<u32> {
    v.get(key)?.as_u64().map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A 2xx body.
pub fn parse_completion(spec: &CallSpec, body: &[u8]) -> Result<Completion, ProviderError> {
    let provider = spec.provider.as_str();
    let err = |kind| ProviderError::new(provider, kind);
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        err(ProviderErrorKind::Decode {
            message: format!("not a chat completion: {e}"),
        })
    })?;
    let choice = v.get("choices").and_then(|c| c.get(0));
    let text = choice
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let finish = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str);
    if finish == Some("content_filter") {
        return Err(err(ProviderErrorKind::SafetyBlocked {
            reason: "content_filter".into(),
        }));
    }
    if text.is_empty() {
        return Err(err(ProviderErrorKind::EmptyResponse {
            finish_reason: finish.map(str::to_string),
        }));
    }
    let usage = v.get("usage").filter(|u| u.is_object());
    let (prompt, completion) = (
        usage.and_then(|u| count(u, "prompt_tokens")),
        usage.and_then(|u| count(u, "completion_tokens")),
    );
    Ok(Completion {
        text,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&spec.model)
            .to_string(),
        finish_reason: finish.map(finish_reason).unwrap_or(FinishReason::Stop),
        usage: Usage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            total_tokens: prompt.unwrap_or(0).saturating_add(completion.unwrap_or(0)),
            // No usage in the body: the caller charges the reservation.
            estimated: prompt.is_none() || completion.is_none(),
        },
        provider,
    })
}

fn error_message(key: &str, v: &Value) -> Option<String> {
    let m = v
        .get("error")
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .or_else(|| v.get("message").and_then(Value::as_str))?;
    Some(scrub(key, m))
}

/// A non-2xx body.
pub fn parse_error(spec: &CallSpec, resp: &Response) -> ProviderError {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let message = error_message(&spec.api_key, &v)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("HTTP {} without an error message", resp.status));
    ProviderError::new(
        spec.provider.as_str(),
        kind_for_status(resp.status, message, retry_after_ms(resp)),
    )
}

/// One stream event.
pub fn decode_event(provider: Provider, key: &str, e: &SseEvent) -> Vec<Delta> {
    let data = e.data.trim();
    if data == "[DONE]" {
        return vec![Delta::Done];
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return vec![Delta::Error(ProviderError::new(
            provider.as_str(),
            ProviderErrorKind::Decode {
                message: "a stream chunk is not JSON".into(),
            },
        ))];
    };
    if v.get("error").is_some() || v.get("object").and_then(Value::as_str) == Some("error") {
        let message = error_message(key, &v).unwrap_or_else(|| "error in stream".into());
        // A failure inside a 200 stream is the provider's (overload, server error).
        return vec![Delta::Error(ProviderError::new(
            provider.as_str(),
            ProviderErrorKind::ServerError { status: 500, message },
        ))];
    }
    let mut out = Vec::new();
    if let Some(m) = v.get("model").and_then(Value::as_str) {
        out.push(Delta::Model(m.to_string()));
    }
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        if let Some(t) = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            out.push(Delta::Text(t.to_string()));
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(Delta::Finish(finish_reason(f)));
        }
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        out.push(Delta::Usage {
            prompt_tokens: count(u, "prompt_tokens"),
            completion_tokens: count(u, "completion_tokens"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::test_support::*;

    #[test]
    fn openai_streams_ask_for_usage_and_mistral_uses_max_tokens() {
        let o = request_body(&spec(Provider::OpenAi), &conversation(), true);
        assert_eq!(o["stream_options"]["include_usage"], json!(true));
        assert_eq!(o["max_completion_tokens"], json!(100));
        assert_eq!(o["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(o["messages"][3], json!({"role": "user", "content": "2+2?"}));
        let m = request_body(&spec(Provider::Mistral), &conversation(), true);
        assert!(m.get("stream_options").is_none());
        assert_eq!(m["max_tokens"], json!(100));
        let req = build_request(&spec(Provider::OpenAi), &conversation(), false);
        assert_eq!(req.url, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers.get("authorization"), Some("Bearer sk-secret-key-123"));
    }

    #[test]
    fn a_buffered_answer_carries_text_model_and_exact_usage() {
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":1,"total_tokens":22}}"#;
        let c = parse_completion(&spec(Provider::OpenAi), body.as_bytes()).unwrap();
        assert_eq!((c.text.as_str(), c.model.as_str()), ("4", "gpt-4o-mini-2024-07-18"));
        assert_eq!(
            (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.estimated),
            (21, 1, false)
        );
    }

    #[test]
    fn an_openai_stream_yields_text_then_usage_from_the_empty_choices_chunk() {
        let body = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            "data: [DONE]\n\n"
        );
        let d: Vec<Delta> = decode_all(Provider::OpenAi, body)
            .into_iter()
            .filter(|d| !matches!(d, Delta::Model(_)))
            .collect();
        assert_eq!(
            d,
            vec![
                Delta::Text("He".into()),
                Delta::Text("llo".into()),
                Delta::Finish(FinishReason::Stop),
                Delta::Usage {
                    prompt_tokens: Some(9),
                    completion_tokens: Some(2)
                },
                Delta::Done
            ]
        );
    }

    #[test]
    fn an_error_chunk_inside_a_stream_is_a_retryable_failure() {
        let body = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        let d = decode_all(Provider::Mistral, body);
        assert!(matches!(&d[0], Delta::Error(e) if e.is_retryable() && e.to_string().contains("overloaded")));
    }
}
