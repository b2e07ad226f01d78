//! Building signed S3 requests and presigned URLs, and reading S3's XML
//! answers. Pure: no I/O, the signing time is an argument.

use std::collections::BTreeMap;

use edgeworks_core::http::Headers;
use edgeworks_core::{Method, Request, Response};
use serde::Serialize;

use crate::config::S3Config;
use crate::error::{parse_error_body, S3Error};
use crate::key::ObjectKey;
use crate::sigv4::{self, SignableRequest, Signer, SigningTime, UNSIGNED_PAYLOAD};
use crate::xml;

pub const SERVICE: &str = "s3";
/// S3's part-number range.
pub const MAX_PART_NUMBER: u16 = 10_000;
/// Every part but the last must be at least this large.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// A request anyone holding it can make until it expires, without
/// credentials. `headers` are signed: the uploader must send them with
/// exactly these values (`content-length`, when present, is what any HTTP
/// client sends for a body of that size; browsers set it themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresignedRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// Unix seconds after which the server refuses the URL.
    pub expires_at: i64,
}

/// What a presigned PUT pins down besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutUrlOptions {
    /// Signed: the upload must declare exactly this `Content-Type`.
    pub content_type: Option<String>,
    /// Signed: the upload must be exactly this many bytes. This is what makes
    /// a size limit checked before issuing the URL binding on the upload.
    pub content_length: Option<u64>,
    /// Signed: `x-amz-checksum-sha256`, the base64 SHA-256 of the body. The
    /// storage refuses a body whose hash differs (400 `BadDigest`), so a
    /// URL issued for a hash the client declared only ever stores those bytes.
    pub checksum_sha256: Option<String>,
}

/// The header that carries a body's base64 SHA-256 (S3 additional checksums).
pub const CHECKSUM_SHA256_HEADER: &str = "x-amz-checksum-sha256";

