//! What a function needs from the world, behind one trait: the clock,
//! randomness, log output, outbound HTTP and timers. The wasm build plugs in
//! the JavaScript host ([`crate::js::JsHost`]); native tests plug in their own
//! (a fixed clock, a seeded RNG, a TCP client, captured logs), so function
//! logic runs the same code in both.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Clock, Request, Response, Rng};

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
