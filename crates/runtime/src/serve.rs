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

use edgeworks_core::cors::CorsPolicy;
use edgeworks_core::error::push_envelope;
use edgeworks_core::http::{path_of, Headers};
use edgeworks_core::ids::uuid_v4;
use edgeworks_core::request_id::accept_client_id;
use edgeworks_core::{ApiError, Method, Request};
use serde_json::json;
use wasm_bindgen::JsValue;

use crate::convert::{breaks_flat, env_from_js, next_line, reply_to_js, FlatHeaders};
use crate::ctx::Ctx;
use crate::host::{Host, HostRng};
use crate::js::JsHost;
use crate::log::Logger;
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

/// The request line as the shim hands it: `method\nurl\n`, then the headers
/// flat (`name\nvalue\n` each; neither a method nor a URL holds a line break).
fn request_parts(request: &str) -> (&str, &str, &str) {
    let mut rest = Some(request);
    let method = next_line(&mut rest).unwrap_or_default();
    let url = next_line(&mut rest).unwrap_or_default();
    (method, url, rest.unwrap_or_default())
}

/// Runs one request from the shim through the pipeline and `handler`: the
/// finished reply (one string, or `[status, headers, body, stream?,
/// socket?]`, see [`reply_to_js`]) when it is known without awaiting, else a
/// `Promise` of it. `request` is `method\nurl\n` and the headers flat.
/// `CAPS` are the host capabilities the function links in ([`crate::caps`]).
pub fn serve<const CAPS: u8, F, Fut, R>(
    request: &str,
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
    let (method, url, headers) = request_parts(request);
    let host: Rc<dyn Host> = Rc::new(JsHost::<CAPS>);
    let env = env_from_js(js_env);
    // Read in place: a refused request needs these two and nothing else.
    let flat = FlatHeaders(headers);
    let (client_id, origin) = flat.get2("x-request-id", "origin");
    let request_id: Rc<str> = match client_id.and_then(accept_client_id) {
        Some(id) => id.into(),
        None => uuid_v4(&mut HostRng(host.clone())).into(),
    };
    let ctx = Ctx::with_ids(host, env.clone(), request_id, env.function());

    let method = match method_of(method) {
        Some(Method::Options) => return refuse(&ctx, Refusal::Preflight, "OPTIONS", path_of(url), origin),
        Some(m) if options.methods.contains(&m) => m,
        Some(m) => {
            let refusal = Refusal::MethodNotAllowed(options.methods);
            return refuse(&ctx, refusal, m.as_str(), path_of(url), origin);
        }
        None => return refuse(&ctx, Refusal::MethodNotAllowed(ANY_METHOD), "?", "", origin),
    };
    let body = body.unwrap_or_default();
    let req = Request {
        method,
        url: url.to_string(),
        headers: Headers::new(),
        body,
    };
    let limit = env.parse_or("MAX_BODY_BYTES", options.max_body_bytes);
    if req.body.len() > limit {
        return finish(
            &ctx,
            method.as_str(),
            req.path(),
            origin,
            Err(ApiError::payload_too_large(limit)),
        );
    }

    // Reaches the handler: every header, parsed.
    let req = Request {
        headers: flat.parse(),
        ..req
    };
    let origin = origin.map(str::to_string);
    let path = req.path().to_string();
    let work = handler(req, ctx.clone());
    wasm_bindgen_futures::future_to_promise(async move {
        let outcome = work.await.map(Into::into);
        Ok(finish(&ctx, method.as_str(), &path, origin.as_deref(), outcome))
    })
    .into()
}

/// The methods an unknown method is told to use.
const ANY_METHOD: &[Method] = &[
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Options,
];

