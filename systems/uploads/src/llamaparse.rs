//! The LlamaParse client of the parse step: one call, `POST
//! {base}/api/v2/parse` with a JSON body naming the document by a presigned
//! download URL (`source_url`, so the bytes never pass through a function)
//! and the webhook LlamaParse calls when the job ends
//! (`webhook_configurations`). The answer is the job (`id`, `status`); its id
//! is stored on the document and checked when the result's webhook arrives.
//!
//! Request building and answer parsing are pure; the transport is any
//! `HttpClient` (natively tested against a fake server speaking the same
//! shapes). The API key never appears in an error or a log.

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Method, Request, Response};
use serde::Deserialize;
use serde_json::json;

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.cloud.llamaindex.ai";
const TIMEOUT_MS: u32 = 30_000;

/// Where and how to reach LlamaParse.
#[derive(Clone)]
pub struct LlamaParse {
    base_url: String,
    api_key: String,
    tier: String,
}

impl std::fmt::Debug for LlamaParse {
    // The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaParse")
            .field("base_url", &self.base_url)
            .field("tier", &self.tier)
            .finish()
    }
}

/// Why a submission did not give a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Worth trying again later (no answer, 408, 429, 5xx); `retry_after_ms` from `Retry-After`.
    Transient {
        /// What happened.
        reason: String,
        /// The server's `Retry-After`.
        retry_after_ms: Option<u32>,
    },
    /// Refused for good (bad key, bad request, unreadable answer).
    Refused(String),
}

#[derive(Deserialize)]
struct JobAnswer {
    id: Option<String>,
    job: Option<Box<JobAnswer>>,
    status: Option<String>,
}

impl LlamaParse {
    /// From `UPLOAD_LLAMA_PARSE_API_KEY` (none: not configured),
    /// `UPLOAD_LLAMA_PARSE_BASE_URL` and `UPLOAD_LLAMA_PARSE_TIER` (`cost_effective`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<LlamaParse> {
        let api_key = lookup("UPLOAD_LLAMA_PARSE_API_KEY").filter(|k| !k.trim().is_empty())?;
        Some(LlamaParse {
            base_url: lookup("UPLOAD_LLAMA_PARSE_BASE_URL")
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
                .trim_end_matches('/')
                .to_string(),
            api_key: api_key.trim().to_string(),
            tier: lookup("UPLOAD_LLAMA_PARSE_TIER").unwrap_or_else(|| "cost_effective".into()),
        })
    }

    /// The request that starts a parse job.
    pub fn parse_request(&self, source_url: &str, webhook_url: &str) -> Request {
        let body = json!({
            "source_url": source_url,
            "tier": self.tier,
            "version": "latest",
            "webhook_configurations": [{
                "webhook_url": webhook_url,
                "webhook_events": ["parse.success", "parse.error"],
            }],
        });
        let mut req = Request::new(Method::Post, format!("{}/api/v2/parse", self.base_url));
        req.headers.set("authorization", format!("Bearer {}", self.api_key));
        req.headers.set("content-type", "application/json");
        req.headers.set("accept", "application/json");
        req.body = body.to_string().into_bytes();
        req
    }

    /// Starts a parse job; its id.
    pub async fn submit<C: HttpClient>(
        &self,
        http: &C,
        source_url: &str,
        webhook_url: &str,
    ) -> Result<String, SubmitError> {
        match http.send(self.parse_request(source_url, webhook_url), TIMEOUT_MS).await {
            Ok(resp) => parse_answer(&resp),
            Err(TransportError::Timeout { .. }) => Err(SubmitError::Transient {
                reason: "LlamaParse did not answer in time".into(),
                retry_after_ms: None,
            }),
            Err(e) => Err(SubmitError::Transient {
                reason: format!("LlamaParse unreachable: {e}"),
                retry_after_ms: None,
            }),
        }
    }
}

