//! Storage bucket policy: which buckets exist, whether they are public, how
//! large an object may be and which MIME types they take — the
//! `[storage.buckets.<name>]` tables of `supabase/config.toml`, checked by a
//! function *before* it issues an upload URL.
//!
//! Functions receive the policy as JSON in the `STORAGE_BUCKETS` variable
//! (`scripts/local/buckets.ts policy-json` produces it from config.toml):
//!
//! ```json
//! {"file_size_limit": "50MiB",
//!  "buckets": {"uploads": {"public": false, "file_size_limit": "10MiB",
//!                          "allowed_mime_types": ["image/*", "application/pdf"]}}}
//! ```
//!
//! - The top-level `file_size_limit` is `[storage] file_size_limit`; a
//!   bucket's effective limit is the smaller of the two. Both are optional.
//! - Sizes are bytes (a JSON integer) or a string read the way the Supabase
//!   CLI reads config.toml: a number, an optional space, an optional unit
//!   `K M G T P` (optionally followed by `i` and/or `B`), in binary
//!   multiples — `"50MiB"` = `"50MB"` = `"50M"` = 52428800.
//! - `allowed_mime_types` holds exact types or `type/*`; empty or absent
//!   allows every type.
//! - Unknown fields are refused, so a typo cannot silently drop a limit.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use edgeworks_core::ApiError;

/// The environment variable holding the policy JSON.
pub const STORAGE_BUCKETS_ENV: &str = "STORAGE_BUCKETS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPolicy {
    pub name: String,
    pub public: bool,
    /// The effective limit in bytes (bucket and global combined).
    pub file_size_limit: Option<u64>,
    /// Lower-cased `type/subtype` or `type/*`; empty allows everything.
    pub allowed_mime_types: Vec<String>,
}

impl BucketPolicy {
    /// `Ok` when an object of `size` bytes and type `mime` may go into this
    /// bucket: 413 `file_too_large` over the limit, 415
    /// `unsupported_media_type` for a type the bucket does not take, 422 for
    /// a content type that is not `type/subtype`.
    pub fn allow(&self, size: u64, mime: &str) -> Result<(), ApiError> {
        if let Some(limit) = self.file_size_limit {
            if size > limit {
                return Err(ApiError::new(
                    413,
                    "file_too_large",
                    format!("the file is {size} bytes; bucket {} takes at most {limit}", self.name),
                )
                .with_details(json!({ "bucket": self.name, "limit_bytes": limit, "size_bytes": size })));
            }
        }
        let Some(essence) = mime_essence(mime) else {
            return Err(ApiError::unprocessable(
                "content_type: must be a MIME type such as image/png",
                json!({ "fields": [{ "field": "content_type", "code": "invalid_mime_type",
                                     "message": "must be a MIME type such as image/png" }] }),
            ));
        };
        if self.allowed_mime_types.is_empty() || self.allowed_mime_types.iter().any(|p| mime_matches(p, &essence)) {
            return Ok(());
        }
        Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("bucket {} does not take {essence}", self.name),
        )
        .with_details(json!({ "bucket": self.name, "content_type": essence, "allowed": self.allowed_mime_types })))
    }
}

/// Every bucket's policy, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoragePolicy {
    buckets: BTreeMap<String, BucketPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePolicyError(pub String);

impl std::fmt::Display for StoragePolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{STORAGE_BUCKETS_ENV}: {}", self.0)
    }
}

impl std::error::Error for StoragePolicyError {}

impl From<StoragePolicyError> for ApiError {
    fn from(e: StoragePolicyError) -> ApiError {
        ApiError::unavailable(
            "storage_not_configured",
            format!("storage bucket policy is invalid: {e}"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    file_size_limit: Option<Value>,
    #[serde(default)]
    buckets: BTreeMap<String, RawBucket>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    #[serde(default)]
    public: bool,
    #[serde(default)]
    file_size_limit: Option<Value>,
    #[serde(default)]
    allowed_mime_types: Vec<String>,
}

impl StoragePolicy {
    pub fn from_json(text: &str) -> Result<StoragePolicy, StoragePolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|e| StoragePolicyError(e.to_string()))?;
        // serde would also build a struct from an array; only objects are meant.
        let buckets_ok = match value.get("buckets") {
            None => true,
            Some(Value::Object(m)) => m.values().all(Value::is_object),
            Some(_) => false,
        };
        if !value.is_object() || !buckets_ok {
            return Err(StoragePolicyError(
                "must be an object whose \"buckets\" maps names to objects".into(),
            ));
        }
        let raw: RawPolicy = serde_json::from_value(value).map_err(|e| StoragePolicyError(e.to_string()))?;
        let global = size_value(raw.file_size_limit.as_ref(), "file_size_limit")?;
        let mut buckets = BTreeMap::new();
        for (name, b) in raw.buckets {
            if !is_bucket_name(&name) {
                return Err(StoragePolicyError(format!(
                    "bucket name {name:?} is not 3-63 lower-case letters, digits, '.' or '-'"
                )));
            }
            let own = size_value(b.file_size_limit.as_ref(), &format!("buckets.{name}.file_size_limit"))?;
            let limit = match (own, global) {
                (Some(a), Some(g)) => Some(a.min(g)),
                (a, g) => a.or(g),
            };
            let mut types = Vec::new();
            for t in &b.allowed_mime_types {
                let t = t.trim().to_ascii_lowercase();
                if !is_mime_pattern(&t) {
                    return Err(StoragePolicyError(format!(
                        "buckets.{name}.allowed_mime_types: {t:?} is not type/subtype or type/*"
                    )));
                }
                types.push(t);
            }
            buckets.insert(
                name.clone(),
                BucketPolicy {
                    name,
                    public: b.public,
                    file_size_limit: limit,
                    allowed_mime_types: types,
                },
            );
        }
        Ok(StoragePolicy { buckets })
    }

    /// Reads `STORAGE_BUCKETS`; absent means no buckets are configured.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<StoragePolicy, StoragePolicyError> {
        match lookup(STORAGE_BUCKETS_ENV) {
            Some(text) if !text.trim().is_empty() => StoragePolicy::from_json(&text),
            _ => Ok(StoragePolicy::default()),
        }
    }

