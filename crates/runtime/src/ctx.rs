//! What a handler gets besides its request: the environment, the request's
//! id and function name, the logger, and the host's effects (clock,
//! randomness, HTTP, timers). Nothing here touches JavaScript, so a test
//! builds a `Ctx` over a native [`Host`] and runs a handler natively.

use std::rc::Rc;

use crate::env::Env;
use crate::host::{Host, HostClock, HostHttp, HostRng};
use crate::log::Logger;

struct Inner {
    host: Rc<dyn Host>,
    env: Env,
    request_id: Rc<str>,
    function: Rc<str>,
    log: Logger,
    started_ms: i64,
}

/// Cheap to clone; handlers pass it to anything that needs effects.
#[derive(Clone)]
pub struct Ctx(Rc<Inner>);

impl Ctx {
    /// A context for one request. `LOG_LEVEL=debug` in `env` turns on debug lines.
    pub fn new(host: Rc<dyn Host>, env: Env, request_id: &str, function: &str) -> Self {
        Ctx::with_ids(host, env, request_id.into(), function.into())
    }

    /// [`Ctx::new`] with the ids already shared (the logger holds the same ones).
    pub(crate) fn with_ids(host: Rc<dyn Host>, env: Env, request_id: Rc<str>, function: Rc<str>) -> Self {
        let log = Logger::with_ids(
            host.clone(),
            function.clone(),
            request_id.clone(),
            env.redactor(),
            env.get("LOG_LEVEL") == Some("debug"),
        );
        let started_ms = host.now_ms();
        Ctx(Rc::new(Inner {
            host,
            env,
            request_id,
            function,
            log,
            started_ms,
        }))
    }

    /// The function's environment.
    pub fn env(&self) -> &Env {
        &self.0.env
    }
    /// This request's id (echoed in `x-request-id` and every log line).
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }
    /// The function's name (`EDGEWORKS_FUNCTION`).
    pub fn function(&self) -> &str {
        &self.0.function
    }
    /// The request's logger.
    pub fn log(&self) -> &Logger {
        &self.0.log
    }
    /// The one HTTP client.
    pub fn http(&self) -> HostHttp {
        HostHttp(self.0.host.clone())
    }
    /// The host clock.
    pub fn clock(&self) -> HostClock {
        HostClock(self.0.host.clone())
    }
    /// The host's CSPRNG.
    pub fn rng(&self) -> HostRng {
        HostRng(self.0.host.clone())
    }
    /// The host itself (for helpers that need several effects).
    pub fn host(&self) -> Rc<dyn Host> {
        self.0.host.clone()
    }
    /// Resolves after `ms` milliseconds.
    pub async fn sleep(&self, ms: u32) {
        self.0.host.sleep(ms).await
    }
    /// Milliseconds since this request arrived.
    pub fn elapsed_ms(&self) -> u64 {
        (self.0.host.now_ms() - self.0.started_ms).max(0) as u64
    }
}
