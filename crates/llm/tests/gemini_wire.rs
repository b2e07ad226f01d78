//! The Gemini client against a local fake server speaking Google's
//! documented generateContent wire format.

use std::time::Duration;

use edgeworks_core::Response;
use edgeworks_llm::chat::{ChatProvider, FinishReason, ProviderError, ProviderErrorKind};
use edgeworks_llm::gemini::{GeminiClient, GeminiConfig};
use edgeworks_llm::prompt::{build_conversation, Conversation, Message};
use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};
use serde_json::{json, Value};

const KEY: &str = "AIzaSyFAKE-test-key-0123456789";

fn client(base_url: &str, extra: &[(&'static str, &'static str)]) -> GeminiClient {
    let mut vars: Vec<(String, String)> = vec![
        ("GEMINI_API_KEY".into(), KEY.into()),
        ("GEMINI_BASE_URL".into(), base_url.into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = GeminiConfig::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("valid test config");
    GeminiClient::new(config)
}

fn conversation() -> Conversation {
    build_conversation(
        "You are a tutor for Biology.",
        &[
            Message::user("What is DNA?"),
            Message::assistant("A molecule that carries genetic information."),
        ],
        "And RNA?",
        10_000,
    )
    .unwrap()
}

fn ask(
    server: &FakeServer,
    extra: &[(&'static str, &'static str)],
) -> Result<edgeworks_llm::chat::Completion, ProviderError> {
    block_on(client(&server.base_url, extra).complete(&NativeClient, &conversation()))
}

fn answer(text: &str) -> String {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 12, "totalTokenCount": 43},
        "modelVersion": "gemini-2.0-flash-001"
    })
    .to_string()
}

fn google_error(code: u16, status: &str, message: &str, details: Value) -> String {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}}).to_string()
}

fn assert_key_hidden(e: &ProviderError) {
    assert!(!e.to_string().contains(KEY), "Display leaks the key: {e}");
    assert!(!format!("{e:?}").contains(KEY), "Debug leaks the key: {e:?}");
}

#[test]
fn success_returns_text_usage_and_model_version() {
    let server = FakeServer::start(|_, _| json_response(200, &answer("RNA is single-stranded.")));
    let c = ask(&server, &[]).unwrap();
    assert_eq!(c.text, "RNA is single-stranded.");
    assert_eq!(c.model, "gemini-2.0-flash-001");
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.provider, "gemini");
    assert_eq!(
        (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens),
        (31, 12, 43)
    );
    assert!(!c.usage.estimated);
}

#[test]
fn request_has_documented_path_header_and_body() {
    let server = FakeServer::start(|_, _| json_response(200, &answer("ok")));
    ask(
        &server,
        &[
            ("GEMINI_MODEL", "gemini_1.5_pro"),
            ("GEMINI_TEMPERATURE", "0.3"),
            ("GEMINI_MAX_TOKENS", "1024"),
            ("GEMINI_TOP_P", "0.9"),
            ("GEMINI_TOP_K", "20"),
        ],
    )
    .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.path(), "/v1beta/models/gemini-1.5-pro:generateContent");
    assert!(!req.url.contains(KEY), "key must not be in the URL");
    assert!(req.query().is_empty());
    assert_eq!(req.headers.get("x-goog-api-key"), Some(KEY));
    assert_eq!(req.headers.get("content-type"), Some("application/json"));

    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "What is DNA?"}]},
            {"role": "model", "parts": [{"text": "A molecule that carries genetic information."}]},
            {"role": "user", "parts": [{"text": "And RNA?"}]},
        ])
    );
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "You are a tutor for Biology."}]})
    );
    assert_eq!(
        body["generationConfig"],
        json!({"temperature": 0.3, "maxOutputTokens": 1024, "topP": 0.9, "topK": 20})
    );
}

#[test]
fn consecutive_same_role_messages_share_one_turn_and_no_system_means_no_instruction() {
    let server = FakeServer::start(|_, _| json_response(200, &answer("ok")));
    let conv = build_conversation(
        "",
        &[Message::user("first, unanswered"), Message::assistant("  ")],
        "second",
        10_000,
    )
    .unwrap();
    block_on(client(&server.base_url, &[]).complete(&NativeClient, &conv)).unwrap();
    let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "first, unanswered"}, {"text": "second"}]}])
    );
    assert!(body.get("systemInstruction").is_none());
}

