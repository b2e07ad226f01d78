//! What can go wrong talking to S3, and what the client of an edge function
//! is told about it.
//!
//! S3 reports failures as `<Error><Code>…</Code><Message>…</Message>…`,
//! sometimes inside a 200 (CompleteMultipartUpload, CopyObject). The code is
//! kept verbatim for logs; the `ApiError` shown to clients carries a status
//! and a stable code of ours, never the upstream message (a
//! `SignatureDoesNotMatch` body echoes the canonical request and key id).

use edgeworks_core::http_client::TransportError;
use edgeworks_core::ApiError;
use serde_json::json;

use crate::sigv4::PresignError;
use crate::xml;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Error {
    /// An argument we were given cannot form a valid request.
    InvalidInput { field: &'static str, reason: String },
    /// The request may not have reached the server.
    Transport(TransportError),
    /// The server answered with an S3 error (or a bare error status).
    Service {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The server answered success with a body we cannot read.
    InvalidResponse { status: u16, reason: String },
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::InvalidInput { field, reason } => write!(f, "invalid {field}: {reason}"),
            S3Error::Transport(e) => write!(f, "S3 transport: {e}"),
            S3Error::Service {
                status,
                code,
                message,
                request_id,
            } => {
                write!(f, "S3 {status} {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if let Some(id) = request_id {
                    write!(f, " (request id {id})")?;
                }
                Ok(())
            }
            S3Error::InvalidResponse { status, reason } => {
                write!(f, "S3 answered {status} with an unreadable body: {reason}")
            }
        }
    }
}

impl std::error::Error for S3Error {}

impl From<TransportError> for S3Error {
    fn from(e: TransportError) -> S3Error {
        S3Error::Transport(e)
    }
}

impl From<PresignError> for S3Error {
    fn from(e: PresignError) -> S3Error {
        S3Error::InvalidInput {
            field: "expires_in",
            reason: e.to_string(),
        }
    }
}

impl S3Error {
    /// The S3 error code, when the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.code(), Some("NoSuchKey" | "NotFound" | "NoSuchUpload"))
    }

    /// The client-facing error. Our own credentials or bucket being wrong is
    /// a server problem (502), not the caller's; the caller's mistakes
    /// (missing object, bad multipart parts) are 4xx.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            S3Error::InvalidInput { field, reason } => ApiError::unprocessable(
                format!("{field}: {reason}"),
                json!({ "fields": [{ "field": field, "code": "invalid", "message": reason }] }),
            ),
            S3Error::Transport(TransportError::Timeout { .. }) => {
                ApiError::new(504, "storage_timeout", "object storage did not answer in time")
            }
            S3Error::Transport(TransportError::Network(_)) => {
                ApiError::unavailable("storage_unavailable", "object storage is unreachable")
            }
            S3Error::InvalidResponse { .. } => {
                ApiError::upstream("storage_error", "object storage sent an unreadable answer")
            }
            S3Error::Service { status, code, .. } => {
                let details = json!({ "storage_code": code });
                let e = match code.as_str() {
                    "NoSuchKey" | "NotFound" => ApiError::not_found("object_not_found", "no such object"),
                    "NoSuchUpload" => ApiError::not_found("upload_not_found", "no such multipart upload (completed, aborted or expired)"),
                    "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" | "MalformedXML" => ApiError::bad_request(
                        "invalid_multipart",
                        "the uploaded parts do not form a valid object (a part is missing, out of order, or smaller than 5 MiB before the last)",
                    ),
                    "EntityTooLarge" => ApiError::new(413, "file_too_large", "the object is larger than storage allows"),
                    "InvalidRange" => ApiError::new(416, "range_not_satisfiable", "the requested range is outside the object"),
                    "PreconditionFailed" => ApiError::new(412, "precondition_failed", "the object changed"),
                    "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
                        ApiError::unavailable("storage_unavailable", "object storage is busy; retry later")
                    }
                    _ if *status >= 500 => ApiError::unavailable("storage_unavailable", "object storage failed; retry later"),
                    // AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId,
                    // NoSuchBucket...: our configuration, not the caller.
                    _ => ApiError::upstream("storage_error", "object storage refused the request"),
                };
                e.with_details(details)
            }
        }
    }

    /// Reads an error response. A readable `<Error>` body gives the code;
    /// otherwise (HEAD has no body) the status names it.
    pub fn from_response(status: u16, body: &[u8]) -> S3Error {
        if let Some(e) = parse_error_body(status, body) {
            return e;
        }
        let code = match status {
            404 => "NotFound",
            403 => "Forbidden",
            400 => "BadRequest",
            412 => "PreconditionFailed",
            416 => "InvalidRange",
            503 => "ServiceUnavailable",
            _ => "HttpError",
        };
        S3Error::Service {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
        }
    }
}