    pub fn bucket(&self, name: &str) -> Option<&BucketPolicy> {
        self.buckets.get(name)
    }

    pub fn buckets(&self) -> impl Iterator<Item = &BucketPolicy> {
        self.buckets.values()
    }

    /// [`BucketPolicy::allow`] for a bucket by name; a bucket the policy
    /// does not list is a 404 `bucket_not_found`.
    pub fn allow(&self, bucket: &str, size: u64, mime: &str) -> Result<(), ApiError> {
        match self.bucket(bucket) {
            Some(b) => b.allow(size, mime),
            None => Err(ApiError::not_found(
                "bucket_not_found",
                format!("no storage bucket named {bucket:?}"),
            )),
        }
    }
}

fn size_value(v: Option<&Value>, field: &str) -> Result<Option<u64>, StoragePolicyError> {
    let bytes = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| StoragePolicyError(format!("{field} must be a whole number of bytes")))?,
        Some(Value::String(s)) => parse_size(s).map_err(|e| StoragePolicyError(format!("{field}: {e}")))?,
        Some(_) => return Err(StoragePolicyError(format!("{field} must be a number or a size string"))),
    };
    if bytes == 0 {
        return Err(StoragePolicyError(format!(
            "{field} must be positive; leave it out for no limit"
        )));
    }
    Ok(Some(bytes))
}

/// Parses `"50MiB"`, `"1.5 GB"`, `"512k"`, `"1024"` into bytes (binary
/// multiples, as the Supabase CLI does for config.toml).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    let bad = || format!("{s:?} is not a size like \"50MiB\"");
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut chars = unit.chars().peekable();
    let shift = match chars.peek() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => 0,
    };
    if shift > 0 {
        chars.next();
    }
    if chars.peek() == Some(&'i') {
        chars.next();
    }
    if chars.peek() == Some(&'b') {
        chars.next();
    }
    if chars.next().is_some() {
        return Err(bad());
    }
    let multiplier = 1u64 << shift;
    match num.split_once('.') {
        None => num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(bad),
        Some((whole, frac)) => {
            // Exact integer arithmetic: whole * m + frac * m / 10^len(frac).
            let whole: u64 = whole.parse().map_err(|_| bad())?;
            let digits = frac.len().min(18);
            let frac: u64 = frac[..digits].parse().map_err(|_| bad())?;
            let scale = 10u128.pow(u32::try_from(digits).map_err(|_| bad())?);
            let frac_bytes = u128::from(frac) * u128::from(multiplier) / scale;
            whole
                .checked_mul(multiplier)
                .and_then(|w| w.checked_add(u64::try_from(frac_bytes).ok()?))
                .ok_or_else(bad)
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
}

fn is_mime_pattern(p: &str) -> bool {
    match p.split_once('/') {
        Some((t, "*")) => is_token(t),
        Some((t, sub)) => is_token(t) && is_token(sub),
        None => false,
    }
}

/// `type/subtype`, lower-cased, parameters dropped; `None` if malformed.
pub fn mime_essence(mime: &str) -> Option<String> {
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (t, sub) = essence.split_once('/')?;
    if is_token(t) && is_token(sub) {
        Some(essence)
    } else {
        None
    }
}

/// Whether `essence` (from [`mime_essence`]) matches a pattern (exact or
/// `type/*`).
pub fn mime_matches(pattern: &str, essence: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(t) => essence.split_once('/').is_some_and(|(et, _)| et == t),
        None => pattern == essence,
    }
}

