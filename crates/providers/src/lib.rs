//! edgeworks-providers: clients for outside APIs (AI providers, S3 storage).
//!
//! Request building and response parsing are pure and tested natively
//! against each provider's real wire format; the transport is whatever
//! implements `edgeworks_core::http_client::HttpClient` (the runtime's fetch
//! client in production, a local fake server in tests).

pub mod chat;
pub mod gemini;
pub mod offline;
pub mod s3;
