//! A route is declared once: methods, who may call, body limit, rate limit.
//! The pipeline then runs, in this order: authenticate (unless public),
//! refuse callers the route does not admit, take a rate-limit token, resolve
//! the handler's other extractors (body validation among them), call the
//! handler, and put the rate-limit headers on its reply.
//!
//! Authentication comes before validation on purpose: an anonymous caller
//! of a non-public route gets 401 and learns nothing about the body schema;
//! a signed-in caller with a bad body gets the detailed 422. The codes stay
//! distinct (401 `missing_token`/`token_*`, 403 for the wrong kind of
//! caller, 422 `validation_failed`).

use std::future::Future;

use edgeworks_auth::ratelimit::{env_var_name, Limit};
use edgeworks_core::{ApiError, Method, Request};
use edgeworks_runtime::{Ctx, Options, Reply};

use crate::caller::{authenticate, presented_token, Caller};
use crate::extract::{FromRequest, IntoReply, Parts};
use crate::limit::rate_limit;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no token is read (rate limits key on the client address).
    Public,
    /// A signed-in user.
    User,
    /// The service role (workers, schedulers).
    Service,
    /// A signed-in user or the service role.
    UserOrService,
    /// Anyone; a token, when presented, must be valid and becomes the
    /// caller (`Option<Caller>`), so signed-in callers get their own limit.
    Optional,
}

impl Access {
    fn admit(self, caller: &Caller) -> Result<(), ApiError> {
        match self {
            Access::Public | Access::Optional => Ok(()),
            Access::User => caller.user_id().map(|_| ()),
            Access::Service => caller.require_service_role(),
            Access::UserOrService if caller.principal.is_service_role => Ok(()),
            Access::UserOrService => caller.user_id().map(|_| ()),
        }
    }
}

/// A function's route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Methods accepted (OPTIONS is always answered for CORS).
    pub methods: &'static [Method],
    /// Who may call.
    pub access: Access,
    /// `"<capacity>/<refill per second>"`, e.g. `"30/0.5"`;
    /// `RATE_LIMIT_<FUNCTION>` overrides it. `None`: not limited.
    pub rate_limit: Option<&'static str>,
    /// Body limit in bytes; `MAX_BODY_BYTES` overrides it.
    pub max_body_bytes: usize,
    /// Host capabilities beyond the basics (`edgeworks_runtime::caps`):
    /// only what is declared is linked into the function's wasm.
    pub caps: u8,
}

impl Route {
    /// A route for signed-in users, 1 MiB bodies, no rate limit.
    pub const fn new(methods: &'static [Method]) -> Route {
        Route {
            methods,
            access: Access::User,
            rate_limit: None,
            max_body_bytes: 1024 * 1024,
            caps: edgeworks_runtime::caps::NONE,
        }
    }

    /// The host capabilities the handler uses, e.g.
    /// `caps::STREAMING_FETCH | caps::BACKGROUND`.
    pub const fn capabilities(mut self, caps: u8) -> Route {
        self.caps = caps;
        self
    }

    /// Who may call.
    pub const fn access(mut self, access: Access) -> Route {
        self.access = access;
        self
    }

    /// The default rate limit, `"<capacity>/<refill per second>"`.
    pub const fn rate_limit(mut self, spec: &'static str) -> Route {
        self.rate_limit = Some(spec);
        self
    }

    /// The body limit in bytes.
    pub const fn max_body_bytes(mut self, bytes: usize) -> Route {
        self.max_body_bytes = bytes;
        self
    }

    /// Whether the route reads no token (a const, so a public function's
    /// wasm does not carry JWT verification).
    pub const fn is_public(&self) -> bool {
        matches!(self.access, Access::Public)
    }

    /// What the runtime's pipeline needs of it.
    pub fn options(&self) -> Options {
        Options {
            methods: self.methods,
            max_body_bytes: self.max_body_bytes,
        }
    }

