//! What a handler gets besides its request.

use std::rc::Rc;

use edgeworks_core::{Clock, Rng};

use crate::env::Env;
use crate::fetch::FetchClient;
use crate::log::Logger;

/// The host clock (`Date.now()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsClock;

impl Clock for JsClock {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }
}

/// Randomness from the host's CSPRNG (crypto.getRandomValues via getrandom).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        if getrandom::getrandom(buf).is_err() {
            // Without a CSPRNG nothing that needs one may proceed.
            panic!("host randomness unavailable");
        }
    }
}

struct Inner {
    env: Env,
    request_id: String,
    function: String,
    log: Logger,
    started_ms: f64,
}

/// Cheap to clone; handlers pass it to anything that needs effects.
#[derive(Clone)]
pub struct Ctx(Rc<Inner>);

impl Ctx {
    pub(crate) fn new(env: Env, request_id: String, function: String, log: Logger, started_ms: f64) -> Self {
        Ctx(Rc::new(Inner {
            env,
            request_id,
            function,
            log,
            started_ms,
        }))
    }

    pub fn env(&self) -> &Env {
        &self.0.env
    }
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }
    pub fn function(&self) -> &str {
        &self.0.function
    }
    pub fn log(&self) -> &Logger {
        &self.0.log
    }
    pub fn http(&self) -> FetchClient {
        FetchClient
    }
    pub fn clock(&self) -> JsClock {
        JsClock
    }
    pub fn rng(&self) -> OsRng {
        OsRng
    }
    /// Milliseconds since this request arrived.
    pub fn elapsed_ms(&self) -> u64 {
        (js_sys::Date::now() - self.0.started_ms).max(0.0) as u64
    }
}
