//! JS object <-> core Request / runtime Reply.

use std::cell::RefCell;
use std::fmt::Write as _;

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
    FlatHeaders(flat).parse()
}

/// The next piece of `rest` up to a line break, as `str::split('\n')` yields
/// them (the text after the last break is the last piece, empty or not);
/// `None` once the last piece was taken.
pub(crate) fn next_line<'a>(rest: &mut Option<&'a str>) -> Option<&'a str> {
    let s = (*rest)?;
    match s.split_once('\n') {
        Some((line, after)) => {
            *rest = Some(after);
            Some(line)
        }
        None => {
            *rest = None;
            Some(s)
        }
    }
}

/// The flat headers read in place: a look-up walks the pairs without copying
/// or allocating. The pipeline decides a refusal (a preflight, a method not
/// allowed, a body over the limit) from `origin` and `x-request-id` alone, so
/// those requests never parse the rest; [`FlatHeaders::parse`] is the full
/// [`Headers`] a handler gets. Both read the pairs the same way.
#[derive(Clone, Copy)]
pub(crate) struct FlatHeaders<'a>(pub(crate) &'a str);

impl<'a> FlatHeaders<'a> {
    /// The pairs in order, as [`headers_from_flat`] keeps them (a pair with
    /// an empty name is skipped, a name without a value ends the list).
    fn pairs(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut rest = Some(self.0);
        std::iter::from_fn(move || loop {
            let (k, v) = (next_line(&mut rest)?, next_line(&mut rest)?);
            if !k.is_empty() {
                return Some((k, v));
            }
        })
    }

    /// The first values of `a` and of `b` (case-insensitive), in one walk
    /// over the pairs: each as [`Headers::get`] answers it on the parsed
    /// headers.
    pub(crate) fn get2(self, a: &str, b: &str) -> (Option<&'a str>, Option<&'a str>) {
        let (mut found_a, mut found_b) = (None, None);
        for (k, v) in self.pairs() {
            if found_a.is_none() && k.eq_ignore_ascii_case(a) {
                found_a = Some(v);
            } else if found_b.is_none() && k.eq_ignore_ascii_case(b) {
                found_b = Some(v);
            }
            if found_a.is_some() && found_b.is_some() {
                break;
            }
        }
        (found_a, found_b)
    }

    /// Every header, parsed.
    pub(crate) fn parse(self) -> Headers {
        let mut headers = Headers::new();
        for (k, v) in self.pairs() {
            headers.append(k, v);
        }
        headers
    }
}

