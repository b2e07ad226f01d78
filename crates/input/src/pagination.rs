//! List paging: `limit`/`offset` query parameters with a bounded limit, and
//! opaque keyset cursors (`?cursor=`) for stable paging through lists that
//! grow while being read.
//!
//! A cursor is base64url (no padding) of `{"created_at": "...", "id": "..."}`:
//! the sort key of the last row served. It is opaque to clients but not
//! secret or signed, so decoding validates it strictly: it ends up in a
//! query filter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use edgeworks_core::ApiError;
use edgeworks_core::Request;

/// Paging bounds for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Used when the client names no limit.
    pub default_limit: u32,
    /// Larger requested limits are lowered to this (not refused: asking
    /// for "everything" is a reasonable request that gets the most we give).
    pub max_limit: u32,
    /// Deeper offsets are refused: the database still walks every skipped
    /// row. Clients go further with the cursor.
    pub max_offset: u32,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits {
            default_limit: 20,
            max_limit: 100,
            max_offset: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

fn parse_count(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

impl Page {
    /// From raw `limit` and `offset` values (absent = default / 0).
    pub fn parse(limit: Option<&str>, offset: Option<&str>, bounds: &PageLimits) -> Result<Page, ApiError> {
        let bad_limit = || {
            ApiError::bad_request("invalid_limit", "limit must be a whole number of at least 1")
                .with_details(json!({ "max": bounds.max_limit }))
        };
        let bad_offset = || {
            let message = format!(
                "offset must be a whole number from 0 to {}; use the cursor to go further",
                bounds.max_offset
            );
            ApiError::bad_request("invalid_offset", message).with_details(json!({ "max": bounds.max_offset }))
        };
        let limit = match limit {
            None => bounds.default_limit,
            Some(raw) => {
                let n = parse_count(raw).filter(|n| *n >= 1).ok_or_else(bad_limit)?;
                n.min(u64::from(bounds.max_limit)) as u32
            }
        };
        let offset = match offset {
            None => 0,
            Some(raw) => parse_count(raw)
                .filter(|n| *n <= u64::from(bounds.max_offset))
                .ok_or_else(bad_offset)? as u32,
        };
        Ok(Page {
            limit: limit.max(1),
            offset,
        })
    }

    /// From the request's `limit` and `offset` query parameters.
    pub fn from_request(req: &Request, bounds: &PageLimits) -> Result<Page, ApiError> {
        Page::parse(
            req.query_param("limit").as_deref(),
            req.query_param("offset").as_deref(),
            bounds,
        )
    }
}

/// The position after the last row served, ordered by `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The row's timestamp exactly as the database returned it (kept as
    /// text so microseconds survive the round trip).
    pub created_at: String,
    pub id: String,
}

const MAX_CURSOR_LEN: usize = 512;

fn invalid_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "cursor is not valid; start again without it")
}

impl Cursor {
    pub fn new(created_at: impl Into<String>, id: impl Into<String>) -> Cursor {
        Cursor {
            created_at: created_at.into(),
            id: id.into(),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(json!({ "created_at": self.created_at, "id": self.id }).to_string())
    }

    /// Decodes and validates: `created_at` must be an RFC 3339 timestamp
    /// and `id` 1 to 128 characters of `A-Z a-z 0-9 - _`. Any problem is a
    /// 400 `invalid_cursor`.
    pub fn decode(s: &str) -> Result<Cursor, ApiError> {
        let s = s.trim().trim_end_matches('=');
        if s.is_empty() || s.len() > MAX_CURSOR_LEN {
            return Err(invalid_cursor());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid_cursor())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())?;
        let ts_ok = c.created_at.len() <= 40 && edgeworks_core::time::parse_rfc3339_ms(&c.created_at).is_ok();
        let id_ok = (1..=128).contains(&c.id.len())
            && c.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ts_ok && id_ok {
            Ok(c)
        } else {
            Err(invalid_cursor())
        }
    }

    /// The request's `cursor` query parameter, if present.
    pub fn from_request(req: &Request) -> Result<Option<Cursor>, ApiError> {
        req.query_param("cursor").map(|c| Cursor::decode(&c)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::Method;
    use proptest::prelude::*;

    #[test]
    fn limit_defaults_and_is_bounded() {
        let b = PageLimits::default();
        assert_eq!(Page::parse(None, None, &b).unwrap(), Page { limit: 20, offset: 0 });
        assert_eq!(
            Page::parse(Some("5"), Some("40"), &b).unwrap(),
            Page { limit: 5, offset: 40 }
        );
        assert_eq!(Page::parse(Some("1000"), None, &b).unwrap().limit, 100);
        assert_eq!(
            Page::parse(Some("99999999999"), None, &b).unwrap_err().code(),
            "invalid_limit"
        );
    }

    #[test]
    fn bad_limits_and_offsets_are_400s() {
        let b = PageLimits::default();
        for bad in ["0", "-1", "abc", "", "1.5", " "] {
            let e = Page::parse(Some(bad), None, &b).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_limit"), "{bad:?}");
        }
        for bad in ["-1", "x", "10001"] {
            let e = Page::parse(None, Some(bad), &b).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_offset"), "{bad:?}");
        }
    }

    #[test]
    fn page_reads_the_query_string() {
        let req = Request::new(Method::Get, "http://h/jobs?limit=3&offset=6");
        assert_eq!(
            Page::from_request(&req, &PageLimits::default()).unwrap(),
            Page { limit: 3, offset: 6 }
        );
    }

    #[test]
    fn cursor_round_trips_and_is_url_safe() {
        let c = Cursor::new(
            "2024-05-06T07:08:09.123456+00:00",
            "7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10",
        );
        let s = c.encode();
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&s).unwrap(), c);
        let req = Request::new(Method::Get, format!("http://h/jobs?cursor={s}"));
        assert_eq!(Cursor::from_request(&req).unwrap(), Some(c));
        assert_eq!(
            Cursor::from_request(&Request::new(Method::Get, "http://h/jobs")).unwrap(),
            None
        );
    }

    #[test]
    fn bad_cursors_are_400s() {
        let enc = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        for bad in [
            "".to_string(),
            "!!!".to_string(),
            URL_SAFE_NO_PAD.encode("not json"),
            enc(json!({"created_at": "yesterday", "id": "a"})),
            enc(json!({"created_at": "2024-05-06T07:08:09Z", "id": "a),or(id.gt.0"})),
            enc(json!({"created_at": "2024-05-06T07:08:09Z", "id": ""})),
            enc(json!({"created_at": "2024-05-06T07:08:09Z"})),
            enc(json!({"created_at": "2024-05-06T07:08:09Z", "id": "a", "extra": 1})),
            "A".repeat(600),
        ] {
            let e = Cursor::decode(&bad).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_cursor"), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn cursor_decode_never_panics(s in "\\PC{0,200}") {
            let _ = Cursor::decode(&s);
        }

        #[test]
        fn page_parse_never_panics(l in proptest::option::of("\\PC{0,12}"), o in proptest::option::of("\\PC{0,12}")) {
            if let Ok(p) = Page::parse(l.as_deref(), o.as_deref(), &PageLimits::default()) {
                prop_assert!(p.limit >= 1 && p.limit <= 100 && p.offset <= 10_000);
            }
        }
    }
}