fn is_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"file_size_limit": "50MiB",
        "buckets": {
          "uploads": {"public": false, "file_size_limit": "10MiB", "allowed_mime_types": ["image/*", "Application/PDF"]},
          "avatars": {"public": true, "allowed_mime_types": ["image/png"]},
          "big": {"file_size_limit": 107374182400},
          "open": {}
        }}"#;

    #[test]
    fn sizes_read_like_the_supabase_cli() {
        for (s, want) in [
            ("50MiB", 52_428_800),
            ("50MB", 52_428_800),
            ("50M", 52_428_800),
            ("50 mib", 52_428_800),
            ("1024", 1024),
            ("1024B", 1024),
            ("512k", 524_288),
            ("1.5GB", 1_610_612_736),
            ("2TiB", 2_199_023_255_552),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "MiB",
            "5 0MB",
            "50XB",
            "50MiBs",
            "1..5G",
            ".5G",
            "5.G",
            "-1",
            "99999999999P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_effective_limit_is_the_smaller_of_bucket_and_global() {
        let p = StoragePolicy::from_json(EXAMPLE).unwrap();
        assert_eq!(p.bucket("uploads").unwrap().file_size_limit, Some(10 * 1024 * 1024));
        assert_eq!(p.bucket("avatars").unwrap().file_size_limit, Some(50 * 1024 * 1024));
        assert_eq!(p.bucket("big").unwrap().file_size_limit, Some(50 * 1024 * 1024));
        assert!(p.bucket("avatars").unwrap().public);
        assert!(!p.bucket("uploads").unwrap().public);
    }

    #[test]
    fn over_the_limit_is_413_and_at_the_limit_is_allowed() {
        let p = StoragePolicy::from_json(EXAMPLE).unwrap();
        assert!(p.allow("uploads", 10 * 1024 * 1024, "image/png").is_ok());
        let e = p.allow("uploads", 10 * 1024 * 1024 + 1, "image/png").unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "file_too_large"));
        assert_eq!(e.details().unwrap()["limit_bytes"], 10 * 1024 * 1024);
    }

    #[test]
    fn mime_types_match_exactly_or_by_wildcard_ignoring_case_and_parameters() {
        let p = StoragePolicy::from_json(EXAMPLE).unwrap();
        assert!(p.allow("uploads", 1, "image/webp").is_ok());
        assert!(p.allow("uploads", 1, "IMAGE/JPEG; q=1").is_ok());
        assert!(p.allow("uploads", 1, "application/pdf").is_ok());
        let e = p.allow("uploads", 1, "application/zip").unwrap_err();
        assert_eq!((e.status(), e.code()), (415, "unsupported_media_type"));
        // `image/*` must not match a type that merely starts with "image".
        assert!(p.allow("uploads", 1, "imagex/png").is_err());
        assert!(p.allow("avatars", 1, "image/jpeg").is_err());
        assert!(p.allow("open", 1, "application/x-anything").is_ok());
    }

    #[test]
    fn a_malformed_content_type_is_422_and_an_unknown_bucket_404() {
        let p = StoragePolicy::from_json(EXAMPLE).unwrap();
        for bad in ["", "png", "image/", "/png", "image/png/x", "ima ge/png"] {
            let e = p.allow("open", 1, bad).unwrap_err();
            assert_eq!(e.status(), 422, "{bad:?}");
        }
        assert_eq!(p.allow("nope", 1, "image/png").unwrap_err().status(), 404);
    }

    #[test]
    fn bad_policy_json_is_refused_with_the_reason() {
        for (bad, needle) in [
            (r#"{"buckets": {"Up_loads": {}}}"#, "bucket name"),
            (
                r#"{"buckets": {"uploads": {"file_size_limt": "1MB"}}}"#,
                "unknown field",
            ),
            (
                r#"{"buckets": {"uploads": {"file_size_limit": "lots"}}}"#,
                "buckets.uploads.file_size_limit",
            ),
            (r#"{"buckets": {"uploads": {"file_size_limit": 0}}}"#, "positive"),
            (r#"{"buckets": {"uploads": {"file_size_limit": -5}}}"#, "whole number"),
            (
                r#"{"buckets": {"uploads": {"allowed_mime_types": ["image"]}}}"#,
                "allowed_mime_types",
            ),
            (
                r#"{"buckets": {"uploads": {"allowed_mime_types": ["*/png"]}}}"#,
                "allowed_mime_types",
            ),
            ("[1]", "must be an object"),
            (r#"{"buckets": [{}]}"#, "must be an object"),
            (r#"{"buckets": {"uploads": [true]}}"#, "must be an object"),
        ] {
            let e = StoragePolicy::from_json(bad).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn an_absent_variable_means_no_buckets() {
        let p = StoragePolicy::from_lookup(|_| None).unwrap();
        assert_eq!(p.buckets().count(), 0);
        assert_eq!(p.allow("uploads", 1, "image/png").unwrap_err().status(), 404);
    }
}
