//! AWS Signature Version 4, computed locally: canonical request, string to
//! sign, signing-key derivation, and the two ways of attaching the result —
//! an `Authorization` header, or query parameters (a presigned URL).
//!
//! Everything here is pure: the signing time is an argument, never read from
//! a clock, so the published AWS test vectors pin the output byte for byte.
//! Paths and query values are taken *decoded* and encoded exactly once, the
//! way S3 canonicalises them (no path normalisation, no double encoding), so
//! the URL we send and the canonical URI the server rebuilds cannot drift.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload hash for presigned URLs: the body is not known when signing.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The longest validity SigV4 allows for a presigned URL (7 days).
pub const MAX_PRESIGN_EXPIRES_SECS: u32 = 604_800;

type HmacSha256 = Hmac<Sha256>;

/// An access key pair (and, for temporary credentials such as Supabase's
/// user-scoped S3 sessions, a session token). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: String,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// The secret, for redaction lists only; signing uses it internally.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field("session_token", &self.session_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// The instant a request is signed at, to the second, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SigningTime {
    unix_secs: i64,
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl SigningTime {
    /// `None` outside the years 0000..=9999, which the compact ISO 8601
    /// format SigV4 uses cannot express.
    pub fn from_unix_secs(unix_secs: i64) -> Option<SigningTime> {
        let t = time::OffsetDateTime::from_unix_timestamp(unix_secs).ok()?;
        if !(0..=9999).contains(&t.year()) {
            return None;
        }
        Some(SigningTime {
            unix_secs,
            year: t.year(),
            month: u8::from(t.month()),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        })
    }

    /// From a `Clock` reading (milliseconds); sub-second precision is dropped.
    pub fn from_unix_ms(ms: i64) -> Option<SigningTime> {
        Self::from_unix_secs(ms.div_euclid(1000))
    }

    /// Parses the `X-Amz-Date` form, `20150830T123600Z`.
    pub fn parse_amz_date(s: &str) -> Option<SigningTime> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
        let date =
            time::Date::from_calendar_date(i32::try_from(num(0..4)?).ok()?, month, u8::try_from(num(6..8)?).ok()?)
                .ok()?;
        let t = date
            .with_hms(
                u8::try_from(num(9..11)?).ok()?,
                u8::try_from(num(11..13)?).ok()?,
                u8::try_from(num(13..15)?).ok()?,
            )
            .ok()?;
        Self::from_unix_secs(t.assume_utc().unix_timestamp())
    }

    pub fn unix_secs(&self) -> i64 {
        self.unix_secs
    }

    /// `YYYYMMDDTHHMMSSZ`, the value of `X-Amz-Date`.
    pub fn amz_date(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYYMMDD`, the date in the credential scope.
    pub fn date_stamp(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// A request as the signer sees it. `path` and the query pairs are decoded
/// text; `headers` are the ones to sign besides `host` (which is always
/// signed, and which the transport sets itself from the URL).
#[derive(Debug, Clone)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// `host[:port]` exactly as it appears in the URL.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: String,
}

/// The canonical request with the signed-header list it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub text: String,
    pub signed_headers: String,
}

/// Every intermediate of a signature, so tests can pin each stage and a
/// mismatch against a server can be diagnosed stage by stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParts {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
}

/// Header-mode result: the headers to add to the request as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSignature {
    pub parts: SignatureParts,
    /// `authorization`, `x-amz-date`, and `x-amz-security-token` when a
    /// session token is in use.
    pub headers: Vec<(String, String)>,
}

impl HeaderSignature {
    pub fn authorization(&self) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Query-mode result: the complete, already-encoded query string for the
/// URL (the request's own parameters, the `X-Amz-*` ones and the signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySignature {
    pub parts: SignatureParts,
    pub query_string: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignError {
    /// `X-Amz-Expires` must be 1..=604800 seconds.
    ExpiresOutOfRange { requested: u64 },
}

impl std::fmt::Display for PresignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresignError::ExpiresOutOfRange { requested } => write!(
                f,
                "presigned URL expiry must be 1..={MAX_PRESIGN_EXPIRES_SECS} seconds, got {requested}"
            ),
        }
    }
}

impl std::error::Error for PresignError {}

/// Signs with one set of credentials for one region and service.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    pub service: &'a str,
}

impl<'a> Signer<'a> {
    pub fn new(credentials: &'a Credentials, region: &'a str, service: &'a str) -> Self {
        Signer {
            credentials,
            region,
            service,
        }
    }

    /// `<date>/<region>/<service>/aws4_request`
    pub fn scope(&self, at: SigningTime) -> String {
        format!("{}/{}/{}/aws4_request", at.date_stamp(), self.region, self.service)
    }

    /// Signs in header mode: `x-amz-date` (and the session token) join the
    /// signed headers, and an `Authorization` header carries the result.
    /// Whether `x-amz-content-sha256` is sent is the caller's choice (S3
    /// requires it; the generic test suite signs without it).
    pub fn sign_headers(&self, req: &SignableRequest<'_>, at: SigningTime) -> HeaderSignature {
        let mut headers = req.headers.clone();
        headers.push(("x-amz-date".into(), at.amz_date()));
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        let parts = self.sign_parts(
            req.method,
            req.host,
            req.path,
            &req.query,
            &headers,
            &req.payload_hash,
            at,
        );
        let authorization = format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
            self.credentials.access_key_id,
            self.scope(at),
            parts.signed_headers,
            parts.signature
        );
        let mut out = vec![
            ("authorization".to_string(), authorization),
            ("x-amz-date".to_string(), at.amz_date()),
        ];
        if let Some(token) = &self.credentials.session_token {
            out.push(("x-amz-security-token".into(), token.clone()));
        }
        HeaderSignature { parts, headers: out }
    }

    /// Signs in query mode (a presigned URL valid for `expires_secs`). The
    /// request's headers are signed and must be sent unchanged by whoever
    /// uses the URL; `host` always is.
    pub fn presign(
        &self,
        req: &SignableRequest<'_>,
        at: SigningTime,
        expires_secs: u64,
    ) -> Result<QuerySignature, PresignError> {
        if expires_secs == 0 || expires_secs > u64::from(MAX_PRESIGN_EXPIRES_SECS) {
            return Err(PresignError::ExpiresOutOfRange {
                requested: expires_secs,
            });
        }
        let (_, signed_headers) = canonical_headers(req.host, &req.headers);
        let mut query = req.query.clone();
        query.push(("X-Amz-Algorithm".into(), ALGORITHM.into()));
        query.push((
            "X-Amz-Credential".into(),
            format!("{}/{}", self.credentials.access_key_id, self.scope(at)),
        ));
        query.push(("X-Amz-Date".into(), at.amz_date()));
        query.push(("X-Amz-Expires".into(), expires_secs.to_string()));
        if let Some(token) = &self.credentials.session_token {
            query.push(("X-Amz-Security-Token".into(), token.clone()));
        }
        query.push(("X-Amz-SignedHeaders".into(), signed_headers));
        let parts = self.sign_parts(
            req.method,
            req.host,
            req.path,
            &query,
            &req.headers,
            &req.payload_hash,
            at,
        );
        let query_string = format!("{}&X-Amz-Signature={}", canonical_query_string(&query), parts.signature);
        Ok(QuerySignature { parts, query_string })
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_parts(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        payload_hash: &str,
        at: SigningTime,
    ) -> SignatureParts {
        let canonical = canonical_request(method, host, path, query, headers, payload_hash);
        let sts = string_to_sign(at, &self.scope(at), &canonical.text);
        let key = signing_key(
            self.credentials.secret_access_key(),
            &at.date_stamp(),
            self.region,
            self.service,
        );
        SignatureParts {
            canonical_request: canonical.text,
            string_to_sign: sts.clone(),
            signed_headers: canonical.signed_headers,
            signature: hex::encode(hmac(&key, sts.as_bytes())),
        }
    }
}

/// The canonical request: method, encoded path, sorted encoded query,
/// canonical headers, signed-header list, payload hash — one per line.
pub fn canonical_request(
    method: &str,
    host: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
) -> CanonicalRequest {
    let (header_block, signed_headers) = canonical_headers(host, headers);
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query_string(query),
        header_block,
        signed_headers,
        payload_hash
    );
    CanonicalRequest { text, signed_headers }
}

/// The path, each byte outside the unreserved set percent-encoded once,
/// slashes kept. An empty path is `/`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    uri_encode(path, false)
}

/// Pairs encoded with the strict (unreserved-only) rule, then sorted by
/// encoded name and, for equal names, encoded value.
pub fn canonical_query_string(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns the header block (each `name:value\n`, names lower-cased and
/// sorted, values trimmed with inner runs of spaces collapsed, repeated
/// names joined by commas in order) and the `;`-joined signed-header list.
pub fn canonical_headers(host: &str, headers: &[(String, String)]) -> (String, String) {
    let mut all: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        all.push(("host".into(), host.to_string()));
    }
    for (k, v) in headers {
        all.push((k.to_ascii_lowercase(), collapse_whitespace(v)));
    }
    // Stable sort keeps repeated names in the order they were given.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut block = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (k, v) in &all {
        if names.last() == Some(&k.as_str()) {
            // Same name as the previous line: append to it.
            block.pop();
            block.push(',');
            block.push_str(v);
            block.push('\n');
        } else {
            block.push_str(k);
            block.push(':');
            block.push_str(v);
            block.push('\n');
            names.push(k);
        }
    }
    (block, names.join(";"))
}

fn collapse_whitespace(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

pub fn string_to_sign(at: SigningTime, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        at.amz_date(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")
pub fn signing_key(secret: &str, date_stamp: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date_stamp.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SigV4 URI encoding: every byte except `A-Z a-z 0-9 - . _ ~` becomes
/// `%XX` (upper-case hex); `/` is kept unless `encode_slash`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (b == b'/' && !encode_slash);
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_time_formats_and_parses_the_amz_date() {
        let t = SigningTime::parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(t.amz_date(), "20150830T123600Z");
        assert_eq!(t.date_stamp(), "20150830");
        assert_eq!(t.unix_secs(), 1_440_938_160);
        assert_eq!(SigningTime::from_unix_ms(1_440_938_160_999), Some(t));
    }

    #[test]
    fn malformed_amz_dates_are_refused() {
        for bad in [
            "",
            "20150830T123600",
            "2015083XT123600Z",
            "20151330T123600Z",
            "20150830T126000Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(SigningTime::parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn uri_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(uri_encode("a b/ሴ$~", false), "a%20b/%E1%88%B4%24~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }

    #[test]
    fn credentials_debug_hides_the_secret_and_token() {
        let c = Credentials::new("AKID", "super-secret-value").with_session_token("tok-value-123");
        let d = format!("{c:?}");
        assert!(d.contains("AKID"));
        assert!(!d.contains("super-secret-value"));
        assert!(!d.contains("tok-value-123"));
    }

    #[test]
    fn presign_refuses_expiry_outside_one_second_to_seven_days() {
        let c = Credentials::new("AKID", "secret");
        let s = Signer::new(&c, "us-east-1", "s3");
        let at = SigningTime::from_unix_secs(0).unwrap();
        let req = SignableRequest {
            method: "GET",
            host: "h",
            path: "/b/k",
            query: vec![],
            headers: vec![],
            payload_hash: UNSIGNED_PAYLOAD.into(),
        };
        assert!(s.presign(&req, at, 0).is_err());
        assert!(s.presign(&req, at, 604_801).is_err());
        assert!(s.presign(&req, at, 1).is_ok());
        assert!(s.presign(&req, at, 604_800).is_ok());
    }
}
