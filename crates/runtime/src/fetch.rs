//! The one HTTP client: the host's `fetch`, with an AbortController deadline
//! that covers the whole exchange (headers and body). Dropping an exchange
//! before it finished (the client of a stream went away) aborts it, so the
//! upstream sees the disconnect instead of a request nobody reads.
//!
//! A buffered exchange is one call into the adapter's `__edgeworksFetch`
//! (supabase/functions/_shared/serve.ts): headers cross as one flat string
//! each way, the deadline's timer lives and is cleared in JavaScript, and the
//! body comes back with the status in one promise. Where no adapter installed
//! it (the wasm run some other way), the same exchange is driven from here.

use edgeworks_core::http::Headers;
use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Request, Response};
use js_sys::{Function, Promise, Uint8Array};

use crate::convert::{field, headers_from_flat, headers_to_flat};
use crate::host::StreamedResponse;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// `fetch(url, init)`: handing fetch a `Request` object would have it build
    /// a second one from the first.
    #[wasm_bindgen(catch, js_name = fetch)]
    fn js_fetch(url: &str, init: &web_sys::RequestInit) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(cb: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    /// `__edgeworksFetch(method, url, flatHeaders, body, timeoutMs)`: a promise
    /// of `{status, headers, body}` (headers flat, `name\nvalue\n`), rejected
    /// with `{timeout, message}`; the promise's `abort()` stops the exchange.
    /// The body is a view of wasm memory, which the helper copies at once.
    #[wasm_bindgen(catch, js_name = __edgeworksFetch)]
    fn adapter_fetch(method: &str, url: &str, headers: &str, body: &[u8], timeout_ms: u32) -> Result<Promise, JsValue>;
}

/// Resolves after `ms` milliseconds (for backoff, polling, keep-alives).
/// Dropped early (a stream ended, a select picked the other side), it clears
/// its timer, so an idle keep-alive leaves nothing scheduled behind it.
pub fn sleep_ms(ms: u32) -> Sleep {
    let mut timer = JsValue::UNDEFINED;
    let p = Promise::new(&mut |resolve, _| {
        timer = set_timeout(&resolve, ms.min(i32::MAX as u32) as i32);
    });
    Sleep {
        timer,
        fut: JsFuture::from(p),
    }
}

/// The future of [`sleep_ms`].
pub struct Sleep {
    timer: JsValue,
    fut: JsFuture,
}

impl std::future::Future for Sleep {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.fut).poll(cx).map(|_| ())
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // Harmless after it fired; before, the promise never settles and is
        // collected with the future.
        clear_timeout(&self.timer);
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FetchClient;

fn js_error_text(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "fetch failed".to_string())
}

/// The `init` of a fetch. Headers go as `[name, value]` pairs (duplicates kept),
/// which fetch validates once while building its request; a `Headers` object
/// would be built and validated, then copied.
fn js_init(req: &Request, signal: &web_sys::AbortSignal) -> web_sys::RequestInit {
    let init = web_sys::RequestInit::new();
    init.set_method(req.method.as_str());
    let headers = js_sys::Array::new();
    for (k, v) in req.headers.iter() {
        headers.push(&js_sys::Array::of2(&JsValue::from_str(k), &JsValue::from_str(v)));
    }
    init.set_headers(&headers);
    if !req.body.is_empty() {
        init.set_body(&Uint8Array::from(req.body.as_slice()));
    }
    init.set_signal(Some(signal));
    init
}

/// `fetch` itself, a synchronous throw (a bad URL or header) as a rejection.
fn fetch(req: &Request, signal: &web_sys::AbortSignal) -> JsFuture {
    let promise = js_fetch(&req.url, &js_init(req, signal)).unwrap_or_else(|e| Promise::reject(&e));
    JsFuture::from(promise)
}

fn headers_of(resp: &web_sys::Response) -> Headers {
    let mut out = Headers::new();
    if let Ok(Some(iter)) = js_sys::try_iter(&resp.headers()) {
        for entry in iter.flatten() {
            let pair = js_sys::Array::from(&entry);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.append(&k, v);
            }
        }
    }
    out
}

/// Aborts the exchange when the body's reader is dropped before the end.
struct AbortOnDrop(web_sys::AbortController);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // After the body ended this is a no-op.
        self.0.abort();
    }
}

struct BodyReader {
    reader: JsValue,
    read: Function,
    _abort: AbortOnDrop,
}

impl BodyReader {
    async fn next(&self) -> Option<Result<Vec<u8>, TransportError>> {
        let promise = match self.read.call0(&self.reader) {
            Ok(p) => Promise::from(p),
            Err(e) => return Some(Err(TransportError::Network(js_error_text(&e)))),
        };
        match JsFuture::from(promise).await {
            Ok(result) => {
                let done = js_sys::Reflect::get(&result, &"done".into())
                    .map(|d| d.is_truthy())
                    .unwrap_or(true);
                if done {
                    return None;
                }
                let value = js_sys::Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
                Some(Ok(Uint8Array::new(&value).to_vec()))
            }
            Err(e) => Some(Err(TransportError::Network(js_error_text(&e)))),
        }
    }
}

