//! upload-client: the Rust half of the browser upload client
//! (`V2UploadClient` in `js/v2_upload_client.ts`), compiled to wasm with
//! wasm-bindgen for the browser.
//!
//! It owns what must agree with the server byte for byte: the whole-file
//! and per-part SHA-256 ([`FileHasher`]), the part plan and what is left to
//! send on resume, the retry schedule, the type checks a browser can make
//! before uploading, and the ETA smoothing for local progress. All of it is
//! `edgeworks-uploads-protocol`, the same code the functions run.
//!
//! It must never do I/O (the TypeScript half fetches), and it is a browser
//! library: it is the one crate outside crates/runtime allowed to use
//! wasm-bindgen. Structured values cross the boundary as JSON text whose
//! TypeScript types are generated from the Rust types (`bindings/`).

use edgeworks_uploads_protocol::{digest, eta, file_type, plan, retry};
use wasm_bindgen::prelude::*;

/// Hashes a file fed in order (chunks of any size): the whole file's hex
/// SHA-256 and each part's base64 SHA-256.
#[wasm_bindgen]
pub struct FileHasher(Option<digest::FileHasher>);

#[wasm_bindgen]
impl FileHasher {
    /// A hasher cutting parts every `part_size` bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(part_size: f64) -> FileHasher {
        FileHasher(Some(digest::FileHasher::new(part_size.max(0.0) as u64)))
    }

    /// The next bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(h) = self.0.as_mut() {
            h.update(chunk);
        }
    }

    /// `FileDigests` as JSON; the hasher is spent afterwards.
    pub fn finish(&mut self) -> String {
        let digests = self.0.take().map(digest::FileHasher::finish);
        serde_json::to_string(&digests).unwrap_or_else(|_| "null".into())
    }
}

/// `UploadPlan` as JSON for a file of `size` bytes, or an error code
/// (`file_too_large`, `empty_file`) as a thrown string.
#[wasm_bindgen(js_name = planUpload)]
pub fn plan_upload(size: f64) -> Result<String, JsError> {
    if !size.is_finite() || size < 0.0 {
        return Err(JsError::new("empty_file"));
    }
    match plan::plan(size as u64) {
        Ok(p) => serde_json::to_string(&p).map_err(|e| JsError::new(&e.to_string())),
        Err(plan::SizeRejection::TooLarge) => Err(JsError::new("file_too_large")),
        Err(plan::SizeRejection::Empty) => Err(JsError::new("empty_file")),
    }
}

/// The parts of `plan_json` still to send given `stored_json`
/// (`[[partNumber, size], ...]`), as `PartRange[]` JSON.
#[wasm_bindgen(js_name = remainingParts)]
pub fn remaining_parts(plan_json: &str, stored_json: &str) -> Result<String, JsError> {
    let p: plan::UploadPlan = serde_json::from_str(plan_json).map_err(|e| JsError::new(&e.to_string()))?;
    let stored: Vec<(u32, u64)> = serde_json::from_str(stored_json).map_err(|e| JsError::new(&e.to_string()))?;
    serde_json::to_string(&plan::remaining(&p, &stored)).map_err(|e| JsError::new(&e.to_string()))
}

/// Milliseconds before retrying a part whose attempt `attempt` failed.
#[wasm_bindgen(js_name = retryDelayMs)]
pub fn retry_delay_ms(attempt: u32, unit: f64) -> u32 {
    retry::delay_ms(attempt, unit)
}

/// Whether a part answered with `status` (0: no answer) is worth retrying.
#[wasm_bindgen(js_name = isRetryable)]
pub fn is_retryable(status: u16) -> bool {
    retry::is_retryable(status)
}

/// Attempts per part.
#[wasm_bindgen(js_name = maxPartAttempts)]
pub fn max_part_attempts() -> u32 {
    retry::MAX_PART_ATTEMPTS
}

/// `undefined` when the name and type agree on a supported type, else the
/// error code the server would answer.
#[wasm_bindgen(js_name = checkDeclared)]
pub fn check_declared(filename: &str, content_type: &str) -> Option<String> {
    file_type::check_declared(filename, content_type)
        .err()
        .map(|r| r.code().to_string())
}

/// The MIME type a file name's extension names, if supported.
#[wasm_bindgen(js_name = mimeForFilename)]
pub fn mime_for_filename(filename: &str) -> Option<String> {
    file_type::DocumentType::from_filename(filename).map(|t| t.mime().to_string())
}

/// What the first bytes are (`pdf`, `docx`, `txt`), if any of the three.
#[wasm_bindgen]
pub fn sniff(prefix: &[u8]) -> Option<String> {
    file_type::sniff(prefix).map(|t| t.extension().to_string())
}

/// Smoothed local progress: the same estimator progress-tracker uses.
#[wasm_bindgen]
#[derive(Default)]
pub struct EtaTracker(eta::EtaState);

#[wasm_bindgen]
impl EtaTracker {
    /// A tracker with no samples.
    #[wasm_bindgen(constructor)]
    pub fn new() -> EtaTracker {
        EtaTracker::default()
    }

    /// `stage` reached `progress` (0..=100) at `at_ms`.
    pub fn observe(&mut self, stage: &str, progress: f64, at_ms: f64) {
        self.0 = self.0.observe(stage, progress, at_ms as i64);
    }

    /// `Eta` as JSON, or `null` before there is a rate.
    pub fn estimate(&self, stage: &str, progress: f64) -> String {
        serde_json::to_string(&self.0.estimate(stage, progress)).unwrap_or_else(|_| "null".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exports_agree_with_the_protocol() {
        let mut h = FileHasher::new(2.0);
        h.update(b"abc");
        let d: digest::FileDigests = serde_json::from_str(&h.finish()).unwrap();
        assert_eq!(d.part_sha256.len(), 2);
        assert_eq!(h.finish(), "null");
        let p: plan::UploadPlan = serde_json::from_str(&plan_upload(12.0 * 1024.0 * 1024.0).unwrap()).unwrap();
        assert_eq!(p.parts.len(), 3);
        let left: Vec<plan::PartRange> = serde_json::from_str(
            &remaining_parts(&plan_upload(12.0 * 1024.0 * 1024.0).unwrap(), "[[1,5242880]]").unwrap(),
        )
        .unwrap();
        assert_eq!(left.iter().map(|r| r.part_number).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            check_declared("a.exe", "application/pdf").as_deref(),
            Some("unsupported_file_extension")
        );
        assert_eq!(check_declared("a.pdf", "application/pdf"), None);
        assert_eq!(sniff(b"%PDF-1.4").as_deref(), Some("pdf"));
        let mut t = EtaTracker::new();
        t.observe("upload", 0.0, 0.0);
        t.observe("upload", 10.0, 1000.0);
        assert!(t.estimate("upload", 10.0).contains("seconds"));
    }
}
