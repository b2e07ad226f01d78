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

/// The property names crossing the boundary on every request, made JS strings
/// once per instance instead of once per use.
pub(crate) struct Keys {
    pub(crate) method: JsValue,
    pub(crate) url: JsValue,
    pub(crate) headers: JsValue,
    pub(crate) body: JsValue,
    pub(crate) status: JsValue,
    #[cfg(feature = "streams")]
    stream: JsValue,
    #[cfg(feature = "streams")]
    socket: JsValue,
}

thread_local! {
    static KEYS: Keys = Keys {
        method: JsValue::from_str("method"),
        url: JsValue::from_str("url"),
        headers: JsValue::from_str("headers"),
        body: JsValue::from_str("body"),
        status: JsValue::from_str("status"),
        #[cfg(feature = "streams")]
        stream: JsValue::from_str("stream"),
        #[cfg(feature = "streams")]
        socket: JsValue::from_str("socket"),
    };
}

pub(crate) fn field(obj: &JsValue, key: impl Fn(&Keys) -> &JsValue) -> JsValue {
    KEYS.with(|k| Reflect::get(obj, key(k)).unwrap_or(JsValue::UNDEFINED))
}

fn set(obj: &Object, key: impl Fn(&Keys) -> &JsValue, value: &JsValue) {
    KEYS.with(|k| {
        let _ = Reflect::set(obj, key(k), value);
    });
}

/// Headers cross the boundary as ONE string, `name\nvalue\n` per header: one
/// string conversion instead of two per header and an array per pair. Sound
/// because a header name or value can hold no line break (HTTP forbids it;
/// Deno's Headers refuses it), so `\n` cannot occur inside one.
pub(crate) fn headers_from_flat(flat: &str) -> Headers {
    let mut headers = Headers::new();
    let mut parts = flat.split('\n');
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if !k.is_empty() {
            headers.append(k, v);
        }
    }
    headers
}

/// The flat form of `headers`, or `None` when a name or value holds a
/// character that would break it (such a header is invalid anyway: the shim
/// is then handed pairs and Deno refuses them as before).
pub(crate) fn headers_to_flat(headers: &Headers) -> Option<String> {
    let mut flat = String::with_capacity(headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (k, v) in headers.iter() {
        let breaks = |s: &str| s.bytes().any(|b| b <= b'\r' && matches!(b, b'\n' | b'\r' | 0));
        if breaks(k) || breaks(v) {
            return None;
        }
        flat.push_str(k);
        flat.push('\n');
        flat.push_str(v);
        flat.push('\n');
    }
    Some(flat)
}

pub fn request_from_js(obj: &JsValue) -> Result<Request, ApiError> {
    let method_s = field(obj, |k| &k.method).as_string().unwrap_or_default();
    let method = Method::parse(&method_s)
        .ok_or_else(|| ApiError::method_not_allowed(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))?;
    let url = field(obj, |k| &k.url)
        .as_string()
        .ok_or_else(|| ApiError::bad_request("invalid_request", "request has no URL"))?;
    let h = field(obj, |k| &k.headers);
    let mut headers = match h.as_string() {
        Some(flat) => headers_from_flat(&flat),
        None => Headers::new(),
    };
    if let Some(arr) = h.dyn_ref::<Array>() {
        for pair in arr.iter() {
            let pair = Array::from(&pair);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                headers.append(&k, v);
            }
        }
    }
    let b = field(obj, |k| &k.body);
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
    let headers: JsValue = match headers_to_flat(&reply.headers) {
        Some(flat) => JsValue::from_str(&flat),
        None => {
            let pairs = Array::new();
            for (k, v) in reply.headers.iter() {
                pairs.push(&Array::of2(&JsValue::from_str(k), &JsValue::from_str(v)));
            }
            pairs.into()
        }
    };
    set(&obj, |k| &k.status, &JsValue::from(reply.status));
    set(&obj, |k| &k.headers, &headers);
    match reply.body {
        Body::Bytes(b) => {
            set(&obj, |k| &k.body, &Uint8Array::from(b.as_slice()));
        }
        #[cfg(feature = "streams")]
        Body::Stream(s) => {
            set(&obj, |k| &k.body, &JsValue::NULL);
            set(&obj, |k| &k.stream, &StreamHandle::new(s).into());
        }
        #[cfg(feature = "streams")]
        Body::Socket(session) => {
            set(&obj, |k| &k.body, &JsValue::NULL);
            set(&obj, |k| &k.socket, &SocketHandle::new(session).into());
        }
        // Without the feature the handles are not linked (they are wasm
        // exports, so every function would carry them): a function that
        // streams enables `streams` on edgeworks-runtime.
        #[cfg(not(feature = "streams"))]
        Body::Stream(_) | Body::Socket(_) => {
            set(&obj, |k| &k.status, &JsValue::from(500));
            set(
                &obj,
                |k| &k.body,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_the_flat_form() {
        let mut h = Headers::new();
        h.append("content-type", "application/json; charset=utf-8");
        h.append("set-cookie", "a=1");
        h.append("set-cookie", "b=2: with colon, comma");
        h.append("x-empty", "");
        let flat = headers_to_flat(&h).expect("flattens");
        let back = headers_from_flat(&flat);
        assert_eq!(back.iter().collect::<Vec<_>>(), h.iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_header_with_a_line_break_is_never_flattened() {
        for bad in ["a\nx-injected: 1", "a\rb", "a\0b"] {
            let mut h = Headers::new();
            h.append("x-ok", "fine");
            h.append("x-bad", bad);
            assert_eq!(headers_to_flat(&h), None, "{bad:?}");
        }
    }
}