/// `fetch` resolving at the headers; the body is read chunk by chunk from
/// its `ReadableStream`. The deadline covers the headers; dropping the body
/// stream aborts the request (a stopped answer stops the upstream).
pub async fn send_streaming(req: Request, timeout_ms: u32) -> Result<StreamedResponse, TransportError> {
    let controller = web_sys::AbortController::new().map_err(|e| TransportError::Network(js_error_text(&e)))?;
    let signal = controller.signal();
    let mut timer = Deadline::arm(controller.clone(), timeout_ms);
    let fail = |e: JsValue| {
        if signal.aborted() {
            TransportError::Timeout { after_ms: timeout_ms }
        } else {
            TransportError::Network(js_error_text(&e))
        }
    };
    let resp: web_sys::Response = match fetch(&req, &signal).await {
        Ok(r) => r.dyn_into().map_err(fail)?,
        Err(e) => return Err(fail(e)),
    };
    timer.finished = true;
    drop(timer);
    let status = resp.status();
    let headers = headers_of(&resp);
    let body = js_sys::Reflect::get(&resp, &"body".into()).unwrap_or(JsValue::NULL);
    let guard = AbortOnDrop(controller);
    if body.is_null() || body.is_undefined() {
        return Ok(StreamedResponse {
            status,
            headers,
            body: Box::pin(futures_util::stream::empty()),
        });
    }
    let get_reader: Function = js_sys::Reflect::get(&body, &"getReader".into())
        .and_then(|f| f.dyn_into())
        .map_err(fail)?;
    let reader = get_reader.call0(&body).map_err(fail)?;
    let read: Function = js_sys::Reflect::get(&reader, &"read".into())
        .and_then(|f| f.dyn_into())
        .map_err(fail)?;
    let state = BodyReader {
        reader,
        read,
        _abort: guard,
    };
    let chunks = futures_util::stream::unfold(Some(state), |state| async move {
        let s = state?;
        match s.next().await {
            Some(Ok(chunk)) => Some((Ok(chunk), Some(s))),
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    });
    Ok(StreamedResponse {
        status,
        headers,
        body: Box::pin(chunks),
    })
}

impl FetchClient {
    async fn exchange(&self, req: Request, signal: &web_sys::AbortSignal) -> Result<Response, JsValue> {
        let resp: web_sys::Response = fetch(&req, signal).await?.dyn_into()?;
        let out_headers = headers_of(&resp);
        let buf = JsFuture::from(resp.array_buffer()?).await?;
        Ok(Response {
            status: resp.status(),
            headers: out_headers,
            body: Uint8Array::new(&buf).to_vec(),
        })
    }
}

/// The abort timer of one exchange. The closure is owned here, not handed to
/// JS with `Closure::once_into_js`: a once-closure is only freed when it
/// runs, so every fetch that finished before its deadline leaked the closure
/// and its AbortController. Dropping this clears the timer first (so JS can
/// never call a freed closure, even when the request future is dropped
/// mid-await), then frees the closure.
struct Deadline {
    timer: JsValue,
    _abort: Closure<dyn FnMut()>,
    controller: web_sys::AbortController,
    finished: bool,
}

impl Deadline {
    fn arm(controller: web_sys::AbortController, timeout_ms: u32) -> Deadline {
        let on_timeout = controller.clone();
        let abort = Closure::<dyn FnMut()>::new(move || on_timeout.abort());
        let timer = set_timeout(abort.as_ref().unchecked_ref(), timeout_ms.min(i32::MAX as u32) as i32);
        Deadline {
            timer,
            _abort: abort,
            controller,
            finished: false,
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        clear_timeout(&self.timer);
        if !self.finished {
            self.controller.abort();
        }
    }
}

/// An exchange through the adapter's helper; dropped before it settled (the
/// request future was dropped), it aborts the fetch.
struct AdapterExchange {
    promise: Promise,
    settled: bool,
}

impl Drop for AdapterExchange {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(abort) = js_sys::Reflect::get(&self.promise, &"abort".into()).and_then(|f| f.dyn_into::<Function>()) {
            let _ = abort.call0(&self.promise);
        }
    }
}

/// The exchange through `__edgeworksFetch`, or `None` when no adapter
/// installed it (or a header cannot be flattened: then the fetch below
/// refuses it as it always has).
async fn send_through_adapter(req: &Request, timeout_ms: u32) -> Option<Result<Response, TransportError>> {
    let flat = headers_to_flat(&req.headers)?;
    let promise = adapter_fetch(req.method.as_str(), &req.url, &flat, &req.body, timeout_ms).ok()?;
    let mut exchange = AdapterExchange {
        promise: promise.clone(),
        settled: false,
    };
    let outcome = JsFuture::from(promise).await;
    exchange.settled = true;
    Some(match outcome {
        Ok(reply) => {
            let status = field(&reply, |k| &k.status).as_f64().unwrap_or(0.0) as u16;
            let headers = headers_from_flat(&field(&reply, |k| &k.headers).as_string().unwrap_or_default());
            let body = field(&reply, |k| &k.body);
            let body = if body.is_object() {
                Uint8Array::new(&body).to_vec()
            } else {
                Vec::new()
            };
            Ok(Response { status, headers, body })
        }
        Err(e) => {
            let timeout = js_sys::Reflect::get(&e, &"timeout".into()).is_ok_and(|t| t.is_truthy());
            if timeout {
                Err(TransportError::Timeout { after_ms: timeout_ms })
            } else {
                let message = js_sys::Reflect::get(&e, &"message".into())
                    .ok()
                    .and_then(|m| m.as_string())
                    .unwrap_or_else(|| js_error_text(&e));
                Err(TransportError::Network(message))
            }
        }
    })
}

impl HttpClient for FetchClient {
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError> {
        if let Some(result) = send_through_adapter(&req, timeout_ms).await {
            return result;
        }
        let controller = web_sys::AbortController::new().map_err(|e| TransportError::Network(js_error_text(&e)))?;
        let signal = controller.signal();
        let mut timer = Deadline::arm(controller, timeout_ms);
        let result = self.exchange(req, &signal).await;
        timer.finished = true;
        drop(timer);
        result.map_err(|e| {
            if signal.aborted() {
                TransportError::Timeout { after_ms: timeout_ms }
            } else {
                TransportError::Network(js_error_text(&e))
            }
        })
    }
}