/// Whether `v` is a base64 SHA-256 (44 characters: 32 bytes, padded).
fn check_checksum_sha256(v: &str) -> Result<(), S3Error> {
    use base64::Engine;
    let ok = v.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(v)
            .is_ok_and(|b| b.len() == 32);
    if ok {
        Ok(())
    } else {
        Err(S3Error::InvalidInput {
            field: "checksum_sha256",
            reason: "must be the base64 of a 32-byte SHA-256".into(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultipartUpload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadedPart {
    pub part_number: u16,
    pub etag: String,
    pub size: u64,
    pub last_modified: Option<String>,
}

/// A part to stitch into the object, as the uploader reported it (or as
/// ListParts found it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CompletedPart {
    pub part_number: u16,
    pub etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListPartsPage {
    pub parts: Vec<UploadedPart>,
    pub next_marker: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedUpload {
    pub etag: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectHead {
    pub content_length: u64,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The first bytes of an object (for content sniffing) and, when the
/// server said, the object's full size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPrefix {
    pub bytes: Vec<u8>,
    pub total_size: Option<u64>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopiedObject {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// S3's bucket naming rules (3-63 of lower-case letters, digits, '.', '-',
/// starting and ending with a letter or digit), which every target accepts.
pub fn check_bucket_name(bucket: &str) -> Result<(), S3Error> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(S3Error::InvalidInput {
            field: "bucket",
            reason: "bucket names are 3-63 lower-case letters, digits, '.' or '-'".into(),
        })
    }
}

pub(crate) fn check_part_number(part_number: u16) -> Result<(), S3Error> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(S3Error::InvalidInput {
            field: "part_number",
            reason: format!("part numbers are 1..={MAX_PART_NUMBER}"),
        })
    }
}

/// Upload ids are opaque server strings, but they come back from clients:
/// bound them and keep control characters out (they are query-encoded, so
/// nothing else can escape).
pub(crate) fn check_upload_id(upload_id: &str) -> Result<(), S3Error> {
    if upload_id.is_empty() || upload_id.len() > 1024 || upload_id.chars().any(char::is_control) {
        return Err(S3Error::InvalidInput {
            field: "upload_id",
            reason: "upload id is empty, too long, or has control characters".into(),
        });
    }
    Ok(())
}

/// The decoded path `{prefix}/{bucket}[/{key}]`.
pub(crate) fn object_path(config: &S3Config, bucket: &str, key: Option<&ObjectKey>) -> Result<String, S3Error> {
    check_bucket_name(bucket)?;
    Ok(match key {
        Some(k) => format!("{}/{bucket}/{}", config.endpoint.path_prefix, k.as_str()),
        None => format!("{}/{bucket}", config.endpoint.path_prefix),
    })
}

fn url(config: &S3Config, path: &str, query_string: &str) -> String {
    let mut u = format!("{}{}", config.endpoint.origin(), sigv4::canonical_uri(path));
    if !query_string.is_empty() {
        u.push('?');
        u.push_str(query_string);
    }
    u
}

fn signer(config: &S3Config) -> Signer<'_> {
    Signer::new(&config.credentials, &config.region, SERVICE)
}

/// A header-signed request: `x-amz-content-sha256` carries the body hash
/// and every header given is signed.
pub(crate) fn signed(
    config: &S3Config,
    method: Method,
    path: &str,
    query: Vec<(String, String)>,
    mut headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: SigningTime,
) -> Request {
    let payload_hash = sigv4::sha256_hex(&body);
    headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    let signable = SignableRequest {
        method: method.as_str(),
        host: &config.endpoint.authority,
        path,
        query,
        headers,
        payload_hash,
    };
    let sig = signer(config).sign_headers(&signable, at);
    let mut req = Request::new(
        method,
        url(config, path, &sigv4::canonical_query_string(&signable.query)),
    );
    let mut h = Headers::new();
    for (k, v) in signable.headers.iter().chain(sig.headers.iter()) {
        h.append(k, v.clone());
    }
    req.headers = h;
    req.body = body;
    req
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn presigned(
    config: &S3Config,
    method: Method,
    path: &str,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    expires_secs: u32,
    at: SigningTime,
) -> Result<PresignedRequest, S3Error> {
    let signable = SignableRequest {
        method: method.as_str(),
        host: &config.endpoint.authority,
        path,
        query,
        headers,
        payload_hash: UNSIGNED_PAYLOAD.into(),
    };
    let sig = signer(config).presign(&signable, at, u64::from(expires_secs))?;
    Ok(PresignedRequest {
        method: method.as_str(),
        url: url(config, path, &sig.query_string),
        headers: signable.headers.into_iter().collect(),
        expires_at: at.unix_secs() + i64::from(expires_secs),
    })
}

pub(crate) fn presign_put(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    options: &PutUrlOptions,
    expires_secs: u32,
    at: SigningTime,
) -> Result<PresignedRequest, S3Error> {
    let path = object_path(config, bucket, Some(key))?;
    let mut headers = Vec::new();
    if let Some(ct) = &options.content_type {
        check_header_value("content_type", ct)?;
        headers.push(("content-type".to_string(), ct.clone()));
    }
    if let Some(len) = options.content_length {
        headers.push(("content-length".to_string(), len.to_string()));
    }
    if let Some(sum) = &options.checksum_sha256 {
        check_checksum_sha256(sum)?;
        headers.push((CHECKSUM_SHA256_HEADER.to_string(), sum.clone()));
    }
    presigned(config, Method::Put, &path, Vec::new(), headers, expires_secs, at)
}

pub(crate) fn presign_get(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    expires_secs: u32,
    at: SigningTime,
) -> Result<PresignedRequest, S3Error> {
    let path = object_path(config, bucket, Some(key))?;
    presigned(config, Method::Get, &path, Vec::new(), Vec::new(), expires_secs, at)
}

/// One part of one multipart upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartTarget<'a> {
    /// The upload's id.
    pub upload_id: &'a str,
    /// 1..=10000.
    pub part_number: u16,
}

pub(crate) fn presign_upload_part(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    part: PartTarget<'_>,
    options: &PutUrlOptions,
    expires_secs: u32,
    at: SigningTime,
) -> Result<PresignedRequest, S3Error> {
    let PartTarget { upload_id, part_number } = part;
    check_upload_id(upload_id)?;
    check_part_number(part_number)?;
    let path = object_path(config, bucket, Some(key))?;
    let query = vec![
        ("partNumber".to_string(), part_number.to_string()),
        ("uploadId".to_string(), upload_id.to_string()),
    ];
    // A part has no type of its own: only its length and checksum are pinned.
    let mut headers = Vec::new();
    if let Some(len) = options.content_length {
        headers.push(("content-length".to_string(), len.to_string()));
    }
    if let Some(sum) = &options.checksum_sha256 {
        check_checksum_sha256(sum)?;
        headers.push((CHECKSUM_SHA256_HEADER.to_string(), sum.clone()));
    }
    presigned(config, Method::Put, &path, query, headers, expires_secs, at)
}

fn check_header_value(field: &'static str, v: &str) -> Result<(), S3Error> {
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(S3Error::InvalidInput {
            field,
            reason: "must be 1-256 printable ASCII characters".into(),
        });
    }
    Ok(())
}

pub(crate) fn create_bucket(config: &S3Config, bucket: &str, at: SigningTime) -> Result<Request, S3Error> {
    let path = object_path(config, bucket, None)?;
    // us-east-1 is the default location and takes no body; elsewhere the
    // region must be named or AWS refuses the request.
    let body = if config.region == "us-east-1" {
        Vec::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            xml::escape(&config.region)
        )
        .into_bytes()
    };
    Ok(signed(config, Method::Put, &path, Vec::new(), Vec::new(), body, at))
}

pub(crate) fn head_bucket(config: &S3Config, bucket: &str, at: SigningTime) -> Result<Request, S3Error> {
    let path = object_path(config, bucket, None)?;
    Ok(signed(
        config,
        Method::Head,
        &path,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        at,
    ))
}

pub(crate) fn create_multipart_upload(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    content_type: Option<&str>,
    sha256_parts: bool,
    at: SigningTime,
) -> Result<Request, S3Error> {
    let path = object_path(config, bucket, Some(key))?;
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        check_header_value("content_type", ct)?;
        headers.push(("content-type".to_string(), ct.to_string()));
    }
    if sha256_parts {
        // S3 refuses a part checksum of an algorithm the upload did not declare.
        headers.push(("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()));
    }
    Ok(signed(
        config,
        Method::Post,
        &path,
        vec![("uploads".into(), String::new())],
        headers,
        Vec::new(),
        at,
    ))
}

pub(crate) fn list_parts(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    upload_id: &str,
    marker: Option<u16>,
    at: SigningTime,
) -> Result<Request, S3Error> {
    check_upload_id(upload_id)?;
    let path = object_path(config, bucket, Some(key))?;
    let mut query = vec![
        ("uploadId".to_string(), upload_id.to_string()),
        ("max-parts".to_string(), "1000".to_string()),
    ];
    if let Some(m) = marker {
        query.push(("part-number-marker".into(), m.to_string()));
    }
    Ok(signed(config, Method::Get, &path, query, Vec::new(), Vec::new(), at))
}

pub(crate) fn complete_multipart_upload(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    upload_id: &str,
    parts: &[CompletedPart],
    at: SigningTime,
) -> Result<Request, S3Error> {
    check_upload_id(upload_id)?;
    if parts.is_empty() {
        return Err(S3Error::InvalidInput {
            field: "parts",
            reason: "a multipart upload needs at least one part".into(),
        });
    }
    let mut sorted = parts.to_vec();
    sorted.sort_by_key(|p| p.part_number);
    let mut body = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    let mut previous = 0u16;
    for p in &sorted {
        check_part_number(p.part_number)?;
        if p.part_number == previous {
            return Err(S3Error::InvalidInput {
                field: "parts",
                reason: format!("part {} is listed twice", p.part_number),
            });
        }
        previous = p.part_number;
        if p.etag.is_empty() || p.etag.len() > 256 || p.etag.chars().any(char::is_control) {
            return Err(S3Error::InvalidInput {
                field: "parts",
                reason: format!("part {} has an invalid ETag", p.part_number),
            });
        }
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            p.part_number,
            xml::escape(&quoted_etag(&p.etag))
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    let path = object_path(config, bucket, Some(key))?;
    Ok(signed(
        config,
        Method::Post,
        &path,
        vec![("uploadId".into(), upload_id.to_string())],
        vec![("content-type".into(), "application/xml".into())],
        body.into_bytes(),
        at,
    ))
}

/// ETags travel quoted; clients often strip the quotes (browsers expose the
/// header verbatim, JSON round trips do not always keep them).
fn quoted_etag(etag: &str) -> String {
    let t = etag.trim();
    if t.starts_with('"') && t.ends_with('"') && t.len() >= 2 {
        t.to_string()
    } else {
        format!("\"{}\"", t.trim_matches('"'))
    }
}

pub(crate) fn abort_multipart_upload(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    upload_id: &str,
    at: SigningTime,
) -> Result<Request, S3Error> {
    check_upload_id(upload_id)?;
    let path = object_path(config, bucket, Some(key))?;
    Ok(signed(
        config,
        Method::Delete,
        &path,
        vec![("uploadId".into(), upload_id.to_string())],
        Vec::new(),
        Vec::new(),
        at,
    ))
}

pub(crate) fn head_object(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    at: SigningTime,
) -> Result<Request, S3Error> {
    let path = object_path(config, bucket, Some(key))?;
    Ok(signed(
        config,
        Method::Head,
        &path,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        at,
    ))
}

pub(crate) fn get_object_prefix(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    max_bytes: u64,
    at: SigningTime,
) -> Result<Request, S3Error> {
    if max_bytes == 0 {
        return Err(S3Error::InvalidInput {
            field: "max_bytes",
            reason: "ask for at least one byte".into(),
        });
    }
    let path = object_path(config, bucket, Some(key))?;
    let range = format!("bytes=0-{}", max_bytes - 1);
    Ok(signed(
        config,
        Method::Get,
        &path,
        Vec::new(),
        vec![("range".into(), range)],
        Vec::new(),
        at,
    ))
}

/// `GET` of bytes `first..=last` of an object.
pub(crate) fn get_object_range(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    first: u64,
    last: u64,
    at: SigningTime,
) -> Result<Request, S3Error> {
    if last < first {
        return Err(S3Error::InvalidInput {
            field: "range",
            reason: "the last byte comes before the first".into(),
        });
    }
    let path = object_path(config, bucket, Some(key))?;
    Ok(signed(
        config,
        Method::Get,
        &path,
        Vec::new(),
        vec![("range".into(), format!("bytes={first}-{last}"))],
        Vec::new(),
        at,
    ))
}

pub(crate) fn delete_object(
    config: &S3Config,
    bucket: &str,
    key: &ObjectKey,
    at: SigningTime,
) -> Result<Request, S3Error> {
    let path = object_path(config, bucket, Some(key))?;
    Ok(signed(
        config,
        Method::Delete,
        &path,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        at,
    ))
}

pub(crate) fn copy_object(
    config: &S3Config,
    source_bucket: &str,
    source: &ObjectKey,
    dest_bucket: &str,
    dest: &ObjectKey,
    at: SigningTime,
) -> Result<Request, S3Error> {
    check_bucket_name(source_bucket)?;
    let path = object_path(config, dest_bucket, Some(dest))?;
    // The copy source is a URL-encoded `bucket/key`, without the endpoint's
    // path prefix: it names an object, not a URL.
    let copy_source = format!("/{source_bucket}/{}", sigv4::uri_encode(source.as_str(), false));
    Ok(signed(
        config,
        Method::Put,
        &path,
        Vec::new(),
        vec![("x-amz-copy-source".into(), copy_source)],
        Vec::new(),
        at,
    ))
}

fn body_root(status: u16, body: &[u8], want: &str) -> Result<xml::Element, S3Error> {
    let invalid = |reason: String| S3Error::InvalidResponse { status, reason };
    let text = std::str::from_utf8(body).map_err(|_| invalid("body is not UTF-8".into()))?;
    let root = xml::parse(text).map_err(|e| invalid(e.to_string()))?;
    if root.name == "Error" {
        // Some operations report failure inside a 200.
        return Err(parse_error_body(status, body).unwrap_or_else(|| invalid("error without a code".into())));
    }
    if root.name != want {
        return Err(invalid(format!("expected <{want}>, got <{}>", root.name)));
    }
    Ok(root)
}

/// Non-2xx answers become typed errors.
pub(crate) fn check_status(resp: &Response) -> Result<(), S3Error> {
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(S3Error::from_response(resp.status, &resp.body))
    }
}

pub(crate) fn parse_create_multipart_upload(resp: &Response) -> Result<MultipartUpload, S3Error> {
    check_status(resp)?;
    let root = body_root(resp.status, &resp.body, "InitiateMultipartUploadResult")?;
    let upload_id = root.child_text("UploadId").unwrap_or("").trim().to_string();
    if upload_id.is_empty() {
        return Err(S3Error::InvalidResponse {
            status: resp.status,
            reason: "no UploadId".into(),
        });
    }
    Ok(MultipartUpload {
        bucket: root.child_text("Bucket").unwrap_or("").to_string(),
        key: root.child_text("Key").unwrap_or("").to_string(),
        upload_id,
    })
}

pub(crate) fn parse_list_parts(resp: &Response) -> Result<ListPartsPage, S3Error> {
    check_status(resp)?;
    let root = body_root(resp.status, &resp.body, "ListPartsResult")?;
    let invalid = |reason: String| S3Error::InvalidResponse {
        status: resp.status,
        reason,
    };
    let mut parts = Vec::new();
    for p in root.children_named("Part") {
        let number = p
            .child_text("PartNumber")
            .and_then(|n| n.trim().parse::<u16>().ok())
            .ok_or_else(|| invalid("part without a valid PartNumber".into()))?;
        let size = p
            .child_text("Size")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| invalid(format!("part {number} without a valid Size")))?;
        parts.push(UploadedPart {
            part_number: number,
            etag: p.child_text("ETag").unwrap_or("").trim().to_string(),
            size,
            last_modified: p.child_text("LastModified").map(|s| s.trim().to_string()),
        });
    }
    let truncated = root
        .child_text("IsTruncated")
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("true"));
    let next_marker = if truncated {
        let m = root
            .child_text("NextPartNumberMarker")
            .and_then(|n| n.trim().parse::<u16>().ok())
            .ok_or_else(|| invalid("truncated listing without NextPartNumberMarker".into()))?;
        Some(m)
    } else {
        None
    };
    Ok(ListPartsPage { parts, next_marker })
}

pub(crate) fn parse_complete_multipart_upload(resp: &Response) -> Result<CompletedUpload, S3Error> {
    check_status(resp)?;
    let root = body_root(resp.status, &resp.body, "CompleteMultipartUploadResult")?;
    Ok(CompletedUpload {
        etag: root.child_text("ETag").map(|s| s.trim().to_string()),
        location: root.child_text("Location").map(|s| s.trim().to_string()),
    })
}

pub(crate) fn parse_copy_object(resp: &Response) -> Result<CopiedObject, S3Error> {
    check_status(resp)?;
    let root = body_root(resp.status, &resp.body, "CopyObjectResult")?;
    Ok(CopiedObject {
        etag: root.child_text("ETag").map(|s| s.trim().to_string()),
        last_modified: root.child_text("LastModified").map(|s| s.trim().to_string()),
    })
}

pub(crate) fn parse_head_object(resp: &Response) -> Result<ObjectHead, S3Error> {
    check_status(resp)?;
    let content_length = resp
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| S3Error::InvalidResponse {
            status: resp.status,
            reason: "HEAD without a Content-Length".into(),
        })?;
    Ok(ObjectHead {
        content_length,
        content_type: resp.headers.get("content-type").map(str::to_string),
        etag: resp.headers.get("etag").map(str::to_string),
        last_modified: resp.headers.get("last-modified").map(str::to_string),
    })
}

