//! upload-handler: `POST` initialise, `GET` status (and resume), `PUT` part
//! progress or completion. Bytes never pass through the function: the
//! client gets presigned URLs that pin each body's length and SHA-256, the
//! server keeps the multipart session (reconciled with ListParts), and
//! completion is judged on what the storage holds.

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_db::Db;
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{Json, Route, ServiceDb, Settings, User};
use edgeworks_storage::{
    portable_file_name, ObjectKey, PartTarget, PresignedRequest, PutUrlOptions, S3Client, SigningTime,
};
use edgeworks_uploads_protocol::api::{PartUrl, UploadResult};
use edgeworks_uploads_protocol::digest::{is_base64_sha256, is_hex_sha256};
use edgeworks_uploads_protocol::file_type::{check_declared, DocumentType};
use edgeworks_uploads_protocol::plan::{plan, SizeRejection, UploadMethod, UploadPlan, MAX_FILE_BYTES};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::document::{map_upload_error, DocumentView, PartRow};
use crate::settings::UploadSettings;
use crate::store::{signing_time, Storage};
use crate::verify::{completion_list, missing_parts, verify_object, Declared};
use crate::Incoming;

/// POST, GET, PUT; signed-in users; 60 burst, 2 a second.
pub const ROUTE: Route = Route::new(&[Method::Post, Method::Get, Method::Put]).rate_limit("60/2");

/// `POST` body (the seed's field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    filename: String,
    content_type: String,
    file_size: u64,
    sha256: String,
    part_sha256: Option<Vec<String>>,
}

/// `GET` query and `PUT` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRequest {
    document_id: String,
    action: Option<String>,
    part_number: Option<i64>,
    etag: Option<String>,
    resume: Option<String>,
}

impl Validate for DocumentRequest {
    fn schema() -> Schema {
        Schema::object()
            .field("documentId", Field::uuid().required())
            .field("action", Field::string().one_of(&["part", "complete"]))
            // Range-checked against the document's own part count in the handler.
            .field("partNumber", Field::integer())
            // The part's ETag as the storage answered its PUT (a browser reads it from
            // the response): used at completion when ListParts gives none (s3s-fs).
            .field("etag", Field::string().non_blank().max_chars(256))
            .field("resume", Field::string().one_of(&["true", "false"]))
    }
}

/// What init needs besides the body: checked, with the plan.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The body.
    pub req: InitRequest,
    /// Its type.
    pub doc_type: DocumentType,
    /// The plan for its size.
    pub plan: UploadPlan,
    /// A key-safe file name.
    pub safe_name: String,
}

fn field_error(field: &str, code: &str, message: &str) -> ApiError {
    ApiError::unprocessable(
        "request body failed validation",
        json!({ "fields": [{ "field": field, "code": code, "message": message }] }),
    )
}

/// Validates an init body: size, type and name, hashes, and (for multipart)
/// one part hash per planned part.
pub fn prepare(body: &[u8]) -> Result<Prepared, ApiError> {
    let schema = Schema::object()
        .field("filename", Field::string().required().non_blank().max_chars(255))
        .field("contentType", Field::string().required().non_blank().max_chars(255))
        .field("fileSize", Field::integer().required().range(0, i64::MAX))
        .field("sha256", Field::string().required().max_chars(64))
        .field("partSha256", Field::array(Field::string().max_chars(44)).max_items(10));
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        edgeworks_core::http::parse_json::<Value>(body)?
    };
    let req: InitRequest = schema.parse_value(value)?;
    let plan = plan(req.file_size).map_err(|e| match e {
        SizeRejection::TooLarge => ApiError::new(413, "file_too_large", "documents are at most 50 MB")
            .with_details(json!({ "max_bytes": MAX_FILE_BYTES, "declared": req.file_size })),
        SizeRejection::Empty => field_error("fileSize", "empty_file", "the file is empty"),
    })?;
    let doc_type =
        check_declared(&req.filename, &req.content_type).map_err(|r| ApiError::new(415, r.code(), r.message()))?;
    if !is_hex_sha256(&req.sha256) {
        return Err(field_error(
            "sha256",
            "invalid_format",
            "the lower-case hex SHA-256 of the file",
        ));
    }
    if plan.method == UploadMethod::Multipart {
        let parts = req.part_sha256.as_deref().unwrap_or_default();
        if parts.len() != plan.parts.len() || !parts.iter().all(|p| is_base64_sha256(p)) {
            return Err(field_error(
                "partSha256",
                "part_hashes_required",
                &format!(
                    "a file over 5 MB is sent in {} parts of 5 MB: give the base64 SHA-256 of each, in order",
                    plan.parts.len()
                ),
            ));
        }
    }
    let safe_name = portable_file_name(&req.filename)
        .ok_or_else(|| field_error("filename", "invalid_format", "the file name has no usable characters"))?;
    Ok(Prepared {
        req,
        doc_type,
        plan,
        safe_name,
    })
}

