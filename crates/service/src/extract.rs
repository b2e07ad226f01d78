//! Extractors: the typed arguments a handler declares and the pipeline
//! resolves before calling it. A guard is a type (`User`, `ServiceRole`),
//! not a line each function must remember; a body is validated against the
//! schema on its type before the handler sees it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::future::Future;
use std::ops::Deref;
use std::rc::Rc;

use edgeworks_core::{ApiError, Method, Request, Response};
use edgeworks_db::Db;
use edgeworks_input::validate::Validate;
use edgeworks_runtime::socket::SocketSession;
use edgeworks_runtime::{Ctx, Env, HostHttp, Reply, WebSocket};
use serde::Serialize;
use serde_json::Value;

use crate::caller::{service_db, websocket_protocols, Caller};
use crate::limit::RateTicket;

/// A request on its way to a handler: the request, its context, and the
/// caller the pipeline verified (`None` on public routes).
pub struct Parts {
    /// The request.
    pub req: Request,
    /// Its context.
    pub ctx: Ctx,
    /// The verified caller, if the route authenticates.
    pub caller: Option<Caller>,
    /// The rate-limit token the handler's SQL call is to take, on a
    /// `limit_in_sql` route (none for the service role).
    pub ticket: Option<RateTicket>,
}

impl Parts {
    /// Builds parts directly (native tests of extractors and handlers).
    pub fn new(req: Request, ctx: Ctx, caller: Option<Caller>) -> Parts {
        Parts {
            req,
            ctx,
            caller,
            ticket: None,
        }
    }

    /// With the rate-limit ticket the handler is to spend.
    pub fn with_ticket(mut self, ticket: RateTicket) -> Parts {
        self.ticket = Some(ticket);
        self
    }

    fn caller(&self) -> Result<&Caller, ApiError> {
        self.caller
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <access token>"))
    }
}

/// Something a handler can take as an argument.
pub trait FromRequest: Sized {
    /// Resolves the value, or the error the request is answered with.
    fn from_request(parts: &Parts) -> impl Future<Output = Result<Self, ApiError>>;
}

/// What a handler may answer.
pub trait IntoReply {
    /// The reply.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for Response {
    fn into_reply(self) -> Reply {
        self.into()
    }
}

impl FromRequest for Ctx {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(parts.ctx.clone())
    }
}

/// The rate-limit token of a `limit_in_sql` route, for the handler's SQL
/// call (`None`: the caller is not limited).
impl FromRequest for Option<RateTicket> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(parts.ticket.clone())
    }
}

impl FromRequest for Caller {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        parts.caller().cloned()
    }
}

impl FromRequest for Option<Caller> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(parts.caller.clone())
    }
}

/// A signed-in user (401 for no or a bad token, 403 for the service role).
#[derive(Debug, Clone)]
pub struct User {
    /// `auth.users.id`.
    pub id: String,
    /// The full caller.
    pub caller: Caller,
}

impl FromRequest for User {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let caller = parts.caller()?;
        Ok(User {
            id: caller.user_id()?.to_string(),
            caller: caller.clone(),
        })
    }
}

/// The service role (workers and schedulers); 403 for anyone else.
#[derive(Debug, Clone)]
pub struct ServiceRole;

impl FromRequest for ServiceRole {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        parts.caller()?.require_service_role()?;
        Ok(ServiceRole)
    }
}

/// PostgREST as the service role.
pub struct ServiceDb(pub Db<HostHttp>);

impl FromRequest for ServiceDb {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(ServiceDb(service_db(&parts.ctx)?))
    }
}

impl Deref for ServiceDb {
    type Target = Db<HostHttp>;
    fn deref(&self) -> &Db<HostHttp> {
        &self.0
    }
}

/// PostgREST as the caller (RLS applies).
pub struct UserDb(pub Db<HostHttp>);

impl FromRequest for UserDb {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(UserDb(parts.caller()?.db(&parts.ctx)?))
    }
}

impl Deref for UserDb {
    type Target = Db<HostHttp>;
    fn deref(&self) -> &Db<HostHttp> {
        &self.0
    }
}

/// A JSON body validated against `T`'s schema (as an extractor), or the
/// `{"success": true, "data": ...}` answer (as a reply). An empty body is
/// `{}`: a type whose fields are all optional accepts it.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

fn checked<T: Validate>(value: Value) -> Result<T, ApiError> {
    let v: T = T::schema().parse_value(value)?;
    v.check()?;
    Ok(v)
}

fn body_value(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    edgeworks_core::http::parse_json(body)
}

impl<T: Validate> FromRequest for Json<T> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        checked(body_value(&parts.req.body)?).map(Json)
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Reply {
        Response::ok(&self.0).into()
    }
}

