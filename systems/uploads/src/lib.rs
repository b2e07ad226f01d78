//! edgeworks-uploads: the upload pipeline of seed 004 (upload-handler,
//! progress-tracker, processing-webhook, and its job kinds in queue-worker).
//!
//! It owns the handlers and routes of its functions, the completion checks
//! against storage ([`verify`]), the mapping of the upload SQL functions'
//! errors, webhook authentication per source, and the `upload_parse` /
//! `upload_embed` job kinds it registers with the queue's worker. The rules
//! the browser client shares (types, sniffing, part plan, digests, ETA,
//! flags) live in `edgeworks-uploads-protocol`.
//!
//! It never lets file bytes pass through a function body (presigned URLs
//! only), never trusts a client's hash before the storage's bytes matched
//! it, never answers differently for another user's document than for a
//! missing one, and never touches js-sys.
#![deny(missing_docs)]

pub mod document;
pub mod jobs;
pub mod llamaparse;
pub mod settings;
pub mod store;
pub mod tracker;
pub mod upload;
pub mod verify;
pub mod webhook;

pub use jobs::{UploadEmbed, UploadJobs, UploadParse};
pub use settings::UploadSettings;

use base64::Engine;
use edgeworks_core::{ApiError, Method};
use edgeworks_input::validate::Validate;
use edgeworks_runtime::Env;
use edgeworks_service::{FromEnv, FromRequest, Parts};
use serde_json::Value;

/// The queue upload jobs travel on.
pub const QUEUE: &str = "uploads";

impl FromEnv for UploadSettings {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        UploadSettings::from_lookup(env.lookup())
    }
}

/// The request as a handler serving several methods needs it.
pub struct Incoming {
    /// The method.
    pub method: Method,
    /// The raw body.
    pub body: Vec<u8>,
    /// The query pairs.
    pub query: Vec<(String, String)>,
    /// Headers a webhook is authenticated by (lower-case names).
    pub headers: edgeworks_core::http::Headers,
}

impl FromRequest for Incoming {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(Incoming {
            method: parts.req.method,
            body: parts.req.body.clone(),
            query: parts.req.query(),
            headers: parts.req.headers.clone(),
        })
    }
}

impl Incoming {
    /// The query (GET, DELETE) or the JSON body, validated against `T`'s schema.
    pub fn value<T: Validate>(&self) -> Result<T, ApiError> {
        // The query on GET and DELETE (and whenever there is no body), the body otherwise.
        let from_query = matches!(self.method, Method::Get | Method::Delete) && !self.query.is_empty();
        let value = if from_query || self.body.iter().all(u8::is_ascii_whitespace) {
            T::schema().object_from_query(self.query.clone())
        } else {
            edgeworks_core::http::parse_json::<Value>(&self.body)?
        };
        let v: T = T::schema().parse_value(value)?;
        v.check()?;
        Ok(v)
    }
}

/// Base64 of a hex SHA-256 (the `x-amz-checksum-sha256` form).
pub fn hex_to_base64(hex_sum: &str) -> Result<String, ApiError> {
    let bytes = hex::decode(hex_sum).map_err(|_| ApiError::internal())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}
