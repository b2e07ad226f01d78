//! The runtime's `Host` for native tests: a clock the test sets (and that
//! `sleep` advances instead of waiting), a counter for randomness, the TCP
//! client for HTTP, and the log lines kept for assertions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Request, Response};
use edgeworks_runtime::{Ctx, Env, Host, Level, LocalFuture};

use crate::NativeClient;

/// A deterministic host. Cheap to share: tests keep an `Rc` to inspect it.
#[derive(Default)]
pub struct NativeHost {
    now_ms: Cell<i64>,
    counter: Cell<u8>,
    logs: RefCell<Vec<String>>,
}

impl NativeHost {
    /// A host whose clock reads `now_ms`.
    pub fn at(now_ms: i64) -> Rc<NativeHost> {
        let host = NativeHost::default();
        host.now_ms.set(now_ms);
        Rc::new(host)
    }

    /// A request context over this host with `env`.
    pub fn ctx(self: &Rc<Self>, env: &[(&str, &str)], function: &str) -> Ctx {
        Ctx::new(
            self.clone(),
            Env::from_pairs(env.iter().copied()),
            "test-request",
            function,
        )
    }

    /// Moves the clock.
    pub fn advance(&self, ms: i64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    /// Every log line written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.borrow().clone()
    }
}

impl Host for NativeHost {
    fn now_ms(&self) -> i64 {
        self.now_ms.get()
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for b in buf {
            self.counter.set(self.counter.get().wrapping_add(1));
            *b = self.counter.get();
        }
    }

    fn write_log(&self, _level: Level, line: &str) {
        self.logs.borrow_mut().push(line.to_string());
    }

    fn send(&self, req: Request, timeout_ms: u32) -> LocalFuture<'static, Result<Response, TransportError>> {
        Box::pin(async move { NativeClient.send(req, timeout_ms).await })
    }

    fn sleep(&self, ms: u32) -> LocalFuture<'static, ()> {
        // No real waiting: time passes on the test's clock.
        self.advance(i64::from(ms));
        Box::pin(async {})
    }
}