/// The flat form of `headers`, or `None` when a name or value holds a
/// character that would break it (such a header is invalid anyway: the shim
/// is then handed pairs and Deno refuses them as before).
pub(crate) fn headers_to_flat(headers: &Headers) -> Option<String> {
    let mut flat = String::with_capacity(headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    push_flat(&mut flat, headers).then_some(flat)
}

/// Appends `headers` flat to `out`; false (with `out` part-written) when a
/// name or value holds a line break, a carriage return or a NUL.
fn push_flat(out: &mut String, headers: &Headers) -> bool {
    for (k, v) in headers.iter() {
        if breaks_flat(k) || breaks_flat(v) {
            return false;
        }
        out.push_str(k);
        out.push('\n');
        out.push_str(v);
        out.push('\n');
    }
    true
}

/// Whether `s` holds a line break, a carriage return or a NUL: what no name
/// or value of a flat header may hold.
pub(crate) fn breaks_flat(s: &str) -> bool {
    s.bytes().any(|b| b <= b'\r' && matches!(b, b'\n' | b'\r' | 0))
}

/// A buffered reply as ONE string, `status\n`, the headers flat, `\r`, then
/// the body: one string to decode on the JS side instead of an array and two
/// strings (each string out of wasm memory costs a `TextDecoder` call, about
/// 0.3 µs however short). `\r` cannot occur in a flat header, so the first one
/// ends them. `None` when the body is not empty nor UTF-8 of at most
/// [`STRING_BODY_MAX`] bytes with a content type (a string body without one
/// would get `text/plain` added), or a header cannot be flattened: the array
/// form then.
pub(crate) fn reply_text(status: u16, headers: &Headers, body: &[u8]) -> Option<String> {
    let text = if body.is_empty() {
        ""
    } else if body.len() <= STRING_BODY_MAX && headers.get("content-type").is_some() {
        std::str::from_utf8(body).ok()?
    } else {
        return None;
    };
    let mut out = String::with_capacity(512 + text.len());
    let _ = writeln!(out, "{status}");
    if !push_flat(&mut out, headers) {
        return None;
    }
    out.push('\r');
    out.push_str(text);
    Some(out)
}

/// A buffered reply as one string (see [`reply_text`]) when it can be;
/// otherwise `[status, headers, body]`: one array, not an object and a
/// property set per field. `headers` is the flat string (or `[name, value]`
/// pairs when a header cannot be flattened). A streamed body is
/// `[status, headers, null, stream]`, a WebSocket `[status, headers, null,
/// undefined, socket]`, each with its handle.
pub fn reply_to_js(reply: Reply) -> JsValue {
    if let Body::Bytes(b) = &reply.body {
        if let Some(text) = reply_text(reply.status, &reply.headers, b) {
            return JsValue::from_str(&text);
        }
    }
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
        Body::Bytes(b) => Array::of3(&status, &headers, &body_to_js(&b)),
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

/// Bodies up to this size that are UTF-8 (with a content type) cross as a
/// string, in the reply's string form ([`reply_text`]): Deno hands a string
/// body to its server without a backing store, where a `Uint8Array` costs an
/// `ArrayBuffer` allocation and its bookkeeping, a few µs per response.
const STRING_BODY_MAX: usize = 16 * 1024;

/// A buffered body of the array form for `new Response(body)`: bytes, or
/// `null` when empty (a text body took the string form, unless a header could
/// not be flattened, and then Deno refuses the reply whatever its body).
fn body_to_js(b: &[u8]) -> JsValue {
    if b.is_empty() {
        return JsValue::NULL;
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

    /// The full parse as it was before `FlatHeaders`: the reference the
    /// in-place look-ups are checked against.
    fn parse_reference(flat: &str) -> Headers {
        let mut headers = Headers::new();
        let mut parts = flat.split('\n');
        while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            if !k.is_empty() {
                headers.append(k, v);
            }
        }
        headers
    }

    #[test]
    fn a_look_up_in_place_answers_what_the_full_parse_answers() {
        let flats = [
            "",
            "\n",
            "origin\n",
            "origin\nhttps://a.example\n",
            "origin\nhttps://a.example",
            "Origin\nhttps://A.example\nx-request-id\n abc \n",
            "x-request-id\none\nx-request-id\ntwo\norigin\n\n",
            "\nx-request-id\norigin\nhttps://b.example\n",
            "\n\norigin\nhttps://c.example\nX-REQUEST-ID\nid-1\n",
            "a\n1\n\n2\norigin\no\n",
            "content-type\napplication/json\norigin\né ✓\nx-request-id\n\n",
        ];
        for flat in flats {
            let full = parse_reference(flat);
            let view = FlatHeaders(flat);
            let names = [
                "origin",
                "x-request-id",
                "ORIGIN",
                "X-Request-Id",
                "a",
                "content-type",
                "",
                "missing",
            ];
            for name in names {
                for other in names {
                    if !other.eq_ignore_ascii_case(name) {
                        assert_eq!(
                            view.get2(name, other),
                            (full.get(name), full.get(other)),
                            "{flat:?} {name:?} {other:?}"
                        );
                    }
                }
            }
            assert_eq!(view.parse(), full, "{flat:?}");
            assert_eq!(headers_from_flat(flat), full, "{flat:?}");
        }
    }

    #[test]
    fn lines_come_out_as_split_gives_them() {
        for s in ["", "\n", "a", "a\n", "a\nb", "\n\na\n\n", "é\n✓\n"] {
            let mut rest = Some(s);
            let pieces: Vec<&str> = std::iter::from_fn(|| next_line(&mut rest)).collect();
            assert_eq!(pieces, s.split('\n').collect::<Vec<_>>(), "{s:?}");
        }
    }

    #[test]
    fn a_reply_crosses_as_one_string_when_its_body_is_text() {
        let mut h = Headers::new();
        h.append("content-type", "application/json");
        h.append("x-empty", "");
        h.append("x-request-id", "r-1");
        let text = reply_text(405, &h, b"{\"a\":\"\r\n\"}").expect("text");
        assert_eq!(
            text,
            "405\ncontent-type\napplication/json\nx-empty\n\nx-request-id\nr-1\n\r{\"a\":\"\r\n\"}"
        );
        // The first \r ends the headers, whatever the body holds.
        let (head, body) = text.split_once('\r').expect("separator");
        let (status, flat) = head.split_once('\n').expect("status line");
        assert_eq!((status, body), ("405", "{\"a\":\"\r\n\"}"));
        assert_eq!(headers_from_flat(flat), h);
        for status in [100, 204, 999, 65535] {
            let text = reply_text(status, &Headers::new(), b"").expect("text");
            assert_eq!(text, format!("{status}\n\r"));
        }
    }

    #[test]
    fn a_reply_that_is_not_text_keeps_the_array_form() {
        let mut typed = Headers::new();
        typed.append("content-type", "application/octet-stream");
        // Not UTF-8, or no content type (a string body would get text/plain), or large.
        assert_eq!(reply_text(200, &typed, &[0xff, 0xfe]), None);
        assert_eq!(reply_text(200, &Headers::new(), b"plain"), None);
        assert_eq!(reply_text(200, &typed, &vec![b'a'; STRING_BODY_MAX + 1]), None);
        // A header that cannot be flattened.
        let mut bad = Headers::new();
        bad.append("x-bad", "a\rb");
        assert_eq!(reply_text(204, &bad, b""), None);
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
