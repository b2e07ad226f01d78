//! Deployment settings of the media functions, from the environment:
//!
//! - `MEDIA_WORKER_SECRET`: the Standard Webhooks secret (`whsec_<base64>`)
//!   workers sign job-callback with. Unset: only the service-role JWT is
//!   accepted on callbacks.
//! - `MEDIA_BUCKET` (default `media`): where outputs live, under `<user id>/`.
//! - `MEDIA_QUEUE_TTL_SECONDS` (default 3600): a job not started by then
//!   expires and is refunded.
//! - `MEDIA_UPLOAD_URL_SECONDS` (default 900): life of a worker's upload URL.
//! - `MEDIA_OUTPUT_ORIGINS`: comma-separated origins output URLs may also
//!   point at (a CDN in front of storage); `SUPABASE_URL`'s and the S3
//!   endpoint's are always accepted.
//! - The S3 settings of `edgeworks-storage` (`S3_ENDPOINT`, `S3_REGION`, ...).

use edgeworks_core::ApiError;
use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;
use edgeworks_storage::{Endpoint, S3Config};

use crate::paths::OutputPlace;

/// The parsed settings. Not `Debug`: it holds the worker secret.
pub struct MediaSettings {
    /// The media bucket.
    pub bucket: String,
    /// Queue TTL in seconds.
    pub ttl_seconds: u32,
    /// Upload URL lifetime in seconds.
    pub upload_url_secs: u32,
    /// The HMAC key of `MEDIA_WORKER_SECRET`.
    pub worker_key: Option<Vec<u8>>,
    /// Where outputs may be.
    pub place: OutputPlace,
    /// Storage, when configured.
    pub s3: Option<S3Config>,
}

fn misconfigured(name: &str, why: &str) -> ApiError {
    ApiError::new(500, "misconfigured", format!("{name} {why}"))
}

fn number(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ApiError> {
    match lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| misconfigured(name, &format!("must be a whole number from {min} to {max}"))),
    }
}

impl MediaSettings {
    /// From any variable lookup (tests pass a closure).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<MediaSettings, ApiError> {
        let lookup = &lookup as &dyn Fn(&str) -> Option<String>;
        let bucket = lookup("MEDIA_BUCKET")
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "media".to_string());
        edgeworks_storage::check_bucket_name(&bucket)
            .map_err(|_| misconfigured("MEDIA_BUCKET", "is not a valid bucket name"))?;
        let worker_key = match lookup("MEDIA_WORKER_SECRET").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => Some(
                edgeworks_auth::standard_webhooks::secret_key(&s)
                    .ok_or_else(|| misconfigured("MEDIA_WORKER_SECRET", "is not whsec_<base64> or a raw secret"))?,
            ),
        };
        let s3 = S3Config::from_lookup(lookup).ok();
        let mut origins = Vec::new();
        let mut add = |url: &str| {
            if let Ok(e) = Endpoint::parse(url) {
                let o = e.origin();
                if !origins.contains(&o) {
                    origins.push(o);
                }
            }
        };
        if let Some(url) = lookup("SUPABASE_URL") {
            add(&url);
        }
        if let Some(s3) = &s3 {
            add(&s3.endpoint.origin());
        }
        for o in lookup("MEDIA_OUTPUT_ORIGINS").unwrap_or_default().split(',') {
            if !o.trim().is_empty() {
                add(o.trim());
            }
        }
        Ok(MediaSettings {
            place: OutputPlace {
                origins,
                bucket: bucket.clone(),
            },
            bucket,
            ttl_seconds: number(lookup, "MEDIA_QUEUE_TTL_SECONDS", 3600, 1, 604_800)?,
            upload_url_secs: number(lookup, "MEDIA_UPLOAD_URL_SECONDS", 900, 60, 86_400)?,
            worker_key,
            s3,
        })
    }

    /// Storage, or a 500 saying it is not configured (never which key).
    pub fn storage(&self) -> Result<&S3Config, ApiError> {
        self.s3.as_ref().ok_or_else(|| {
            ApiError::new(
                500,
                "storage_not_configured",
                "storage is not configured for this function",
            )
        })
    }
}

impl FromEnv for MediaSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        MediaSettings::from_lookup(env.lookup())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<MediaSettings, ApiError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        MediaSettings::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let s = from(&[]).unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.ttl_seconds, s.upload_url_secs),
            ("media", 3600, 900)
        );
        assert!(s.worker_key.is_none() && s.s3.is_none());
    }

    #[test]
    fn origins_come_from_the_project_url_the_s3_endpoint_and_the_extra_list() {
        let s = from(&[
            ("SUPABASE_URL", "http://127.0.0.1:54321"),
            ("S3_ENDPOINT", "http://127.0.0.1:54321/storage/v1/s3"),
            ("S3_REGION", "local"),
            ("S3_ACCESS_KEY_ID", "AK"),
            ("S3_SECRET_ACCESS_KEY", "SK"),
            ("MEDIA_OUTPUT_ORIGINS", "https://cdn.example, "),
        ])
        .unwrap();
        assert_eq!(s.place.origins, vec!["http://127.0.0.1:54321", "https://cdn.example"]);
        assert!(s.s3.is_some());
    }

    #[test]
    fn bad_values_are_misconfiguration_that_never_echoes_the_secret() {
        let e = from(&[("MEDIA_WORKER_SECRET", "whsec_***not-base64***")])
            .err()
            .unwrap();
        assert_eq!(e.code(), "misconfigured");
        assert!(!e.message().contains("not-base64"));
        assert_eq!(
            from(&[("MEDIA_QUEUE_TTL_SECONDS", "0")]).err().unwrap().code(),
            "misconfigured"
        );
        assert_eq!(
            from(&[("MEDIA_BUCKET", "Bad Bucket")]).err().unwrap().code(),
            "misconfigured"
        );
    }
}
