//! ai-replicate: Stable Video Diffusion on Replicate.
//!
//! * `POST {type: "video", prompt?, options: {image_url, duration, width,
//!   height, fps, motion, seed}}` (a signed-in user): validates, creates the
//!   prediction with a webhook to this function, records it, and answers at
//!   once (`202`-style `{prediction_id, status}`); the function is never
//!   held open while the video renders.
//! * `POST {action: "cancel", prediction_id}` (its owner): cancels it.
//! * `GET ?prediction_id=` (its owner): the record.
//! * Replicate's webhook (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`, Standard Webhooks with the `whsec_` secret): the
//!   signature and a 5-minute tolerance are checked before anything is
//!   read; a webhook id already handled is answered 200 without being
//!   redone (replay). On success the video is copied into Storage
//!   (`generated-content/<user id>/replicate/<id>.mp4`) before Replicate's
//!   URL expires, then the record says `succeeded` with the path.
//! * The fallback: a `replicate_poll` job enqueued with the record polls
//!   `GET /v1/predictions/{id}` with backoff if no webhook has finished it.

use edgeworks_auth::standard_webhooks::{self, Delivery};
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::{ApiError, Clock, Method, Request, Response};
use edgeworks_db::Db;
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_queue::{ClaimedJob, JobContext, JobHandler, JobOutcome, RetryPolicy};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{authenticate, rate_limit, service_db, Access, Route, Settings};

use crate::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::replicate::{self, Prediction, VideoOptions};
use crate::settings::ReplicateSettings;
use crate::tokens::map_db_error;

/// Public: Replicate's webhook carries no JWT. User actions authenticate in
/// the handler.
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post]).access(Access::Public);

/// Creating predictions costs money: per user, 20 burst, one every 20 s
/// (`RATE_LIMIT_AI_REPLICATE` overrides). Webhooks are not limited.
const CREATE_LIMIT: Route = Route::new(&[Method::Post]).rate_limit("20/0.05");

/// The bucket outputs are copied into.
pub const BUCKET: &str = "generated-content";
const REPLICATE_TIMEOUT_MS: u32 = 20_000;
const DOWNLOAD_TIMEOUT_MS: u32 = 60_000;

edgeworks_input::input! {
    /// What a user sends.
    pub struct ReplicateBody {
        /// `video` (the only kind).
        pub r#type: Option<String> = Field::string().one_of(&["video"]),
        /// `create` (default) or `cancel`.
        pub action: Option<String> = Field::string().one_of(&["create", "cancel"]),
        /// Kept with the record (the model animates an image; it reads no prompt).
        pub prompt: Option<String> = Field::string().max_chars(1000),
        /// Video parameters.
        pub options: Option<Value> = Field::object(
            Schema::object()
                .field("image_url", Field::string().max_chars(2048))
                .field("duration", Field::number())
                .field("width", Field::integer())
                .field("height", Field::integer())
                .field("fps", Field::integer())
                .field("motion", Field::integer())
                .field("seed", Field::integer())
                .deny_unknown_fields()
        ),
        /// For cancel and status.
        pub prediction_id: Option<String> = Field::uuid(),
    }
}