/// What the pipeline answers before any work, whatever the request holds
/// beyond its method, `origin` and `x-request-id`.
#[derive(Clone, Copy)]
enum Refusal {
    /// A CORS preflight (`OPTIONS`).
    Preflight,
    /// A method the function does not take (these are the ones it takes).
    MethodNotAllowed(&'static [Method]),
}

/// Answers a refusal and writes the request's log line.
fn refuse(ctx: &Ctx, refusal: Refusal, method: &str, path: &str, origin: Option<&str>) -> JsValue {
    let (status, text) = refusal_text(ctx.env().cors(), origin, ctx.request_id(), refusal);
    ctx.log().request(method, path, status, ctx.elapsed_ms());
    JsValue::from_str(&text)
}

/// A refusal's reply in its string form (`reply_text` in convert.rs), its
/// status beside it, written straight into one buffer: the same bytes as
/// [`complete`] and `reply_to_js` give for the envelope and preflight they
/// replace (a native test holds them to it), without the `Headers`,
/// `ApiError` and `Response` built on the way, twenty-odd allocations of
/// every refused request. An origin holding a line break, a carriage return
/// or a NUL (which Deno's headers refuse, so it never comes from the shim)
/// counts as no origin: no header may carry it.
fn refusal_text(cors: &CorsPolicy, origin: Option<&str>, request_id: &str, refusal: Refusal) -> (u16, String) {
    let origin = origin.filter(|o| !breaks_flat(o));
    let pair = |out: &mut String, name: &str, value: &str| {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    let mut out = String::with_capacity(640);
    let status = match refusal {
        Refusal::Preflight => {
            out.push_str("204\n");
            cors.each_header(origin, true, |name, value| pair(&mut out, name, value));
            pair(&mut out, "x-request-id", request_id);
            out.push('\r');
            204
        }
        Refusal::MethodNotAllowed(methods) => {
            let allow = allow_list(methods);
            out.push_str("405\n");
            pair(&mut out, "content-type", "application/json");
            pair(&mut out, "allow", &allow);
            cors.each_header(origin, false, |name, value| pair(&mut out, name, value));
            pair(&mut out, "x-request-id", request_id);
            out.push('\r');
            push_envelope(
                &mut out,
                METHOD_NOT_ALLOWED,
                &not_allowed_message(&allow),
                None,
                request_id,
            );
            405
        }
    };
    (status, out)
}

const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// `GET, POST`: the `Allow` header of a function that takes `methods`.
fn allow_list(methods: &[Method]) -> String {
    let mut allow = String::with_capacity(methods.len() * 7);
    for (i, m) in methods.iter().enumerate() {
        if i > 0 {
            allow.push_str(", ");
        }
        allow.push_str(m.as_str());
    }
    allow
}

/// The 405's message for the methods in `allow`.
fn not_allowed_message(allow: &str) -> String {
    let mut message = String::with_capacity(24 + allow.len());
    message.push_str("method not allowed; use ");
    message.push_str(allow);
    message
}

/// The envelope for an error, CORS, the request id and the request's log line.
fn finish(ctx: &Ctx, method: &str, path: &str, origin: Option<&str>, outcome: Result<Reply, ApiError>) -> JsValue {
    let log = ctx.log();
    let reply = complete(ctx.env().cors(), ctx.request_id(), origin, outcome, log);
    log.request(method, path, reply.status, ctx.elapsed_ms());
    reply_to_js(reply)
}

/// The reply as it is sent: the envelope for an error (a 5xx logged), CORS
/// and the request id.
fn complete(
    cors: &CorsPolicy,
    request_id: &str,
    origin: Option<&str>,
    outcome: Result<Reply, ApiError>,
    log: &Logger,
) -> Reply {
    let mut reply = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status() >= 500 {
                log.error("request failed", json!({ "code": e.code(), "error": e.message() }));
            }
            Reply::from(e.into_response(request_id))
        }
    };
    if reply.status != 204 || reply.headers.get("access-control-allow-origin").is_none() {
        cors.apply(origin, &mut reply.headers);
    }
    reply.headers.set("x-request-id", request_id);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    use edgeworks_core::http_client::TransportError;
    use edgeworks_core::redact::Redactor;
    use edgeworks_core::Response;

    use crate::convert::reply_text;
    use crate::host::{Level, LocalFuture};
    use crate::reply::Body;

    struct Quiet;

