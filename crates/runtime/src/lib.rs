//! edgeworks-runtime: the wasm boundary, and the only crate that touches
//! wasm-bindgen, js-sys or web-sys.
//!
//! It turns the shim's `{method, url, headers, body}` into a core
//! [`Request`], runs the function's handler with a [`Ctx`] (environment,
//! clock, randomness, the fetch-based HTTP client, the logger), and turns the
//! [`Response`] back into `{status, headers, body}`. Function crates export
//! their handler with [`export_handler!`] and never see a `JsValue`.

mod convert;
pub mod ctx;
pub mod env;
pub mod fetch;
pub mod log;
mod serve;

pub use ctx::{Ctx, JsClock, OsRng};
pub use edgeworks_core::{ApiError, Method, Request, Response};
pub use env::Env;
pub use fetch::{sleep_ms, FetchClient};
pub use log::Logger;
pub use serve::{serve, Options};

#[doc(hidden)]
pub use wasm_bindgen;
#[doc(hidden)]
pub use wasm_bindgen_futures;

/// Exports `handler` as the wasm function `handle(request, env)` the shim calls.
///
/// `export_handler!(handle);` or `export_handler!(handle, Options { .. });`
/// where `handle` is `async fn(Request, Ctx) -> Result<Response, ApiError>`.
#[macro_export]
macro_rules! export_handler {
    ($handler:path) => {
        $crate::export_handler!($handler, $crate::Options::default());
    };
    ($handler:path, $options:expr) => {
        #[$crate::wasm_bindgen::prelude::wasm_bindgen(wasm_bindgen = $crate::wasm_bindgen, wasm_bindgen_futures = $crate::wasm_bindgen_futures)]
        pub async fn handle(
            request: $crate::wasm_bindgen::JsValue,
            env: $crate::wasm_bindgen::JsValue,
        ) -> $crate::wasm_bindgen::JsValue {
            $crate::serve(request, env, $options, $handler).await
        }
    };
}