/// The handler.
pub async fn handle(
    Incoming(req): Incoming,
    settings: Settings<ReplicateSettings>,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    if req.headers.get("webhook-signature").is_some() || req.headers.get("webhook-id").is_some() {
        return webhook(&req, &settings, &ctx).await;
    }
    let caller = authenticate(&ctx, &req).await?;
    let user = caller.user_id()?.to_string();
    let db = service_db(&ctx)?;
    if req.method == Method::Get {
        let id = req
            .query_param("prediction_id")
            .filter(|id| edgeworks_core::ids::is_uuid(id))
            .ok_or_else(|| ApiError::unprocessable("send prediction_id", json!({ "fields": [{ "field": "prediction_id", "code": "required", "message": "a prediction id (uuid)" }] })))?;
        let row = owned_prediction(&db, &id, &user).await?;
        return Ok(Response::ok(&row));
    }
    let body: ReplicateBody = ReplicateBody::schema().parse(if req.body.is_empty() { b"{}" } else { &req.body })?;
    if body.action.as_deref() == Some("cancel") {
        let id = body
            .prediction_id
            .ok_or_else(|| ApiError::unprocessable("send prediction_id", json!({ "fields": [{ "field": "prediction_id", "code": "required", "message": "the prediction to cancel" }] })))?;
        return cancel(&db, &ctx, &settings, &id, &user).await.map(|v| Response::ok(&v));
    }
    let options: VideoOptions = serde_json::from_value(body.options.unwrap_or_else(|| json!({})))
        .map_err(|e| ApiError::new(422, "validation_failed", format!("options: {e}")))?;
    let input = replicate::video_input(&options)?;
    let token = settings.token()?;
    if let Some(limit) = CREATE_LIMIT.limit(ctx.function(), ctx.env().lookup())? {
        rate_limit(&ctx, &req, Some(&caller), ctx.function(), limit, 1).await?;
    }
    let resp = ctx
        .http()
        .send(
            replicate::create_request(
                &settings.base_url,
                token,
                &settings.version,
                &input,
                &settings.webhook_url,
            ),
            REPLICATE_TIMEOUT_MS,
        )
        .await
        .map_err(|_| ApiError::upstream("replicate_unavailable", "Replicate did not answer"))?;
    let prediction = replicate::parse_prediction(&resp).map_err(|e| {
        ctx.log().warn(
            "replicate create refused",
            json!({ "status": e.status, "detail": e.detail }),
        );
        e.to_api_error()
    })?;
    let row: Value = db
        .rpc(
            "pipeline_prediction_save",
            &json!({
                "p_user": user, "p_replicate_id": prediction.id,
                "p_status": replicate::our_status(&prediction.status),
                "p_model": replicate::SVD_MODEL, "p_version": settings.version,
                "p_prompt": body.prompt, "p_input": input, "p_poll_delay_ms": settings.poll_delay_ms,
            }),
        )
        .await
        .map_err(map_db_error)?;
    ctx.log().info(
        "prediction created",
        json!({ "prediction_id": row["id"], "replicate_id": prediction.id }),
    );
    let mut resp = Response::ok(&json!({
        "prediction_id": row["id"], "replicate_id": prediction.id, "status": row["status"],
        "type": "video", "model": replicate::SVD_MODEL,
    }));
    resp.status = 202;
    Ok(resp)
}

async fn owned_prediction(db: &Db<HostHttp>, id: &str, user: &str) -> Result<Value, ApiError> {
    let rows: Vec<Value> = db
        .execute(
            db.from("pipeline_predictions")
                .select("*")
                .eq("id", id)
                .eq("user_id", user),
        )
        .await
        .map_err(ApiError::from)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("prediction_not_found", "no such prediction"))
}

async fn cancel(
    db: &Db<HostHttp>,
    ctx: &Ctx,
    settings: &ReplicateSettings,
    id: &str,
    user: &str,
) -> Result<Value, ApiError> {
    let row = owned_prediction(db, id, user).await?;
    let status = row["status"].as_str().unwrap_or("");
    if matches!(status, "succeeded" | "failed" | "canceled" | "storing") {
        return Err(ApiError::conflict(
            "prediction_finished",
            format!("the prediction is {status}"),
        ));
    }
    let replicate_id = row["replicate_id"].as_str().unwrap_or_default();
    let resp = ctx
        .http()
        .send(
            replicate::cancel_request(&settings.base_url, settings.token()?, replicate_id),
            REPLICATE_TIMEOUT_MS,
        )
        .await
        .map_err(|_| ApiError::upstream("replicate_unavailable", "Replicate did not answer"))?;
    let prediction = replicate::parse_prediction(&resp).map_err(|e| e.to_api_error())?;
    record(db, &prediction, None).await
}

