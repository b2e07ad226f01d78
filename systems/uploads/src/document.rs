//! A document as the SQL API returns it, the view clients get, and the one
//! mapping of the upload SQL functions' errors to client errors.

use edgeworks_core::ApiError;
use edgeworks_db::DbError;
use edgeworks_storage::ObjectKey;
use edgeworks_uploads_protocol::api::UploadProgress;
use edgeworks_uploads_protocol::eta::EtaState;
use edgeworks_uploads_protocol::file_type::DocumentType;
use serde::Deserialize;
use serde_json::{json, Value};

/// No progress for this long: stuck (the `stuck_documents` view says the same).
pub const STUCK_AFTER_MS: i64 = 30 * 60 * 1000;

/// `private.upload_document_json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DocumentView {
    /// Id.
    pub id: String,
    /// Original file name.
    pub filename: String,
    /// Declared MIME type.
    pub content_type: String,
    /// Sniffed MIME type, once verified.
    pub sniffed_content_type: Option<String>,
    /// Declared size.
    pub file_size: u64,
    /// Claimed (until verified) SHA-256.
    pub sha256: String,
    /// Whether the storage's bytes were hashed and matched.
    pub sha256_verified: bool,
    /// Bucket.
    pub storage_bucket: String,
    /// Object key.
    pub storage_key: String,
    /// `uploading`, `processing`, `completed`, `failed`.
    pub status: String,
    /// 0..=100 within the current step.
    pub progress: f64,
    /// `upload`, `parse`, `embed`, `completed`.
    pub processing_step: String,
    /// Failure code.
    pub error_code: Option<String>,
    /// Failure message.
    pub error_message: Option<String>,
    /// Retries so far.
    pub retry_count: i64,
    /// LlamaParse's job id, once parsed there.
    pub llama_parse_job_id: Option<String>,
    /// The caller's earlier document with the same bytes.
    pub duplicate_of: Option<String>,
    /// Smoothed rates.
    #[serde(default)]
    pub eta_state: Value,
    /// Last progress, RFC 3339.
    pub last_progress_at: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Completed, RFC 3339.
    pub completed_at: Option<String>,
}

/// A multipart session.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionView {
    /// The S3 upload id.
    pub upload_id: String,
    /// Bytes per part.
    pub part_size: u64,
    /// Parts planned.
    pub part_count: u32,
}

/// A part row.
#[derive(Debug, Clone, Deserialize)]
pub struct PartView {
    /// 1-based.
    pub part_number: u32,
    /// Base64 SHA-256 declared.
    pub sha256: String,
    /// Planned size.
    pub expected_size: u64,
    /// Size stored, once listed.
    pub size: Option<u64>,
    /// ETag stored, once known.
    #[serde(default)]
    pub etag: Option<String>,
}

/// `upload_document`.
#[derive(Debug, Clone, Deserialize)]
pub struct Loaded {
    /// The document.
    pub document: DocumentView,
    /// Its multipart session.
    pub session: Option<SessionView>,
    /// Its parts.
    #[serde(default)]
    pub parts: Vec<PartView>,
}

/// A part with its place in the file.
#[derive(Debug, Clone)]
pub struct PartRow {
    /// 1-based.
    pub part_number: u32,
    /// First byte.
    pub offset: u64,
    /// Planned size.
    pub expected_size: u64,
    /// Base64 SHA-256.
    pub sha256: String,
    /// Stored size.
    pub size: Option<u64>,
}

impl DocumentView {
    /// The storage key, validated.
    pub fn key(&self) -> Result<ObjectKey, ApiError> {
        ObjectKey::parse(&self.storage_key).map_err(|_| ApiError::internal())
    }

    /// The bucket it was uploaded to.
    pub fn bucket(&self) -> String {
        self.storage_bucket.clone()
    }

    /// The declared type.
    pub fn doc_type(&self) -> Result<DocumentType, ApiError> {
        DocumentType::from_mime(&self.content_type).ok_or_else(ApiError::internal)
    }

    /// The stored smoothing state (empty if unreadable).
    pub fn eta_state(&self) -> EtaState {
        serde_json::from_value(self.eta_state.clone()).unwrap_or_default()
    }

    /// Milliseconds since the last progress, from RFC 3339.
    pub fn idle_ms(&self, now_ms: i64) -> Option<i64> {
        let at = edgeworks_core::time::parse_rfc3339_ms(&self.last_progress_at).ok()?;
        Some(now_ms - at)
    }

