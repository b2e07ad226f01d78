//! The ten job types of seed 001, each with its queue, model variant,
//! expected duration and credit cost, and the negative prompts built per
//! type. The same table is `private.media_job_types` in migration
//! 20261201001100; the SQL copy is authoritative for credits (it reserves
//! them), this one answers validation errors and drives the worker. Keep
//! them equal: tests/media checks every type's answer against this list.

/// The SDXL queue (2 s polling in the seed).
pub const SDXL_QUEUE: &str = "sdxl_queue";
/// The WAN queue (5 s polling in the seed).
pub const WAN_QUEUE: &str = "wan_queue";

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One or more images.
    Image,
    /// One video.
    Video,
}

/// One job type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobType {
    /// The seed's name, e.g. `sdxl_image_fast`.
    pub name: &'static str,
    /// The model that runs it.
    pub model_variant: &'static str,
    /// The seed's expected duration (the upper end of its range).
    pub expected_duration_ms: u32,
    /// Credits reserved at enqueue, committed on completion.
    pub credits: u32,
    /// Image or video.
    pub output: OutputKind,
    /// A 7B model rewrites the prompt first (`enhancedPrompt` on completion).
    pub enhanced: bool,
    /// `high` or `fast`.
    pub high_quality: bool,
}

impl JobType {
    /// `sdxl_*` → sdxl_queue, everything else → wan_queue.
    pub fn queue(&self) -> &'static str {
        if self.name.starts_with("sdxl_") {
            SDXL_QUEUE
        } else {
            WAN_QUEUE
        }
    }
}

const fn t(
    name: &'static str,
    model_variant: &'static str,
    expected_duration_ms: u32,
    credits: u32,
    output: OutputKind,
    enhanced: bool,
    high_quality: bool,
) -> JobType {
    JobType {
        name,
        model_variant,
        expected_duration_ms,
        credits,
        output,
        enhanced,
        high_quality,
    }
}

const SDXL_FAST: &str = "sdxl-lightning-4step";
const SDXL_HIGH: &str = "sdxl-base-1.0";
const WAN: &str = "wan2.1-t2v-1.3b";
const WAN_7B: &str = "wan2.1-t2v-1.3b+qwen2.5-7b";

/// Every job type, in the seed's order.
pub const JOB_TYPES: [JobType; 10] = [
    t("sdxl_image_fast", SDXL_FAST, 8_000, 1, OutputKind::Image, false, false),
    t("sdxl_image_high", SDXL_HIGH, 15_000, 2, OutputKind::Image, false, true),
    t("image_fast", WAN, 73_000, 3, OutputKind::Image, false, false),
    t("image_high", WAN, 90_000, 4, OutputKind::Image, false, true),
    t("video_fast", WAN, 180_000, 10, OutputKind::Video, false, false),
    t("video_high", WAN, 280_000, 15, OutputKind::Video, false, true),
    t(
        "image7b_fast_enhanced",
        WAN_7B,
        87_000,
        4,
        OutputKind::Image,
        true,
        false,
    ),
    t(
        "image7b_high_enhanced",
        WAN_7B,
        104_000,
        5,
        OutputKind::Image,
        true,
        true,
    ),
    t(
        "video7b_fast_enhanced",
        WAN_7B,
        194_000,
        12,
        OutputKind::Video,
        true,
        false,
    ),
    t(
        "video7b_high_enhanced",
        WAN_7B,
        294_000,
        18,
        OutputKind::Video,
        true,
        true,
    ),
];

/// The job type called `name` (exact, case-sensitive, as the seed's clients send it).
pub fn job_type(name: &str) -> Option<&'static JobType> {
    JOB_TYPES.iter().find(|t| t.name == name)
}

/// Every valid name, for the 400 that lists them.
pub fn job_type_names() -> Vec<&'static str> {
    JOB_TYPES.iter().map(|t| t.name).collect()
}

const BASE_NEGATIVE: &[&str] = &[
    "blurry",
    "low quality",
    "worst quality",
    "jpeg artifacts",
    "watermark",
    "text",
    "signature",
];
const HIGH_NEGATIVE: &[&str] = &["deformed", "bad anatomy", "extra limbs", "disfigured", "oversaturated"];
const SDXL_NEGATIVE: &[&str] = &["cropped", "out of frame"];
const VIDEO_NEGATIVE: &[&str] = &["flickering", "jitter", "static frame", "morphing", "frame tearing"];