/// The job id of an answer, or why there is none.
pub fn parse_answer(resp: &Response) -> Result<String, SubmitError> {
    let status = resp.status;
    if status == 408 || status == 429 || status >= 500 {
        let retry_after_ms = resp
            .headers
            .get("retry-after")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map(|s| s.saturating_mul(1000));
        return Err(SubmitError::Transient {
            reason: format!("LlamaParse answered {status}"),
            retry_after_ms,
        });
    }
    if !(200..300).contains(&status) {
        // The body may echo what we sent; only the status is kept.
        return Err(SubmitError::Refused(format!("LlamaParse refused the job ({status})")));
    }
    let answer: JobAnswer = serde_json::from_slice(&resp.body)
        .map_err(|_| SubmitError::Refused("LlamaParse sent an unreadable answer".into()))?;
    let id = answer.id.or_else(|| answer.job.and_then(|j| j.id));
    match id {
        Some(id) if !id.is_empty() && id.len() <= 200 && !id.chars().any(char::is_control) => {
            let _ = answer.status;
            Ok(id)
        }
        _ => Err(SubmitError::Refused("LlamaParse's answer has no job id".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_testkit::{block_on, FakeServer, NativeClient};

    fn client(base: &str) -> LlamaParse {
        let env = |k: &str| match k {
            "UPLOAD_LLAMA_PARSE_API_KEY" => Some("llx-secret-key".to_string()),
            "UPLOAD_LLAMA_PARSE_BASE_URL" => Some(format!("{base}/")),
            _ => None,
        };
        LlamaParse::from_lookup(env).unwrap()
    }

    fn json_response(status: u16, body: &str) -> Response {
        let mut r = Response::new(status);
        r.headers.set("content-type", "application/json");
        r.body = body.as_bytes().to_vec();
        r
    }

    #[test]
    fn a_job_is_started_with_the_document_url_and_our_webhook() {
        let server =
            FakeServer::start(|_, _| json_response(200, r#"{"id":"job-123","project_id":"p","status":"PENDING"}"#));
        let lp = client(&server.base_url);
        let id = block_on(lp.submit(
            &NativeClient,
            "https://s3.example/doc.pdf?X-Amz-Signature=abc",
            "https://fn.example/processing-webhook",
        ))
        .unwrap();
        assert_eq!(id, "job-123");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, Method::Post);
        assert!(r.url.ends_with("/api/v2/parse"), "{}", r.url);
        assert_eq!(r.headers.get("authorization"), Some("Bearer llx-secret-key"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["source_url"], "https://s3.example/doc.pdf?X-Amz-Signature=abc");
        assert_eq!(
            body["webhook_configurations"][0]["webhook_url"],
            "https://fn.example/processing-webhook"
        );
        assert_eq!(body["webhook_configurations"][0]["webhook_events"][1], "parse.error");
        assert_eq!(body["tier"], "cost_effective");
    }

    #[test]
    fn failures_are_transient_or_refused_and_never_name_the_key() {
        let retry = parse_answer(&json_response(429, "{}").with_header("retry-after", "7")).unwrap_err();
        assert_eq!(
            retry,
            SubmitError::Transient {
                reason: "LlamaParse answered 429".into(),
                retry_after_ms: Some(7000)
            }
        );
        assert!(matches!(
            parse_answer(&json_response(503, "")),
            Err(SubmitError::Transient { .. })
        ));
        let refused = parse_answer(&json_response(401, r#"{"detail":"bad key llx-secret-key"}"#)).unwrap_err();
        assert!(matches!(&refused, SubmitError::Refused(m) if !m.contains("llx-")));
        assert!(matches!(
            parse_answer(&json_response(200, "not json")),
            Err(SubmitError::Refused(_))
        ));
        assert!(matches!(
            parse_answer(&json_response(200, r#"{"status":"PENDING"}"#)),
            Err(SubmitError::Refused(_))
        ));
        assert_eq!(
            parse_answer(&json_response(200, r#"{"job":{"id":"nested"}}"#)).unwrap(),
            "nested"
        );
        assert!(!format!("{:?}", client("http://x")).contains("llx-"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = block_on(client(&format!("http://127.0.0.1:{port}")).submit(&NativeClient, "u", "w")).unwrap_err();
        assert!(matches!(down, SubmitError::Transient { .. }));
    }

    #[test]
    fn without_a_key_there_is_no_client() {
        assert!(LlamaParse::from_lookup(|_| None).is_none());
        assert!(LlamaParse::from_lookup(|k| (k == "UPLOAD_LLAMA_PARSE_API_KEY").then(|| " ".into())).is_none());
        let default = LlamaParse::from_lookup(|k| (k == "UPLOAD_LLAMA_PARSE_API_KEY").then(|| "k".into())).unwrap();
        assert!(default.parse_request("s", "w").url.starts_with(DEFAULT_BASE_URL));
    }
}