#[test]
fn server_error_500_is_retryable() {
    let server = FakeServer::start(|_, _| {
        json_response(
            500,
            &google_error(500, "INTERNAL", "An internal error has occurred.", json!([])),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert_eq!(
        e.kind,
        ProviderErrorKind::ServerError {
            status: 500,
            message: "An internal error has occurred.".into()
        }
    );
    assert!(e.is_retryable());
    assert_eq!(e.retry_after_ms(), None);
    assert_key_hidden(&e);
}

#[test]
fn unavailable_503_with_html_body_is_a_retryable_server_error() {
    let server = FakeServer::start(|_, _| {
        let mut r = Response::new(503);
        r.headers.set("content-type", "text/html");
        r.body = b"<html>Service Unavailable</html>".to_vec();
        r
    });
    let e = ask(&server, &[]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::ServerError { status: 503, .. }));
    assert!(e.is_retryable());
    assert!(e.to_string().contains("HTTP 503"), "{e}");
}

#[test]
fn rate_limit_with_retry_after_header() {
    let server = FakeServer::start(|_, _| {
        json_response(
            429,
            &google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                json!([]),
            ),
        )
        .with_header("retry-after", "7")
    });
    let e = ask(&server, &[]).unwrap_err();
    assert!(e.is_retryable());
    assert_eq!(e.retry_after_ms(), Some(7_000));
    assert!(e.to_string().contains("Resource has been exhausted"), "{e}");
}

#[test]
fn rate_limit_with_retry_info_detail() {
    let server = FakeServer::start(|_, _| {
        json_response(
            429,
            &google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
                json!([
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
                ]),
            ),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::RateLimited { .. }));
    assert_eq!(e.retry_after_ms(), Some(17_000));
}

#[test]
fn rate_limit_without_hint_has_no_retry_after() {
    let server = FakeServer::start(|_, _| json_response(429, "{}"));
    let e = ask(&server, &[]).unwrap_err();
    assert!(e.is_retryable());
    assert_eq!(e.retry_after_ms(), None);
}

#[test]
fn bad_request_keeps_the_providers_message() {
    let server = FakeServer::start(|_, _| {
        json_response(
            400,
            &google_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
                json!([{"@type": "type.googleapis.com/google.rpc.BadRequest"}]),
            ),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    match &e.kind {
        ProviderErrorKind::BadRequest { status, message } => {
            assert_eq!(*status, 400);
            assert!(message.contains("generation_config.temperature"), "{message}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("generation_config.temperature"));
}

#[test]
fn unknown_model_404_is_a_non_retryable_bad_request() {
    let server = FakeServer::start(|_, _| {
        json_response(
            404,
            &google_error(
                404,
                "NOT_FOUND",
                "models/gemini-pro is not found for API version v1beta",
                json!([]),
            ),
        )
    });
    let e = ask(&server, &[("GEMINI_MODEL", "gemini_pro")]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::BadRequest { status: 404, .. }));
    assert!(!e.is_retryable());
}

#[test]
fn invalid_api_key_is_an_auth_error_that_never_shows_the_key() {
    // A provider that echoes the key back must not get it into our errors.
    let server = FakeServer::start(|req, _| {
        let sent = req.headers.get("x-goog-api-key").unwrap_or("").to_string();
        json_response(
            400,
            &google_error(
                400,
                "INVALID_ARGUMENT",
                &format!("API key not valid: {sent}. Please pass a valid API key."),
                json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
            ),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::Auth { status: 400, .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("API key not valid"), "{e}");
    assert_key_hidden(&e);
}

#[test]
fn permission_denied_403_is_auth() {
    let server = FakeServer::start(|_, _| {
        json_response(
            403,
            &google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers.",
                json!([]),
            ),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::Auth { status: 403, .. }));
    assert!(!e.is_retryable());
}

#[test]
fn safety_finish_is_safety_blocked() {
    let server = FakeServer::start(|_, _| {
        json_response(
            200,
            &json!({
                "candidates": [{
                    "finishReason": "SAFETY",
                    "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]
                }],
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}
            })
            .to_string(),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert_eq!(
        e.kind,
        ProviderErrorKind::SafetyBlocked {
            reason: "SAFETY".into()
        }
    );
    assert!(!e.is_retryable());
}

#[test]
fn prompt_feedback_block_reason_is_prompt_blocked() {
    let server = FakeServer::start(|_, _| {
        json_response(
            200,
            &json!({
                "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}
            })
            .to_string(),
        )
    });
    let e = ask(&server, &[]).unwrap_err();
    assert_eq!(
        e.kind,
        ProviderErrorKind::PromptBlocked {
            reason: "PROHIBITED_CONTENT".into()
        }
    );
    assert!(!e.is_retryable());
}

#[test]
fn max_tokens_returns_the_partial_answer_marked_truncated() {
    let server = FakeServer::start(|_, _| {
        json_response(
            200,
            &json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "RNA is"}]}, "finishReason": "MAX_TOKENS"}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}
            })
            .to_string(),
        )
    });
    let c = ask(&server, &[]).unwrap();
    assert_eq!(c.text, "RNA is");
    assert_eq!(c.finish_reason, FinishReason::MaxTokens);
}

#[test]
fn thought_parts_are_skipped_and_answer_parts_joined() {
    let server = FakeServer::start(|_, _| {
        json_response(
            200,
            &json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Let me think about RNA...", "thought": true},
                    {"text": "RNA is "},
                    {"text": "single-stranded."}
                ]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "thoughtsTokenCount": 10, "totalTokenCount": 19}
            })
            .to_string(),
        )
    });
    let c = ask(&server, &[]).unwrap();
    assert_eq!(c.text, "RNA is single-stranded.");
    assert_eq!(c.usage.completion_tokens, 14);
    assert_eq!(c.usage.total_tokens, 19);
    assert_eq!(c.model, "gemini-2.0-flash", "configured model when no modelVersion");
}