impl From<S3Error> for ApiError {
    fn from(e: S3Error) -> ApiError {
        e.to_api_error()
    }
}

/// `Some` when `body` is an S3 `<Error>` document.
pub fn parse_error_body(status: u16, body: &[u8]) -> Option<S3Error> {
    let text = std::str::from_utf8(body).ok()?;
    let root = xml::parse(text).ok()?;
    if root.name != "Error" {
        return None;
    }
    Some(S3Error::Service {
        status,
        code: root.child_text("Code").unwrap_or("Unknown").trim().to_string(),
        message: root.child_text("Message").unwrap_or("").trim().to_string(),
        request_id: root.child_text("RequestId").map(|s| s.trim().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_body_becomes_a_typed_error() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>u/x</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let e = S3Error::from_response(404, body);
        assert_eq!(
            e,
            S3Error::Service {
                status: 404,
                code: "NoSuchKey".into(),
                message: "The specified key does not exist.".into(),
                request_id: Some("4442587FB7D0A2F9".into()),
            }
        );
        assert!(e.is_not_found());
        let api = e.to_api_error();
        assert_eq!((api.status(), api.code()), (404, "object_not_found"));
    }

    #[test]
    fn a_bodyless_status_is_named_by_the_status() {
        assert_eq!(S3Error::from_response(404, b"").code(), Some("NotFound"));
        assert_eq!(S3Error::from_response(403, b"").code(), Some("Forbidden"));
        assert_eq!(S3Error::from_response(500, b"<html>oops").code(), Some("HttpError"));
    }

    #[test]
    fn our_misconfiguration_is_a_502_that_does_not_echo_the_upstream_message() {
        let body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>StringToSign AWS4-HMAC-SHA256 AKIDSECRET</Message></Error>";
        let api = S3Error::from_response(403, body).to_api_error();
        assert_eq!((api.status(), api.code()), (502, "storage_error"));
        assert!(!api.message().contains("AKIDSECRET"));
        assert_eq!(api.details().unwrap()["storage_code"], "SignatureDoesNotMatch");
    }

    #[test]
    fn caller_mistakes_and_outages_map_to_their_statuses() {
        let status_of = |code: &str, status: u16| {
            let body = format!("<Error><Code>{code}</Code></Error>");
            S3Error::from_response(status, body.as_bytes()).to_api_error().status()
        };
        assert_eq!(status_of("NoSuchUpload", 404), 404);
        assert_eq!(status_of("InvalidPart", 400), 400);
        assert_eq!(status_of("EntityTooSmall", 400), 400);
        assert_eq!(status_of("EntityTooLarge", 400), 413);
        assert_eq!(status_of("SlowDown", 503), 503);
        assert_eq!(status_of("Weird", 500), 503);
        assert_eq!(status_of("AccessDenied", 403), 502);
        assert_eq!(
            S3Error::Transport(TransportError::Timeout { after_ms: 5 })
                .to_api_error()
                .status(),
            504
        );
        assert_eq!(
            S3Error::Transport(TransportError::Network("x".into()))
                .to_api_error()
                .status(),
            503
        );
    }
}
