//! processing-webhook: the pipeline's services report a step's progress,
//! completion or failure. Each source signs with its own secret in the
//! Standard Webhooks form; the body names its source, which picks the
//! secret, and is then authenticated as a whole. A `webhook-id` seen before
//! with the same body is acknowledged without effect; with another body it
//! is refused. A finished step enqueues the next (storage -> parse -> embed
//! -> completed) in the same SQL transaction.

use edgeworks_auth::standard_webhooks::{self, Delivery};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_db::Db;
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{Access, Json, Route, ServiceDb, Settings};
use edgeworks_uploads_protocol::flags::FeatureFlag;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::document::map_upload_error;
use crate::settings::{Source, UploadSettings};
use crate::Incoming;

/// POST; authenticated by signature, not JWT.
pub const ROUTE: Route = Route::new(&[Method::Post]).access(Access::Public);

/// The flag that routes parsing to LlamaParse (its webhook finishes the step).
pub const LLAMA_PARSE_FLAG: &str = "llama_parse_integration";
/// The flag that routes embedding to the external service.
pub const EXTERNAL_EMBEDDING_FLAG: &str = "external_embedding";

/// A webhook body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    document_id: String,
    status: String,
    step: Option<String>,
    progress: Option<f64>,
    job_id: Option<String>,
    error: Option<String>,
    retryable: Option<bool>,
}

impl Validate for WebhookBody {
    fn schema() -> Schema {
        Schema::object()
            .field("documentId", Field::uuid().required())
            .field(
                "source",
                Field::string()
                    .required()
                    .one_of(&["llamaparse", "storage", "embedding", "internal"]),
            )
            .field(
                "status",
                Field::string()
                    .required()
                    .one_of(&["processing", "completed", "failed"]),
            )
            .field("step", Field::string().one_of(&["storage", "parse", "embed"]))
            .field("progress", Field::number().range_f64(0.0, 100.0))
            .field("jobId", Field::string().non_blank().max_chars(200))
            .field("error", Field::string().max_chars(1000))
            .field("retryable", Field::boolean())
    }
}

/// The step a source's webhook speaks for (`internal` names it).
pub fn step_of(source: Source, named: Option<&str>) -> Result<&str, ApiError> {
    match source {
        Source::Storage => Ok("storage"),
        Source::LlamaParse => Ok("parse"),
        Source::Embedding => Ok("embed"),
        Source::Internal => named.ok_or_else(|| {
            ApiError::unprocessable(
                "an internal webhook names its step",
                json!({ "fields": [{ "field": "step", "code": "required", "message": "storage, parse or embed" }] }),
            )
        }),
    }
}

/// Reads the flag (absent: off).
pub async fn flag(db: &Db<HostHttp>, name: &str) -> Result<Option<FeatureFlag>, ApiError> {
    let rows: Vec<FeatureFlag> = db
        .execute(
            db.from("feature_flags")
                .select("name,is_enabled,rollout_percentage,target_user_ids")
                .eq("name", name),
        )
        .await
        .map_err(ApiError::from)?;
    Ok(rows.into_iter().next())
}

/// Whether `name` is on for `user`.
pub async fn flag_on(db: &Db<HostHttp>, name: &str, user: &str) -> Result<bool, ApiError> {
    Ok(flag(db, name).await?.is_some_and(|f| f.is_on_for(user)))
}

/// The handler.
pub async fn handle(
    settings: Settings<UploadSettings>,
    incoming: Incoming,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    // The source picks the secret: read it before anything is trusted.
    let source_name = edgeworks_core::http::parse_json::<Value>(&incoming.body)
        .ok()
        .and_then(|v| v.get("source").and_then(Value::as_str).map(str::to_string));
    let source = source_name.as_deref().and_then(Source::parse).ok_or_else(|| {
        ApiError::unprocessable(
            "the body must name its source",
            json!({ "fields": [{ "field": "source", "code": "one_of", "message": "llamaparse, storage, embedding or internal" }] }),
        )
    })?;
    let key = settings.key(source).ok_or_else(|| {
        ApiError::unauthorized(
            "signature_not_accepted",
            "webhooks from this source are not accepted here",
        )
    })?;
    let h = &incoming.headers;
    let delivery = Delivery {
        id: h.get("webhook-id"),
        timestamp: h.get("webhook-timestamp"),
        signature: h.get("webhook-signature"),
    };
    let now = ctx.clock().now_ms();
    standard_webhooks::verify(
        key,
        delivery,
        &incoming.body,
        now.div_euclid(1000),
        settings.webhook_tolerance_secs,
    )?;
    let webhook_id = delivery.id.unwrap_or_default().trim().to_string();
    let body: WebhookBody = incoming.value()?;
    let step = step_of(source, body.step.as_deref())?.to_string();

    let gate = match source {
        Source::LlamaParse => Some(LLAMA_PARSE_FLAG),
        Source::Embedding => Some(EXTERNAL_EMBEDDING_FLAG),
        _ => None,
    };
    if let Some(name) = gate {
        // Only the owner's flag decides whether this integration may speak for the document.
        let doc: Value = db
            .rpc("upload_document_by_id", &json!({ "p_document": body.document_id }))
            .await
            .map_err(map_upload_error)?;
        let owner = doc["user_id"].as_str().unwrap_or_default();
        if !flag_on(&db, name, owner).await? {
            return Err(ApiError::conflict(
                "integration_disabled",
                "this integration is not enabled for the document's owner",
            ));
        }
    }

    // Received and applied in one SQL call: a delivery whose effect fails leaves no
    // receipt, so the sender's retry is processed; a replay is acknowledged.
    let body_hash = hex::encode(Sha256::digest(&incoming.body));
    let received: Value = db
        .rpc(
            "upload_webhook_receive",
            &json!({
                "p_source": source.as_str(), "p_webhook_id": webhook_id, "p_body_sha256": body_hash,
                "p_document": body.document_id, "p_step": step, "p_status": body.status,
                "p_progress": body.progress.map(|p| p.round() as i64), "p_external_id": body.job_id,
                "p_error": body.error, "p_retryable": body.retryable.unwrap_or(false),
                "p_min_broadcast_ms": settings.broadcast_min_ms,
            }),
        )
        .await
        .map_err(|e| match e.code() {
            Some("EU409") if e.message() == "webhook_id_reused" => ApiError::conflict(
                "webhook_id_reused",
                "this webhook-id was already delivered with a different body",
            ),
            _ => map_upload_error(e),
        })?;
    if received["duplicate"] == json!(true) {
        return Ok(Json(
            json!({ "received": true, "duplicate": true, "webhookId": webhook_id }),
        ));
    }
    let doc = &received["result"]["document"];
    ctx.log().info(
        "webhook applied",
        json!({ "source": source.as_str(), "document_id": body.document_id, "status": body.status, "step": step }),
    );
    let result = json!({
        "nextJobId": received["result"]["next_job_id"],
        "status": doc["status"],
        "processingStep": doc["processing_step"],
        "progress": doc["progress"],
        "retryCount": doc["retry_count"],
    });
    Ok(Json(
        json!({ "received": true, "duplicate": false, "webhookId": webhook_id, "result": result }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_speaks_for_its_own_step() {
        assert_eq!(step_of(Source::LlamaParse, Some("embed")).unwrap(), "parse");
        assert_eq!(step_of(Source::Embedding, None).unwrap(), "embed");
        assert_eq!(step_of(Source::Storage, None).unwrap(), "storage");
        assert_eq!(step_of(Source::Internal, Some("embed")).unwrap(), "embed");
        assert_eq!(step_of(Source::Internal, None).unwrap_err().status(), 422);
    }
}
