//! queue-job (POST, a signed-in user): one of the ten job types, routed to
//! its queue, with credits reserved in the same SQL call that enqueues it.
//! Answers the seed's `{success, job, message, queueLength, modelVariant, debug}`.
//!
//! What the client may not decide: the credit cost and the queue (the
//! seed's `metadata.credits` / `metadata.queue` / `metadata.bucket` are
//! dropped; the catalogue decides), and whose project / video / image the
//! job links (each is checked to be the caller's).

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::time::format_rfc3339_ms;
use edgeworks_core::{ApiError, Clock, Method, Response};
use edgeworks_db::Db;
use edgeworks_input::validate::{Field, Schema, Validate};
use edgeworks_runtime::Ctx;
use edgeworks_service::{Json, Route, ServiceDb, Settings, User};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::catalog::{job_type, negative_prompt, JobType};
use crate::errors::{map_media_error, unknown_job_type};
use crate::settings::MediaSettings;

/// POST, signed-in users, 60 burst / one a second (`RATE_LIMIT_QUEUE_JOB` overrides).
pub const ROUTE: Route = Route::new(&[Method::Post]).rate_limit("60/1");

/// The name the seed's `redisConfigured` now carries.
pub const QUEUE_BACKEND: &str = "postgres";

/// The request body (the seed's field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueJobRequest {
    /// One of the ten job types.
    pub job_type: String,
    /// Prompt and options.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// A project of the caller's to file the result in.
    pub project_id: Option<String>,
    /// A video of the caller's (the output of a video job, or a reference).
    pub video_id: Option<String>,
    /// An image of the caller's (the output of an image job, or a reference).
    pub image_id: Option<String>,
}

impl Validate for QueueJobRequest {
    fn schema() -> Schema {
        Schema::object()
            .field("jobType", Field::string().required().non_blank().max_chars(64))
            .field(
                "metadata",
                Field::object(
                    Schema::object()
                        .field("prompt", Field::string().max_chars(4000))
                        .field("negative_prompt", Field::string().max_chars(2000))
                        .field("negativePrompt", Field::string().max_chars(2000))
                        .field("num_images", Field::integer().range(1, 4)),
                ),
            )
            .field("projectId", Field::uuid())
            .field("videoId", Field::uuid())
            .field("imageId", Field::uuid())
    }

    /// The job type is checked here, after the schema, so an unknown one is
    /// the 400 that lists the valid ones.
    fn check(&self) -> Result<(), ApiError> {
        if job_type(&self.job_type).is_none() {
            return Err(unknown_job_type(&self.job_type));
        }
        Ok(())
    }
}

/// Keys of `metadata` a client may not set (the server decides them).
const SERVER_DECIDED: &[&str] = &["credits", "queue", "bucket"];

/// What the SQL call gets: the type, the prompt, the merged negative prompt
/// and the metadata to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The catalogue entry.
    pub job_type: &'static JobType,
    /// The prompt (trimmed; may be empty).
    pub prompt: String,
    /// The type's negative terms merged with the user's.
    pub negative_prompt: String,
    /// The metadata without server-decided keys.
    pub metadata: Map<String, Value>,
}

/// Builds the SQL call's arguments from a validated request.
pub fn prepare(req: &QueueJobRequest) -> Result<Prepared, ApiError> {
    let t = job_type(&req.job_type).ok_or_else(|| unknown_job_type(&req.job_type))?;
    let mut metadata = req.metadata.clone().unwrap_or_default();
    for k in SERVER_DECIDED {
        metadata.remove(*k);
    }
    let text = |k: &str| metadata.get(k).and_then(Value::as_str).map(str::to_string);
    let prompt = text("prompt").unwrap_or_default().trim().to_string();
    let user_negative = text("negative_prompt").or_else(|| text("negativePrompt"));
    Ok(Prepared {
        job_type: t,
        negative_prompt: negative_prompt(t, user_negative.as_deref()),
        prompt,
        metadata,
    })
}