/// The negative prompt a type starts from.
pub fn base_negative_terms(t: &JobType) -> Vec<&'static str> {
    let mut terms: Vec<&'static str> = BASE_NEGATIVE.to_vec();
    if t.name.starts_with("sdxl_") {
        terms.extend_from_slice(SDXL_NEGATIVE);
    }
    if t.high_quality {
        terms.extend_from_slice(HIGH_NEGATIVE);
    }
    if t.output == OutputKind::Video {
        terms.extend_from_slice(VIDEO_NEGATIVE);
    }
    terms
}

/// The type's negative prompt merged with the user's: comma-separated terms,
/// the type's first, each kept once (compared case- and space-insensitively,
/// the first spelling wins), empty terms dropped.
pub fn negative_prompt(t: &JobType, user: Option<&str>) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let user_terms = user.unwrap_or("").split([',', '\n']);
    for term in base_negative_terms(t).into_iter().chain(user_terms) {
        let term = term.split_whitespace().collect::<Vec<_>>().join(" ");
        if term.is_empty() {
            continue;
        }
        let key = term.to_lowercase();
        if !seen.contains(&key) {
            seen.push(key);
            out.push(term);
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_exactly_the_seeds_ten_types() {
        assert_eq!(
            job_type_names(),
            vec![
                "sdxl_image_fast",
                "sdxl_image_high",
                "image_fast",
                "image_high",
                "video_fast",
                "video_high",
                "image7b_fast_enhanced",
                "image7b_high_enhanced",
                "video7b_fast_enhanced",
                "video7b_high_enhanced",
            ]
        );
    }

    #[test]
    fn sdxl_types_route_to_the_sdxl_queue_and_the_rest_to_wan() {
        for t in JOB_TYPES {
            let want = if t.name.starts_with("sdxl_") {
                SDXL_QUEUE
            } else {
                WAN_QUEUE
            };
            assert_eq!(t.queue(), want, "{}", t.name);
        }
        assert_eq!(job_type("sdxl_image_high").unwrap().queue(), SDXL_QUEUE);
        assert_eq!(job_type("video7b_high_enhanced").unwrap().queue(), WAN_QUEUE);
    }

    #[test]
    fn names_are_matched_exactly() {
        assert!(job_type("SDXL_IMAGE_FAST").is_none());
        assert!(job_type(" sdxl_image_fast").is_none());
        assert!(job_type("video").is_none());
    }

    #[test]
    fn attributes_follow_the_name() {
        for t in JOB_TYPES {
            assert_eq!(t.enhanced, t.name.contains("7b_"), "{}", t.name);
            assert_eq!(t.high_quality, t.name.contains("_high"), "{}", t.name);
            assert_eq!(t.output == OutputKind::Video, t.name.starts_with("video"), "{}", t.name);
            assert!(t.credits > 0);
        }
    }

    #[test]
    fn negative_prompts_merge_and_deduplicate_case_insensitively() {
        let t = job_type("sdxl_image_high").unwrap();
        let merged = negative_prompt(t, Some("Blurry,  extra   fingers , ,watermark,extra fingers"));
        assert_eq!(merged.matches("blurry").count(), 1);
        assert!(!merged.contains("Blurry"));
        assert!(merged.ends_with("extra fingers"));
        assert_eq!(merged.matches("extra fingers").count(), 1);
        assert!(merged.contains("bad anatomy"));
        assert!(merged.contains("cropped"));
    }

    #[test]
    fn each_kind_gets_its_own_negative_terms() {
        let video = negative_prompt(job_type("video_fast").unwrap(), None);
        assert!(video.contains("flickering") && !video.contains("bad anatomy"));
        let fast = negative_prompt(job_type("image_fast").unwrap(), None);
        assert!(!fast.contains("flickering") && !fast.contains("cropped"));
        assert_eq!(fast, BASE_NEGATIVE.join(", "));
    }
}