/// Stores what Replicate says about a prediction; on success copies the
/// output into Storage first. Idempotent: a finished record never moves.
pub async fn finalize(
    db: &Db<HostHttp>,
    ctx: &Ctx,
    settings: &ReplicateSettings,
    p: &Prediction,
) -> Result<Value, ApiError> {
    if p.status != "succeeded" {
        return record(db, p, None).await;
    }
    let Some(url) = p.output_url() else {
        let failed = Prediction {
            status: "failed".into(),
            error: Some(json!("Replicate reported success without an output")),
            ..p.clone()
        };
        return record(db, &failed, None).await;
    };
    // Mark it 'storing' (and learn whose it is) before the copy.
    let row = record(db, p, None).await?;
    if row["status"] == "succeeded" {
        return Ok(row);
    }
    let user = row["user_id"].as_str().unwrap_or_default().to_string();
    if !replicate::delivery_allowed(&url, &settings.delivery_hosts) {
        let failed = Prediction {
            status: "failed".into(),
            error: Some(json!("the output URL is not on an allowed host")),
            ..p.clone()
        };
        ctx.log()
            .warn("replicate output host refused", json!({ "replicate_id": p.id }));
        return record(db, &failed, None).await;
    }
    let file = ctx
        .http()
        .send(Request::new(Method::Get, url.clone()), DOWNLOAD_TIMEOUT_MS)
        .await
        .map_err(|_| ApiError::upstream("output_unavailable", "the output could not be downloaded"))?;
    if file.status != 200 {
        return Err(ApiError::upstream(
            "output_unavailable",
            format!("the output download answered {}", file.status),
        ));
    }
    if file.body.len() > settings.max_output_bytes {
        let failed = Prediction {
            status: "failed".into(),
            error: Some(json!("the output is larger than the bucket accepts")),
            ..p.clone()
        };
        return record(db, &failed, None).await;
    }
    let content_type = file.headers.get("content-type").unwrap_or("video/mp4").to_string();
    let ext = replicate::extension_for(&content_type, &url);
    let path = format!("{user}/replicate/{}.{ext}", p.id);
    let mime = if content_type.starts_with("video/") || content_type.starts_with("image/") {
        content_type.split(';').next().unwrap_or("video/mp4").trim().to_string()
    } else {
        "video/mp4".to_string()
    };
    store_object(ctx, BUCKET, &path, &mime, file.body).await?;
    record(db, p, Some(&path)).await
}

async fn record(db: &Db<HostHttp>, p: &Prediction, stored_at: Option<&str>) -> Result<Value, ApiError> {
    let status = match (p.status.as_str(), stored_at) {
        ("succeeded", Some(_)) => "succeeded",
        (s, _) => replicate::our_status(s),
    };
    db.rpc(
        "pipeline_prediction_update",
        &json!({
            "p_replicate_id": p.id, "p_status": status, "p_output_url": p.output_url(),
            "p_error": p.error_text(), "p_metrics": p.metrics,
            "p_storage_bucket": stored_at.map(|_| BUCKET), "p_storage_path": stored_at,
        }),
    )
    .await
    .map_err(map_db_error)
}

/// Uploads through the Storage API as the service role (a `storage.objects`
/// row is made, so the owner's policies and signed URLs work on it).
async fn store_object(ctx: &Ctx, bucket: &str, path: &str, content_type: &str, body: Vec<u8>) -> Result<(), ApiError> {
    let env = ctx.env();
    let base = env.require("SUPABASE_URL")?.trim_end_matches('/').to_string();
    let key = env.require("SUPABASE_SERVICE_ROLE_KEY")?;
    let mut req = Request::new(Method::Post, format!("{base}/storage/v1/object/{bucket}/{path}"));
    req.headers.set("authorization", format!("Bearer {key}"));
    req.headers.set("apikey", key);
    req.headers.set("content-type", content_type);
    req.headers.set("x-upsert", "true");
    req.body = body;
    let resp = ctx
        .http()
        .send(req, DOWNLOAD_TIMEOUT_MS)
        .await
        .map_err(|_| ApiError::unavailable("storage_unavailable", "Storage did not answer"))?;
    if !(200..300).contains(&resp.status) {
        ctx.log().warn(
            "storage refused the output",
            json!({ "status": resp.status, "path": path }),
        );
        return Err(ApiError::unavailable(
            "storage_refused",
            format!("Storage answered {}", resp.status),
        ));
    }
    Ok(())
}