pub(crate) fn parse_get_object_prefix(resp: Response, max_bytes: u64) -> Result<ObjectPrefix, S3Error> {
    // An empty object cannot satisfy `bytes=0-N`: its prefix is empty.
    if resp.status == 416 {
        let total = resp
            .headers
            .get("content-range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.trim().parse::<u64>().ok());
        if total.is_none_or(|t| t == 0) {
            return Ok(ObjectPrefix {
                bytes: Vec::new(),
                total_size: Some(0),
                content_type: None,
            });
        }
    }
    check_status(&resp)?;
    let total_size = match resp.status {
        // `Content-Range: bytes 0-9/1234`
        206 => resp
            .headers
            .get("content-range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.trim().parse::<u64>().ok()),
        // A server that ignored the range sent the whole object.
        _ => Some(resp.body.len() as u64),
    };
    let content_type = resp.headers.get("content-type").map(str::to_string);
    let mut bytes = resp.body;
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    bytes.truncate(limit);
    Ok(ObjectPrefix {
        bytes,
        total_size,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use crate::sigv4::Credentials;

    fn config(endpoint: &str) -> S3Config {
        S3Config::new(
            Endpoint::parse(endpoint).unwrap(),
            "us-east-1",
            Credentials::new("AKID", "SECRET"),
        )
    }

    fn at() -> SigningTime {
        SigningTime::parse_amz_date("20240102T030405Z").unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey::for_user("u1", "docs/a b+c.txt").unwrap()
    }

    fn query_of(url: &str) -> Vec<(String, String)> {
        Request::new(Method::Get, url).query()
    }

    #[test]
    fn presigned_put_signs_host_content_type_and_length_with_an_unsigned_payload() {
        let opts = PutUrlOptions {
            content_type: Some("image/png".into()),
            content_length: Some(1234),
            checksum_sha256: None,
        };
        let p = presign_put(
            &config("https://p.supabase.co/storage/v1/s3"),
            "uploads",
            &key(),
            &opts,
            600,
            at(),
        )
        .unwrap();
        assert_eq!(p.method, "PUT");
        assert!(
            p.url
                .starts_with("https://p.supabase.co/storage/v1/s3/uploads/u1/docs/a%20b%2Bc.txt?"),
            "{}",
            p.url
        );
        let q = query_of(&p.url);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert_eq!(get("X-Amz-Credential"), Some("AKID/20240102/us-east-1/s3/aws4_request"));
        assert_eq!(get("X-Amz-Date"), Some("20240102T030405Z"));
        assert_eq!(get("X-Amz-Expires"), Some("600"));
        assert_eq!(get("X-Amz-SignedHeaders"), Some("content-length;content-type;host"));
        assert_eq!(get("X-Amz-Signature").map(str::len), Some(64));
        assert_eq!(p.headers.get("content-type").map(String::as_str), Some("image/png"));
        assert_eq!(p.headers.get("content-length").map(String::as_str), Some("1234"));
        assert_eq!(p.expires_at, at().unix_secs() + 600);
    }

    #[test]
    fn the_signature_covers_the_endpoint_path_prefix() {
        let with = presign_get(&config("https://h/storage/v1/s3"), "uploads", &key(), 60, at()).unwrap();
        let without = presign_get(&config("https://h"), "uploads", &key(), 60, at()).unwrap();
        let sig = |u: &str| query_of(u).into_iter().find(|(k, _)| k == "X-Amz-Signature").unwrap().1;
        assert_ne!(sig(&with.url), sig(&without.url));
    }

    #[test]
    fn presigned_urls_differ_per_key_and_refuse_bad_expiry() {
        let c = config("http://127.0.0.1:9000");
        let a = presign_get(&c, "uploads", &key(), 60, at()).unwrap();
        let other = ObjectKey::for_user("u1", "docs/other.txt").unwrap();
        let b = presign_get(&c, "uploads", &other, 60, at()).unwrap();
        assert_ne!(a.url, b.url);
        let e = presign_get(&c, "uploads", &key(), 604_801, at()).unwrap_err();
        assert!(matches!(
            e,
            S3Error::InvalidInput {
                field: "expires_in",
                ..
            }
        ));
        assert_eq!(e.to_api_error().status(), 422);
    }

    #[test]
    fn upload_part_urls_carry_the_part_and_upload_and_validate_them() {
        let c = config("http://127.0.0.1:9000");
        let p = presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "id/with+chars=",
                part_number: 3,
            },
            &PutUrlOptions::default(),
            60,
            at(),
        )
        .unwrap();
        let q = query_of(&p.url);
        assert!(q.contains(&("partNumber".into(), "3".into())));
        assert!(q.contains(&("uploadId".into(), "id/with+chars=".into())));
        assert!(presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "id",
                part_number: 0
            },
            &PutUrlOptions::default(),
            60,
            at()
        )
        .is_err());
        assert!(presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "id",
                part_number: 10_001
            },
            &PutUrlOptions::default(),
            60,
            at()
        )
        .is_err());
        assert!(presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "",
                part_number: 1
            },
            &PutUrlOptions::default(),
            60,
            at()
        )
        .is_err());
        assert!(presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "a\nb",
                part_number: 1
            },
            &PutUrlOptions::default(),
            60,
            at()
        )
        .is_err());
    }

    #[test]
    fn a_checked_part_url_signs_its_length_and_sha256() {
        let c = config("https://s3.example.com");
        let sum = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let opts = PutUrlOptions {
            content_length: Some(5),
            checksum_sha256: Some(sum.into()),
            ..PutUrlOptions::default()
        };
        let p = presign_upload_part(
            &c,
            "uploads",
            &key(),
            PartTarget {
                upload_id: "id",
                part_number: 2,
            },
            &opts,
            60,
            at(),
        )
        .unwrap();
        assert_eq!(p.headers.get(CHECKSUM_SHA256_HEADER).map(String::as_str), Some(sum));
        assert_eq!(p.headers.get("content-length").map(String::as_str), Some("5"));
        assert!(p
            .url
            .contains("X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-sha256"));
        for bad in [
            "",
            "abc",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            &"A".repeat(44),
        ] {
            let opts = PutUrlOptions {
                checksum_sha256: Some(bad.into()),
                ..PutUrlOptions::default()
            };
            assert!(
                presign_upload_part(
                    &c,
                    "uploads",
                    &key(),
                    PartTarget {
                        upload_id: "id",
                        part_number: 2
                    },
                    &opts,
                    60,
                    at()
                )
                .is_err(),
                "{bad}"
            );
            assert!(presign_put(&c, "uploads", &key(), &opts, 60, at()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "uploads", "my.bucket-1", &"a".repeat(63)] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Uploads", "a_b", "-ab", "ab-", "a..b", "a/b", &"a".repeat(64)] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_signed_requests_hash_the_body_and_sign_every_header() {
        let parts = [
            CompletedPart {
                part_number: 2,
                etag: "bbb".into(),
            },
            CompletedPart {
                part_number: 1,
                etag: "\"aaa\"".into(),
            },
        ];
        let r =
            complete_multipart_upload(&config("http://127.0.0.1:9000"), "uploads", &key(), "UP", &parts, at()).unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url, "http://127.0.0.1:9000/uploads/u1/docs/a%20b%2Bc.txt?uploadId=UP");
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(body.contains("<Part><PartNumber>1</PartNumber><ETag>&quot;aaa&quot;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&quot;bbb&quot;</ETag></Part>"), "{body}");
        assert_eq!(
            r.headers.get("x-amz-content-sha256"),
            Some(sigv4::sha256_hex(&r.body).as_str())
        );
        let auth = r.headers.get("authorization").unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"),
            "{auth}"
        );
        assert!(r.headers.get("host").is_none(), "the transport sets host");
    }

    #[test]
    fn complete_refuses_empty_and_duplicate_parts() {
        let c = config("http://h");
        assert!(complete_multipart_upload(&c, "uploads", &key(), "UP", &[], at()).is_err());
        let dup = [
            CompletedPart {
                part_number: 1,
                etag: "a".into(),
            },
            CompletedPart {
                part_number: 1,
                etag: "b".into(),
            },
        ];
        assert!(complete_multipart_upload(&c, "uploads", &key(), "UP", &dup, at()).is_err());
    }

    #[test]
    fn copy_source_is_the_encoded_bucket_and_key_without_the_prefix() {
        let dest = ObjectKey::for_user("u1", "copy.txt").unwrap();
        let r = copy_object(
            &config("https://h/storage/v1/s3"),
            "src-bucket",
            &key(),
            "uploads",
            &dest,
            at(),
        )
        .unwrap();
        assert_eq!(
            r.headers.get("x-amz-copy-source"),
            Some("/src-bucket/u1/docs/a%20b%2Bc.txt")
        );
        assert_eq!(r.url, "https://h/storage/v1/s3/uploads/u1/copy.txt");
    }

    #[test]
    fn ranged_get_asks_for_the_first_n_bytes() {
        let r = get_object_prefix(&config("http://h"), "uploads", &key(), 512, at()).unwrap();
        assert_eq!(r.headers.get("range"), Some("bytes=0-511"));
        assert!(get_object_prefix(&config("http://h"), "uploads", &key(), 0, at()).is_err());
    }

    fn resp(status: u16, body: &str) -> Response {
        let mut r = Response::new(status);
        r.body = body.as_bytes().to_vec();
        r
    }

    #[test]
    fn list_parts_reads_parts_and_the_continuation_marker() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>U</UploadId>
<PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>
<Part><PartNumber>1</PartNumber><LastModified>2024-01-02T03:04:05.000Z</LastModified><ETag>"e1"</ETag><Size>5242880</Size></Part>
<Part><PartNumber>2</PartNumber><ETag>&quot;e2&quot;</ETag><Size>10</Size></Part></ListPartsResult>"#;
        let page = parse_list_parts(&resp(200, body)).unwrap();
        assert_eq!(page.next_marker, Some(2));
        assert_eq!(page.parts.len(), 2);
        assert_eq!(page.parts[0].size, 5_242_880);
        assert_eq!(page.parts[1].etag, "\"e2\"");
        let bad = "<ListPartsResult><Part><PartNumber>x</PartNumber></Part></ListPartsResult>";
        assert!(matches!(
            parse_list_parts(&resp(200, bad)),
            Err(S3Error::InvalidResponse { .. })
        ));
    }

    #[test]
    fn an_error_inside_a_200_is_an_error() {
        let body = "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>";
        let e = parse_complete_multipart_upload(&resp(200, body)).unwrap_err();
        assert_eq!(e.code(), Some("InternalError"));
        let e = parse_copy_object(&resp(200, body)).unwrap_err();
        assert_eq!(e.code(), Some("InternalError"));
    }

    #[test]
    fn an_unexpected_document_is_an_invalid_response() {
        let e = parse_create_multipart_upload(&resp(200, "<Other/>")).unwrap_err();
        assert!(matches!(e, S3Error::InvalidResponse { status: 200, .. }));
        let e = parse_create_multipart_upload(&resp(200, "<InitiateMultipartUploadResult/>")).unwrap_err();
        assert!(matches!(e, S3Error::InvalidResponse { .. }));
    }

    #[test]
    fn ranged_get_reads_the_total_size_and_handles_empty_objects_and_ignored_ranges() {
        let mut r = resp(206, "0123");
        r.headers.set("content-range", "bytes 0-3/100");
        let p = parse_get_object_prefix(r, 4).unwrap();
        assert_eq!((p.bytes.as_slice(), p.total_size), (&b"0123"[..], Some(100)));
        let mut r = resp(416, "");
        r.headers.set("content-range", "bytes */0");
        assert_eq!(parse_get_object_prefix(r, 4).unwrap().total_size, Some(0));
        let p = parse_get_object_prefix(resp(200, "0123456789"), 4).unwrap();
        assert_eq!((p.bytes.as_slice(), p.total_size), (&b"0123"[..], Some(10)));
        assert!(parse_get_object_prefix(resp(404, ""), 4).unwrap_err().is_not_found());
    }

    #[test]
    fn head_needs_a_content_length() {
        let mut r = resp(200, "");
        r.headers.set("content-length", "42");
        r.headers.set("etag", "\"x\"");
        assert_eq!(parse_head_object(&r).unwrap().content_length, 42);
        assert!(parse_head_object(&resp(200, "")).is_err());
    }
}
