//! The JavaScript host: `Date.now()`, `crypto.getRandomValues`, the console,
//! `fetch`, `setTimeout` and the code sandbox's runner, plus the handles through which the shim pulls a
//! streamed body and drives a WebSocket session.

#[cfg(feature = "streams")]
use std::cell::RefCell;
#[cfg(feature = "streams")]
use std::rc::Rc;

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Request, Response};
#[cfg(feature = "streams")]
use futures_util::stream::{AbortHandle, Abortable};
#[cfg(feature = "streams")]
use futures_util::StreamExt;
#[cfg(feature = "streams")]
use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
#[cfg(feature = "streams")]
use wasm_bindgen_futures::future_to_promise;

use crate::code::{CodeReport, CodeRun};
use crate::fetch::{send_streaming, sleep_ms, FetchClient};
use crate::host::{Host, Level, LocalFuture, StreamedResponse};
#[cfg(feature = "streams")]
use crate::reply::ByteStream;
#[cfg(feature = "streams")]
use crate::socket::{CloseFrame, Message, Outgoing, SocketFeed, SocketSession, WebSocket};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(s: &str);
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
    /// Installed by a shim that runs code (`installSandbox` in
    /// supabase/functions/_shared/sandbox.ts): JSON `CodeRun` in, a promise of JSON
    /// `CodeReport` out. Absent elsewhere, which `catch` turns into an `Err`.
    #[wasm_bindgen(catch, js_name = __edgeworksRunCode)]
    fn run_code_js(run: &str) -> Result<js_sys::Promise, JsValue>;
}

const RANDOM_POOL_BYTES: usize = 4096;

