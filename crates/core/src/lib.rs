//! edgeworks-core: the pure logic every edge function shares.
//!
//! This crate owns the request/response model, the error envelope, and every
//! decision that can be made without I/O. It must never import wasm-bindgen,
//! js-sys or web-sys, and it never reads the clock, randomness or the network
//! itself: those arrive as arguments (`Clock`, `Rng`, an HTTP trait) so that
//! every test here is deterministic and runs natively.

pub mod cors;
pub mod error;
pub mod http;
pub mod http_client;
pub mod platform;
pub mod prompt;
pub mod redact;
pub mod request_id;

pub use error::ApiError;
pub use http::{Method, Request, Response};
pub use platform::{Clock, Rng};
pub mod backoff;
pub mod circuit;
pub mod ids;
pub mod jwt;
pub mod pagination;
pub mod queue;
pub mod ratelimit;
pub mod sanitize;
pub mod signing;
pub mod storage_policy;
pub mod timeutil;
pub mod validate;