/// Where a document's bytes go: the object, and its multipart upload if any.
struct Target<'a> {
    s3: &'a S3Client<HostHttp>,
    bucket: &'a str,
    key: &'a ObjectKey,
    doc_type: DocumentType,
    upload_id: Option<&'a str>,
}

/// One presigned request per part, each pinning the part's length and SHA-256
/// (and, for a single PUT, the declared type).
fn presign_all(t: &Target<'_>, parts: &[PartRow], expires: u32, at: SigningTime) -> Result<Vec<PartUrl>, ApiError> {
    let Target {
        s3,
        bucket,
        key,
        doc_type,
        upload_id,
    } = *t;
    let to_url = |p: &PartRow, r: PresignedRequest| PartUrl {
        part_number: p.part_number,
        url: r.url,
        headers: r.headers,
        offset: p.offset,
        size: p.expected_size,
    };
    parts
        .iter()
        .map(|p| {
            let opts = PutUrlOptions {
                content_type: upload_id.is_none().then(|| doc_type.mime().to_string()),
                content_length: Some(p.expected_size),
                checksum_sha256: Some(p.sha256.clone()),
            };
            let signed = match upload_id {
                None => s3.presign_put(bucket, key, &opts, expires, at),
                Some(id) => {
                    let target = PartTarget {
                        upload_id: id,
                        part_number: p.part_number as u16,
                    };
                    s3.presign_upload_part_checked(bucket, key, target, &opts, expires, at)
                }
            };
            signed.map(|r| to_url(p, r)).map_err(|e| e.to_api_error())
        })
        .collect()
}

/// The handler: one function, three verbs.
pub async fn handle(
    user: User,
    settings: Settings<UploadSettings>,
    db: ServiceDb,
    storage: Storage,
    incoming: Incoming,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let s3 = &storage.0;
    match incoming.method {
        Method::Post => initialise(&user, &settings, &db, s3, &ctx, &incoming.body).await,
        Method::Get => {
            let q: DocumentRequest = incoming.value()?;
            status(&user, &settings, &db, s3, &ctx, &q).await
        }
        _ => {
            let q: DocumentRequest = incoming.value()?;
            match q.action.as_deref() {
                Some("complete") => complete(&user, &settings, &db, s3, &ctx, &q).await,
                _ => part_progress(&user, &settings, &db, s3, &ctx, &q).await,
            }
        }
    }
}

