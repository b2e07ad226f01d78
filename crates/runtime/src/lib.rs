//! edgeworks-runtime: the wasm boundary, and the only crate that touches
//! wasm-bindgen, js-sys or web-sys.
//!
//! It owns the request pipeline ([`serve`]: the shim's `{method, url,
//! headers, body}` in, CORS, method and body limit, the envelope, one log
//! line), the handler's context ([`Ctx`]: environment, logger, and the
//! host's clock, randomness, HTTP, timers and code sandbox behind the [`Host`] trait, so
//! logic runs natively in tests), replies that are buffered, streamed
//! ([`sse`]) or WebSocket sessions ([`socket`]), and the raw export macro.
//! Function crates never see a `JsValue`; they export through
//! `edgeworks_service::export_handler!`, which builds on [`export_raw!`].
//!
//! It must never hold business rules, and nothing outside `js`, `convert`,
//! `fetch`, `serve` and `tz` may use JavaScript types.
#![deny(missing_docs)]

pub mod code;
mod convert;
pub mod ctx;
pub mod env;
mod fetch;
pub mod host;
mod js;
pub mod log;
pub mod reply;
mod serve;
pub mod socket;
pub mod sse;
pub mod tz;

pub use code::{CodeError, CodeReport, CodeRun, Language, Outcome};
pub use ctx::Ctx;
pub use edgeworks_core::{ApiError, Method, Request, Response};
pub use env::Env;
pub use host::{Host, HostClock, HostHttp, HostRng, Level, LocalFuture, StreamedResponse};
pub use js::{caps, JsHost};
#[cfg(feature = "streams")]
pub use js::{SocketHandle, StreamHandle};
pub use log::Logger;
pub use reply::{Body, ByteStream, Reply};
pub use serve::{serve, Options};
pub use socket::{Message, WebSocket};
pub use sse::{sse, Event};

#[doc(hidden)]
pub use wasm_bindgen;
#[doc(hidden)]
pub use wasm_bindgen_futures;

/// Exports `handler` as the wasm function `handle(request, body, env)` the
/// shim calls (`request` is `method\nurl\n` and the headers flat, one string
/// into wasm memory rather than three), with no extractors: `handler` is
/// `async fn(Request, Ctx) -> Result<impl Into<Reply>, ApiError>`.
///
/// The export is synchronous: it returns the reply itself when the pipeline
/// answers without the handler (preflight, 405, 413), else a `Promise` of it.
///
/// `export_raw!(handle);`, `export_raw!(handle, Options { .. });`, or with
/// the host capabilities it links in: `export_raw!(handle, options, caps = caps::NONE)`
/// (default: all of them).
#[macro_export]
macro_rules! export_raw {
    ($handler:expr) => {
        $crate::export_raw!($handler, $crate::Options::default());
    };
    ($handler:expr, $options:expr) => {
        $crate::export_raw!($handler, $options, caps = $crate::caps::ALL);
    };
    ($handler:expr, $options:expr, caps = $caps:expr) => {
        /// The entry point the shim calls: the reply, or a promise of it.
        #[$crate::wasm_bindgen::prelude::wasm_bindgen(wasm_bindgen = $crate::wasm_bindgen)]
        pub fn handle(
            request: &str,
            body: ::std::option::Option<::std::vec::Vec<u8>>,
            env: &$crate::wasm_bindgen::JsValue,
        ) -> $crate::wasm_bindgen::JsValue {
            $crate::serve::<{ $caps }, _, _, _>(request, body, env, $options, $handler)
        }
    };
}
