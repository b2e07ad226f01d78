//! Backends: the local deterministic renderer, and a remote image API
//! speaking OpenAI's Images API (`POST /v1/images/generations`, `b64_json`
//! answers), which many self-hosted Stable Diffusion servers also speak.
//! The remote client goes through the core `HttpClient` trait, so tests run
//! it against a local fake server speaking that wire format.

use base64::Engine;
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::{Method, Request};
use edgeworks_media::catalog::OutputKind;
use edgeworks_media::render::Scene;
use serde_json::{json, Value};

use crate::plan::{Claim, JobPlan, Output};

/// Frames of a local "video" (an animated PNG).
const VIDEO_FRAMES: u32 = 8;

/// The local renderer's outputs for a job: PNGs, or one animated PNG.
pub fn render_local(claim: &Claim, plan: &JobPlan) -> Vec<Output> {
    match plan.kind {
        OutputKind::Image => (0..plan.count)
            .map(|i| Output {
                bytes: Scene::new(&claim.prompt, i).png(plan.side, plan.side),
                content_type: "image/png".into(),
            })
            .collect(),
        OutputKind::Video => vec![Output {
            bytes: Scene::new(&claim.prompt, 0).apng(plan.side, plan.side, VIDEO_FRAMES, 125),
            content_type: "image/apng".into(),
        }],
    }
}

/// Why a remote generation failed (the message goes into the job's error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

/// The Images API request for a job.
pub fn openai_request(base_url: &str, api_key: &str, model: &str, claim: &Claim, plan: &JobPlan) -> Request {
    let mut prompt = claim.prompt.clone();
    if !claim.negative_prompt.is_empty() {
        // The Images API has no negative prompt; say it in words.
        prompt.push_str(&format!("\nAvoid: {}", claim.negative_prompt));
    }
    let mut req = Request::new(Method::Post, format!("{base_url}/v1/images/generations"));
    req.headers.set("authorization", format!("Bearer {api_key}"));
    req.headers.set("content-type", "application/json");
    req.body = json!({
        "model": model,
        "prompt": prompt,
        "n": plan.count,
        "size": format!("{0}x{0}", plan.side),
        "response_format": "b64_json",
    })
    .to_string()
    .into_bytes();
    req
}

/// The outputs of an Images API answer.
pub fn openai_outputs(status: u16, body: &[u8]) -> Result<Vec<Output>, BackendError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| BackendError(format!("image API answered {status} without JSON")))?;
    if status >= 400 {
        let message = v["error"]["message"].as_str().unwrap_or("no message");
        return Err(BackendError(format!(
            "image API refused ({status}): {}",
            message.chars().take(300).collect::<String>()
        )));
    }
    let data = v["data"]
        .as_array()
        .ok_or_else(|| BackendError("image API answer has no data".into()))?;
    let outputs = data
        .iter()
        .map(|d| {
            let b64 = d["b64_json"]
                .as_str()
                .ok_or_else(|| BackendError("image API answer has no b64_json".into()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| BackendError("image API answer is not base64".into()))?;
            Ok(Output {
                bytes,
                content_type: "image/png".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if outputs.is_empty() {
        return Err(BackendError("image API returned no images".into()));
    }
    Ok(outputs)
}

/// Generates a job's images with the remote API.
pub async fn generate_openai<C: HttpClient>(
    http: &C,
    base_url: &str,
    api_key: &str,
    model: &str,
    claim: &Claim,
    plan: &JobPlan,
) -> Result<Vec<Output>, BackendError> {
    if plan.kind == OutputKind::Video {
        return Err(BackendError("the image API backend cannot make videos".into()));
    }
    let req = openai_request(base_url, api_key, model, claim, plan);
    let res = http
        .send(req, 120_000)
        .await
        .map_err(|e| BackendError(format!("image API unreachable: {e}")))?;
    openai_outputs(res.status, &res.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};
    use serde_json::json;

    fn claim(job_type: &str, queue: &str) -> Claim {
        serde_json::from_value(json!({
            "job_id": "j", "lease_token": "l", "queue": queue, "job_type": job_type,
            "user_id": "u", "prompt": "a lighthouse", "negative_prompt": "blurry",
            "metadata": {"num_images": 2},
        }))
        .unwrap()
    }

    #[test]
    fn local_images_are_pngs_one_per_requested_image_and_videos_one_apng() {
        let c = claim("sdxl_image_fast", "sdxl_queue");
        let outs = render_local(&c, &JobPlan::of(&c).unwrap());
        assert_eq!(outs.len(), 2);
        assert!(outs
            .iter()
            .all(|o| o.bytes.starts_with(b"\x89PNG") && o.content_type == "image/png"));
        assert_ne!(outs[0].bytes, outs[1].bytes);
        let v = claim("video_fast", "wan_queue");
        let vid = render_local(&v, &JobPlan::of(&v).unwrap());
        assert_eq!((vid.len(), vid[0].content_type.as_str()), (1, "image/apng"));
    }

    #[test]
    fn the_remote_backend_speaks_the_images_api() {
        let png = edgeworks_media::render::Scene::new("x", 0).png(8, 8);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let answer = json!({"created": 1, "data": [{"b64_json": b64}, {"b64_json": b64}]}).to_string();
        let server = FakeServer::start(move |_, _| json_response(200, &answer));
        let c = claim("sdxl_image_high", "sdxl_queue");
        let plan = JobPlan::of(&c).unwrap();
        let outs = block_on(generate_openai(
            &NativeClient,
            &server.base_url,
            "sk-test",
            "sdxl",
            &c,
            &plan,
        ))
        .unwrap();
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[0].bytes, png);
        let sent = &server.requests()[0];
        assert_eq!(sent.path(), "/v1/images/generations");
        assert_eq!(sent.headers.get("authorization"), Some("Bearer sk-test"));
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!((body["n"].as_u64(), body["size"].as_str()), (Some(2), Some("512x512")));
        assert_eq!(body["response_format"], "b64_json");
        assert!(body["prompt"].as_str().unwrap().contains("Avoid: blurry"));
    }

    #[test]
    fn remote_errors_become_the_jobs_error_without_the_key() {
        let server = FakeServer::start(|_, _| {
            json_response(429, r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#)
        });
        let c = claim("image_fast", "wan_queue");
        let e = block_on(generate_openai(
            &NativeClient,
            &server.base_url,
            "sk-secret",
            "m",
            &c,
            &JobPlan::of(&c).unwrap(),
        ))
        .unwrap_err();
        assert!(e.0.contains("429") && e.0.contains("Rate limit"));
        assert!(!e.0.contains("sk-secret"));
        assert!(openai_outputs(200, br#"{"data":[]}"#).is_err());
        assert!(openai_outputs(200, br#"{"data":[{"b64_json":"***"}]}"#).is_err());
        let v = claim("video_high", "wan_queue");
        assert!(block_on(generate_openai(
            &NativeClient,
            &server.base_url,
            "k",
            "m",
            &v,
            &JobPlan::of(&v).unwrap()
        ))
        .is_err());
    }
}
