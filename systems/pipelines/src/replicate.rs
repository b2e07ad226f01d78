//! Replicate's predictions API for Stable Video Diffusion, as documented:
//! `POST /v1/predictions` `{version, input, webhook, webhook_events_filter}`
//! with `Authorization: Bearer <token>` answers 201 with the prediction
//! (`{id, status, input, output, error, logs, metrics, urls}`);
//! `GET /v1/predictions/{id}`; `POST /v1/predictions/{id}/cancel`. Errors
//! are problem documents `{title, detail, status}`. Statuses: `starting`,
//! `processing`, `succeeded`, `failed`, `canceled`. Output URLs (on
//! replicate.delivery) expire about an hour after the prediction ends, which
//! is why the output is copied into Storage as soon as it is known.
//!
//! The parameters (stability-ai/stable-video-diffusion): the model animates
//! an image (`input_image`); it makes 14 frames (`14_frames_with_svd`) or
//! 25 (`25_frames_with_svd_xt`) at 1024x576, played at
//! `frames_per_second` 5-30; `motion_bucket_id` 1-255; `seed`. A request's
//! duration and fps choose the frame count; width x height must be the
//! model's 1024x576 (or be left out to keep the image's aspect ratio).

use edgeworks_core::{ApiError, Method, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

/// The Stable Video Diffusion version deployments use unless
/// `REPLICATE_SVD_VERSION` names another.
pub const DEFAULT_SVD_VERSION: &str = "3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438";
/// The model, for the record.
pub const SVD_MODEL: &str = "stability-ai/stable-video-diffusion";

/// What a client asks for (already schema-checked for types).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VideoOptions {
    /// Seconds of video.
    pub duration: Option<f64>,
    /// Output width in pixels.
    pub width: Option<i64>,
    /// Output height in pixels.
    pub height: Option<i64>,
    /// Frames per second, 5-30.
    pub fps: Option<i64>,
    /// How much motion, 1-255.
    pub motion: Option<i64>,
    /// Random seed.
    pub seed: Option<i64>,
    /// The image to animate (http or https URL).
    pub image_url: Option<String>,
}

fn field_error(field: &str, code: &str, message: &str) -> ApiError {
    ApiError::unprocessable(
        "request body failed validation",
        json!({ "fields": [{ "field": field, "code": code, "message": message }] }),
    )
}

/// Checks the options against what the model can do and builds its input.
pub fn video_input(o: &VideoOptions) -> Result<Value, ApiError> {
    let image = o
        .image_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            field_error(
                "options.image_url",
                "required",
                "Stable Video Diffusion animates an image: send its URL",
            )
        })?;
    let scheme_ok = image.starts_with("https://") || image.starts_with("http://");
    if !scheme_ok || image.len() > 2048 || image.chars().any(char::is_whitespace) {
        return Err(field_error(
            "options.image_url",
            "invalid_url",
            "must be an http(s) URL of at most 2048 characters",
        ));
    }
    let fps = o.fps.unwrap_or(6);
    if !(5..=30).contains(&fps) {
        return Err(field_error("options.fps", "out_of_range", "fps must be 5-30"));
    }
    let frames = match o.duration {
        None => 25.0,
        Some(d) if d.is_finite() && d > 0.0 && d <= 5.0 => (d * fps as f64).ceil(),
        Some(_) => {
            return Err(field_error(
                "options.duration",
                "out_of_range",
                "duration must be more than 0 and at most 5 seconds",
            ))
        }
    };
    if frames > 25.0 {
        return Err(field_error(
            "options.duration",
            "too_long_for_fps",
            "duration x fps must be at most 25 frames (the model makes 14 or 25 frames)",
        ));
    }
    let video_length = if frames <= 14.0 {
        "14_frames_with_svd"
    } else {
        "25_frames_with_svd_xt"
    };
    let sizing = match (o.width, o.height) {
        (None, None) => "maintain_aspect_ratio",
        (Some(1024), Some(576)) => "crop_to_16_9",
        _ => {
            return Err(field_error(
                "options.width",
                "unsupported_size",
                "the model renders 1024x576: send width 1024 and height 576, or neither",
            ))
        }
    };
    let motion = o.motion.unwrap_or(127);
    if !(1..=255).contains(&motion) {
        return Err(field_error("options.motion", "out_of_range", "motion must be 1-255"));
    }
    let mut input = json!({
        "input_image": image,
        "video_length": video_length,
        "sizing_strategy": sizing,
        "frames_per_second": fps,
        "motion_bucket_id": motion,
        "cond_aug": 0.02,
        "decoding_t": 14,
    });
    if let Some(seed) = o.seed {
        if !(0..=u32::MAX as i64).contains(&seed) {
            return Err(field_error("options.seed", "out_of_range", "seed must be 0-4294967295"));
        }
        input["seed"] = json!(seed);
    }
    Ok(input)
}

fn authed(mut req: Request, token: &str) -> Request {
    req.headers.set("authorization", format!("Bearer {token}"));
    req.headers.set("accept", "application/json");
    req
}

