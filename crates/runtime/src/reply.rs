//! What a handler answers: a buffered [`Response`], a byte stream (SSE and
//! other streamed bodies; the shim hands Deno a `ReadableStream` that pulls
//! from it), or a WebSocket session the shim upgrades the request for.

use std::pin::Pin;

use edgeworks_core::http::Headers;
use edgeworks_core::Response;
use futures_util::Stream;

use crate::socket::SocketSession;

/// A streamed body. Dropping it is how a client's disconnect reaches the
/// producer: whatever it was awaiting (an upstream fetch) is dropped too.
pub type ByteStream = Pin<Box<dyn Stream<Item = Vec<u8>>>>;

/// The body of a [`Reply`].
pub enum Body {
    /// All of it at once.
    Bytes(Vec<u8>),
    /// Chunks as the producer yields them.
    Stream(ByteStream),
    /// A WebSocket session; the status is 101 and the shim upgrades.
    Socket(SocketSession),
}

/// A response as the pipeline sends it.
pub struct Reply {
    /// HTTP status (101 for a WebSocket).
    pub status: u16,
    /// Response headers (CORS, request id and rate-limit headers are added by the pipeline).
    pub headers: Headers,
    /// The body.
    pub body: Body,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply {
            status: r.status,
            headers: r.headers,
            body: Body::Bytes(r.body),
        }
    }
}

impl Reply {
    /// A streamed body with `content_type`.
    pub fn stream(status: u16, content_type: &str, body: ByteStream) -> Reply {
        let mut headers = Headers::new();
        headers.set("content-type", content_type);
        headers.set("cache-control", "no-cache");
        Reply {
            status,
            headers,
            body: Body::Stream(body),
        }
    }

    /// Accepts a WebSocket upgrade and runs `session` on it. `protocol` is
    /// the subprotocol echoed back (it must be one the client offered).
    pub fn websocket(protocol: Option<&str>, session: SocketSession) -> Reply {
        let mut headers = Headers::new();
        if let Some(p) = protocol {
            headers.set("sec-websocket-protocol", p);
        }
        Reply {
            status: 101,
            headers,
            body: Body::Socket(session),
        }
    }
}
