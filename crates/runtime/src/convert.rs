//! JS object <-> core Request / runtime Reply.

use std::cell::RefCell;

use edgeworks_core::http::Headers;
use edgeworks_core::{ApiError, Method, Request};
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::env::Env;
#[cfg(feature = "streams")]
use crate::js::{SocketHandle, StreamHandle};
use crate::reply::{Body, Reply};

fn field(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

pub fn request_from_js(obj: &JsValue) -> Result<Request, ApiError> {
    let method_s = field(obj, "method").as_string().unwrap_or_default();
    let method = Method::parse(&method_s)
        .ok_or_else(|| ApiError::method_not_allowed(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))?;
    let url = field(obj, "url")
        .as_string()
        .ok_or_else(|| ApiError::bad_request("invalid_request", "request has no URL"))?;
    let mut headers = Headers::new();
    let h = field(obj, "headers");
    if let Some(arr) = h.dyn_ref::<Array>() {
        for pair in arr.iter() {
            let pair = Array::from(&pair);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                headers.append(&k, v);
            }
        }
    }
    let b = field(obj, "body");
    let body = if b.is_undefined() || b.is_null() {
        Vec::new()
    } else if let Some(s) = b.as_string() {
        s.into_bytes()
    } else {
        Uint8Array::new(&b).to_vec()
    };
    Ok(Request {
        method,
        url,
        headers,
        body,
    })
}

/// `{status, headers, body}`; a streamed body is `body: null` with a
/// `stream` handle, a WebSocket `socket` with a handle.
pub fn reply_to_js(reply: Reply) -> JsValue {
    let obj = Object::new();
    let headers = Array::new();
    for (k, v) in reply.headers.iter() {
        let pair = Array::new();
        pair.push(&JsValue::from_str(k));
        pair.push(&JsValue::from_str(v));
        headers.push(&pair);
    }
    let _ = Reflect::set(&obj, &"status".into(), &JsValue::from(reply.status));
    let _ = Reflect::set(&obj, &"headers".into(), &headers);
    match reply.body {
        Body::Bytes(b) => {
            let _ = Reflect::set(&obj, &"body".into(), &Uint8Array::from(b.as_slice()));
        }
        #[cfg(feature = "streams")]
        Body::Stream(s) => {
            let _ = Reflect::set(&obj, &"body".into(), &JsValue::NULL);
            let _ = Reflect::set(&obj, &"stream".into(), &StreamHandle::new(s).into());
        }
        #[cfg(feature = "streams")]
        Body::Socket(session) => {
            let _ = Reflect::set(&obj, &"body".into(), &JsValue::NULL);
            let _ = Reflect::set(&obj, &"socket".into(), &SocketHandle::new(session).into());
        }
        // Without the feature the handles are not linked (they are wasm
        // exports, so every function would carry them): a function that
        // streams enables `streams` on edgeworks-runtime.
        #[cfg(not(feature = "streams"))]
        Body::Stream(_) | Body::Socket(_) => {
            let _ = Reflect::set(&obj, &"status".into(), &JsValue::from(500));
            let _ = Reflect::set(
                &obj,
                &"body".into(),
                &Uint8Array::from(&br#"{"success":false,"error":{"code":"misconfigured","message":"this function was built without the streams feature"}}"#[..]),
            );
        }
    }
    obj.into()
}

thread_local! {
    /// The last environment object converted, and its conversion.
    static ENV_CACHE: RefCell<Option<(JsValue, Env)>> = const { RefCell::new(None) };
}

/// The shim hands every request of an isolate the same environment object
/// (built once, never mutated), so its conversion is kept and reused while
/// the object is the same one (`===`); another object is converted afresh.
/// A re-instantiated module starts with an empty cache.
pub fn env_from_js(obj: &JsValue) -> Env {
    ENV_CACHE.with(|cache| {
        if let Some((seen, env)) = &*cache.borrow() {
            if seen == obj {
                return env.clone();
            }
        }
        let env = convert_env(obj);
        *cache.borrow_mut() = Some((obj.clone(), env.clone()));
        env
    })
}

fn convert_env(obj: &JsValue) -> Env {
    let Some(o) = obj.dyn_ref::<Object>() else {
        return Env::default();
    };
    let entries = Object::entries(o);
    let pairs: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| {
            let e = Array::from(&e);
            Some((e.get(0).as_string()?, e.get(1).as_string()?))
        })
        .collect();
    Env::from_pairs(pairs)
}