/// `POST /v1/predictions` with a webhook for the completed event.
pub fn create_request(base: &str, token: &str, version: &str, input: &Value, webhook: &str) -> Request {
    let mut req = authed(
        Request::new(Method::Post, format!("{}/v1/predictions", base.trim_end_matches('/'))),
        token,
    );
    req.headers.set("content-type", "application/json");
    req.body = json!({
        "version": version,
        "input": input,
        "webhook": webhook,
        "webhook_events_filter": ["completed"],
    })
    .to_string()
    .into_bytes();
    req
}

/// `GET /v1/predictions/{id}`.
pub fn get_request(base: &str, token: &str, id: &str) -> Request {
    authed(
        Request::new(
            Method::Get,
            format!("{}/v1/predictions/{id}", base.trim_end_matches('/')),
        ),
        token,
    )
}

/// `POST /v1/predictions/{id}/cancel`.
pub fn cancel_request(base: &str, token: &str, id: &str) -> Request {
    authed(
        Request::new(
            Method::Post,
            format!("{}/v1/predictions/{id}/cancel", base.trim_end_matches('/')),
        ),
        token,
    )
}

/// A prediction as Replicate describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Prediction {
    /// Replicate's id.
    pub id: String,
    /// starting | processing | succeeded | failed | canceled.
    pub status: String,
    /// A URL or a list of URLs once succeeded.
    #[serde(default)]
    pub output: Option<Value>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<Value>,
    /// Timings.
    #[serde(default)]
    pub metrics: Option<Value>,
    /// The version it ran.
    #[serde(default)]
    pub version: Option<String>,
}

impl Prediction {
    /// Whether it will not change again.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "canceled")
    }

    /// The video's URL (SVD answers one URL; a list takes its first).
    pub fn output_url(&self) -> Option<String> {
        match self.output.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a.iter().find_map(|v| v.as_str().map(str::to_string)),
            _ => None,
        }
    }

    /// The failure as text.
    pub fn error_text(&self) -> Option<String> {
        match self.error.as_ref()? {
            Value::Null => None,
            Value::String(s) => Some(s.chars().take(2000).collect()),
            other => Some(other.to_string().chars().take(2000).collect()),
        }
    }
}

/// How a Replicate call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateError {
    /// HTTP status (0: no answer).
    pub status: u16,
    /// The problem's `detail` (or `title`).
    pub detail: String,
}

impl ReplicateError {
    /// 429 and 5xx, or no answer.
    pub fn is_retryable(&self) -> bool {
        self.status == 0 || self.status == 429 || self.status >= 500
    }

    /// The client-facing error: a 502 that says what Replicate said.
    pub fn to_api_error(&self) -> ApiError {
        match self.status {
            422 => ApiError::new(422, "replicate_rejected_input", self.detail.clone()),
            429 => ApiError::new(
                503,
                "replicate_rate_limited",
                "Replicate is rate limiting us; try again shortly",
            ),
            401 | 403 => ApiError::upstream("replicate_auth_failed", "the deployment's Replicate token was refused"),
            404 => ApiError::not_found("prediction_not_found", "Replicate does not know this prediction"),
            _ => ApiError::upstream("replicate_unavailable", "Replicate did not answer as expected"),
        }
    }
}

/// Reads a prediction answer.
pub fn parse_prediction(resp: &Response) -> Result<Prediction, ReplicateError> {
    if !(200..300).contains(&resp.status) {
        let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let detail = body
            .get("detail")
            .or_else(|| body.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("no detail")
            .chars()
            .take(500)
            .collect();
        return Err(ReplicateError {
            status: resp.status,
            detail,
        });
    }
    serde_json::from_slice(&resp.body).map_err(|e| ReplicateError {
        status: resp.status,
        detail: format!("unexpected prediction JSON: {e}"),
    })
}

/// Our status for Replicate's (a succeeded prediction is `storing` until
/// its video is in Storage).
pub fn our_status(replicate_status: &str) -> &'static str {
    match replicate_status {
        "starting" => "starting",
        "succeeded" => "storing",
        "failed" => "failed",
        "canceled" => "canceled",
        _ => "processing",
    }
}

/// Whether a download URL is on an allowed host (`REPLICATE_DELIVERY_HOSTS`,
/// comma-separated; `*.example.com` covers subdomains). Only https, unless
/// the host is listed with its port (a local test server).
pub fn delivery_allowed(url: &str, allowed: &[String]) -> bool {
    let (scheme, rest) = match url.split_once("://") {
        Some(x) => x,
        None => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    let host = authority.split(':').next().unwrap_or("").to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        if a.contains(':') {
            // host:port entries name one server exactly (any scheme).
            return authority.eq_ignore_ascii_case(&a);
        }
        scheme == "https"
            && !authority.contains(':')
            && match a.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == a,
            }
    })
}

