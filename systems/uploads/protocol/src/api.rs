//! The wire shapes of upload-handler and progress-tracker that the browser
//! client reads, in the seed's camelCase. The TypeScript declarations in
//! `clients/upload-client/bindings/` are generated from these types
//! (`cargo test -p edgeworks-uploads-protocol` writes them; a test fails when
//! they are stale).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eta::Eta;
use crate::plan::UploadMethod;

/// One presigned request the client makes as given: URL, method and headers
/// (signed: sent unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PartUrl {
    /// 1-based.
    pub part_number: u32,
    /// The presigned URL.
    pub url: String,
    /// Headers to send with exactly these values.
    pub headers: BTreeMap<String, String>,
    /// First byte of the part in the file.
    #[cfg_attr(test, ts(type = "number"))]
    pub offset: u64,
    /// Length of the part.
    #[cfg_attr(test, ts(type = "number"))]
    pub size: u64,
}

/// What `POST upload-handler` answers (and `GET ...&resume=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UploadResult {
    /// The document's id.
    pub document_id: String,
    /// Its status (`uploading`, or `completed` for a duplicate).
    pub status: String,
    /// Single PUT or multipart.
    pub upload_method: UploadMethod,
    /// The caller already has this file (verified hash): nothing to upload.
    pub duplicate: bool,
    /// Bytes per part.
    #[cfg_attr(test, ts(type = "number"))]
    pub part_size: u64,
    /// The requests still to make (every part at first; the missing ones on resume).
    pub parts: Vec<PartUrl>,
    /// Part numbers the storage already holds.
    pub stored_parts: Vec<u32>,
    /// Unix seconds after which the URLs stop working (ask again to resume).
    #[cfg_attr(test, ts(type = "number"))]
    pub expires_at: i64,
}

/// A progress report as subscribers and pollers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UploadProgress {
    /// The document.
    pub document_id: String,
    /// `uploading`, `processing`, `completed`, `failed`.
    pub status: String,
    /// 0..=100 within the current step.
    pub progress: f64,
    /// `upload`, `parse`, `embed`, `completed`.
    pub processing_step: String,
    /// Time left in the current step, when there is a rate to go by.
    pub eta: Option<Eta>,
    /// Set when the document failed.
    pub error_code: Option<String>,
    /// No progress for 30 minutes.
    pub stuck: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ts_rs::TS;

    /// The generated declarations, as files in `bindings/` of the client.
    fn declarations() -> Vec<(String, String)> {
        let cfg = ts_rs::Config::default().with_import_extension(Some("ts"));
        let mut out = vec![];
        macro_rules! decl {
            ($($t:ty),*) => {$(
                out.push((format!("{}.ts", <$t>::name(&cfg)), <$t>::export_to_string(&cfg).unwrap()));
            )*};
        }
        decl!(
            PartUrl,
            UploadResult,
            UploadProgress,
            crate::eta::Eta,
            crate::plan::UploadMethod,
            crate::plan::PartRange,
            crate::plan::UploadPlan,
            crate::digest::FileDigests,
            crate::file_type::DocumentType
        );
        out
    }

    #[test]
    fn the_client_typescript_declarations_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../clients/upload-client/bindings");
        let write = std::env::var_os("EDGEWORKS_WRITE_BINDINGS").is_some();
        let mut stale = vec![];
        for (name, text) in declarations() {
            let path = dir.join(&name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "stale TypeScript bindings {stale:?}: run EDGEWORKS_WRITE_BINDINGS=1 cargo test -p edgeworks-uploads-protocol"
        );
    }

    #[test]
    fn results_use_the_seed_field_names() {
        let r = UploadResult {
            document_id: "d".into(),
            status: "uploading".into(),
            upload_method: UploadMethod::Multipart,
            duplicate: false,
            part_size: 5,
            parts: vec![],
            stored_parts: vec![1],
            expires_at: 1,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["documentId"], "d");
        assert_eq!(v["uploadMethod"], "multipart");
        assert_eq!(v["storedParts"][0], 1);
    }
}