#[test]
fn no_candidates_without_block_reason_is_a_retryable_empty_response() {
    let server = FakeServer::start(|_, _| json_response(200, r#"{"candidates": []}"#));
    let e = ask(&server, &[]).unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::EmptyResponse { finish_reason: None });
    assert!(e.is_retryable());
}

#[test]
fn missing_usage_is_estimated_and_marked() {
    let server = FakeServer::start(|_, _| {
        json_response(
            200,
            &json!({"candidates": [{"content": {"parts": [{"text": "abcdefgh"}]}, "finishReason": "STOP"}]})
                .to_string(),
        )
    });
    let c = ask(&server, &[]).unwrap();
    assert!(c.usage.estimated);
    assert_eq!(c.usage.prompt_tokens, conversation().estimated_tokens);
    assert_eq!(c.usage.completion_tokens, 2);
}

#[test]
fn a_2xx_that_is_not_the_documented_format_is_a_decode_error() {
    let server = FakeServer::start(|_, _| json_response(200, "<html>captive portal</html>"));
    let e = ask(&server, &[]).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::Decode { .. }), "{e:?}");
    assert!(!e.is_retryable());
}

#[test]
fn a_slow_provider_times_out() {
    let server = FakeServer::start(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        json_response(200, &answer("too late"))
    });
    let e = ask(&server, &[("GEMINI_TIMEOUT_MS", "200")]).unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Timeout { after_ms: 200 });
    assert!(e.is_retryable());
}

#[test]
fn an_unreachable_provider_is_a_retryable_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let e = block_on(client(&base, &[]).complete(&NativeClient, &conversation())).unwrap_err();
    assert!(matches!(e.kind, ProviderErrorKind::Network { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_key_hidden(&e);
}

#[test]
fn no_error_kind_ever_shows_the_key() {
    let bodies: Vec<(u16, String)> = vec![
        (500, google_error(500, "INTERNAL", &format!("boom {KEY}"), json!([]))),
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &format!("quota for key={KEY}"), json!([])),
        ),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", &format!("bad {KEY}"), json!([])),
        ),
        (403, google_error(403, "PERMISSION_DENIED", KEY, json!([]))),
        (200, format!("not json {KEY}")),
    ];
    for (status, body) in bodies {
        let server = FakeServer::start(move |_, _| json_response(status, &body));
        let e = ask(&server, &[]).unwrap_err();
        assert_key_hidden(&e);
        let api: edgeworks_core::ApiError = (&e).into();
        assert!(!api.message().contains(KEY));
    }
}

#[test]
fn chat_provider_dispatches_to_gemini_when_a_key_is_set() {
    let server = FakeServer::start(|_, _| json_response(200, &answer("from gemini")));
    let base = server.base_url.clone();
    let provider = ChatProvider::from_lookup(|name| match name {
        "GEMINI_API_KEY" => Some(KEY.to_string()),
        "GEMINI_BASE_URL" => Some(base.clone()),
        _ => None,
    })
    .unwrap();
    let c = block_on(provider.complete(&NativeClient, &conversation())).unwrap();
    assert_eq!((c.provider, c.text.as_str()), ("gemini", "from gemini"));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn offline_provider_makes_no_request() {
    let server = FakeServer::start(|_, _| json_response(500, "{}"));
    let base = server.base_url.clone();
    let provider = ChatProvider::from_lookup(|name| match name {
        "GEMINI_BASE_URL" => Some(base.clone()),
        _ => None,
    })
    .unwrap();
    let c = block_on(provider.complete(&NativeClient, &conversation())).unwrap();
    assert_eq!(c.provider, "offline");
    assert!(c.text.starts_with("[offline provider]"));
    assert!(c.text.contains("And RNA?"));
    assert!(server.requests().is_empty());
}