async fn webhook(req: &Request, settings: &ReplicateSettings, ctx: &Ctx) -> Result<Response, ApiError> {
    let key = settings
        .webhook_key
        .as_deref()
        .ok_or_else(|| crate::settings::not_configured("REPLICATE_WEBHOOK_SECRET"))?;
    let delivery = Delivery {
        id: req.headers.get("webhook-id"),
        timestamp: req.headers.get("webhook-timestamp"),
        signature: req.headers.get("webhook-signature"),
    };
    let now = ctx.clock().now_ms() / 1000;
    if let Err(e) = standard_webhooks::verify(key, delivery, &req.body, now, 300) {
        ctx.log()
            .warn("replicate webhook refused", json!({ "reason": e.code() }));
        return Err(e.into());
    }
    let prediction: Prediction = serde_json::from_slice(&req.body)
        .map_err(|_| ApiError::bad_request("invalid_webhook_body", "the webhook body is not a prediction"))?;
    let db = service_db(ctx)?;
    let id = delivery.id.unwrap_or_default().trim();
    let first: bool = db
        .rpc("replicate_webhook_record", &json!({ "p_webhook_id": id }))
        .await
        .map_err(map_db_error)?;
    if !first {
        return Ok(Response::ok(&json!({ "duplicate": true })));
    }
    let row = finalize(&db, ctx, settings, &prediction).await?;
    ctx.log().info(
        "replicate webhook handled",
        json!({ "replicate_id": prediction.id, "status": row["status"] }),
    );
    Ok(Response::ok(
        &json!({ "prediction_id": row["id"], "status": row["status"] }),
    ))
}

/// The fallback poll's payload.
#[derive(Debug, Deserialize)]
pub struct PollPayload {
    /// Replicate's id.
    pub replicate_id: String,
}

/// The `replicate_poll` job kind: asks Replicate about a prediction no
/// webhook has finished, with the job's backoff between attempts.
pub struct ReplicatePoll<'a> {
    /// Effects.
    pub ctx: Ctx,
    /// Replicate settings.
    pub settings: &'a ReplicateSettings,
}

impl JobHandler<HostHttp> for ReplicatePoll<'_> {
    const QUEUE: &'static str = crate::steps::QUEUE;
    const KIND: &'static str = "replicate_poll";
    type Input = PollPayload;

    async fn run(&self, _job: &ClaimedJob, input: PollPayload, cx: &JobContext<'_, HostHttp>) -> JobOutcome {
        let rows: Vec<Value> = match cx
            .db
            .execute(
                cx.db
                    .from("pipeline_predictions")
                    .select("status")
                    .eq("replicate_id", &input.replicate_id),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: e.to_string(),
                    retry_after_ms: None,
                }
            }
        };
        match rows.first().and_then(|r| r["status"].as_str()) {
            None => {
                return JobOutcome::Fail {
                    reason: "no such prediction".into(),
                }
            }
            Some("succeeded" | "failed" | "canceled") => return JobOutcome::Complete(Some(json!({ "by": "webhook" }))),
            Some(_) => {}
        }
        let Ok(token) = self.settings.token() else {
            return JobOutcome::Fail {
                reason: "REPLICATE_API_TOKEN is not set".into(),
            };
        };
        let resp = match cx
            .http
            .send(
                replicate::get_request(&self.settings.base_url, token, &input.replicate_id),
                REPLICATE_TIMEOUT_MS,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return JobOutcome::Retry {
                    reason: e.to_string(),
                    retry_after_ms: None,
                }
            }
        };
        let prediction = match replicate::parse_prediction(&resp) {
            Ok(p) => p,
            Err(e) if e.is_retryable() => {
                return JobOutcome::Retry {
                    reason: e.detail,
                    retry_after_ms: None,
                }
            }
            Err(e) => return JobOutcome::Fail { reason: e.detail },
        };
        if !prediction.is_terminal() {
            let _ = record(cx.db, &prediction, None).await;
            return JobOutcome::Retry {
                reason: format!("still {}", prediction.status),
                retry_after_ms: None,
            };
        }
        match finalize(cx.db, &self.ctx, self.settings, &prediction).await {
            Ok(row) => JobOutcome::Complete(Some(json!({ "by": "poll", "status": row["status"] }))),
            Err(e) => JobOutcome::Retry {
                reason: format!("{}: {}", e.code(), e.message()),
                retry_after_ms: None,
            },
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 12,
            backoff: edgeworks_queue::Backoff {
                base_ms: 30_000,
                ..edgeworks_queue::Backoff::DEFAULT
            },
        }
    }
}
