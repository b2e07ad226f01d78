//! job-callback (POST, workers only): a worker's report on a job it claimed.
//!
//! Not open as in the seed. The worker either signs the body with Standard
//! Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`, the
//! `MEDIA_WORKER_SECRET`, 5 minutes' tolerance; a replayed id is answered
//! 200 `replayed: true` and changes nothing) or presents the service-role
//! JWT. Either way it must present the claim's lease token: the SQL call
//! (`media_job_callback`) refuses a lost or expired lease (409) and any
//! transition but processing -> processing | completed | failed (409).
//!
//! `processing` reports progress (forwarded to the owner over Realtime, at
//! most twice a second) and may ask for upload URLs: presigned PUTs under
//! `<owner>/<job id>/`, so outputs never pass through a function.
//! `completed` names the outputs (`imageUrls[]` or `filePath` from SDXL
//! workers, `outputUrl` from WAN workers), normalised here (foreign hosts,
//! other buckets, `..` → 400) and checked against the owner's prefix in SQL.

use edgeworks_auth::standard_webhooks::{self, Delivery};
use edgeworks_auth::webhooks::DEFAULT_TOLERANCE_SECS;
use edgeworks_core::{ApiError, Clock, Method, Response};
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_runtime::Ctx;
use edgeworks_service::{authenticate, FromRequest, Parts, Route, ServiceDb, Settings};
use edgeworks_storage::{ObjectKey, PutUrlOptions, S3Client, SigningTime};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::map_media_error;
use crate::paths::OutputPlace;
use crate::settings::MediaSettings;

/// POST; public at the gateway because the report authenticates itself (below).
pub const ROUTE: Route = Route::new(&[Method::Post]).access(edgeworks_service::Access::Public);

/// Content types a worker may ask upload URLs for, and their extensions.
pub const OUTPUT_TYPES: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/apng", "png"),
    ("image/jpeg", "jpg"),
    ("image/webp", "webp"),
    ("video/mp4", "mp4"),
    ("video/webm", "webm"),
];

/// Upload URLs a `processing` report asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// 1 to 4.
    pub count: u32,
    /// One of [`OUTPUT_TYPES`].
    pub content_type: String,
}

/// The report (the seed's fields, plus `leaseToken`, `progress`, `preview`, `uploads`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRequest {
    /// The job.
    pub job_id: String,
    /// The claim's lease token.
    pub lease_token: String,
    /// processing | completed | failed.
    pub status: String,
    /// 0 to 100.
    pub progress: Option<i64>,
    /// A preview image's path or URL.
    pub preview: Option<String>,
    /// SDXL: one output.
    pub file_path: Option<String>,
    /// WAN: the output.
    pub output_url: Option<String>,
    /// SDXL: several outputs.
    pub image_urls: Option<Vec<String>>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// The 7B model's rewrite of the prompt.
    pub enhanced_prompt: Option<String>,
    /// Upload URLs wanted.
    pub uploads: Option<UploadRequest>,
}

impl Validate for CallbackRequest {
    fn schema() -> Schema {
        let types: Vec<&str> = OUTPUT_TYPES.iter().map(|(t, _)| *t).collect();
        Schema::object()
            .field("jobId", Field::uuid().required())
            .field("leaseToken", Field::uuid().required())
            .field(
                "status",
                Field::string()
                    .required()
                    .one_of(&["processing", "completed", "failed"]),
            )
            .field("progress", Field::integer().range(0, 100))
            .field("preview", Field::string().max_chars(2048))
            .field("filePath", Field::string().max_chars(2048))
            .field("outputUrl", Field::string().max_chars(2048))
            .field(
                "imageUrls",
                Field::array(Field::string().max_chars(2048)).min_items(1).max_items(16),
            )
            .field("errorMessage", Field::string().max_chars(2000))
            .field("enhancedPrompt", Field::string().max_chars(8000))
            .field(
                "uploads",
                Field::object(
                    Schema::object()
                        .field("count", Field::integer().required().range(1, 4))
                        .field("contentType", Field::string().required().one_of(&types)),
                ),
            )
    }
}

