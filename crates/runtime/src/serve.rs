//! The request pipeline every function shares: request id, CORS preflight,
//! method check, body limit, the handler, the error envelope, one log line.

use std::future::Future;
use std::rc::Rc;

use edgeworks_core::ids::uuid_v4;
use edgeworks_core::request_id::accept_client_id;
use edgeworks_core::{ApiError, Method, Request};
use serde_json::json;
use wasm_bindgen::JsValue;

use crate::convert::{env_from_js, reply_to_js, request_from_js};
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

/// Runs one request from the shim through the pipeline and `handler`.
/// `CAPS` are the host capabilities the function links in ([`crate::caps`]).
pub async fn serve<const CAPS: u8, F, Fut, R>(
    js_request: JsValue,
    js_env: JsValue,
    options: Options,
    handler: F,
) -> JsValue
where
    F: FnOnce(Request, Ctx) -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
    R: Into<Reply>,
{
    console_error_panic_hook::set_once();
    let host: Rc<dyn Host> = Rc::new(JsHost::<CAPS>);
    let env = env_from_js(&js_env);
    let function = env.get("EDGEWORKS_FUNCTION").unwrap_or("function").to_string();
    let parsed = request_from_js(&js_request);

    let request_id = parsed
        .as_ref()
        .ok()
        .and_then(|r| {
            r.headers
                .get("x-request-id")
                .and_then(accept_client_id)
                .map(str::to_string)
        })
        .unwrap_or_else(|| uuid_v4(&mut HostRng(host.clone())));
    let ctx = Ctx::new(host, env.clone(), &request_id, &function);
    let cors = env.cors();
    let log = ctx.log().clone();
    let origin = parsed
        .as_ref()
        .ok()
        .and_then(|r| r.headers.get("origin").map(str::to_string));

    let (method, path, outcome) = match parsed {
        Err(e) => ("?".to_string(), String::new(), Err(e)),
        Ok(req) => {
            let method = req.method.as_str().to_string();
            let path = req.path().to_string();
            let outcome = if req.method == Method::Options {
                Ok(Reply::from(cors.preflight(origin.as_deref())))
            } else if !options.methods.contains(&req.method) {
                let allowed: Vec<&str> = options.methods.iter().map(|m| m.as_str()).collect();
                Err(ApiError::method_not_allowed(&allowed))
            } else {
                let limit = env.parse_or("MAX_BODY_BYTES", options.max_body_bytes);
                if req.body.len() > limit {
                    Err(ApiError::payload_too_large(limit))
                } else {
                    handler(req, ctx.clone()).await.map(Into::into)
                }
            };
            (method, path, outcome)
        }
    };

    let mut reply = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status() >= 500 {
                log.error("request failed", json!({ "code": e.code(), "error": e.message() }));
            }
            Reply::from(e.into_response(&request_id))
        }
    };
    if reply.status != 204 || reply.headers.get("access-control-allow-origin").is_none() {
        cors.apply(origin.as_deref(), &mut reply.headers);
    }
    reply.headers.set("x-request-id", request_id.clone());
    log.request(&method, &path, reply.status, ctx.elapsed_ms());
    reply_to_js(reply)
}
