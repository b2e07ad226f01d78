//! Where a worker says it put an output, normalised to an object key in the
//! media bucket. Workers report `filePath` (SDXL: a key, possibly with the
//! bucket in front), `imageUrls[]` (SDXL) or `outputUrl` (WAN): URLs of our
//! own storage, S3-style (`/storage/v1/s3/<bucket>/<key>`) or Storage
//! API-style (`/storage/v1/object/[public|sign|authenticated/]<bucket>/<key>`).
//!
//! Refused with 400 `invalid_output_path`: a host that is not ours, another
//! bucket, a `..` or `.` segment (also percent-encoded), a key without an
//! owner folder. Whether the owner folder is the job owner's is checked by
//! `media_job_callback` in SQL, which knows the owner (also a 400).

use edgeworks_core::ApiError;
use edgeworks_storage::{Endpoint, ObjectKey};
use serde_json::json;

/// The origins (`scheme://authority`) output URLs may point at, and the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlace {
    /// Accepted origins, lower-case, default ports dropped.
    pub origins: Vec<String>,
    /// The media bucket.
    pub bucket: String,
}

fn refuse(field: &str, reason: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_output_path",
        format!("{field} is not a path in this project's {reason}"),
    )
    .with_details(json!({ "field": field, "reason": reason }))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl OutputPlace {
    /// The path of `url` if its origin is one of ours.
    fn path_of<'a>(&self, url: &'a str) -> Option<&'a str> {
        let after_scheme = url.find("://")? + 3;
        let path_at = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
        let endpoint = Endpoint::parse(&url[..path_at]).ok()?;
        let origin = endpoint.origin();
        self.origins.contains(&origin).then_some(&url[path_at..])
    }

    /// The object key a worker's report names (see the module docs).
    pub fn normalise(&self, field: &str, reported: &str) -> Result<ObjectKey, ApiError> {
        let reported = reported.trim();
        let in_bucket = if reported.starts_with("http://") || reported.starts_with("https://") {
            let path = self
                .path_of(reported)
                .ok_or_else(|| refuse(field, "storage (foreign host)"))?;
            let path = path.split(['?', '#']).next().unwrap_or("");
            let rest = path
                .strip_prefix("/storage/v1/s3/")
                .or_else(|| {
                    let object = path.strip_prefix("/storage/v1/object/")?;
                    Some(
                        ["public/", "sign/", "authenticated/"]
                            .iter()
                            .find_map(|p| object.strip_prefix(p))
                            .unwrap_or(object),
                    )
                })
                .ok_or_else(|| refuse(field, "storage (not a storage URL)"))?;
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| refuse(field, "storage (no object key)"))?;
            if bucket != self.bucket {
                return Err(refuse(field, "media bucket"));
            }
            percent_decode(key).ok_or_else(|| refuse(field, "storage (bad percent-encoding)"))?
        } else if reported.contains("://") {
            return Err(refuse(field, "storage (foreign scheme)"));
        } else {
            let key = reported.strip_prefix(&format!("{}/", self.bucket)).unwrap_or(reported);
            percent_decode(key).ok_or_else(|| refuse(field, "storage (bad percent-encoding)"))?
        };
        ObjectKey::parse(&in_bucket).map_err(|r| {
            ApiError::bad_request("invalid_output_path", format!("{field}: {}", r.message()))
                .with_details(json!({ "field": field, "reason": r.code() }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "6f1c3a8e-2b9d-4c4e-9a57-1d2e3f4a5b6c";

    fn place() -> OutputPlace {
        OutputPlace {
            origins: vec!["http://127.0.0.1:54321".into(), "https://abc.supabase.co".into()],
            bucket: "media".into(),
        }
    }

    fn ok(s: &str) -> String {
        place().normalise("filePath", s).unwrap().as_str().to_string()
    }

    fn bad(s: &str) -> ApiError {
        place().normalise("filePath", s).unwrap_err()
    }

    #[test]
    fn keys_and_our_urls_normalise_to_the_same_key() {
        let want = format!("{OWNER}/job/0.png");
        assert_eq!(ok(&want), want);
        assert_eq!(ok(&format!("media/{OWNER}/job/0.png")), want);
        assert_eq!(
            ok(&format!("http://127.0.0.1:54321/storage/v1/s3/media/{OWNER}/job/0.png")),
            want
        );
        assert_eq!(
            ok(&format!(
                "https://ABC.supabase.co:443/storage/v1/object/public/media/{OWNER}/job/0.png?token=x"
            )),
            want
        );
        assert_eq!(
            ok(&format!(
                "https://abc.supabase.co/storage/v1/object/sign/media/{OWNER}/job/0.png"
            )),
            want
        );
        assert_eq!(ok(&format!("{OWNER}/job/a%20b.png")), format!("{OWNER}/job/a b.png"));
    }

    #[test]
    fn foreign_hosts_and_schemes_are_refused() {
        for url in [
            format!("https://evil.example/storage/v1/s3/media/{OWNER}/x.png"),
            format!("http://127.0.0.1:54322/storage/v1/s3/media/{OWNER}/x.png"),
            format!("https://abc.supabase.co@evil.example/storage/v1/s3/media/{OWNER}/x.png"),
            format!("file:///etc/{OWNER}/passwd"),
            format!("ftp://127.0.0.1:54321/{OWNER}/x.png"),
        ] {
            let e = bad(&url);
            assert_eq!((e.status(), e.code()), (400, "invalid_output_path"), "{url}");
        }
    }

    #[test]
    fn traversal_is_refused_plain_or_encoded() {
        for p in [
            format!("{OWNER}/../other/x.png"),
            format!("{OWNER}/%2e%2e/x.png"),
            format!("{OWNER}/./x.png"),
            "../etc/passwd".to_string(),
            format!("/{OWNER}/x.png"),
            format!("http://127.0.0.1:54321/storage/v1/s3/media/{OWNER}/%2E%2E/%2E%2E/x"),
            format!("{OWNER}\\..\\x.png"),
            format!("{OWNER}/x%00.png"),
            format!("{OWNER}/x%zz.png"),
        ] {
            let e = bad(&p);
            assert_eq!((e.status(), e.code()), (400, "invalid_output_path"), "{p}");
        }
    }

    #[test]
    fn other_buckets_and_non_storage_paths_are_refused() {
        assert_eq!(
            bad(&format!("http://127.0.0.1:54321/storage/v1/s3/avatars/{OWNER}/x.png")).code(),
            "invalid_output_path"
        );
        assert_eq!(
            bad(&format!("http://127.0.0.1:54321/rest/v1/images/{OWNER}")).code(),
            "invalid_output_path"
        );
        assert_eq!(bad("x.png").code(), "invalid_output_path");
    }
}
