//! The request pipeline every function shares: request id, CORS preflight,
//! method check, body limit, the handler, the error envelope, one log line.

use std::future::Future;

use edgeworks_core::cors::CorsPolicy;
use edgeworks_core::ids::uuid_v4;
use edgeworks_core::request_id::accept_client_id;
use edgeworks_core::{ApiError, Method, Request, Response};
use serde_json::json;
use wasm_bindgen::JsValue;

use crate::convert::{env_from_js, request_from_js, response_to_js};
use crate::ctx::{Ctx, OsRng};
use crate::log::Logger;

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

pub async fn serve<F, Fut>(js_request: JsValue, js_env: JsValue, options: Options, handler: F) -> JsValue
where
    F: FnOnce(Request, Ctx) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    console_error_panic_hook::set_once();
    let started = js_sys::Date::now();
    let env = env_from_js(&js_env);
    let function = env.get("EDGEWORKS_FUNCTION").unwrap_or("function").to_string();
    let cors = CorsPolicy::from_env_value(env.get("CORS_ALLOWED_ORIGINS"));
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
        .unwrap_or_else(|| uuid_v4(&mut OsRng));
    let log = Logger::new(
        &function,
        &request_id,
        env.redactor(),
        env.get("LOG_LEVEL") == Some("debug"),
    );
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
                Ok(cors.preflight(origin.as_deref()))
            } else if !options.methods.contains(&req.method) {
                let allowed: Vec<&str> = options.methods.iter().map(|m| m.as_str()).collect();
                Err(ApiError::method_not_allowed(&allowed))
            } else {
                let limit = env.parse_or("MAX_BODY_BYTES", options.max_body_bytes);
                if req.body.len() > limit {
                    Err(ApiError::payload_too_large(limit))
                } else {
                    let ctx = Ctx::new(env.clone(), request_id.clone(), function.clone(), log.clone(), started);
                    handler(req, ctx).await
                }
            };
            (method, path, outcome)
        }
    };

    let mut response = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status() >= 500 {
                log.error("request failed", json!({ "code": e.code(), "error": e.message() }));
            }
            e.into_response(&request_id)
        }
    };
    if response.status != 204 || response.headers.get("access-control-allow-origin").is_none() {
        cors.apply(origin.as_deref(), &mut response.headers);
    }
    response.headers.set("x-request-id", request_id.clone());
    log.info(
        "request",
        json!({
            "method": method,
            "path": path,
            "status": response.status,
            "ms": (js_sys::Date::now() - started).max(0.0) as u64,
        }),
    );
    response_to_js(&response)
}
