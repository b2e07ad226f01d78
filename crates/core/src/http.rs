//! The request and response every handler sees, independent of the host.
//!
//! The runtime converts the shim's `{method, url, headers, body}` into a
//! [`Request`] and a [`Response`] back into `{status, headers, body}`.

use serde::Serialize;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

/// Header names are stored lower-cased; lookups are case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    // Stored names are lower-case, so a look-up compares without copying.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces any existing value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.set_value(name, value.into());
    }

    /// [`Headers::set`] once for every value type: its callers pass `&str`,
    /// `String` and more, and the removal would otherwise be copied into the
    /// wasm once per type.
    fn set_value(&mut self, name: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.0.push((lower(name), value));
    }

    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.append_value(name, value.into());
    }

    /// [`Headers::append`] once for every value type (see `set_value`).
    fn append_value(&mut self, name: &str, value: String) {
        self.0.push((lower(name), value));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `name` lower-cased, copied once (most names arrive lower-case already).
fn lower(name: &str) -> String {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.append(k.as_ref(), v);
        }
        h
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The full URL as the client sent it (scheme, host, path, query).
    pub url: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// The path part of the URL, without query or fragment.
    pub fn path(&self) -> &str {
        path_of(&self.url)
    }

    /// Decoded query pairs, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some(q) = self.url.split_once('?').map(|(_, q)| q) else {
            return Vec::new();
        };
        let q = q.split('#').next().unwrap_or("");
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The bearer token from `Authorization`, if any.
    pub fn bearer_token(&self) -> Option<&str> {
        let h = self.headers.get("authorization")?.trim();
        let (scheme, token) = h.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            Some(token.trim())
        } else {
            None
        }
    }

    /// Parses the body as JSON. Empty body is an error; syntax errors carry
    /// the line and column.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }
}

/// The path part of `url`, without query or fragment ([`Request::path`]).
pub fn path_of(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find('/') {
                Some(j) => &after[j..],
                None => "/",
            }
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// JSON parsing with a client-facing error that says where it went wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("empty_body", "request body is empty; send JSON"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let (code, msg) = if e.is_data() {
            ("invalid_body", format!("request body has the wrong shape: {e}"))
        } else {
            ("invalid_json", format!("request body is not valid JSON: {e}"))
        };
        ApiError::bad_request(code, msg).with_details(serde_json::json!({
            "line": e.line(),
            "column": e.column(),
        }))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        let mut r = Response::new(status);
        r.headers.set("content-type", "application/json");
        // Serialising our own types cannot fail; fall back to an envelope anyway.
        r.body = serde_json::to_vec(value).unwrap_or_else(|_| {
            br#"{"success":false,"error":{"code":"internal","message":"response serialisation failed"}}"#.to_vec()
        });
        r
    }

    /// `{"success": true, "data": ...}`, the seeds' success shape.
    pub fn ok<T: Serialize>(data: &T) -> Self {
        Response::json(200, &serde_json::json!({ "success": true, "data": data }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.set(name, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_are_split_and_decoded() {
        let r = Request::new(
            Method::Get,
            "http://h:1/functions/v1/chat-status?job_id=a%20b&limit=3#x",
        );
        assert_eq!(r.path(), "/functions/v1/chat-status");
        assert_eq!(r.query_param("job_id").as_deref(), Some("a b"));
        assert_eq!(r.query_param("limit").as_deref(), Some("3"));
        assert_eq!(r.query_param("nope"), None);
    }

    #[test]
    fn truncated_percent_escape_is_kept_literally() {
        let r = Request::new(Method::Get, "http://h/p?a=%4&b=%");
        assert_eq!(r.query_param("a").as_deref(), Some("%4"));
        assert_eq!(r.query_param("b").as_deref(), Some("%"));
    }

    #[test]
    fn bearer_token_is_case_insensitive_and_trimmed() {
        let mut r = Request::new(Method::Get, "/");
        r.headers.set("Authorization", "bearer  abc ");
        assert_eq!(r.bearer_token(), Some("abc"));
        r.headers.set("authorization", "Basic abc");
        assert_eq!(r.bearer_token(), None);
    }

    #[test]
    fn json_errors_report_position() {
        let err = parse_json::<serde_json::Value>(b"{\n  \"a\": }").unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(err.code(), "invalid_json");
        let d = err.details().unwrap();
        assert_eq!(d["line"], 2);
    }
}
