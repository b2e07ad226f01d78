//! generate-admin-image (POST, admins only): renders a real PNG from the
//! prompt (the deterministic renderer), stores it through Storage and records
//! it like any image, so the whole path runs without a GPU.
//!
//! Not the seed's unauthenticated bypass: the service role, or a user whose
//! `app_metadata.role` is `"admin"` (app_metadata is writable only on the
//! server side); anyone else is 403. An admin user's image lives under their
//! own prefix; the service role's under `admin/`.

use edgeworks_auth::jwt::Principal;
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::time::format_rfc3339_ms;
use edgeworks_core::{ApiError, Clock, Method, Request, Response};
use edgeworks_input::validate::Field;
use edgeworks_runtime::Ctx;
use edgeworks_service::{Access, Caller, Json, Route, ServiceDb, Settings};
use edgeworks_storage::{ObjectKey, PutUrlOptions, S3Client, SigningTime};
use serde_json::{json, Map, Value};

use crate::errors::map_media_error;
use crate::render::Scene;
use crate::settings::MediaSettings;

/// POST, admin users or the service role, 10 burst / one every 5 s.
pub const ROUTE: Route = Route::new(&[Method::Post])
    .access(Access::UserOrService)
    .rate_limit("10/0.2");

edgeworks_input::input! {
    /// The seed's body.
    pub struct AdminImageRequest {
        /// What to draw.
        pub prompt: String = Field::string().required().non_blank().max_chars(4000),
        /// `fast` (256 px) or `high` (512 px).
        pub mode: Option<String> = Field::string().one_of(&["fast", "high"]),
        /// Stored with the image.
        pub metadata: Option<Map<String, Value>> = Field::any(),
    } check = metadata_is_object
}

fn metadata_is_object(r: &AdminImageRequest) -> Result<(), ApiError> {
    let size = r
        .metadata
        .as_ref()
        .map_or(0, |m| Value::Object(m.clone()).to_string().len());
    if size > 16 * 1024 {
        return Err(ApiError::unprocessable(
            "request failed validation",
            json!({ "fields": [{ "field": "metadata", "code": "too_large", "message": "at most 16 KiB" }] }),
        ));
    }
    Ok(())
}

/// Who may call: the service role, or `app_metadata.role == "admin"`.
/// Returns the owner (`None` for the service role).
pub fn admin_owner(principal: &Principal) -> Result<Option<String>, ApiError> {
    if principal.is_service_role {
        return Ok(None);
    }
    let admin = principal.app_metadata.get("role").and_then(Value::as_str) == Some("admin");
    match principal.user_id.as_deref() {
        Some(id) if admin && principal.is_authenticated() => Ok(Some(id.to_string())),
        _ => Err(ApiError::forbidden(
            "admin_required",
            "generate-admin-image is for admins (app_metadata.role = \"admin\") and the service role",
        )),
    }
}

/// The side in pixels for a mode.
pub fn side(mode: &str) -> u32 {
    if mode == "high" {
        512
    } else {
        256
    }
}

/// The handler.
pub async fn handle(
    caller: Caller,
    settings: Settings<MediaSettings>,
    Json(req): Json<AdminImageRequest>,
    db: ServiceDb,
    ctx: Ctx,
) -> Result<Response, ApiError> {
    let owner = admin_owner(&caller.principal)?;
    let mode = req.mode.clone().unwrap_or_else(|| "fast".to_string());
    let now = ctx.clock().now_ms();
    let id = edgeworks_core::ids::uuid_v4(&mut ctx.rng());
    let key = ObjectKey::for_user(owner.as_deref().unwrap_or("admin"), &format!("admin/{id}.png"))?;
    let png = Scene::new(&req.prompt, 0).png(side(&mode), side(&mode));
    let s3 = S3Client::new(settings.storage()?.clone(), ctx.http());
    let at = SigningTime::from_unix_ms(now).ok_or_else(ApiError::internal)?;
    store(&s3, &settings.bucket, &key, png, at, &ctx.http()).await?;

    let metadata = req.metadata.clone().unwrap_or_default();
    let image: Value = db
        .rpc(
            "media_record_admin_image",
            &json!({
                "p_user": owner, "p_prompt": req.prompt, "p_mode": mode,
                "p_path": key.as_str(), "p_metadata": Value::Object(metadata.clone()),
            }),
        )
        .await
        .map_err(map_media_error)?;
    let url = s3
        .presign_get(&settings.bucket, &key, 3600, at)
        .map_err(|e| e.to_api_error())?
        .url;
    ctx.log().info(
        "admin image stored",
        json!({ "image_id": image["id"], "path": key.as_str() }),
    );
    Ok(Response::json(
        200,
        &json!({
            "success": true,
            "image": {
                "id": image["id"],
                "url": url,
                // One rendition: the thumbnail is the image itself.
                "thumbnail_url": url,
                "path": key.as_str(),
                "bucket": settings.bucket,
                "prompt": req.prompt,
                "mode": mode,
                "timestamp": format_rfc3339_ms(now),
                "metadata": metadata,
            },
        }),
    ))
}

/// Uploads `png` with a presigned PUT (the same path a worker's upload takes).
pub async fn store<C: HttpClient>(
    s3: &S3Client<C>,
    bucket: &str,
    key: &ObjectKey,
    png: Vec<u8>,
    at: SigningTime,
    http: &C,
) -> Result<(), ApiError> {
    let options = PutUrlOptions {
        content_type: Some("image/png".into()),
        content_length: Some(png.len() as u64),
        ..Default::default()
    };
    let signed = s3
        .presign_put(bucket, key, &options, 300, at)
        .map_err(|e| e.to_api_error())?;
    let mut put = Request::new(Method::Put, signed.url);
    for (k, v) in &signed.headers {
        put.headers.set(k, v.clone());
    }
    put.body = png;
    let res = http
        .send(put, 15_000)
        .await
        .map_err(|_| ApiError::unavailable("storage_unavailable", "storage did not answer"))?;
    if res.status >= 300 {
        return Err(ApiError::upstream(
            "storage_refused",
            format!("storage refused the image ({})", res.status),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: &str, app_metadata: Value) -> Principal {
        Principal {
            user_id: (role == "authenticated").then(|| "6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6c".to_string()),
            role: role.into(),
            email: None,
            app_metadata,
            is_service_role: role == "service_role",
        }
    }

    #[test]
    fn only_admins_and_the_service_role_may_call() {
        assert_eq!(admin_owner(&caller("service_role", Value::Null)).unwrap(), None);
        assert_eq!(
            admin_owner(&caller("authenticated", json!({"role": "admin"})))
                .unwrap()
                .as_deref(),
            Some("6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6c")
        );
        for (role, meta) in [
            ("authenticated", json!({})),
            ("authenticated", json!({"role": "Admin"})),
            ("authenticated", json!({"roles": ["admin"]})),
            ("anon", json!({"role": "admin"})),
        ] {
            let e = admin_owner(&caller(role, meta)).unwrap_err();
            assert_eq!((e.status(), e.code()), (403, "admin_required"));
        }
    }

    #[test]
    fn modes_pick_the_size() {
        assert_eq!((side("fast"), side("high"), side("other")), (256, 512, 256));
    }
}