/// A report whose sender was authenticated: its body, and the webhook id
/// when it came signed (for replay refusal).
pub struct WorkerReport {
    /// The validated body.
    pub body: CallbackRequest,
    /// `webhook-id` of a signed report.
    pub webhook_id: Option<String>,
}

impl FromRequest for WorkerReport {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let settings = Settings::<MediaSettings>::load(parts.ctx.env())?;
        let headers = &parts.req.headers;
        let webhook_id = if headers.get("webhook-signature").is_some() {
            let key = settings.worker_key.as_deref().ok_or_else(|| {
                ApiError::unauthorized(
                    "signature_not_accepted",
                    "signed callbacks are not configured here; use the service role",
                )
            })?;
            let delivery = Delivery {
                id: headers.get("webhook-id"),
                timestamp: headers.get("webhook-timestamp"),
                signature: headers.get("webhook-signature"),
            };
            let now = parts.ctx.clock().now_ms().div_euclid(1000);
            standard_webhooks::verify(key, delivery, &parts.req.body, now, DEFAULT_TOLERANCE_SECS)?;
            delivery.id.map(|s| s.trim().to_string())
        } else if parts.req.bearer_token().is_some() {
            authenticate(&parts.ctx, &parts.req).await?.require_service_role()?;
            None
        } else {
            return Err(ApiError::unauthorized(
                "signature_missing",
                "sign the report (webhook-id, webhook-timestamp, webhook-signature) or send the service role",
            ));
        };
        let value = if parts.req.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            edgeworks_core::http::parse_json(&parts.req.body)?
        };
        let body: CallbackRequest = CallbackRequest::schema().parse_value(value)?;
        Ok(WorkerReport { body, webhook_id })
    }
}

