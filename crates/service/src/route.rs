//! A route is declared once: methods, who may call, body limit, rate limit.
//! The pipeline then runs, in this order: authenticate (unless public),
//! refuse callers the route does not admit, take a rate-limit token, resolve
//! the handler's other extractors (body validation among them), call the
//! handler, and put the rate-limit headers on its reply. A route declared
//! [`Route::limit_in_sql`] instead hands the token to its handler's one SQL
//! call (one round trip, not two) and the pipeline takes it afterwards only
//! when that call did not (see `limit.rs`): a 429 still wins.
//!
//! Authentication comes before validation on purpose: an anonymous caller
//! of a non-public route gets 401 and learns nothing about the body schema;
//! a signed-in caller with a bad body gets the detailed 422. The codes stay
//! distinct (401 `missing_token`/`token_*`, 403 for the wrong kind of
//! caller, 422 `validation_failed`).

use std::cell::Cell;
use std::future::Future;

use edgeworks_auth::ratelimit::{env_var_name, Limit};
use edgeworks_core::{ApiError, Method, Request};
use edgeworks_runtime::{Ctx, Options, Reply};

use crate::caller::{authenticate, presented_token, Caller};
use crate::extract::{FromRequest, IntoReply, Parts};
use crate::limit::{bucket_key, settle_after, take, RateTicket};

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
    /// The handler's one SQL call takes the rate-limit token (it declares a
    /// [`RateTicket`] argument); see [`Route::limit_in_sql`].
    pub limit_in_sql: bool,
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
            limit_in_sql: false,
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

    /// The handler takes the rate-limit token inside its own SQL call (one
    /// round trip instead of two): it declares an `Option<RateTicket>`
    /// argument and passes it to a SQL function that takes the token in the
    /// same transaction as the work. A request that ends without the ticket
    /// spent (a refused extractor, a failed or skipped call) has its token
    /// taken the standalone way afterwards, and a 429 then wins over its own
    /// answer, as when the token is taken first.
    pub const fn limit_in_sql(mut self) -> Route {
        self.limit_in_sql = true;
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

    /// [`Route::limit`] for this request's function and environment, parsed
    /// once per isolate: the shim hands every request the same environment,
    /// so the parse is reused while its fingerprint is unchanged. Failures
    /// are not cached.
    pub fn limit_for(&self, ctx: &Ctx) -> Result<Option<Limit>, ApiError> {
        // FNV-1a of the function's name: the key stays plain data, so the
        // cache needs no destructor (and links none into every function).
        let function = ctx.function().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let key = (ctx.env().fingerprint(), self.rate_limit, function);
        if let Some((k, limit)) = PARSED_LIMIT.with(Cell::get) {
            if k == key {
                return Ok(limit);
            }
        }
        let limit = self.limit(ctx.function(), ctx.env().lookup())?;
        PARSED_LIMIT.with(|p| p.set(Some((key, limit))));
        Ok(limit)
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

/// The environment's fingerprint, the declared spec and the function (its
/// name's hash) a limit was parsed for, and the limit.
type ParsedLimit = ((u64, Option<&'static str>, u64), Option<Limit>);

thread_local! {
    static PARSED_LIMIT: Cell<Option<ParsedLimit>> = const { Cell::new(None) };
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
    let limit = route.limit_for(&ctx)?;
    let mut decision = None;
    let mut ticket = None;
    if let Some(limit) = limit {
        if let Some(key) = bucket_key(&ctx, &req, caller.as_ref(), ctx.function())? {
            if route.limit_in_sql {
                ticket = Some(RateTicket::new(key, 1, limit));
            } else {
                decision = take(&ctx, &key, ctx.function(), limit, 1).await?;
            }
        }
    }
    let mut parts = Parts::new(req, ctx.clone(), caller);
    parts.ticket = ticket.clone();
    // One call site: the handler's code is instantiated once per function.
    let answered = handler.call(parts).await;
    if let Some(ticket) = &ticket {
        decision = settle_after(&ctx, ticket, ctx.function()).await?;
    }
    let mut reply = answered?;
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
    fn the_limit_parsed_once_per_isolate_follows_a_changed_environment() {
        let route = Route::new(&[Method::Post]).rate_limit("30/0.5");
        let host = NativeHost::at(0);
        let capacity = |env: &[(&str, &str)]| route.limit_for(&host.ctx(env, "f")).unwrap().unwrap().capacity;
        assert_eq!(capacity(&[]), 30);
        assert_eq!(capacity(&[]), 30, "from the cache");
        assert_eq!(capacity(&[("RATE_LIMIT_F", "5/1")]), 5);
        assert_eq!(capacity(&[]), 30);
        let bad = host.ctx(&[("RATE_LIMIT_F", "lots")], "f");
        assert_eq!(route.limit_for(&bad).unwrap_err().code(), "misconfigured");
        assert_eq!(
            route.limit_for(&bad).unwrap_err().code(),
            "misconfigured",
            "failures are not cached"
        );
        let unlimited = Route::new(&[Method::Post]);
        assert_eq!(unlimited.limit_for(&host.ctx(&[], "f")).unwrap(), None);
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

    // The rate-limit token taken inside the handler's SQL call (`limit_in_sql`),
    // against a fake PostgREST that records every call.

    use crate::extract::ServiceDb;
    use crate::limit::RateTicket;
    use edgeworks_testkit::{json_response, FakeServer};

    async fn limited(Json(c): Json<Count>, ticket: Option<RateTicket>, db: ServiceDb) -> Result<Json<Value>, ApiError> {
        let mut args = json!({ "n": c.n });
        RateTicket::add_args(ticket.as_ref(), &mut args);
        let mut answer = match db.rpc::<Value>("work", &args).await {
            Ok(a) => a,
            Err(e) => {
                let e = match &ticket {
                    Some(t) => t.settle_error(e)?,
                    None => e,
                };
                return Err(ApiError::from(e));
            }
        };
        if let Some(t) = &ticket {
            t.settle(&mut answer)?;
        }
        Ok(Json(answer))
    }

    const LIMITED: Route = Route::new(&[Method::Post])
        .access(Access::Public)
        .rate_limit("5/1")
        .limit_in_sql();

    /// Calls `limited` with `body`; PostgREST answers `work` with `work` and
    /// `rate_limit_take` with `take`. Returns the result and the paths called.
    fn call_limited(
        route: Route,
        body: &str,
        work: (u16, &'static str),
        take: &'static str,
    ) -> (Result<Reply, ApiError>, Vec<String>) {
        let server = FakeServer::start(move |req, _| {
            if req.url.ends_with("/rpc/rate_limit_take") {
                json_response(200, take)
            } else {
                json_response(work.0, work.1)
            }
        });
        let host = NativeHost::at(1_767_225_600_000);
        let ctx = host.ctx(
            &[
                ("SUPABASE_URL", server.base_url.as_str()),
                ("SUPABASE_SERVICE_ROLE_KEY", "service-key-for-tests-000000000"),
            ],
            "f",
        );
        let mut req = Request::new(Method::Post, "http://h/functions/v1/f");
        req.headers.set("x-forwarded-for", "203.0.113.7");
        req.body = body.as_bytes().to_vec();
        let result = block_on(run::<false, _, _>(route, limited, req, ctx));
        let paths = server
            .requests()
            .iter()
            .map(|r| r.url.rsplit('/').next().unwrap_or("").to_string())
            .collect();
        (result, paths)
    }

    fn err(result: Result<Reply, ApiError>, what: &str) -> ApiError {
        match result {
            Ok(r) => panic!("{what}: answered {}", r.status),
            Err(e) => e,
        }
    }

    const ALLOWED: &str = r#"[{"allowed": true, "tokens": 3}]"#;
    const REFUSED: &str = r#"[{"allowed": false, "tokens": 0.25}]"#;

    #[test]
    fn an_allowed_token_taken_by_the_handlers_sql_is_one_round_trip_with_the_headers() {
        let work = (200, r#"{"n": 3, "rate_limit": {"allowed": true, "tokens": 4.5}}"#);
        let (result, paths) = call_limited(LIMITED, r#"{"n": 3}"#, work, REFUSED);
        let reply = result.expect("allowed");
        assert_eq!(paths, vec!["work"], "no standalone rate_limit_take");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers.get("x-ratelimit-limit"), Some("5"));
        assert_eq!(reply.headers.get("x-ratelimit-remaining"), Some("4"));
        assert_eq!(reply.headers.get("x-ratelimit-reset"), Some("1"));
        assert_eq!(reply.headers.get("retry-after"), None);
    }

    #[test]
    fn the_ticket_carries_the_key_and_the_limit_to_the_sql() {
        let server = FakeServer::start(|_, _| json_response(200, r#"{"rate_limit": {"allowed": true, "tokens": 1}}"#));
        let host = NativeHost::at(0);
        let ctx = host.ctx(
            &[
                ("SUPABASE_URL", server.base_url.as_str()),
                ("SUPABASE_SERVICE_ROLE_KEY", "service-key-for-tests-000000000"),
                ("RATE_LIMIT_F", "7/0.25"),
            ],
            "f",
        );
        let mut req = Request::new(Method::Post, "http://h/functions/v1/f");
        req.headers.set("x-forwarded-for", "203.0.113.7");
        req.body = br#"{"n": 1}"#.to_vec();
        block_on(run::<false, _, _>(LIMITED, limited, req, ctx)).expect("allowed");
        let sent: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        assert_eq!(sent["p_rate_key"], "f:ip:203.0.113.7");
        assert_eq!(
            (sent["p_rate_cost"].clone(), sent["p_rate_capacity"].clone()),
            (json!(1), json!(7))
        );
        assert_eq!(sent["p_rate_refill_per_sec"], 0.25);
    }

    #[test]
    fn a_token_refused_by_the_handlers_sql_is_429_without_another_call() {
        let work = (200, r#"{"rate_limit": {"allowed": false, "tokens": 0.25}}"#);
        let (result, paths) = call_limited(LIMITED, r#"{"n": 3}"#, work, ALLOWED);
        let e = err(result, "refused");
        assert_eq!((e.status(), e.code()), (429, "rate_limited"));
        assert_eq!(paths, vec!["work"]);
        let answer = e.into_response("r");
        assert_eq!(answer.headers.get("retry-after"), Some("1"));
        assert_eq!(answer.headers.get("x-ratelimit-remaining"), Some("0"));
        assert_eq!(answer.headers.get("x-ratelimit-limit"), Some("5"));
    }

    #[test]
    fn a_refusal_raised_after_the_work_is_429_without_another_call() {
        let raised = r#"{"code": "ER429", "message": "rate_limited", "details": "0.5", "hint": null}"#;
        let (result, paths) = call_limited(LIMITED, r#"{"n": 3}"#, (400, raised), ALLOWED);
        assert_eq!(err(result, "refused").status(), 429);
        assert_eq!(paths, vec!["work"]);
    }

    #[test]
    fn a_request_refused_before_its_sql_still_takes_a_token_and_429_wins() {
        let bad = r#"{"n": "not a number"}"#;
        let (result, paths) = call_limited(LIMITED, bad, (200, "{}"), ALLOWED);
        assert_eq!(err(result, "bad body").status(), 422);
        assert_eq!(paths, vec!["rate_limit_take"], "the token is taken the standalone way");

        let (result, paths) = call_limited(LIMITED, bad, (200, "{}"), REFUSED);
        let e = err(result, "refused");
        assert_eq!((e.status(), e.code()), (429, "rate_limited"), "429 wins over the 422");
        assert_eq!(paths, vec!["rate_limit_take"]);
    }

    #[test]
    fn a_failed_sql_call_rolled_its_token_back_so_the_pipeline_takes_one() {
        let failed = r#"{"code": "EC403", "message": "session_forbidden", "details": null, "hint": null}"#;
        let (result, paths) = call_limited(LIMITED, r#"{"n": 1}"#, (400, failed), ALLOWED);
        assert_ne!(err(result, "failed").status(), 429);
        assert_eq!(paths, vec!["work", "rate_limit_take"]);

        let (result, _) = call_limited(LIMITED, r#"{"n": 1}"#, (400, failed), REFUSED);
        assert_eq!(err(result, "refused").status(), 429, "429 wins over the SQL's error");
    }

    #[test]
    fn an_answer_without_a_decision_has_its_token_taken_afterwards() {
        let (result, paths) = call_limited(LIMITED, r#"{"n": 1}"#, (200, r#"{"n": 1}"#), ALLOWED);
        let reply = result.expect("allowed");
        assert_eq!(paths, vec!["work", "rate_limit_take"]);
        assert_eq!(reply.headers.get("x-ratelimit-remaining"), Some("3"));
    }

    #[test]
    fn without_limit_in_sql_the_token_is_taken_first_and_the_handler_gets_no_ticket() {
        let route = Route::new(&[Method::Post]).access(Access::Public).rate_limit("5/1");
        let (result, paths) = call_limited(route, r#"{"n": 1}"#, (200, r#"{"n": 1}"#), ALLOWED);
        assert_eq!(paths, vec!["rate_limit_take", "work"]);
        assert_eq!(result.expect("allowed").headers.get("x-ratelimit-remaining"), Some("3"));
        let (result, paths) = call_limited(route, r#"{"n": 1}"#, (200, "{}"), REFUSED);
        assert_eq!(err(result, "refused").status(), 429);
        assert_eq!(paths, vec!["rate_limit_take"], "refused before the handler");
    }
}
