//! The one outbound HTTP abstraction. The runtime implements it with fetch
//! (and an AbortController timeout); native tests implement it over TCP.
//! Provider clients and the database layer are generic over it.

use crate::http::{Request, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No response within the deadline; the request was aborted.
    Timeout { after_ms: u32 },
    /// DNS, connection refused, reset, TLS: the request may not have arrived.
    Network(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout { after_ms } => write!(f, "timed out after {after_ms} ms"),
            TransportError::Network(m) => write!(f, "network error: {m}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Default deadline for an outbound call when the caller names none.
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;

#[allow(async_fn_in_trait)]
pub trait HttpClient {
    /// Sends `req`, giving up (and aborting) after `timeout_ms`.
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError>;
}

impl<T: HttpClient + ?Sized> HttpClient for &T {
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError> {
        (**self).send(req, timeout_ms).await
    }
}