/// The file extension for a content type (what the object key ends in).
pub fn extension_for(content_type: &str, url: &str) -> &'static str {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "image/gif" => "gif",
        "image/png" => "png",
        _ if url.split('?').next().unwrap_or("").ends_with(".webm") => "webm",
        _ => "mp4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::http::Headers;

    fn opts() -> VideoOptions {
        VideoOptions {
            image_url: Some("https://example.com/cat.png".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_make_25_frames_at_6_fps() {
        let input = video_input(&opts()).unwrap();
        assert_eq!(input["video_length"], "25_frames_with_svd_xt");
        assert_eq!(input["frames_per_second"], 6);
        assert_eq!(input["motion_bucket_id"], 127);
        assert_eq!(input["sizing_strategy"], "maintain_aspect_ratio");
        assert!(input.get("seed").is_none());
    }

    #[test]
    fn duration_and_fps_choose_the_frame_count() {
        let short = VideoOptions {
            duration: Some(2.0),
            fps: Some(7),
            width: Some(1024),
            height: Some(576),
            seed: Some(42),
            ..opts()
        };
        let input = video_input(&short).unwrap();
        assert_eq!(input["video_length"], "14_frames_with_svd");
        assert_eq!(input["sizing_strategy"], "crop_to_16_9");
        assert_eq!(input["seed"], 42);
        let too_long = VideoOptions {
            duration: Some(5.0),
            fps: Some(24),
            ..opts()
        };
        assert_eq!(
            video_input(&too_long).unwrap_err().details().unwrap()["fields"][0]["code"],
            "too_long_for_fps"
        );
    }

    #[test]
    fn each_bad_parameter_names_its_field() {
        let field = |o: VideoOptions| video_input(&o).unwrap_err().details().unwrap()["fields"][0]["field"].clone();
        assert_eq!(field(VideoOptions::default()), "options.image_url");
        assert_eq!(
            field(VideoOptions {
                image_url: Some("file:///etc/passwd".into()),
                ..opts()
            }),
            "options.image_url"
        );
        assert_eq!(
            field(VideoOptions {
                fps: Some(60),
                ..opts()
            }),
            "options.fps"
        );
        assert_eq!(
            field(VideoOptions {
                duration: Some(-1.0),
                ..opts()
            }),
            "options.duration"
        );
        assert_eq!(
            field(VideoOptions {
                width: Some(512),
                height: Some(512),
                ..opts()
            }),
            "options.width"
        );
        assert_eq!(
            field(VideoOptions {
                motion: Some(0),
                ..opts()
            }),
            "options.motion"
        );
        assert_eq!(
            field(VideoOptions {
                seed: Some(-5),
                ..opts()
            }),
            "options.seed"
        );
    }

    #[test]
    fn create_asks_for_the_completed_webhook() {
        let req = create_request(
            "https://api.replicate.com/",
            "r8_tok",
            "v1",
            &json!({"a":1}),
            "https://x/functions/v1/ai-replicate",
        );
        assert_eq!(req.url, "https://api.replicate.com/v1/predictions");
        assert_eq!(req.headers.get("authorization"), Some("Bearer r8_tok"));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["webhook_events_filter"], json!(["completed"]));
        assert_eq!(body["version"], "v1");
    }

    #[test]
    fn predictions_and_problems_parse() {
        let ok = Response {
            status: 201,
            headers: Headers::new(),
            body: br#"{"id":"p1","status":"succeeded","output":"https://replicate.delivery/x/out.mp4","error":null}"#
                .to_vec(),
        };
        let p = parse_prediction(&ok).unwrap();
        assert!(p.is_terminal());
        assert_eq!(p.output_url().as_deref(), Some("https://replicate.delivery/x/out.mp4"));
        assert_eq!(p.error_text(), None);
        let bad = Response {
            status: 422,
            headers: Headers::new(),
            body: br#"{"title":"Input validation failed","detail":"input_image is required","status":422}"#.to_vec(),
        };
        let e = parse_prediction(&bad).unwrap_err();
        assert_eq!(e.detail, "input_image is required");
        assert_eq!(e.to_api_error().status(), 422);
        assert!(!e.is_retryable());
    }

    #[test]
    fn only_allowed_delivery_hosts_are_fetched() {
        let allowed = vec![
            "replicate.delivery".to_string(),
            "*.replicate.delivery".to_string(),
            "127.0.0.1:8080".to_string(),
        ];
        assert!(delivery_allowed("https://replicate.delivery/a.mp4", &allowed));
        assert!(delivery_allowed("https://pbxt.replicate.delivery/a.mp4", &allowed));
        assert!(delivery_allowed("http://127.0.0.1:8080/a.mp4", &allowed));
        assert!(!delivery_allowed("http://replicate.delivery/a.mp4", &allowed));
        assert!(!delivery_allowed("https://evil.com/replicate.delivery", &allowed));
        assert!(!delivery_allowed("https://replicate.delivery.evil.com/a", &allowed));
        assert!(!delivery_allowed("https://user@replicate.delivery/a", &allowed));
        assert!(!delivery_allowed("http://127.0.0.1:9999/a.mp4", &allowed));
        assert!(!delivery_allowed("http://169.254.169.254/latest", &allowed));
    }
}
