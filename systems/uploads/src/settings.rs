//! The upload pipeline's deployment settings, from the environment.

use std::collections::BTreeMap;

use edgeworks_auth::standard_webhooks::secret_key;
use edgeworks_core::ApiError;

/// Where a processing webhook comes from; each source has its own secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// LlamaParse: finishes the parse step.
    LlamaParse,
    /// Storage events: finishes the storage step.
    Storage,
    /// The embedding service: finishes the embed step.
    Embedding,
    /// Our own services (and signed progress reports).
    Internal,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [Source::LlamaParse, Source::Storage, Source::Embedding, Source::Internal];

    /// As it appears in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::LlamaParse => "llamaparse",
            Source::Storage => "storage",
            Source::Embedding => "embedding",
            Source::Internal => "internal",
        }
    }

    /// Parses a request's `source`.
    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The variable holding its secret (`whsec_...`).
    pub fn secret_var(self) -> String {
        format!("UPLOAD_WEBHOOK_SECRET_{}", self.as_str().to_ascii_uppercase())
    }
}

/// Settings of upload-handler, progress-tracker, processing-webhook and the jobs.
#[derive(Clone)]
pub struct UploadSettings {
    /// The bucket documents go to (`UPLOADS_BUCKET`, default `documents`).
    pub bucket: String,
    /// Lifetime of presigned URLs (`UPLOAD_URL_EXPIRES_SECS`, default 3600).
    pub url_expires_secs: u32,
    /// Least time between two progress broadcasts of a document
    /// (`UPLOAD_BROADCAST_MIN_MS`, default 250: at most four a second).
    pub broadcast_min_ms: u32,
    /// Bytes per ranged read when hashing a stored object (`UPLOAD_VERIFY_CHUNK_BYTES`, 8 MiB).
    pub verify_chunk_bytes: u64,
    /// Signature tolerance, seconds (5 minutes).
    pub webhook_tolerance_secs: i64,
    keys: BTreeMap<Source, Vec<u8>>,
}

impl std::fmt::Debug for UploadSettings {
    // The keys are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSettings")
            .field("bucket", &self.bucket)
            .field("url_expires_secs", &self.url_expires_secs)
            .field("broadcast_min_ms", &self.broadcast_min_ms)
            .field(
                "sources_with_secrets",
                &self.keys.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            bucket: "documents".into(),
            url_expires_secs: 3600,
            broadcast_min_ms: 250,
            verify_chunk_bytes: 8 * 1024 * 1024,
            webhook_tolerance_secs: edgeworks_auth::webhooks::DEFAULT_TOLERANCE_SECS,
            keys: BTreeMap::new(),
        }
    }
}

fn misconfigured(var: &str, why: &str) -> ApiError {
    ApiError::new(500, "misconfigured", format!("{var} {why}"))
}

impl UploadSettings {
    /// Reads the settings; a malformed value is a 500 naming the variable (never its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<UploadSettings, ApiError> {
        let mut s = UploadSettings::default();
        if let Some(b) = lookup("UPLOADS_BUCKET").filter(|b| !b.trim().is_empty()) {
            edgeworks_storage::check_bucket_name(b.trim())
                .map_err(|_| misconfigured("UPLOADS_BUCKET", "is not a bucket name"))?;
            s.bucket = b.trim().to_string();
        }
        let num = |var: &str, min: u64, max: u64, default: u64| -> Result<u64, ApiError> {
            match lookup(var) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| misconfigured(var, &format!("must be a whole number from {min} to {max}"))),
            }
        };
        s.url_expires_secs = num("UPLOAD_URL_EXPIRES_SECS", 60, 604_800, 3600)? as u32;
        s.broadcast_min_ms = num("UPLOAD_BROADCAST_MIN_MS", 0, 60_000, 250)? as u32;
        s.verify_chunk_bytes = num("UPLOAD_VERIFY_CHUNK_BYTES", 65_536, 64 * 1024 * 1024, 8 * 1024 * 1024)?;
        for source in Source::ALL {
            let var = source.secret_var();
            if let Some(v) = lookup(&var).filter(|v| !v.trim().is_empty()) {
                let key = secret_key(&v).ok_or_else(|| misconfigured(&var, "is not a whsec_<base64> secret"))?;
                s.keys.insert(source, key);
            }
        }
        Ok(s)
    }

    /// The signing key of `source`, if configured.
    pub fn key(&self, source: Source) -> Option<&[u8]> {
        self.keys.get(&source).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_secrets_are_read_per_source() {
        let env = |k: &str| match k {
            "UPLOAD_WEBHOOK_SECRET_LLAMAPARSE" => Some("whsec_AAEC".to_string()),
            "UPLOAD_WEBHOOK_SECRET_INTERNAL" => Some("plain-secret".to_string()),
            _ => None,
        };
        let s = UploadSettings::from_lookup(env).unwrap();
        assert_eq!(s.bucket, "documents");
        assert_eq!(s.key(Source::LlamaParse), Some(&[0u8, 1, 2][..]));
        assert_eq!(s.key(Source::Internal), Some(&b"plain-secret"[..]));
        assert_eq!(s.key(Source::Storage), None);
        let shown = format!("{s:?}");
        assert!(!shown.contains("plain-secret") && shown.contains("llamaparse"));
    }

    #[test]
    fn bad_values_name_the_variable_not_the_value() {
        let env = |k: &str| (k == "UPLOAD_WEBHOOK_SECRET_STORAGE").then(|| "whsec_%%%secret%%%".to_string());
        let e = UploadSettings::from_lookup(env).unwrap_err();
        assert_eq!(e.code(), "misconfigured");
        assert!(e.message().contains("UPLOAD_WEBHOOK_SECRET_STORAGE") && !e.message().contains("%%%"));
        let env = |k: &str| (k == "UPLOAD_URL_EXPIRES_SECS").then(|| "9".to_string());
        assert!(UploadSettings::from_lookup(env).is_err());
    }
}
