//! The shared rate limit: one token per request of a limited route.
//!
//! Two ways to take it, with the same key, bucket and answers:
//! - standalone: the pipeline calls `rate_limit_take` before the handler
//!   (one SQL call of its own);
//! - in the handler's own SQL call: a route declared with
//!   [`Route::limit_in_sql`](crate::Route::limit_in_sql) hands its handler a
//!   [`RateTicket`]; the handler passes it to a SQL function that takes the
//!   token in the same transaction as the work (one round trip instead of
//!   two) and answers the decision with the work. When the request ends
//!   without the ticket spent (an extractor refused it, the handler never
//!   called the SQL, or the call failed and rolled the take back), the
//!   pipeline takes the token the standalone way afterwards, so every request
//!   still costs one token and a 429 still wins over the request's own error.

use std::cell::Cell;
use std::rc::Rc;

use edgeworks_auth::ratelimit::{limit_key, ClientIpSource, Decision, Limit};
use edgeworks_core::{ApiError, Request};
use edgeworks_db::DbError;
use edgeworks_runtime::Ctx;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::caller::{service_db, Caller};

#[derive(Deserialize)]
struct TakeRow {
    allowed: bool,
    tokens: f64,
}

/// The bucket key of this caller for `scope` (the function name): by user id
/// when signed in, else by client IP. `None` for the service role (workers
/// and schedulers are not rate limited).
pub fn bucket_key(ctx: &Ctx, req: &Request, caller: Option<&Caller>, scope: &str) -> Result<Option<String>, ApiError> {
    if caller.is_some_and(|c| c.principal.is_service_role) {
        return Ok(None);
    }
    let user = caller.and_then(|c| c.principal.user_id.as_deref());
    let source = ClientIpSource::from_lookup(ctx.env().lookup())
        .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
    Ok(Some(format!("{scope}:{}", limit_key(user, &req.headers, &source))))
}

/// Takes `cost` tokens from this caller's bucket for `scope` (the function
/// name): keyed by user id when signed in, else by client IP.
///
/// When the limiter's database call fails we let the request through and log
/// it (fail open): the limiter guards against abuse, and refusing every
/// request while PostgREST hiccups would turn a blip into an outage. The
/// work behind the limiter needs the same database, so an outage still stops
/// real work; only the limit is skipped. Returns the decision (its headers go
/// on the reply) or the 429 error.
pub async fn rate_limit(
    ctx: &Ctx,
    req: &Request,
    caller: Option<&Caller>,
    scope: &str,
    limit: Limit,
    cost: u32,
) -> Result<Option<Decision>, ApiError> {
    match bucket_key(ctx, req, caller, scope)? {
        Some(key) => take(ctx, &key, scope, limit, cost).await,
        None => Ok(None),
    }
}

/// `rate_limit_take` for `key` (fail open, as [`rate_limit`]).
pub async fn take(ctx: &Ctx, key: &str, scope: &str, limit: Limit, cost: u32) -> Result<Option<Decision>, ApiError> {
    let db = service_db(ctx)?;
    let args = json!({
        "p_key": key,
        "p_cost": cost,
        "p_capacity": limit.capacity,
        "p_refill_per_sec": limit.refill_per_sec,
    });
    match db.rpc::<Vec<TakeRow>>("rate_limit_take", &args).await {
        Ok(rows) => {
            let Some(row) = rows.first() else {
                ctx.log()
                    .warn("rate limiter returned no row; allowing", json!({ "scope": scope }));
                return Ok(None);
            };
            let decision = Decision::from_tokens(row.allowed, row.tokens, cost, limit);
            decision.check()?;
            Ok(Some(decision))
        }
        Err(e) => {
            ctx.log().warn(
                "rate limiter unavailable; allowing (fail open)",
                json!({ "scope": scope, "error": e.to_string() }),
            );
            Ok(None)
        }
    }
}

/// The SQLSTATE a limited SQL function raises when the token it takes after
/// the work is refused (the raise rolls the work back); the detail is the
/// bucket's tokens.
pub const REFUSED_SQLSTATE: &str = "ER429";

struct Ticket {
    key: String,
    cost: u32,
    limit: Limit,
    spent: Cell<Option<Decision>>,
}

/// A rate-limit token the handler's SQL call is to take (see the module
/// docs). Cloning shares it: the pipeline sees what the handler spent.
///
/// The SQL side: the function takes `p_rate_key text, p_rate_cost integer,
/// p_rate_capacity integer, p_rate_refill_per_sec double precision` (a null
/// key: not limited), takes the token through `private.rate_limit_bucket_take`
/// in its own transaction and answers `{"rate_limit": {"allowed", "tokens"},
/// ...the work's answer}`; refused, it does no work and answers only the
/// `rate_limit` member (or raises [`REFUSED_SQLSTATE`] to roll the work back).
#[derive(Clone)]
pub struct RateTicket(Rc<Ticket>);