async fn initialise(
    user: &User,
    settings: &UploadSettings,
    db: &Db<HostHttp>,
    s3: &S3Client<HostHttp>,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let p = prepare(body)?;
    let at = signing_time(ctx)?;
    let document_id = uuid_v4(&mut ctx.rng());
    let key = ObjectKey::for_user(&user.id, &format!("{document_id}/{}", p.safe_name))
        .map_err(|r| r.to_api_error("filename"))?;
    let multipart = p.plan.method == UploadMethod::Multipart;
    let upload_id = if multipart {
        let up = s3
            .create_multipart_upload_sha256(&settings.bucket, &key, Some(p.doc_type.mime()), at)
            .await
            .map_err(|e| e.to_api_error())?;
        Some(up.upload_id)
    } else {
        None
    };
    let part_hashes: Vec<String> = match &p.req.part_sha256 {
        Some(h) if multipart => h.clone(),
        // One PUT: the storage checks the whole file's hash itself.
        _ => vec![crate::hex_to_base64(&p.req.sha256)?],
    };
    let rows: Vec<PartRow> = p
        .plan
        .parts
        .iter()
        .zip(&part_hashes)
        .map(|(r, h)| PartRow {
            part_number: r.part_number,
            offset: r.offset,
            expected_size: r.size,
            sha256: h.clone(),
            size: None,
        })
        .collect();
    let parts_json: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "part_number": r.part_number, "sha256": r.sha256, "size": r.expected_size }))
        .collect();
    let created: Value = db
        .rpc(
            "upload_init",
            &json!({
                "p_user": user.id, "p_document": document_id, "p_filename": p.req.filename,
                "p_content_type": p.doc_type.mime(), "p_size": p.req.file_size, "p_sha256": p.req.sha256,
                "p_bucket": settings.bucket, "p_key": key.as_str(),
                "p_method": if multipart { "multipart" } else { "single" },
                "p_upload_id": upload_id, "p_part_size": multipart.then_some(p.plan.part_size),
                "p_parts": multipart.then_some(parts_json),
            }),
        )
        .await
        .map_err(map_upload_error)?;
    let existing: DocumentView =
        serde_json::from_value(created["document"].clone()).map_err(|_| ApiError::internal())?;
    if created["duplicate"] == json!(true) {
        // Nothing to upload: abandon the multipart upload just created.
        if let Some(id) = &upload_id {
            let _ = s3.abort_multipart_upload(&settings.bucket, &key, id, at).await;
        }
        ctx.log()
            .info("duplicate upload", json!({ "document_id": existing.id }));
        let result = UploadResult {
            document_id: existing.id.clone(),
            status: existing.status.clone(),
            upload_method: p.plan.method,
            duplicate: true,
            part_size: p.plan.part_size,
            parts: vec![],
            stored_parts: vec![],
            expires_at: 0,
        };
        return Ok(Json(json!(result)));
    }
    let target = Target {
        s3,
        bucket: &settings.bucket,
        key: &key,
        doc_type: p.doc_type,
        upload_id: upload_id.as_deref(),
    };
    let parts = presign_all(&target, &rows, settings.url_expires_secs, at)?;
    ctx.log().info(
        "upload initialised",
        json!({ "document_id": document_id, "parts": parts.len(), "bytes": p.req.file_size }),
    );
    Ok(Json(json!(UploadResult {
        document_id,
        status: "uploading".into(),
        upload_method: p.plan.method,
        duplicate: false,
        part_size: p.plan.part_size,
        parts,
        stored_parts: vec![],
        expires_at: at.unix_secs() + i64::from(settings.url_expires_secs),
    })))
}

/// The caller's document with its session and parts (404 for anyone else's).
async fn load(db: &Db<HostHttp>, user: &User, id: &str) -> Result<crate::document::Loaded, ApiError> {
    let v: Value = db
        .rpc("upload_document", &json!({ "p_user": user.id, "p_document": id }))
        .await
        .map_err(map_upload_error)?;
    serde_json::from_value(v).map_err(|_| ApiError::internal())
}

