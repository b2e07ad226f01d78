//! What a claimed job produces and what the worker reports, decided from
//! the claim alone.

use edgeworks_media::catalog::{job_type, OutputKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A claimed job, as `media_claim_jobs` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Claim {
    /// The job.
    pub job_id: String,
    /// The claim's lease (never logged).
    pub lease_token: String,
    /// Its queue.
    pub queue: String,
    /// One of the ten types.
    pub job_type: String,
    /// The owner.
    pub user_id: String,
    /// The prompt.
    #[serde(default)]
    pub prompt: String,
    /// Merged negative prompt.
    #[serde(default)]
    pub negative_prompt: String,
    /// The client's options.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// One file to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// MIME type (what the upload URL pins).
    pub content_type: String,
}

/// What the job needs done.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Image or video.
    pub kind: OutputKind,
    /// Files to produce (images: `metadata.num_images`, 1..4; video: 1).
    pub count: u32,
    /// Pixels on a side.
    pub side: u32,
    /// A 7B job: report an enhanced prompt.
    pub enhanced: bool,
    /// SDXL workers report `imageUrls`, WAN workers `outputUrl`.
    pub sdxl: bool,
    /// Local backend only: spend this long "generating" (progress reports in between).
    pub render_ms: u64,
    /// Local backend only: fail the job with this message.
    pub fail_with: Option<String>,
}

impl JobPlan {
    /// The plan for a claim; `None` for a job type this worker does not know.
    pub fn of(claim: &Claim) -> Option<JobPlan> {
        let t = job_type(&claim.job_type)?;
        let m = &claim.metadata;
        let int = |k: &str| m.get(k).and_then(Value::as_u64);
        let count = match t.output {
            OutputKind::Video => 1,
            OutputKind::Image => int("num_images").unwrap_or(1).clamp(1, 4) as u32,
        };
        let default_side = match (t.output, t.high_quality) {
            (OutputKind::Video, _) => 128,
            (_, true) => 512,
            (_, false) => 256,
        };
        Some(JobPlan {
            kind: t.output,
            count,
            side: int("size").map_or(default_side, |s| s.clamp(16, 1024) as u32),
            enhanced: t.enhanced,
            sdxl: claim.queue == "sdxl_queue",
            render_ms: int("local_render_ms").unwrap_or(0).min(120_000),
            fail_with: m
                .get("local_fail")
                .and_then(Value::as_str)
                .map(|s| s.chars().take(500).collect()),
        })
    }
}

/// The local stand-in for the 7B model's rewrite: deterministic, and visibly
/// an enhancement of the user's words.
pub fn enhance(prompt: &str) -> String {
    let base = if prompt.trim().is_empty() {
        "an abstract composition"
    } else {
        prompt.trim()
    };
    format!("{base}, highly detailed, cinematic lighting, sharp focus, rich colour")
}

/// The body of a `completed` report for outputs stored at `paths`.
pub fn completed_report(claim: &Claim, plan: &JobPlan, paths: &[String], enhanced: Option<&str>) -> Value {
    let mut body = json!({
        "jobId": claim.job_id,
        "leaseToken": claim.lease_token,
        "status": "completed",
    });
    if plan.sdxl {
        if paths.len() == 1 {
            body["filePath"] = json!(paths[0]);
        } else {
            body["imageUrls"] = json!(paths);
        }
    } else if let Some(first) = paths.first() {
        body["outputUrl"] = json!(first);
        if paths.len() > 1 {
            // A multi-image WAN job: the extra images travel as imageUrls.
            body["imageUrls"] = json!(paths);
        }
    }
    if let (true, Some(e)) = (plan.enhanced, enhanced) {
        body["enhancedPrompt"] = json!(e);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(job_type: &str, queue: &str, metadata: Value) -> Claim {
        serde_json::from_value(json!({
            "job_id": "j", "lease_token": "l", "queue": queue, "job_type": job_type,
            "user_id": "u", "prompt": "a fox", "metadata": metadata,
        }))
        .unwrap()
    }

    #[test]
    fn plans_follow_the_job_type_and_options() {
        let p = JobPlan::of(&claim("sdxl_image_high", "sdxl_queue", json!({"num_images": 9}))).unwrap();
        assert_eq!(
            (p.kind, p.count, p.side, p.sdxl, p.enhanced),
            (OutputKind::Image, 4, 512, true, false)
        );
        let v = JobPlan::of(&claim("video7b_fast_enhanced", "wan_queue", json!({"num_images": 3}))).unwrap();
        assert_eq!(
            (v.kind, v.count, v.side, v.sdxl, v.enhanced),
            (OutputKind::Video, 1, 128, false, true)
        );
        assert!(JobPlan::of(&claim("chat_completion", "wan_queue", json!({}))).is_none());
        let slow = JobPlan::of(&claim("image_fast", "wan_queue", json!({"local_render_ms": 999999}))).unwrap();
        assert_eq!(slow.render_ms, 120_000);
    }

    #[test]
    fn sdxl_reports_file_paths_and_wan_reports_an_output_url() {
        let c = claim("sdxl_image_fast", "sdxl_queue", json!({}));
        let p = JobPlan::of(&c).unwrap();
        let one = completed_report(&c, &p, &["u/j/0.png".into()], None);
        assert_eq!(one["filePath"], "u/j/0.png");
        let two = completed_report(&c, &p, &["a".into(), "b".into()], None);
        assert_eq!(two["imageUrls"], json!(["a", "b"]));
        let w = claim("image7b_fast_enhanced", "wan_queue", json!({}));
        let wp = JobPlan::of(&w).unwrap();
        let r = completed_report(&w, &wp, &["u/j/0.png".into()], Some(&enhance("a fox")));
        assert_eq!(r["outputUrl"], "u/j/0.png");
        assert!(r["enhancedPrompt"].as_str().unwrap().starts_with("a fox, "));
        assert_eq!(r["leaseToken"], "l");
    }
}