/// The query string validated against `T`'s schema.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: Validate> FromRequest for Query<T> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        checked(T::schema().object_from_query(parts.req.query())).map(Query)
    }
}

/// The query string on GET (and on a DELETE without a body), the JSON body
/// otherwise (the seeds' status endpoints take both), validated against `T`'s
/// schema.
#[derive(Debug, Clone)]
pub struct JsonOrQuery<T>(pub T);

impl<T: Validate> FromRequest for JsonOrQuery<T> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let from_query = parts.req.method == Method::Get
            || (parts.req.method == Method::Delete && parts.req.body.iter().all(u8::is_ascii_whitespace));
        let value = if from_query {
            T::schema().object_from_query(parts.req.query())
        } else {
            body_value(&parts.req.body)?
        };
        checked(value).map(JsonOrQuery)
    }
}

/// Configuration read from the environment.
pub trait FromEnv: Sized + 'static {
    /// Parses it; a bad value is a 500 `misconfigured` naming the variable.
    fn from_env(env: &Env) -> Result<Self, ApiError>;
}

/// A parsed settings value, keyed by its type and the environment's fingerprint.
type Parsed = (TypeId, u64, Rc<dyn Any>);

/// A numeric setting: `default` when unset or blank, else the value if it
/// parses and lies in `min..=max`; otherwise a 500 `misconfigured` that
/// names the variable (never its value). What every `FromEnv` reads numbers with.
pub fn env_number<T: std::str::FromStr + PartialOrd + Copy>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    match lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<T>().ok().filter(|x| *x >= min && *x <= max).ok_or_else(|| {
            ApiError::new(
                500,
                "misconfigured",
                format!("{name} must be a number in its allowed range"),
            )
        }),
    }
}

thread_local! {
    static PARSED: RefCell<Vec<Parsed>> = const { RefCell::new(Vec::new()) };
}

/// Settings of type `T`, parsed once per isolate: the shim hands every
/// request the same environment, so a parse is reused for as long as the
/// environment's fingerprint is unchanged. Failures are not cached.
pub struct Settings<T>(pub Rc<T>);

impl<T: FromEnv> Settings<T> {
    /// The settings for `env`, from the cache when it has them.
    pub fn load(env: &Env) -> Result<Settings<T>, ApiError> {
        let key = (TypeId::of::<T>(), env.fingerprint());
        if let Some(v) = cached(key).and_then(|v| v.downcast::<T>().ok()) {
            return Ok(Settings(v));
        }
        let parsed = Rc::new(T::from_env(env)?);
        remember(key, parsed.clone());
        Ok(Settings(parsed))
    }
}

// The cache's work, shared by every settings type rather than repeated in
// each one's `load` (a function links one `load` per type it reads).

#[inline(never)]
fn cached(key: (TypeId, u64)) -> Option<Rc<dyn Any>> {
    PARSED.with(|p| {
        p.borrow()
            .iter()
            .find(|(t, f, _)| (*t, *f) == key)
            .map(|(_, _, v)| v.clone())
    })
}

#[inline(never)]
fn remember(key: (TypeId, u64), parsed: Rc<dyn Any>) {
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        // Environments change only when an isolate is redeployed; keep a few.
        if p.len() >= 32 {
            p.remove(0);
        }
        p.push((key.0, key.1, parsed));
    });
}

impl<T: FromEnv> FromRequest for Settings<T> {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Settings::load(parts.ctx.env())
    }
}

impl<T> Deref for Settings<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The id of the last SSE event a reconnecting client saw
/// (`Last-Event-ID`, or `?lastEventId=` where a polyfill cannot set headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEventId(pub Option<String>);

impl FromRequest for LastEventId {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let id = parts
            .req
            .headers
            .get("last-event-id")
            .map(str::to_string)
            .or_else(|| parts.req.query_param("lastEventId"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 256);
        Ok(LastEventId(id))
    }
}

/// A WebSocket upgrade request (400 for anything else). The caller was
/// authenticated before this runs, so a bad token is refused before the
/// upgrade.
pub struct WebSocketUpgrade {
    protocol: Option<String>,
}

impl FromRequest for WebSocketUpgrade {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        if !crate::caller::is_websocket_upgrade(&parts.req) {
            return Err(ApiError::new(
                426,
                "upgrade_required",
                "connect with a WebSocket client",
            ));
        }
        Ok(WebSocketUpgrade {
            protocol: websocket_protocols(&parts.req).0.into_iter().next(),
        })
    }
}

impl WebSocketUpgrade {
    /// Accepts the upgrade and runs `session` on the socket.
    pub fn on_upgrade<F, Fut>(self, session: F) -> Reply
    where
        F: FnOnce(WebSocket) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let session: SocketSession = Box::new(move |ws| Box::pin(session(ws)));
        Reply::websocket(self.protocol.as_deref(), session)
    }
}