/// The handler.
pub async fn handle(
    user: User,
    settings: Settings<MediaSettings>,
    Json(req): Json<QueueJobRequest>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    let prepared = prepare(&req)?;
    let now = ctx.clock().now_ms();
    let body = queue(&db, &user.id, &req, &prepared, settings.ttl_seconds, now).await?;
    ctx.log().info(
        "media job queued",
        json!({ "job_id": body["job"]["id"], "job_type": prepared.job_type.name, "queue": prepared.job_type.queue() }),
    );
    Ok(Response::json(200, &body))
}

/// One SQL call: checks, reservation, job, asset row. Returns the seed's answer.
pub async fn queue<C: HttpClient>(
    db: &Db<C>,
    user_id: &str,
    req: &QueueJobRequest,
    prepared: &Prepared,
    ttl_seconds: u32,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let args = json!({
        "p_user": user_id,
        "p_job_type": prepared.job_type.name,
        "p_prompt": prepared.prompt,
        "p_negative_prompt": prepared.negative_prompt,
        "p_metadata": Value::Object(prepared.metadata.clone()),
        "p_project": req.project_id,
        "p_video": req.video_id,
        "p_image": req.image_id,
        "p_ttl_seconds": ttl_seconds,
    });
    let out: Value = db.rpc("media_queue_job", &args).await.map_err(map_media_error)?;
    let t = prepared.job_type;
    Ok(json!({
        "success": true,
        "job": out["job"],
        "message": format!("{} job queued on {}", t.name, t.queue()),
        "queueLength": out["queueLength"],
        "modelVariant": t.model_variant,
        "debug": {
            "userId": user_id,
            "hasPrompt": !prepared.prompt.is_empty(),
            "redisConfigured": QUEUE_BACKEND,
            "queueBackend": QUEUE_BACKEND,
            "queue": t.queue(),
            "credits": t.credits,
            "balance": out["balance"],
            "expectedDurationMs": t.expected_duration_ms,
            "timestamp": format_rfc3339_ms(now_ms),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<QueueJobRequest, ApiError> {
        let v: QueueJobRequest = QueueJobRequest::schema().parse(body.as_bytes())?;
        v.check()?;
        Ok(v)
    }

    #[test]
    fn an_unknown_job_type_is_a_400_listing_the_valid_ones() {
        let e = parse(r#"{"jobType":"sdxl_image_ultra"}"#).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "unknown_job_type"));
        assert_eq!(e.details().unwrap()["validJobTypes"][0], "sdxl_image_fast");
    }

    #[test]
    fn bad_fields_are_422s_all_at_once() {
        let e = parse(r#"{"jobType":5,"projectId":"nope","metadata":{"num_images":9}}"#).unwrap_err();
        assert_eq!(e.status(), 422);
        assert_eq!(e.details().unwrap()["fields"].as_array().unwrap().len(), 3);
        assert_eq!(
            parse(r#"{"jobType":"image_fast","metadata":{"prompt":"a\u0000b"}}"#)
                .unwrap_err()
                .status(),
            422
        );
        assert_eq!(parse(r#"{}"#).unwrap_err().status(), 422);
    }

    #[test]
    fn the_client_cannot_set_credits_queue_or_bucket() {
        let req = parse(
            r#"{"jobType":"video_high","metadata":{"prompt":"  waves ","credits":0,"queue":"sdxl_queue","bucket":"avatars","seed":7}}"#,
        )
        .unwrap();
        let p = prepare(&req).unwrap();
        assert_eq!(p.prompt, "waves");
        assert_eq!(p.job_type.queue(), "wan_queue");
        assert!(!p.metadata.contains_key("credits") && !p.metadata.contains_key("queue"));
        assert!(!p.metadata.contains_key("bucket"));
        assert_eq!(p.metadata["seed"], 7);
    }

    #[test]
    fn the_users_negative_prompt_is_merged_with_the_types() {
        let req = parse(r#"{"jobType":"sdxl_image_fast","metadata":{"negative_prompt":"BLURRY, cats"}}"#).unwrap();
        let p = prepare(&req).unwrap();
        assert!(p.negative_prompt.starts_with("blurry, "));
        assert!(p.negative_prompt.ends_with(", cats"));
        assert_eq!(p.negative_prompt.to_lowercase().matches("blurry").count(), 1);
    }
}