    impl Host for Quiet {
        fn now_ms(&self) -> i64 {
            1_700_000_000_000
        }
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(1);
        }
        fn write_log(&self, _: Level, _: &str) {}
        fn send(&self, _: Request, _: u32) -> LocalFuture<'static, Result<Response, TransportError>> {
            Box::pin(async { Err(TransportError::Network("none".into())) })
        }
        fn sleep(&self, _: u32) -> LocalFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    /// 405 for a function that takes `methods`, as an error the general path completes.
    fn method_not_allowed(methods: &[Method]) -> ApiError {
        let allow = allow_list(methods);
        ApiError::new(405, METHOD_NOT_ALLOWED, not_allowed_message(&allow)).with_header("allow", allow)
    }

    impl Refusal {
        /// The outcome the general path completes ([`complete`]) into the same reply.
        fn outcome(self, cors: &CorsPolicy, origin: Option<&str>) -> Result<Reply, ApiError> {
            match self {
                Refusal::Preflight => Ok(Reply::from(cors.preflight(origin))),
                Refusal::MethodNotAllowed(methods) => Err(method_not_allowed(methods)),
            }
        }
    }

    #[test]
    fn an_unknown_method_is_told_every_method_as_before() {
        let e = method_not_allowed(ANY_METHOD);
        assert_eq!(
            e,
            ApiError::method_not_allowed(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        );
    }

    #[test]
    fn a_refusal_written_directly_is_the_reply_the_general_path_builds() {
        let log = Logger::new(Rc::new(Quiet), "f", "r", Redactor::default(), false);
        let policies = [
            CorsPolicy::from_env_value(None),
            CorsPolicy::from_env_value(Some("https://a.example, https://b.example/")),
        ];
        let origins = [
            None,
            Some("https://a.example"),
            Some("https://b.example/"),
            Some("https://evil.example"),
            Some(""),
            Some("https://\"q\".example"),
        ];
        let refusals = [
            Refusal::Preflight,
            Refusal::MethodNotAllowed(&[Method::Get]),
            Refusal::MethodNotAllowed(&[Method::Get, Method::Head]),
            Refusal::MethodNotAllowed(&[Method::Post, Method::Put, Method::Patch, Method::Delete]),
            Refusal::MethodNotAllowed(ANY_METHOD),
        ];
        let mut checked = 0;
        for cors in &policies {
            for origin in origins {
                for request_id in ["r-1", "0b4f5e0c-7d1e-4f57-9a43-2f0d8a1c6e11"] {
                    for refusal in refusals {
                        let (status, text) = refusal_text(cors, origin, request_id, refusal);
                        let reply = complete(cors, request_id, origin, refusal.outcome(cors, origin), &log);
                        let Body::Bytes(body) = &reply.body else {
                            panic!("a buffered reply");
                        };
                        assert_eq!(status, reply.status);
                        assert_eq!(
                            Some(text),
                            reply_text(reply.status, &reply.headers, body),
                            "{origin:?} {request_id}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 6 * 2 * 5);
        // An origin no header can hold counts as none (Deno never hands one over).
        let listing = CorsPolicy::from_env_value(Some("https://a.example\r1, a\0b"));
        for (cors, bad) in [
            (&policies[0], "a\nb"),
            (&listing, "https://a.example\r1"),
            (&listing, "a\0b"),
        ] {
            for refusal in refusals {
                assert_eq!(
                    refusal_text(cors, Some(bad), "r", refusal),
                    refusal_text(cors, None, "r", refusal)
                );
            }
        }
    }

    #[test]
    fn the_request_line_splits_into_method_url_and_headers() {
        assert_eq!(
            request_parts("PUT\nhttp://h/f?a=1\norigin\nhttp://a.example\n"),
            ("PUT", "http://h/f?a=1", "origin\nhttp://a.example\n")
        );
        assert_eq!(request_parts("GET\nhttp://h/f\n"), ("GET", "http://h/f", ""));
        assert_eq!(request_parts("GET\nhttp://h/f"), ("GET", "http://h/f", ""));
        assert_eq!(request_parts("GET"), ("GET", "", ""));
        assert_eq!(request_parts(""), ("", "", ""));
    }
}
