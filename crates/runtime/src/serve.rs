//! The request pipeline every function shares: request id, CORS preflight,
//! method check, body limit, the handler, the error envelope, one log line.
//!
//! It runs in two stages. The synchronous one parses the request and answers
//! whatever needs no waiting (a preflight, a method not allowed, a body over
//! the limit): the shim gets the finished reply as the call's return value,
//! and no promise or microtask is made for it. Only a request that reaches the
//! handler returns a `Promise` of its reply.

use std::future::Future;
use std::rc::Rc;

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::request_id::accept_client_id;
use edgeworks_core::{ApiError, Method, Request};
use serde_json::json;
use wasm_bindgen::JsValue;

use crate::convert::{env_from_js, headers_from_flat, reply_to_js};
use crate::ctx::Ctx;
use crate::host::{Host, HostRng};
use crate::js::JsHost;
use crate::reply::Reply;

/// Per-function settings of the shared pipeline.
#[derive(Debug, Clone)]
pub struct Options {
    /// Methods the function accepts (OPTIONS is always answered for CORS).
    pub methods: &'static [Method],
    /// Default body limit; `MAX_BODY_BYTES` in the env overrides it.
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            methods: &[Method::Get, Method::Post],
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The method as the shim hands it (Deno normalises the standard ones to
/// upper case), without the upper-cased copy `Method::parse` makes.
fn method_of(s: &str) -> Option<Method> {
    Some(match s {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => return Method::parse(s),
    })
}

/// Runs one request from the shim through the pipeline and `handler`: the
/// finished reply (`[status, headers, body, stream?, socket?]`, see
/// [`reply_to_js`]) when it is known without awaiting, else a `Promise` of it.
/// `CAPS` are the host capabilities the function links in ([`crate::caps`]).
#[allow(clippy::too_many_arguments)]
pub fn serve<const CAPS: u8, F, Fut, R>(
    method: &str,
    url: String,
    headers: &str,
    body: Option<Vec<u8>>,
    js_env: &JsValue,
    options: Options,
    handler: F,
) -> JsValue
where
    F: FnOnce(Request, Ctx) -> Fut,
    Fut: Future<Output = Result<R, ApiError>> + 'static,
    R: Into<Reply>,
{
    console_error_panic_hook::set_once();
    let host: Rc<dyn Host> = Rc::new(JsHost::<CAPS>);
    let env = env_from_js(js_env);
    let function: Rc<str> = env.get("EDGEWORKS_FUNCTION").unwrap_or("function").into();
    let headers = headers_from_flat(headers);
    let request_id: Rc<str> = match headers.get("x-request-id").and_then(accept_client_id) {
        Some(id) => id.into(),
        None => uuid_v4(&mut HostRng(host.clone())).into(),
    };
    let ctx = Ctx::with_ids(host, env.clone(), request_id, function);
    let origin = headers.get("origin").map(str::to_string);

    let Some(method) = method_of(method) else {
        let e = ApiError::method_not_allowed(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
        return finish(&ctx, "?", "", origin.as_deref(), Err(e));
    };
    let req = Request {
        method,
        url,
        headers,
        body: body.unwrap_or_default(),
    };
    let refused = if method == Method::Options {
        Some(Ok(Reply::from(env.cors().preflight(origin.as_deref()))))
    } else if !options.methods.contains(&method) {
        Some(Err(method_not_allowed(options.methods)))
    } else {
        let limit = env.parse_or("MAX_BODY_BYTES", options.max_body_bytes);
        (req.body.len() > limit).then(|| Err(ApiError::payload_too_large(limit)))
    };
    if let Some(outcome) = refused {
        return finish(&ctx, method.as_str(), req.path(), origin.as_deref(), outcome);
    }

    let path = req.path().to_string();
    let work = handler(req, ctx.clone());
    wasm_bindgen_futures::future_to_promise(async move {
        let outcome = work.await.map(Into::into);
        Ok(finish(&ctx, method.as_str(), &path, origin.as_deref(), outcome))
    })
    .into()
}

/// 405 for a function that takes `methods`.
fn method_not_allowed(methods: &[Method]) -> ApiError {
    let mut allow = String::with_capacity(methods.len() * 7);
    for (i, m) in methods.iter().enumerate() {
        if i > 0 {
            allow.push_str(", ");
        }
        allow.push_str(m.as_str());
    }
    ApiError::new(405, "method_not_allowed", format!("method not allowed; use {allow}")).with_header("allow", allow)
}

/// The envelope for an error, CORS, the request id and the request's log line.
fn finish(ctx: &Ctx, method: &str, path: &str, origin: Option<&str>, outcome: Result<Reply, ApiError>) -> JsValue {
    let log = ctx.log();
    let mut reply = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status() >= 500 {
                log.error("request failed", json!({ "code": e.code(), "error": e.message() }));
            }
            Reply::from(e.into_response(ctx.request_id()))
        }
    };
    if reply.status != 204 || reply.headers.get("access-control-allow-origin").is_none() {
        ctx.env().cors().apply(origin, &mut reply.headers);
    }
    reply.headers.set("x-request-id", ctx.request_id());
    log.request(method, path, reply.status, ctx.elapsed_ms());
    reply_to_js(reply)
}