    /// The progress report for this document.
    pub fn progress_report(&self, now_ms: i64) -> UploadProgress {
        let stage = if self.status == "uploading" {
            "upload"
        } else {
            self.processing_step.as_str()
        };
        let unfinished = matches!(self.status.as_str(), "uploading" | "processing");
        UploadProgress {
            document_id: self.id.clone(),
            status: self.status.clone(),
            progress: self.progress,
            processing_step: stage.to_string(),
            eta: if unfinished {
                self.eta_state().estimate(stage, self.progress)
            } else {
                None
            },
            error_code: self.error_code.clone(),
            stuck: unfinished && self.idle_ms(now_ms).is_some_and(|ms| ms > STUCK_AFTER_MS),
        }
    }

    /// What clients get: the document in the seed's camelCase, with progress and ETA.
    pub fn public_view(&self, now_ms: i64) -> Value {
        json!({
            "documentId": self.id,
            "filename": self.filename,
            "contentType": self.content_type,
            "sniffedContentType": self.sniffed_content_type,
            "fileSize": self.file_size,
            "sha256": self.sha256,
            "sha256Verified": self.sha256_verified,
            "status": self.status,
            "progress": self.progress,
            "processingStep": self.processing_step,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "retryCount": self.retry_count,
            "llamaParseJobId": self.llama_parse_job_id,
            "duplicateOf": self.duplicate_of,
            "createdAt": self.created_at,
            "completedAt": self.completed_at,
            "lastProgressAt": self.last_progress_at,
            "report": self.progress_report(now_ms),
        })
    }
}

impl Loaded {
    /// The parts with their offsets (parts are planned at the session's part size).
    pub fn part_rows(&self) -> Vec<PartRow> {
        let part_size = self.session.as_ref().map(|s| s.part_size).unwrap_or(0);
        if self.parts.is_empty() {
            // A single PUT: its one "part" is the whole file, hashed as the document.
            return match crate::hex_to_base64(&self.document.sha256) {
                Ok(sum) => vec![PartRow {
                    part_number: 1,
                    offset: 0,
                    expected_size: self.document.file_size,
                    sha256: sum,
                    size: None,
                }],
                Err(_) => vec![],
            };
        }
        self.parts
            .iter()
            .map(|p| PartRow {
                part_number: p.part_number,
                offset: u64::from(p.part_number.saturating_sub(1)) * part_size,
                expected_size: p.expected_size,
                sha256: p.sha256.clone(),
                size: p.size,
            })
            .collect()
    }

    /// The document's public view plus its session's stored parts.
    pub fn public_view(&self, now_ms: i64) -> Value {
        let mut v = self.document.public_view(now_ms);
        if let Some(s) = &self.session {
            v["uploadMethod"] = json!("multipart");
            v["partCount"] = json!(s.part_count);
            v["storedParts"] = json!(self
                .parts
                .iter()
                .filter(|p| p.size.is_some())
                .map(|p| p.part_number)
                .collect::<Vec<_>>());
        } else {
            v["uploadMethod"] = json!("single");
        }
        v
    }
}

/// The upload SQL functions' errors as client errors.
pub fn map_upload_error(e: DbError) -> ApiError {
    match e.code() {
        Some("EU401") => ApiError::unauthorized("user_not_found", "the token's user does not exist; sign in again"),
        Some("EU404") => ApiError::not_found("document_not_found", "no such document"),
        Some("EU409") => ApiError::conflict(e.message(), "the document is not in a state that allows this")
            .with_details(
                json!({ "current": match &e { DbError::Api { details, .. } => details.clone(), _ => None } }),
            ),
        Some("22023") => ApiError::new(422, "invalid_argument", e.message().to_string()),
        // A concurrent init of the same key: refused, not duplicated.
        Some("23505") => ApiError::conflict("document_exists", "this document already exists"),
        _ => ApiError::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_errors_map_to_client_errors_that_reveal_no_other_user() {
        let api = |code: &str, message: &str| DbError::Api {
            status: 400,
            code: Some(code.into()),
            message: message.into(),
            details: Some("parse".into()),
            hint: None,
        };
        let nf = map_upload_error(api("EU404", "document_not_found"));
        assert_eq!((nf.status(), nf.code()), (404, "document_not_found"));
        let c = map_upload_error(api("EU409", "step_not_current"));
        assert_eq!((c.status(), c.code()), (409, "step_not_current"));
        assert_eq!(c.details().unwrap()["current"], "parse");
        assert_eq!(map_upload_error(api("22023", "bad")).status(), 422);
    }
}
