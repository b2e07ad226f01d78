//! One error type for every function, mapping to one HTTP status and one
//! stable `code` string, rendered in the envelope from DESIGN.md:
//! `{"success": false, "error": {"code", "message", "details"}, "request_id"}`.

use serde_json::{json, Value};

use crate::http::Response;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: u16,
    code: String,
    message: String,
    details: Option<Value>,
    headers: Vec<(String, String)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(401, code, message)
    }
    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(403, code, message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(404, code, message)
    }
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_details(json!({ "limit_bytes": limit }))
    }
    pub fn unprocessable(message: impl Into<String>, details: Value) -> Self {
        Self::new(422, "validation_failed", message).with_details(details)
    }
    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        Self::new(
            405,
            "method_not_allowed",
            format!("method not allowed; use {}", allowed.join(", ")),
        )
        .with_header("allow", allowed.join(", "))
    }
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(
            429,
            "rate_limited",
            format!("too many requests; retry after {retry_after_secs} s"),
        )
        .with_header("retry-after", retry_after_secs.to_string())
    }
    /// An internal failure. The message shown to the client is generic; the
    /// cause belongs in the log, never in the response.
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal error")
    }
    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(503, code, message)
    }
    pub fn upstream(code: &str, message: impl Into<String>) -> Self {
        Self::new(502, code, message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn details(&self) -> Option<&Value> {
        self.details.as_ref()
    }

    pub fn envelope(&self, request_id: &str) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.details {
            error["details"] = d.clone();
        }
        json!({ "success": false, "error": error, "request_id": request_id })
    }

    pub fn into_response(self, request_id: &str) -> Response {
        // The same document as `envelope`, written straight into one buffer
        // (every refused request renders one: no map, no serializer). Only
        // `details`, when there are any, goes through serde_json.
        let mut body = String::with_capacity(96 + self.code.len() + self.message.len() + request_id.len());
        push_envelope(&mut body, &self.code, &self.message, self.details.as_ref(), request_id);
        let mut r = Response::new(self.status);
        r.headers.set("content-type", "application/json");
        r.body = body.into_bytes();
        for (k, v) in self.headers {
            r.headers.append(&k, v);
        }
        r
    }
}

/// The envelope of an error (the document [`ApiError::envelope`] builds),
/// appended to `out`.
pub fn push_envelope(out: &mut String, code: &str, message: &str, details: Option<&Value>, request_id: &str) {
    out.push_str(r#"{"success":false,"error":{"code":"#);
    push_json_str(out, code);
    out.push_str(r#","message":"#);
    push_json_str(out, message);
    if let Some(d) = details {
        out.push_str(r#","details":"#);
        out.push_str(&d.to_string());
    }
    out.push_str(r#"},"request_id":"#);
    push_json_str(out, request_id);
    out.push('}');
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it.
pub fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_documented_shape() {
        let e = ApiError::not_found("job_not_found", "no such job").with_details(json!({"job_id": "x"}));
        let v = e.envelope("req-1");
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "job_not_found");
        assert_eq!(v["error"]["message"], "no such job");
        assert_eq!(v["error"]["details"]["job_id"], "x");
        assert_eq!(v["request_id"], "req-1");
    }

    #[test]
    fn the_response_body_is_the_envelope() {
        for e in [
            ApiError::not_found("job_not_found", "no such \"job\"").with_details(json!({"job_id": "x"})),
            ApiError::method_not_allowed(&["GET"]),
        ] {
            let v = e.envelope("req-1");
            let body: Value = serde_json::from_slice(&e.into_response("req-1").body).unwrap();
            assert_eq!(body, v);
        }
    }

    #[test]
    fn the_envelope_escapes_as_serde_json_does() {
        let nasty = "q\"b\\n\nr\rt\tb\u{8}f\u{c}z\u{0}\u{1f}\u{7f}é✓";
        let e = ApiError::new(400, nasty, nasty).with_details(json!({ "k": nasty }));
        let body = e.clone().into_response(nasty).body;
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), e.envelope(nasty));
        let mut direct = String::new();
        push_json_str(&mut direct, nasty);
        assert_eq!(direct, serde_json::to_string(nasty).unwrap());
    }

    #[test]
    fn method_not_allowed_carries_allow_header() {
        let r = ApiError::method_not_allowed(&["GET", "POST"]).into_response("r");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers.get("allow"), Some("GET, POST"));
    }
}