thread_local! {
    /// Host randomness not yet handed out: the bytes, and how many are used.
    static RANDOM_POOL: std::cell::RefCell<(Vec<u8>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

fn host_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_err() {
        // Without a CSPRNG nothing that needs one may proceed.
        panic!("host randomness unavailable");
    }
}

/// What a function's host links in beyond the basics (clock, randomness,
/// logs, fetch, timers). `Ctx` holds a `dyn Host`, and a vtable links every
/// method it names, whether called or not; so each function's route
/// declares what it uses, and an undeclared capability is the trait's
/// default (buffered fetch, work run inline, no outbound sockets, no
/// sandbox), leaving its JavaScript glue out of that function's wasm.
pub mod caps {
    /// Nothing beyond the basics.
    pub const NONE: u8 = 0;
    /// `Host::send_streaming` reads the upstream body as it arrives.
    pub const STREAMING_FETCH: u8 = 1;
    /// `Host::spawn` hands work to `EdgeRuntime.waitUntil`.
    pub const BACKGROUND: u8 = 2;
    /// `Host::connect_websocket` (with the `streams` feature).
    pub const OUTBOUND_SOCKETS: u8 = 4;
    /// `Host::run_code` calls the sandbox runner a shim installs.
    pub const SANDBOX: u8 = 8;
    /// Everything (test fixtures).
    pub const ALL: u8 = STREAMING_FETCH | BACKGROUND | OUTBOUND_SOCKETS | SANDBOX;
}

/// The host of the wasm build, with the capabilities in `CAPS` ([`caps`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsHost<const CAPS: u8 = { caps::ALL }>;

impl<const CAPS: u8> Host for JsHost<CAPS> {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }

    fn fill_random(&self, buf: &mut [u8]) {
        // `crypto.getRandomValues` costs a call across the boundary however
        // few bytes it fills (a request id takes 16): small requests are served
        // from a pool of host randomness filled 4 KiB at a time. Each byte is
        // handed out once; the bytes are the host CSPRNG's, unchanged.
        if buf.len() > RANDOM_POOL_BYTES / 4 {
            return host_random(buf);
        }
        RANDOM_POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let (bytes, used) = &mut *pool;
            if bytes.is_empty() {
                bytes.resize(RANDOM_POOL_BYTES, 0);
                *used = RANDOM_POOL_BYTES;
            }
            if RANDOM_POOL_BYTES - *used < buf.len() {
                host_random(bytes);
                *used = 0;
            }
            let taken = &mut bytes[*used..*used + buf.len()];
            buf.copy_from_slice(taken);
            // Never handed out twice, even if a later fill failed half-way.
            taken.fill(0);
            *used += buf.len();
        })
    }

    fn write_log(&self, level: Level, line: &str) {
        match level {
            Level::Debug | Level::Info => console_log(line),
            Level::Warn | Level::Error => console_error(line),
        }
    }

    fn send(&self, req: Request, timeout_ms: u32) -> LocalFuture<'static, Result<Response, TransportError>> {
        Box::pin(async move { FetchClient.send(req, timeout_ms).await })
    }

    fn sleep(&self, ms: u32) -> LocalFuture<'static, ()> {
        Box::pin(sleep_ms(ms))
    }

    fn send_streaming(
        &self,
        req: Request,
        timeout_ms: u32,
    ) -> LocalFuture<'static, Result<StreamedResponse, TransportError>> {
        if CAPS & caps::STREAMING_FETCH == 0 {
            let exchange = self.send(req, timeout_ms);
            return Box::pin(async move { exchange.await.map(StreamedResponse::buffered) });
        }
        Box::pin(send_streaming(req, timeout_ms))
    }

    fn run_code(&self, run: CodeRun) -> LocalFuture<'static, Option<Result<CodeReport, String>>> {
        if CAPS & caps::SANDBOX == 0 {
            return Box::pin(async { None });
        }
        Box::pin(async move {
            let request = match serde_json::to_string(&run) {
                Ok(r) => r,
                Err(e) => return Some(Err(format!("encoding the run: {e}"))),
            };
            let promise = run_code_js(&request).ok()?;
            Some(match wasm_bindgen_futures::JsFuture::from(promise).await {
                Ok(v) => match v.as_string() {
                    Some(text) => serde_json::from_str(&text).map_err(|e| format!("decoding the report: {e}")),
                    None => Err("the sandbox answered something other than JSON text".to_owned()),
                },
                Err(e) => Err(format!(
                    "the sandbox failed: {}",
                    e.as_string().unwrap_or_else(|| format!("{e:?}"))
                )),
            })
        })
    }

    #[cfg(feature = "streams")]
    fn connect_websocket(
        &self,
        url: &str,
        protocols: &[String],
    ) -> LocalFuture<'static, Result<WebSocket, TransportError>> {
        if CAPS & caps::OUTBOUND_SOCKETS == 0 {
            return Box::pin(async {
                Err(TransportError::Network(
                    "outbound WebSockets are not among this function's capabilities (Route::capabilities)".into(),
                ))
            });
        }
        let (url, protocols) = (url.to_string(), protocols.to_vec());
        Box::pin(async move { outbound::connect(&url, &protocols).await })
    }

    fn spawn(&self, work: LocalFuture<'static, ()>) -> Result<(), LocalFuture<'static, ()>> {
        if CAPS & caps::BACKGROUND == 0 {
            return Err(work);
        }
        let promise = wasm_bindgen_futures::future_to_promise(async move {
            work.await;
            Ok(JsValue::UNDEFINED)
        });
        // The hosted runtime keeps the isolate alive for promises handed to
        // EdgeRuntime.waitUntil (the local supervisor counts them); plain
        // Deno runs the promise anyway.
        let global = js_sys::global();
        if let Ok(runtime) = js_sys::Reflect::get(&global, &"EdgeRuntime".into()) {
            if let Ok(wait_until) = js_sys::Reflect::get(&runtime, &"waitUntil".into()) {
                if let Some(f) = wasm_bindgen::JsCast::dyn_ref::<js_sys::Function>(&wait_until) {
                    let _ = f.call1(&runtime, &promise);
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "streams")]
/// A streamed body as the shim sees it: `next()` resolves to the next chunk
/// or `undefined` at the end; `cancel()` (the client went away) drops the
/// producer at once, even mid-await, which drops (and aborts) any fetch it
/// was waiting on.
#[wasm_bindgen]
pub struct StreamHandle {
    inner: Rc<RefCell<Option<Abortable<ByteStream>>>>,
    abort: AbortHandle,
}

#[cfg(feature = "streams")]
impl StreamHandle {
    pub(crate) fn new(stream: ByteStream) -> StreamHandle {
        let (abort, registration) = AbortHandle::new_pair();
        StreamHandle {
            inner: Rc::new(RefCell::new(Some(Abortable::new(stream, registration)))),
            abort,
        }
    }
}

#[cfg(feature = "streams")]
#[wasm_bindgen]
impl StreamHandle {
    /// The next chunk (`Uint8Array`) or `undefined` when the stream ended.
    pub fn next(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            // Taken out while awaited: the stream is polled by one pull at a time.
            let taken = inner.borrow_mut().take();
            let Some(mut stream) = taken else {
                return Ok(JsValue::UNDEFINED);
            };
            match stream.next().await {
                Some(chunk) => {
                    *inner.borrow_mut() = Some(stream);
                    Ok(Uint8Array::from(chunk.as_slice()).into())
                }
                None => Ok(JsValue::UNDEFINED),
            }
        })
    }

    /// The client went away: stop the producer.
    pub fn cancel(&self) {
        self.abort.abort();
        drop(self.inner.borrow_mut().take());
    }
}

#[cfg(feature = "streams")]
/// A WebSocket session as the shim sees it: `start(send, close)` runs it
/// (the promise settles when the session ends), `message(data)` and
/// `closed(code, reason)` feed it what arrives.
#[wasm_bindgen]
pub struct SocketHandle {
    session: RefCell<Option<SocketSession>>,
    feed: RefCell<Option<SocketFeed>>,
}

#[cfg(feature = "streams")]
impl SocketHandle {
    pub(crate) fn new(session: SocketSession) -> SocketHandle {
        SocketHandle {
            session: RefCell::new(Some(session)),
            feed: RefCell::new(None),
        }
    }
}

#[cfg(feature = "streams")]
#[wasm_bindgen]
impl SocketHandle {
    /// Runs the session; `send(data)` and `close(code, reason)` reach the socket.
    pub fn start(&self, send: Function, close: Function) -> Promise {
        let out = Rc::new(move |o: Outgoing| {
            let _ = match o {
                Outgoing::Message(Message::Text(s)) => send.call1(&JsValue::NULL, &JsValue::from_str(&s)),
                Outgoing::Message(Message::Binary(b)) => {
                    send.call1(&JsValue::NULL, &Uint8Array::from(b.as_slice()).into())
                }
                Outgoing::Close(f) => close.call2(&JsValue::NULL, &f.code.into(), &JsValue::from_str(&f.reason)),
            };
        });
        let (ws, feed) = WebSocket::pair(out);
        *self.feed.borrow_mut() = Some(feed);
        let session = self.session.borrow_mut().take();
        future_to_promise(async move {
            if let Some(session) = session {
                session(ws).await;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// A frame arrived: a string is text, anything else binary.
    pub fn message(&self, data: JsValue) {
        let m = match data.as_string() {
            Some(s) => Message::Text(s),
            None => Message::Binary(Uint8Array::new(&data).to_vec()),
        };
        if let Some(feed) = self.feed.borrow().as_ref() {
            feed.push(m);
        }
    }

    /// The connection closed.
    pub fn closed(&self, code: u16, reason: String) {
        if let Some(feed) = self.feed.borrow().as_ref() {
            feed.closed(CloseFrame { code, reason });
        }
    }
}

#[cfg(feature = "streams")]
/// Outbound WebSockets through the global `WebSocket` (Deno's), driven the
/// same way as the upgraded ones: frames feed a [`SocketFeed`], sends and the
/// close go through the JS socket.
mod outbound {
    use std::cell::RefCell;
    use std::rc::Rc;

    use std::future::poll_fn;
    use std::task::{Poll, Waker};

    use edgeworks_core::http_client::TransportError;
    use js_sys::{Array, Function, Reflect, Uint8Array};
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    use crate::socket::{CloseFrame, Message, Outgoing, WebSocket};

    const HANDLERS: [&str; 4] = ["onopen", "onmessage", "onclose", "onerror"];

    /// Owns the JS socket and its handlers. Dropped (the Rust side is done),
    /// it detaches the handlers first, so JS never calls a freed closure,
    /// then closes the socket.
    struct Guard {
        socket: JsValue,
        _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for h in HANDLERS {
                let _ = Reflect::set(&self.socket, &h.into(), &JsValue::NULL);
            }
            if let Ok(close) = Reflect::get(&self.socket, &"close".into()).and_then(|f| f.dyn_into::<Function>()) {
                let _ = close.call0(&self.socket);
            }
        }
    }

    fn call(target: &JsValue, method: &str, args: &[JsValue]) {
        if let Ok(f) = Reflect::get(target, &method.into()).and_then(|f| f.dyn_into::<Function>()) {
            let _ = f.apply(target, &args.iter().collect::<Array>());
        }
    }

    /// Whether the socket opened, once known, and who waits for it.
    #[derive(Default)]
    struct Opening {
        outcome: Option<Result<(), String>>,
        waker: Option<Waker>,
    }

    fn settle(o: &RefCell<Opening>, outcome: Result<(), String>) {
        let mut o = o.borrow_mut();
        if o.outcome.is_none() {
            o.outcome = Some(outcome);
            if let Some(w) = o.waker.take() {
                w.wake();
            }
        }
    }

    pub async fn connect(url: &str, protocols: &[String]) -> Result<WebSocket, TransportError> {
        let fail = |e: JsValue| TransportError::Network(e.as_string().unwrap_or_else(|| "WebSocket failed".into()));
        let ctor: Function = Reflect::get(&js_sys::global(), &"WebSocket".into())
            .and_then(|c| c.dyn_into())
            .map_err(fail)?;
        let list: Array = protocols.iter().map(|p| JsValue::from_str(p)).collect();
        let socket = Reflect::construct(&ctor, &Array::of2(&JsValue::from_str(url), &list)).map_err(fail)?;
        let _ = Reflect::set(&socket, &"binaryType".into(), &"arraybuffer".into());

        let opened_tx = Rc::new(RefCell::new(Opening::default()));
        let feed_slot: Rc<RefCell<Option<crate::socket::SocketFeed>>> = Rc::new(RefCell::new(None));

        let tx = opened_tx.clone();
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| settle(&tx, Ok(())));
        let feed = feed_slot.clone();
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let data = Reflect::get(&ev, &"data".into()).unwrap_or(JsValue::UNDEFINED);
            let m = match data.as_string() {
                Some(s) => Message::Text(s),
                None => Message::Binary(Uint8Array::new(&data).to_vec()),
            };
            if let Some(f) = feed.borrow().as_ref() {
                f.push(m);
            }
        });
        let feed = feed_slot.clone();
        let tx = opened_tx.clone();
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let code = Reflect::get(&ev, &"code".into())
                .ok()
                .and_then(|c| c.as_f64())
                .unwrap_or(1006.0) as u16;
            let reason = Reflect::get(&ev, &"reason".into())
                .ok()
                .and_then(|r| r.as_string())
                .unwrap_or_default();
            settle(&tx, Err(format!("closed before opening ({code})")));
            if let Some(f) = feed.borrow().as_ref() {
                f.closed(CloseFrame { code, reason });
            }
        });
        let tx = opened_tx.clone();
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_| settle(&tx, Err("connection failed".into())));
        for (name, h) in HANDLERS.iter().zip([&on_open, &on_message, &on_close, &on_error]) {
            let _ = Reflect::set(&socket, &(*name).into(), h.as_ref().unchecked_ref());
        }
        let guard = Rc::new(Guard {
            socket: socket.clone(),
            _handlers: vec![on_open, on_message, on_close, on_error],
        });
        let out_guard = guard.clone();
        let out = Rc::new(move |o: Outgoing| {
            let s = &out_guard.socket;
            match o {
                Outgoing::Message(Message::Text(t)) => call(s, "send", &[JsValue::from_str(&t)]),
                Outgoing::Message(Message::Binary(b)) => call(s, "send", &[Uint8Array::from(b.as_slice()).into()]),
                Outgoing::Close(f) => call(s, "close", &[f.code.into(), JsValue::from_str(&f.reason)]),
            }
        });
        let (ws, feed) = WebSocket::pair(out);
        *feed_slot.borrow_mut() = Some(feed);
        drop(guard);
        let outcome = poll_fn(|cx| {
            let mut o = opened_tx.borrow_mut();
            match o.outcome.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    o.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        outcome.map(|()| ws).map_err(TransportError::Network)
    }
}
