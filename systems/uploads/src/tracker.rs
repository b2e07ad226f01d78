//! progress-tracker: `POST` progress (the service role, or a signed
//! `internal` webhook), `GET` progress with an ETA (the owner), `DELETE`
//! reset for a retry (the owner or the service role).
//!
//! A report updates the stage's smoothed rate (protocol `eta`) and the
//! document in one SQL call, which also decides whether to broadcast (at most
//! once per `UPLOAD_BROADCAST_MIN_MS`) and writes a `realtime_progress_updates`
//! row only when the status changes.

use edgeworks_auth::standard_webhooks::{self, Delivery};
use edgeworks_core::{ApiError, Clock, Method};
use edgeworks_db::Db;
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{authenticate, FromRequest, Json, Parts, Route, ServiceDb, Settings};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::document::{map_upload_error, DocumentView, Loaded};
use crate::settings::{Source, UploadSettings};
use crate::Incoming;

/// POST, GET, DELETE. Authentication differs per method, so the handler does
/// it (a signed report carries no JWT).
pub const ROUTE: Route =
    Route::new(&[Method::Post, Method::Get, Method::Delete]).access(edgeworks_service::Access::Public);

/// Who is calling, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporter {
    /// A signed-in user.
    User(String),
    /// The service role.
    Service,
    /// A request signed with the `internal` webhook secret.
    SignedInternal,
}

impl FromRequest for Reporter {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let headers = &parts.req.headers;
        if headers.get("webhook-signature").is_some() {
            let settings = Settings::<UploadSettings>::load(parts.ctx.env())?;
            let key = settings.key(Source::Internal).ok_or_else(|| {
                ApiError::unauthorized("signature_not_accepted", "signed reports are not configured here")
            })?;
            let delivery = Delivery {
                id: headers.get("webhook-id"),
                timestamp: headers.get("webhook-timestamp"),
                signature: headers.get("webhook-signature"),
            };
            let now = parts.ctx.clock().now_ms().div_euclid(1000);
            standard_webhooks::verify(key, delivery, &parts.req.body, now, settings.webhook_tolerance_secs)?;
            return Ok(Reporter::SignedInternal);
        }
        let caller = authenticate(&parts.ctx, &parts.req).await?;
        if caller.principal.is_service_role {
            return Ok(Reporter::Service);
        }
        Ok(Reporter::User(caller.user_id()?.to_string()))
    }
}

/// A progress report.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    document_id: String,
    stage: String,
    progress: f64,
    status: Option<String>,
}

impl Validate for ProgressReport {
    fn schema() -> Schema {
        Schema::object()
            .field("documentId", Field::uuid().required())
            .field(
                "stage",
                Field::string().required().one_of(&["upload", "parse", "embed"]),
            )
            .field("progress", Field::number().required().range_f64(0.0, 100.0))
            .field("status", Field::string().one_of(&["failed"]))
    }
}

/// `GET` / `DELETE` arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRef {
    document_id: String,
}

impl Validate for DocumentRef {
    fn schema() -> Schema {
        Schema::object().field("documentId", Field::uuid().required())
    }
}

/// The document by id, as the service role (no owner check: for reporters).
async fn by_id(db: &Db<HostHttp>, id: &str) -> Result<DocumentView, ApiError> {
    let v: Value = db
        .rpc("upload_document_by_id", &json!({ "p_document": id }))
        .await
        .map_err(map_upload_error)?;
    serde_json::from_value(v).map_err(|_| ApiError::internal())
}

/// The owner's document (404 for anyone else's).
async fn owned(db: &Db<HostHttp>, user: &str, id: &str) -> Result<DocumentView, ApiError> {
    let v: Value = db
        .rpc("upload_document", &json!({ "p_user": user, "p_document": id }))
        .await
        .map_err(map_upload_error)?;
    let loaded: Loaded = serde_json::from_value(v).map_err(|_| ApiError::internal())?;
    Ok(loaded.document)
}

/// The handler.
pub async fn handle(
    who: Reporter,
    settings: Settings<UploadSettings>,
    incoming: Incoming,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Json<Value>, ApiError> {
    let now = ctx.clock().now_ms();
    match incoming.method {
        Method::Post => {
            if matches!(who, Reporter::User(_)) {
                return Err(ApiError::forbidden(
                    "reporter_required",
                    "progress is reported by the pipeline: the service role or a signed internal webhook",
                ));
            }
            let r: ProgressReport = incoming.value()?;
            // One call: the rate is observed in SQL under the row lock (see eta.rs).
            let updated: Value = db
                .rpc(
                    "upload_progress",
                    &json!({ "p_document": r.document_id, "p_stage": r.stage, "p_progress": r.progress.round() as i64,
                             "p_status": r.status, "p_min_broadcast_ms": settings.broadcast_min_ms }),
                )
                .await
                .map_err(map_upload_error)?;
            let view: DocumentView =
                serde_json::from_value(updated["document"].clone()).map_err(|_| ApiError::internal())?;
            Ok(Json(json!({
                "broadcast": updated["broadcast"],
                "progress": view.progress_report(now),
            })))
        }
        Method::Get => {
            let q: DocumentRef = incoming.value()?;
            let doc = match &who {
                Reporter::User(u) => owned(&db, u, &q.document_id).await?,
                _ => by_id(&db, &q.document_id).await?,
            };
            Ok(Json(json!(doc.progress_report(now))))
        }
        _ => {
            let q: DocumentRef = incoming.value()?;
            if let Reporter::User(u) = &who {
                owned(&db, u, &q.document_id).await?;
            }
            let reset: Value = db
                .rpc("upload_progress_reset", &json!({ "p_document": q.document_id }))
                .await
                .map_err(map_upload_error)?;
            let view: DocumentView =
                serde_json::from_value(reset["document"].clone()).map_err(|_| ApiError::internal())?;
            ctx.log().info(
                "progress reset",
                json!({ "document_id": view.id, "retry_count": view.retry_count }),
            );
            Ok(Json(json!(view.progress_report(now))))
        }
    }
}