impl std::fmt::Debug for RateTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateTicket")
            .field("cost", &self.0.cost)
            .field("limit", &self.0.limit)
            .field("spent", &self.0.spent.get())
            .finish_non_exhaustive()
    }
}

impl RateTicket {
    /// A ticket for `cost` tokens of `key`'s bucket.
    pub fn new(key: String, cost: u32, limit: Limit) -> RateTicket {
        RateTicket(Rc::new(Ticket {
            key,
            cost,
            limit,
            spent: Cell::new(None),
        }))
    }

    /// The bucket key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The limit it is taken under.
    pub fn limit(&self) -> Limit {
        self.0.limit
    }

    /// The decision, once the SQL took the token.
    pub fn decision(&self) -> Option<Decision> {
        self.0.spent.get()
    }

    /// Adds `p_rate_key`, `p_rate_cost`, `p_rate_capacity` and
    /// `p_rate_refill_per_sec` to an RPC's arguments (nulls without a ticket:
    /// the SQL then takes no token).
    pub fn add_args(ticket: Option<&RateTicket>, args: &mut Value) {
        let Some(obj) = args.as_object_mut() else { return };
        let t = ticket.map(|t| &*t.0);
        obj.insert("p_rate_key".into(), json!(t.map(|t| t.key.as_str())));
        obj.insert("p_rate_cost".into(), json!(t.map(|t| t.cost)));
        obj.insert("p_rate_capacity".into(), json!(t.map(|t| t.limit.capacity)));
        obj.insert("p_rate_refill_per_sec".into(), json!(t.map(|t| t.limit.refill_per_sec)));
    }

    /// The same four arguments as [`RateTicket::add_args`], for an argument
    /// struct that is serialised directly (`#[serde(flatten)]`); without a
    /// ticket it writes none, so the SQL defaults (null: no token) apply.
    pub fn args(ticket: Option<&RateTicket>) -> RateArgs<'_> {
        RateArgs(ticket.map(|t| &*t.0))
    }

    fn record(&self, allowed: bool, tokens: f64) -> Result<(), ApiError> {
        let d = Decision::from_tokens(allowed, tokens, self.0.cost, self.0.limit);
        self.0.spent.set(Some(d));
        d.check()
    }

    /// Reads the decision out of the SQL function's answer and removes it:
    /// `Err(429)` when refused. An answer without one leaves the ticket
    /// unspent (the pipeline then takes the token itself).
    pub fn settle(&self, answer: &mut Value) -> Result<(), ApiError> {
        let rl = answer.as_object_mut().and_then(|o| o.remove("rate_limit"));
        self.settle_member(rl.as_ref())
    }

    /// [`RateTicket::settle`] for an answer decoded into a type of its own:
    /// `rate_limit` is that answer's `rate_limit` member, if it had one.
    pub fn settle_member(&self, rate_limit: Option<&Value>) -> Result<(), ApiError> {
        let Some(rl) = rate_limit else {
            return Ok(());
        };
        match (
            rl.get("allowed").and_then(Value::as_bool),
            rl.get("tokens").and_then(Value::as_f64),
        ) {
            (Some(allowed), Some(tokens)) => self.record(allowed, tokens),
            _ => Ok(()),
        }
    }

    /// A refusal the SQL raised ([`REFUSED_SQLSTATE`]) becomes the 429;
    /// any other error is given back.
    pub fn settle_error(&self, e: DbError) -> Result<DbError, ApiError> {
        if let DbError::Api {
            code: Some(code),
            details,
            ..
        } = &e
        {
            if code == REFUSED_SQLSTATE {
                let tokens = details
                    .as_deref()
                    .and_then(|d| d.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                self.record(false, tokens)?;
            }
        }
        Ok(e)
    }
}

/// The rate-limit arguments of a limited SQL function (see
/// [`RateTicket::args`]).
pub struct RateArgs<'a>(Option<&'a Ticket>);

impl Serialize for RateArgs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(t) = self.0 else {
            return serializer.serialize_map(Some(0))?.end();
        };
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("p_rate_key", &t.key)?;
        map.serialize_entry("p_rate_cost", &t.cost)?;
        map.serialize_entry("p_rate_capacity", &t.limit.capacity)?;
        map.serialize_entry("p_rate_refill_per_sec", &t.limit.refill_per_sec)?;
        map.end()
    }
}

/// After the handler of a [`Route::limit_in_sql`](crate::Route::limit_in_sql)
/// route: the ticket's decision, or, when it was not spent, the token taken
/// the standalone way (429 when refused, whatever the handler answered).
pub async fn settle_after(ctx: &Ctx, ticket: &RateTicket, scope: &str) -> Result<Option<Decision>, ApiError> {
    match ticket.decision() {
        Some(d) => d.check().map(|()| Some(d)),
        None => take(ctx, ticket.key(), scope, ticket.limit(), ticket.0.cost).await,
    }
}