/// Asks the storage which parts it holds and records them (the server-held
/// session's truth); returns the stored (number, size) pairs.
async fn reconcile(
    db: &Db<HostHttp>,
    s3: &S3Client<HostHttp>,
    user: &User,
    loaded: &crate::document::Loaded,
    client_etag: Option<(u32, &str)>,
    at: SigningTime,
) -> Result<Vec<(u32, u64)>, ApiError> {
    let Some(session) = &loaded.session else {
        return Ok(vec![]);
    };
    let key = loaded.document.key()?;
    let listed = s3
        .list_parts(&loaded.document.bucket(), &key, &session.upload_id, at)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                ApiError::conflict(
                    "upload_session_gone",
                    "the storage no longer has this upload (completed, aborted or expired); start a new one",
                )
            } else {
                e.to_api_error()
            }
        })?;
    let parts: Vec<Value> = listed
        .iter()
        .map(|p| {
            let n = u32::from(p.part_number);
            let etag = match client_etag {
                Some((cn, e)) if cn == n && p.etag.is_empty() && !e.chars().any(char::is_control) => e,
                _ => p.etag.as_str(),
            };
            json!({ "part_number": n, "size": p.size, "etag": etag })
        })
        .collect();
    let _: Value = db
        .rpc(
            "upload_record_parts",
            &json!({ "p_user": user.id, "p_document": loaded.document.id, "p_parts": parts }),
        )
        .await
        .map_err(map_upload_error)?;
    Ok(listed.iter().map(|p| (u32::from(p.part_number), p.size)).collect())
}

async fn status(
    user: &User,
    settings: &UploadSettings,
    db: &Db<HostHttp>,
    s3: &S3Client<HostHttp>,
    ctx: &Ctx,
    q: &DocumentRequest,
) -> Result<Json<Value>, ApiError> {
    let loaded = load(db, user, &q.document_id).await?;
    let doc = &loaded.document;
    if q.resume.as_deref() != Some("true") || doc.status != "uploading" {
        return Ok(Json(loaded.public_view(ctx.clock().now_ms())));
    }
    // Resume: what the storage holds, and fresh URLs for the rest.
    let at = signing_time(ctx)?;
    let stored = match loaded.session {
        Some(_) => reconcile(db, s3, user, &loaded, None, at).await?,
        None => vec![],
    };
    let key = doc.key()?;
    let doc_type = doc.doc_type()?;
    let rows: Vec<PartRow> = loaded
        .part_rows()
        .into_iter()
        .filter(|p| !stored.iter().any(|(n, s)| *n == p.part_number && *s == p.expected_size))
        .collect();
    let upload_id = loaded.session.as_ref().map(|s| s.upload_id.as_str());
    let bucket = doc.bucket();
    let target = Target {
        s3,
        bucket: &bucket,
        key: &key,
        doc_type,
        upload_id,
    };
    let parts = presign_all(&target, &rows, settings.url_expires_secs, at)?;
    let method = if upload_id.is_some() {
        UploadMethod::Multipart
    } else {
        UploadMethod::Single
    };
    Ok(Json(json!(UploadResult {
        document_id: doc.id.clone(),
        status: doc.status.clone(),
        upload_method: method,
        duplicate: false,
        part_size: loaded.session.as_ref().map(|s| s.part_size).unwrap_or(doc.file_size),
        parts,
        stored_parts: stored.iter().map(|(n, _)| *n).collect(),
        expires_at: at.unix_secs() + i64::from(settings.url_expires_secs),
    })))
}

async fn part_progress(
    user: &User,
    settings: &UploadSettings,
    db: &Db<HostHttp>,
    s3: &S3Client<HostHttp>,
    ctx: &Ctx,
    q: &DocumentRequest,
) -> Result<Json<Value>, ApiError> {
    let loaded = load(db, user, &q.document_id).await?;
    let Some(session) = &loaded.session else {
        return Err(ApiError::conflict(
            "not_multipart",
            "this document is uploaded in one PUT: complete it with action \"complete\"",
        ));
    };
    let n = q
        .part_number
        .ok_or_else(|| field_error("partNumber", "required", "which part finished"))?;
    if n < 1 || n > i64::from(session.part_count) {
        return Err(ApiError::new(
            422,
            "part_out_of_range",
            format!("this upload has parts 1 to {}", session.part_count),
        )
        .with_details(json!({ "partNumber": n, "part_count": session.part_count })));
    }
    if loaded.document.status != "uploading" {
        return Ok(Json(loaded.public_view(ctx.clock().now_ms())));
    }
    let at = signing_time(ctx)?;
    let client_etag = q.etag.as_deref().map(|e| (n as u32, e));
    let stored = reconcile(db, s3, user, &loaded, client_etag, at).await?;
    let bytes: u64 = stored.iter().map(|(_, s)| s).sum();
    let now = ctx.clock().now_ms();
    let progress = ((bytes.min(loaded.document.file_size) * 100) / loaded.document.file_size.max(1)).min(99);
    let updated: Value = db
        .rpc(
            "upload_progress",
            &json!({ "p_document": loaded.document.id, "p_stage": "upload", "p_progress": progress,
                     "p_min_broadcast_ms": settings.broadcast_min_ms }),
        )
        .await
        .map_err(map_upload_error)?;
    let view: DocumentView = serde_json::from_value(updated["document"].clone()).map_err(|_| ApiError::internal())?;
    let mut out = view.public_view(now);
    out["storedParts"] = json!(stored.iter().map(|(n, _)| n).collect::<Vec<_>>());
    Ok(Json(out))
}

