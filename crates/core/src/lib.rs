//! edgeworks-core: the kernel every other crate builds on.
//!
//! It owns the HTTP model ([`Request`], [`Response`], headers, the
//! [`http_client::HttpClient`] trait), the one error type and its envelope
//! ([`ApiError`]), CORS, ids, time as text, and log redaction. Everything
//! else has a crate of its own (auth, input, queue, llm, storage).
//!
//! It must never import wasm-bindgen, js-sys or web-sys, never do I/O, and
//! never read the clock, randomness or the network itself: those arrive as
//! arguments ([`Clock`], [`Rng`], an HTTP trait) so that every test here is
//! deterministic and runs natively.

pub mod cors;
pub mod error;
pub mod http;
pub mod http_client;
pub mod ids;
pub mod platform;
pub mod redact;
pub mod request_id;
pub mod time;

pub use error::ApiError;
pub use http::{Method, Request, Response};
pub use platform::{Clock, Rng};
