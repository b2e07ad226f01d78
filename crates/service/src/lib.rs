//! edgeworks-service: what every function does before its own logic, as
//! extractors a handler declares (axum-style), and the one export macro.
//!
//! It owns the caller ([`Caller`]: the JWT verified, from the header or, on
//! a WebSocket upgrade, the subprotocol list or query), the shared rate
//! limit (one SQL call), PostgREST handles as the caller or the service
//! role, the extractors ([`User`], [`ServiceRole`], [`Json`], [`Query`],
//! [`JsonOrQuery`], [`Settings`], [`LastEventId`], [`WebSocketUpgrade`], ...),
//! the [`Route`] a function declares once, and [`export_handler!`].
//!
//! Decisions live in the platform crates (auth, input); this crate only
//! wires them to the runtime's context. It must never hold a product
//! system's rules, and never touch js-sys.
#![deny(missing_docs)]

pub mod caller;
pub mod extract;
pub mod limit;
pub mod route;

pub use caller::{authenticate, service_db, Caller};
pub use extract::{
    env_number, FromEnv, FromRequest, IntoReply, Json, JsonOrQuery, LastEventId, Parts, Query, ServiceDb, ServiceRole,
    Settings, User, UserDb, WebSocketUpgrade,
};
pub use limit::{rate_limit, RateArgs, RateTicket};
pub use route::{run, Access, Gate, Handler, Route, Verify};

#[doc(hidden)]
pub use edgeworks_runtime as runtime;

/// What a function crate imports.
pub mod prelude {
    pub use crate::export_handler;
    pub use crate::{
        Access, Caller, FromEnv, Json, JsonOrQuery, LastEventId, Query, RateTicket, Route, ServiceDb, ServiceRole,
        Settings, User, UserDb, WebSocketUpgrade,
    };
    pub use edgeworks_core::{ApiError, Method, Response};
    pub use edgeworks_runtime::{caps, Ctx, Reply};
}

/// Exports `handler` (an `async fn` whose arguments are extractors) under
/// `route` as the wasm entry point the shim calls:
///
/// ```ignore
/// const ROUTE: Route = Route::new(&[Method::Post]).rate_limit("30/0.5");
/// export_handler!(edgeworks_chat_queue::submit::handle, ROUTE);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:path, $route:expr) => {
        $crate::runtime::export_raw!(
            |req, ctx| $crate::run::<{ !$crate::Route::is_public(&$route) }, _, _>($route, $handler, req, ctx),
            $route.options(),
            caps = $route.caps
        );
    };
}