async fn complete(
    user: &User,
    settings: &UploadSettings,
    db: &Db<HostHttp>,
    s3: &S3Client<HostHttp>,
    ctx: &Ctx,
    q: &DocumentRequest,
) -> Result<Json<Value>, ApiError> {
    let loaded = load(db, user, &q.document_id).await?;
    let doc = &loaded.document;
    if doc.status != "uploading" {
        // Completed already (another tab or device): the same answer.
        return Ok(Json(loaded.public_view(ctx.clock().now_ms())));
    }
    let at = signing_time(ctx)?;
    let key = doc.key()?;
    let bucket = doc.bucket();
    if let Some(session) = &loaded.session {
        let expected: Vec<(u32, u64)> = loaded
            .part_rows()
            .iter()
            .map(|p| (p.part_number, p.expected_size))
            .collect();
        match s3.list_parts(&bucket, &key, &session.upload_id, at).await {
            Ok(mut stored) => {
                // A server whose ListParts carries no ETags (s3s-fs): the ones recorded per part.
                for p in stored.iter_mut().filter(|p| p.etag.is_empty()) {
                    if let Some(rec) = loaded.parts.iter().find(|r| r.part_number == u32::from(p.part_number)) {
                        p.etag = rec.etag.clone().unwrap_or_default();
                    }
                }
                let missing = missing_parts(&expected, &stored);
                if !missing.is_empty() {
                    return Err(ApiError::conflict(
                        "upload_incomplete",
                        "parts are missing; upload them, then complete",
                    )
                    .with_details(json!({ "missing_parts": missing })));
                }
                s3.complete_multipart_upload(
                    &bucket,
                    &key,
                    &session.upload_id,
                    &completion_list(&expected, &stored),
                    at,
                )
                .await
                .map_err(|e| e.to_api_error())?;
            }
            // Completed by an earlier call whose answer was lost: the object decides below.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.to_api_error()),
        }
    }
    let declared = Declared {
        bucket: &bucket,
        key: &key,
        size: doc.file_size,
        content_type: doc.doc_type()?,
        sha256: &doc.sha256,
    };
    let Some(verified) = verify_object(s3, &declared, settings.verify_chunk_bytes, at).await? else {
        return Err(ApiError::conflict(
            "upload_incomplete",
            "nothing is stored for this document yet; upload it first",
        ));
    };
    let finished: Value = db
        .rpc(
            "upload_finish",
            &json!({ "p_user": user.id, "p_document": doc.id, "p_sniffed_type": verified.sniffed.mime(),
                     "p_size": verified.size }),
        )
        .await
        .map_err(map_upload_error)?;
    if finished["duplicate"] == json!(true) {
        // The user's earlier copy holds these bytes: this object is redundant.
        let _ = s3.delete_object(&bucket, &key, at).await;
    }
    let view: DocumentView = serde_json::from_value(finished["document"].clone()).map_err(|_| ApiError::internal())?;
    ctx.log().info(
        "upload completed",
        json!({ "document_id": view.id, "duplicate": finished["duplicate"], "bytes": verified.size }),
    );
    let mut out = view.public_view(ctx.clock().now_ms());
    out["duplicate"] = finished["duplicate"].clone();
    Ok(Json(out))
}