    /// The limit for `function`: the env override, else the declared default.
    pub fn limit(&self, function: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Limit>, ApiError> {
        let Some(spec) = self.rate_limit else {
            return Ok(None);
        };
        let misconfigured =
            |e: edgeworks_auth::ratelimit::LimitConfigError| ApiError::new(500, "misconfigured", e.to_string());
        let default = Limit::parse(spec, &env_var_name(function)).map_err(misconfigured)?;
        Limit::for_function(function, lookup, default)
            .map(Some)
            .map_err(misconfigured)
    }
}

/// A function whose arguments are extractors.
pub trait Handler<Args> {
    /// Resolves the arguments from `parts` in order, then calls the function.
    fn call(self, parts: Parts) -> impl Future<Output = Result<Reply, ApiError>>;
}

macro_rules! handler_for_arity {
    ($($arg:ident),*) => {
        impl<F, Fut, R, $($arg),*> Handler<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: Future<Output = Result<R, ApiError>>,
            R: IntoReply,
            $($arg: FromRequest,)*
        {
            #[allow(non_snake_case, unused_variables)]
            async fn call(self, parts: Parts) -> Result<Reply, ApiError> {
                $(let $arg = $arg::from_request(&parts).await?;)*
                Ok(self($($arg),*).await?.into_reply())
            }
        }
    };
}

handler_for_arity!();
handler_for_arity!(A);
handler_for_arity!(A, B);
handler_for_arity!(A, B, C);
handler_for_arity!(A, B, C, D);
handler_for_arity!(A, B, C, D, E);
handler_for_arity!(A, B, C, D, E, G);
handler_for_arity!(A, B, C, D, E, G, H);

/// Who the caller is, decided at compile time: a public route's wasm then
/// carries no JWT verification at all. (A runtime `if` would not do: the
/// await inside it leaves a state in the pipeline's future, and its code is
/// linked whether or not the branch is ever taken.)
pub trait Gate {
    /// The verified caller, or `None` on a public route.
    fn caller(ctx: &Ctx, req: &Request, access: Access) -> impl Future<Output = Result<Option<Caller>, ApiError>>;
}

/// `Verify<true>` authenticates, `Verify<false>` (public routes) does not.
pub struct Verify<const AUTHENTICATE: bool>;

impl Gate for Verify<true> {
    async fn caller(ctx: &Ctx, req: &Request, access: Access) -> Result<Option<Caller>, ApiError> {
        if access == Access::Optional && presented_token(req).is_none() {
            return Ok(None);
        }
        let caller = authenticate(ctx, req).await?;
        access.admit(&caller)?;
        Ok(Some(caller))
    }
}

impl Gate for Verify<false> {
    async fn caller(_: &Ctx, _: &Request, _: Access) -> Result<Option<Caller>, ApiError> {
        Ok(None)
    }
}

/// The pipeline after the runtime's (which did CORS, method and body limit).
/// `AUTHENTICATE` is `!route.is_public()`, fixed by `export_handler!`.
pub async fn run<const AUTHENTICATE: bool, H, Args>(
    route: Route,
    handler: H,
    req: Request,
    ctx: Ctx,
) -> Result<Reply, ApiError>
where
    H: Handler<Args>,
    Verify<AUTHENTICATE>: Gate,
{
    let caller = <Verify<AUTHENTICATE> as Gate>::caller(&ctx, &req, route.access).await?;
    let limit = route.limit(ctx.function(), ctx.env().lookup())?;
    let decision = match limit {
        Some(limit) => rate_limit(&ctx, &req, caller.as_ref(), ctx.function(), limit, 1).await?,
        None => None,
    };
    let mut reply = handler.call(Parts::new(req, ctx, caller)).await?;
    if let Some(d) = decision {
        d.apply(&mut reply.headers);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_limit_applies_unless_the_environment_overrides_it() {
        let route = Route::new(&[Method::Post]).rate_limit("30/0.5");
        let none = |_: &str| None;
        let declared = route.limit("chat-submit", none).unwrap().unwrap();
        assert_eq!((declared.capacity, declared.refill_per_sec), (30, 0.5));
        let env = |k: &str| (k == "RATE_LIMIT_CHAT_SUBMIT").then(|| "5/1".to_string());
        assert_eq!(route.limit("chat-submit", env).unwrap().unwrap().capacity, 5);
        let bad = |k: &str| (k == "RATE_LIMIT_CHAT_SUBMIT").then(|| "lots".to_string());
        assert_eq!(route.limit("chat-submit", bad).unwrap_err().code(), "misconfigured");
    }

    #[test]
    fn a_malformed_declared_limit_is_a_configuration_error() {
        let route = Route::new(&[Method::Post]).rate_limit("fast");
        assert_eq!(route.limit("f", |_| None).unwrap_err().status(), 500);
    }

    use crate::extract::Json;
    use edgeworks_input::validate::Field;
    use edgeworks_testkit::{block_on, NativeHost};
    use serde_json::{json, Value};

    edgeworks_input::input! {
        struct Count {
            n: Option<i64> = Field::integer(),
        }
    }

    async fn count(Json(c): Json<Count>) -> Result<Json<Value>, ApiError> {
        Ok(Json(json!({ "n": c.n })))
    }

    fn call<const AUTHENTICATE: bool>(route: Route, body: &str) -> Result<Reply, ApiError>
    where
        Verify<AUTHENTICATE>: Gate,
    {
        let host = NativeHost::at(1_767_225_600_000);
        let secret = "a-test-secret-of-at-least-32-bytes!!";
        let ctx = host.ctx(
            &[("SUPABASE_URL", "http://127.0.0.1:9"), ("SUPABASE_JWT_SECRET", secret)],
            "f",
        );
        let mut req = Request::new(Method::Post, "http://h/functions/v1/f");
        req.body = body.as_bytes().to_vec();
        block_on(run::<AUTHENTICATE, _, _>(route, count, req, ctx))
    }

    #[test]
    fn an_anonymous_caller_of_a_private_route_gets_401_before_the_body_is_validated() {
        let Err(e) = call::<true>(Route::new(&[Method::Post]), r#"{"n": "not a number"}"#) else {
            panic!("an anonymous caller was answered");
        };
        assert_eq!((e.status(), e.code()), (401, "missing_token"));
    }

    #[test]
    fn a_public_route_validates_the_body_without_reading_a_token() {
        let route = Route::new(&[Method::Post]).access(Access::Public);
        let Err(e) = call::<false>(route, r#"{"n": "not a number"}"#) else {
            panic!("a bad body was accepted");
        };
        assert_eq!((e.status(), e.code()), (422, "validation_failed"));
        assert!(call::<false>(route, r#"{"n": 3}"#).is_ok_and(|r| r.status == 200));
    }

    #[test]
    fn an_optional_route_admits_a_caller_without_a_token() {
        let route = Route::new(&[Method::Post]).access(Access::Optional);
        assert!(call::<true>(route, "{}").is_ok_and(|r| r.status == 200));
    }
}
