//! JS object <-> core Request / runtime Reply.

use std::cell::RefCell;

use edgeworks_core::http::Headers;
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::env::Env;
#[cfg(feature = "streams")]
use crate::js::{SocketHandle, StreamHandle};
use crate::reply::{Body, Reply};

/// The property names read on every fetch reply, made JS strings once per
/// instance instead of once per use.
pub(crate) struct Keys {
    pub(crate) headers: JsValue,
    pub(crate) body: JsValue,
    pub(crate) status: JsValue,
}

thread_local! {
    static KEYS: Keys = Keys {
        headers: JsValue::from_str("headers"),
        body: JsValue::from_str("body"),
        status: JsValue::from_str("status"),
    };
}

pub(crate) fn field(obj: &JsValue, key: impl Fn(&Keys) -> &JsValue) -> JsValue {
    KEYS.with(|k| Reflect::get(obj, key(k)).unwrap_or(JsValue::UNDEFINED))
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

/// `[status, headers, body]`: one array, not an object and a property set
/// per field. `headers` is the flat string (or `[name, value]` pairs when a
/// header cannot be flattened). A streamed body is
/// `[status, headers, null, stream]`, a WebSocket `[status, headers, null,
/// undefined, socket]`, each with its handle.
pub fn reply_to_js(reply: Reply) -> JsValue {
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
    let status = JsValue::from(reply.status);
    match reply.body {
        Body::Bytes(b) => Array::of3(&status, &headers, &body_to_js(&b, &reply.headers)),
        #[cfg(feature = "streams")]
        Body::Stream(s) => Array::of4(&status, &headers, &JsValue::NULL, &StreamHandle::new(s).into()),
        #[cfg(feature = "streams")]
        Body::Socket(session) => Array::of5(
            &status,
            &headers,
            &JsValue::NULL,
            &JsValue::UNDEFINED,
            &SocketHandle::new(session).into(),
        ),
        // Without the feature the handles are not linked (they are wasm
        // exports, so every function would carry them): a function that
        // streams enables `streams` on edgeworks-runtime.
        #[cfg(not(feature = "streams"))]
        Body::Stream(_) | Body::Socket(_) => Array::of3(
            &JsValue::from(500),
            &headers,
            &Uint8Array::from(&br#"{"success":false,"error":{"code":"misconfigured","message":"this function was built without the streams feature"}}"#[..]),
        ),
    }
    .into()
}

/// Bodies up to this size that are UTF-8 cross as a string.
const STRING_BODY_MAX: usize = 16 * 1024;

/// A buffered body for `new Response(body)`. A small UTF-8 body with a
/// content type (a JSON envelope, say) crosses as a string: Deno hands a
/// string body to its server without a backing store, where a `Uint8Array`
/// costs an `ArrayBuffer` allocation and its bookkeeping, a few µs per
/// response. Without a content type it stays bytes (a string body would get
/// `text/plain` added), as does anything large or binary; an empty one is
/// `null`.
fn body_to_js(b: &[u8], headers: &Headers) -> JsValue {
    // No body (a preflight's 204): nothing to copy out of wasm memory.
    if b.is_empty() {
        return JsValue::NULL;
    }
    if b.len() <= STRING_BODY_MAX && headers.get("content-type").is_some() {
        if let Ok(s) = std::str::from_utf8(b) {
            return JsValue::from_str(s);
        }
    }
    Uint8Array::from(b).into()
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
