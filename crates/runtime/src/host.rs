//! What a function needs from the world, behind one trait: the clock,
//! randomness, log output, outbound HTTP, timers and the code sandbox. The wasm build plugs in
//! the JavaScript host ([`crate::js::JsHost`]); native tests plug in their own
//! (a fixed clock, a seeded RNG, a TCP client, captured logs), so function
//! logic runs the same code in both.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use edgeworks_core::http::Headers;
use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Clock, Request, Response, Rng};
use futures_util::Stream;

use crate::code::{CodeReport, CodeRun};

/// A boxed future that stays on the current thread (wasm is single threaded).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Only with `LOG_LEVEL=debug`.
    Debug,
    /// Normal events.
    Info,
    /// Something degraded but handled.
    Warn,
    /// A request failed on our side.
    Error,
}

impl Level {
    /// The name written in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A response whose body arrives in chunks (an upstream event stream).
/// Dropping it (or its body) aborts the exchange where the host can, so a
/// stopped stream stops the upstream too.
pub struct StreamedResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Headers,
    /// The body's chunks; an `Err` ends it (the connection failed mid-body).
    pub body: Pin<Box<dyn Stream<Item = Result<Vec<u8>, TransportError>>>>,
}

impl StreamedResponse {
    /// A buffered response as a one-chunk stream.
    pub fn buffered(r: Response) -> StreamedResponse {
        let chunks = if r.body.is_empty() {
            Vec::new()
        } else {
            vec![Ok(r.body)]
        };
        StreamedResponse {
            status: r.status,
            headers: r.headers,
            body: Box::pin(futures_util::stream::iter(chunks)),
        }
    }
}

/// The effects a request may use. Implementations must not panic on
/// network failures: those are `TransportError`s.
pub trait Host {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Fills `buf` from a CSPRNG.
    fn fill_random(&self, buf: &mut [u8]);
    /// Writes one already redacted log line.
    fn write_log(&self, level: Level, line: &str);
    /// One HTTP exchange with a deadline covering headers and body. Dropping
    /// the future abandons (and, where the host can, aborts) the exchange.
    fn send(&self, req: Request, timeout_ms: u32) -> LocalFuture<'static, Result<Response, TransportError>>;
    /// Resolves after `ms` milliseconds.
    fn sleep(&self, ms: u32) -> LocalFuture<'static, ()>;
    /// Like [`Host::send`], but resolves once the headers are in and hands
    /// the body over as it arrives; `timeout_ms` covers the headers only.
    /// Hosts without streaming deliver the buffered body as one chunk.
    fn send_streaming(
        &self,
        req: Request,
        timeout_ms: u32,
    ) -> LocalFuture<'static, Result<StreamedResponse, TransportError>> {
        let exchange = self.send(req, timeout_ms);
        Box::pin(async move { exchange.await.map(StreamedResponse::buffered) })
    }
    /// Runs `work` after the response is sent, keeping the isolate alive
    /// until it ends (`EdgeRuntime.waitUntil`), bounded by the platform's
    /// wall clock. A host that cannot gives the work back to run inline.
    fn spawn(&self, work: LocalFuture<'static, ()>) -> Result<(), LocalFuture<'static, ()>> {
        Err(work)
    }
    /// Opens an outbound WebSocket (a Realtime subscription) and resolves
    /// once it is open. Dropping the socket closes it. Hosts without
    /// outbound sockets refuse.
    fn connect_websocket(
        &self,
        url: &str,
        protocols: &[String],
    ) -> LocalFuture<'static, Result<crate::socket::WebSocket, TransportError>> {
        let _ = (url, protocols);
        Box::pin(async { Err(TransportError::Network("this host has no outbound WebSockets".into())) })
    }
    /// Runs untrusted code once in the host's sandbox (see [`crate::code`]).
    /// `None`: this host has no sandbox (a function whose shim did not install
    /// one, or a native host); `Some(Err)`: the sandbox failed to run it.
    fn run_code(&self, run: CodeRun) -> LocalFuture<'static, Option<Result<CodeReport, String>>> {
        let _ = run;
        Box::pin(async { None })
    }
}

/// The host's HTTP client as an [`HttpClient`], for `Db` and provider clients.
#[derive(Clone)]
pub struct HostHttp(pub Rc<dyn Host>);

impl HttpClient for HostHttp {
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError> {
        self.0.send(req, timeout_ms).await
    }
}

/// The host's clock as a [`Clock`].
#[derive(Clone)]
pub struct HostClock(pub Rc<dyn Host>);

impl Clock for HostClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// The host's randomness as an [`Rng`].
#[derive(Clone)]
pub struct HostRng(pub Rc<dyn Host>);

impl Rng for HostRng {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_random(buf)
    }
}