/// The outputs a `completed` report names, normalised (see the module docs).
pub fn outputs(place: &OutputPlace, body: &CallbackRequest) -> Result<Vec<String>, ApiError> {
    let mut named: Vec<(&str, &str)> = Vec::new();
    for u in body.image_urls.iter().flatten() {
        named.push(("imageUrls", u));
    }
    if let Some(p) = &body.file_path {
        named.push(("filePath", p));
    }
    if let Some(u) = &body.output_url {
        named.push(("outputUrl", u));
    }
    if named.is_empty() {
        return Err(ApiError::bad_request(
            "outputs_required",
            "a completed report names its outputs: imageUrls or filePath (SDXL), outputUrl (WAN)",
        ));
    }
    let mut keys: Vec<String> = Vec::new();
    for (field, reported) in named {
        let key = place.normalise(field, reported)?.as_str().to_string();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The handler.
pub async fn handle(
    WorkerReport { body, webhook_id }: WorkerReport,
    settings: Settings<MediaSettings>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    let mut args = json!({
        "p_job": body.job_id,
        "p_lease_token": body.lease_token,
        "p_status": body.status,
        "p_webhook_id": webhook_id,
    });
    match body.status.as_str() {
        "processing" => {
            args["p_progress"] = json!(body.progress);
            if let Some(p) = &body.preview {
                args["p_preview"] = json!(settings.place.normalise("preview", p)?.as_str());
            }
        }
        "completed" => {
            args["p_outputs"] = json!(outputs(&settings.place, &body)?);
            args["p_enhanced_prompt"] = json!(body.enhanced_prompt);
        }
        _ => args["p_error"] = json!(body.error_message.as_deref().unwrap_or("worker reported failure")),
    }
    let out: Value = db.rpc("media_job_callback", &args).await.map_err(map_media_error)?;
    let mut answer = json!({ "success": true, "jobId": body.job_id, "status": body.status });
    if let Value::Object(map) = &out {
        for (k, v) in map {
            if k != "user_id" {
                answer[k] = v.clone();
            }
        }
    }
    if let (Some(uploads), Some(owner)) = (&body.uploads, out["user_id"].as_str()) {
        let now = ctx.clock().now_ms();
        answer["uploads"] = upload_urls(&settings, owner, &body.job_id, uploads, now, ctx.http())?;
    }
    ctx.log().info(
        "media job report",
        json!({ "job_id": body.job_id, "status": body.status, "replayed": out["replayed"] }),
    );
    Ok(Response::json(200, &answer))
}

/// Presigned PUTs for `<owner>/<job>/<n>.<ext>`, content type pinned.
pub fn upload_urls<C: edgeworks_core::http_client::HttpClient>(
    settings: &MediaSettings,
    owner: &str,
    job_id: &str,
    uploads: &UploadRequest,
    now_ms: i64,
    http: C,
) -> Result<Value, ApiError> {
    let ext = OUTPUT_TYPES
        .iter()
        .find(|(t, _)| *t == uploads.content_type)
        .map(|(_, e)| *e)
        .ok_or_else(|| ApiError::bad_request("unsupported_content_type", "no uploads of this type"))?;
    let client = S3Client::new(settings.storage()?.clone(), http);
    let at = SigningTime::from_unix_ms(now_ms).ok_or_else(ApiError::internal)?;
    let mut list = Vec::new();
    for n in 0..uploads.count.min(4) {
        let key = ObjectKey::for_user(owner, &format!("{job_id}/{n}.{ext}"))?;
        let options = PutUrlOptions {
            content_type: Some(uploads.content_type.clone()),
            ..Default::default()
        };
        let signed = client
            .presign_put(&settings.bucket, &key, &options, settings.upload_url_secs, at)
            .map_err(|e| e.to_api_error())?;
        list.push(json!({
            "path": key.as_str(),
            "method": signed.method,
            "url": signed.url,
            "headers": signed.headers,
            "expiresAt": signed.expires_at,
        }));
    }
    Ok(Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6c";

    fn body(json: &str) -> CallbackRequest {
        CallbackRequest::schema().parse(json.as_bytes()).unwrap()
    }

    fn place() -> OutputPlace {
        OutputPlace {
            origins: vec!["http://127.0.0.1:54321".into()],
            bucket: "media".into(),
        }
    }

    const IDS: &str =
        r#""jobId":"6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6d","leaseToken":"6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6e""#;

    #[test]
    fn sdxl_and_wan_outputs_normalise_to_keys_once_each() {
        let b = body(&format!(
            r#"{{{IDS},"status":"completed","imageUrls":["{OWNER}/j/0.png","http://127.0.0.1:54321/storage/v1/s3/media/{OWNER}/j/1.png"],"filePath":"media/{OWNER}/j/0.png"}}"#
        ));
        assert_eq!(
            outputs(&place(), &b).unwrap(),
            vec![format!("{OWNER}/j/0.png"), format!("{OWNER}/j/1.png")]
        );
        let w = body(&format!(
            r#"{{{IDS},"status":"completed","outputUrl":"{OWNER}/j/v.mp4"}}"#
        ));
        assert_eq!(outputs(&place(), &w).unwrap(), vec![format!("{OWNER}/j/v.mp4")]);
    }

    #[test]
    fn a_completion_without_outputs_or_with_traversal_is_a_400() {
        let none = body(&format!(r#"{{{IDS},"status":"completed"}}"#));
        assert_eq!(outputs(&place(), &none).unwrap_err().code(), "outputs_required");
        let bad = body(&format!(
            r#"{{{IDS},"status":"completed","filePath":"{OWNER}/../x.png"}}"#
        ));
        let e = outputs(&place(), &bad).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_output_path"));
    }

    #[test]
    fn the_schema_refuses_unknown_statuses_and_missing_leases() {
        let e = CallbackRequest::schema()
            .parse::<CallbackRequest>(br#"{"jobId":"x","status":"queued"}"#)
            .unwrap_err();
        assert_eq!(e.status(), 422);
        assert_eq!(e.details().unwrap()["fields"].as_array().unwrap().len(), 3);
    }
}
