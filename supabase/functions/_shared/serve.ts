// The one Deno.serve adapter shared by every function. It turns a Request into
// the plain method, URL, headers and body the wasm `handle` export takes and the
// answer back into a Response. If the wasm traps (a Rust panic aborts), every
// request in flight on that instance is answered with a 500 envelope and the
// module is re-instantiated, so the next request succeeds.
//
// A reply may also be a stream Rust produces (the adapter hands Deno a
// ReadableStream that pulls from it; the client going away cancels the Rust
// producer) or a WebSocket session (the adapter upgrades with
// Deno.upgradeWebSocket and relays frames both ways). A trap mid-stream ends
// an event stream with an `error` event and closes a socket with 1011.

import { Exchange, flatHeaderPairs, Http1Failure, Http1Pool } from "./http1.ts";
import { type Bytes, replyHeaders, WasmFunction, type WasmGlue, type WasmReply, type WasmResponse } from "./loader.ts";

/** Supabase's edge runtime keeps an isolate alive while these promises run. */
declare const EdgeRuntime: { waitUntil(p: Promise<unknown>): void } | undefined;

const encoder = new TextEncoder();

/** The SSE frame a stream ends with when the instance trapped under it. */
function crashEvent(requestId: string): Uint8Array {
  const data = JSON.stringify({
    code: "function_crashed",
    message: "the function crashed while streaming",
    request_id: requestId,
  });
  return encoder.encode(`event: error\ndata: ${data}\n\n`);
}

/** A ReadableStream over Rust's stream. A trap (via `register`) closes it, after an SSE error event. */
function streamBody(
  out: WasmResponse & { stream: NonNullable<WasmResponse["stream"]> },
  register: (onTrap: () => void) => () => void,
  requestId: string,
): ReadableStream<Uint8Array> {
  const handle = out.stream;
  const isSse = out.headers.some(([k, v]) => k.toLowerCase() === "content-type" && v.startsWith("text/event-stream"));
  let done = false;
  let unregister = () => {};
  const finish = () => {
    if (done) return;
    done = true;
    unregister();
    handle.free();
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      unregister = register(() => {
        // The instance is gone: its handle must not be touched again.
        done = true;
        unregister();
        try {
          if (isSse) controller.enqueue(crashEvent(requestId));
          controller.close();
        } catch { /* already closed */ }
      });
    },
    async pull(controller) {
      if (done) return;
      const chunk = await handle.next();
      if (done) return;
      if (chunk === undefined) {
        finish();
        controller.close();
      } else {
        controller.enqueue(chunk);
      }
    },
    cancel() {
      // The client went away: Rust drops the producer and any fetch it awaits.
      if (done) return;
      handle.cancel();
      finish();
    },
  });
}

/** Upgrades `req` and relays frames between the client and Rust's session. */
function upgradeSocket(
  req: Request,
  out: WasmResponse & { socket: NonNullable<WasmResponse["socket"]> },
  register: (onTrap: () => void) => () => void,
): Response {
  const protocol = out.headers.find(([k]) => k.toLowerCase() === "sec-websocket-protocol")?.[1];
  const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
  socket.binaryType = "arraybuffer";
  const handle = out.socket;
  let alive = true;
  const ended = Promise.withResolvers<void>();
  const unregister = register(() => {
    alive = false;
    try {
      socket.close(1011, "function_crashed");
    } catch { /* already closed */ }
    ended.resolve();
  });
  const finish = () => {
    if (!alive) return;
    alive = false;
    unregister();
    handle.free();
    ended.resolve();
  };
  socket.onopen = () => {
    if (!alive) return;
    const send = (data: string | Bytes) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(data);
    };
    const close = (code: number, reason: string) => {
      if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
    };
    // A trap never settles this promise; the trap listener ends the socket instead.
    handle.start(send, close).then(() => {
      if (!alive) return;
      if (socket.readyState === WebSocket.OPEN) socket.close(1000, "");
      finish();
    }, () => {});
  };
  socket.onmessage = (e) => {
    if (alive) handle.message(typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer));
  };
  socket.onclose = (e) => {
    if (alive) handle.closed(e.code, e.reason);
  };
  // On the hosted runtime a socket lives only while a waitUntil promise is open.
  if (typeof EdgeRuntime !== "undefined") EdgeRuntime.waitUntil(ended.promise);
  // Deno 2.1 (the hosted runtime's) makes the 101's headers immutable; the
  // request id and CORS headers are a courtesy there, not a requirement.
  try {
    for (const [k, v] of out.headers) {
      if (k.toLowerCase() !== "sec-websocket-protocol") response.headers.set(k, v);
    }
  } catch { /* immutable on this Deno */ }
  return response;
}

/** Hard cap on what the adapter reads; functions enforce their own lower limit. */
const DEFAULT_MAX_READ_BYTES = 32 * 1024 * 1024;
/** Total size of request headers the adapter accepts. */
const MAX_HEADER_BYTES = 32 * 1024;

function envelope(status: number, code: string, message: string, requestId: string): Response {
  return new Response(
    JSON.stringify({ success: false, error: { code, message }, request_id: requestId }),
    {
      status,
      headers: {
        "content-type": "application/json",
        "x-request-id": requestId,
        "access-control-allow-origin": "*",
      },
    },
  );
}

function isTrap(e: unknown): boolean {
  return e instanceof WebAssembly.RuntimeError ||
    (e instanceof Error && /unreachable|RuntimeError/.test(`${e.name} ${e.message}`));
}

/**
 * A trapped instance's pending callbacks (a sleep's timer, a fetch still on the
 * wire) fire after the reset and reach the old instance's wasm-bindgen closures,
 * which refuse with this error. Their requests were already answered 500; left
 * unclaimed, the error would end the isolate and every request on it.
 */
function isStaleInstanceCallback(e: unknown): boolean {
  return e instanceof Error && e.message.includes("closure from previous WASM instance");
}

class BodyTooLarge extends Error {}

/** What `__edgeworksFetch` resolves to: headers flat, as in WasmRequest. */
interface FetchReply {
  status: number;
  headers: string;
  body: Bytes;
}

/** What it rejects with: a deadline that passed, or any other failure. */
interface FetchFailure {
  timeout: boolean;
  message: string;
}

/**
 * The Rust functions' buffered fetch (crates/runtime/src/fetch.rs), one call
 * per exchange: headers in and out as one flat string, the deadline's timer
 * set and cleared here, covering the headers and the body. `body` is a view of
 * wasm memory, so it is copied before anything else runs. The promise carries
 * `abort()`, which Rust calls when it drops an exchange still in flight.
 */
function edgeworksFetch(
  method: string,
  url: string,
  flatHeaders: string,
  body: Uint8Array,
  timeoutMs: number,
): Promise<FetchReply> & { abort: () => void } {
  const payload = body.length === 0 ? null : body.slice();
  const target = direct?.target(url);
  if (direct && target) return directExchange(direct, method, url, target, flatHeaders, payload, timeoutMs);
  return fetchExchange(method, url, flatHeaders, payload, timeoutMs);
}

/** edgeworksFetch through fetch. */
function fetchExchange(
  method: string,
  url: string,
  flatHeaders: string,
  payload: Bytes | null,
  timeoutMs: number,
): Promise<FetchReply> & { abort: () => void } {
  const headers = flatHeaderPairs(flatHeaders);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const exchange = (async (): Promise<FetchReply> => {
    try {
      const response = await fetch(url, { method, headers, body: payload, signal: controller.signal });
      const bytes = new Uint8Array(await response.arrayBuffer());
      let flat = "";
      response.headers.forEach((v, k) => (flat += `${k}\n${v}\n`));
      return { status: response.status, headers: flat, body: bytes };
    } catch (e) {
      const failure: FetchFailure = {
        timeout: timedOut,
        message: e instanceof Error ? e.message : String(e),
      };
      throw failure;
    } finally {
      clearTimeout(timer);
    }
  })() as Promise<FetchReply> & { abort: () => void };
  exchange.abort = () => controller.abort();
  // Rust awaits it unless it dropped the exchange; then its rejection is nobody's.
  exchange.catch(() => {});
  return exchange;
}

/**
 * The function's own project (SUPABASE_URL) through the keep-alive HTTP/1.1
 * client of http1.ts: a quarter of fetch's CPU per exchange. Set from the
 * function's environment; EDGEWORKS_HTTP_CLIENT=fetch sends everything to fetch.
 */
let direct: Http1Pool | null = null;
let directFor: string | null = null;

function configureDirect(env: Record<string, string>) {
  const origin = env.EDGEWORKS_HTTP_CLIENT === "fetch" ? "" : (env.SUPABASE_URL ?? "");
  if (origin === directFor) return;
  directFor = origin;
  direct?.close();
  try {
    direct = origin ? new Http1Pool(origin) : null;
  } catch {
    direct = null; // not an http(s) URL: fetch reports it
  }
}

/**
 * edgeworksFetch's contract (deadline, failure kinds, abort) over the direct
 * client. When no connection can be opened, nothing was sent: the exchange
 * goes to fetch instead, and if the runtime refuses sockets outright (a
 * permission), every later one too.
 */
function directExchange(
  pool: Http1Pool,
  method: string,
  url: string,
  target: string,
  flatHeaders: string,
  payload: Bytes | null,
  timeoutMs: number,
): Promise<FetchReply> & { abort: () => void } {
  const control = new Exchange();
  const started = performance.now();
  const timer = setTimeout(() => control.end(true), timeoutMs);
  let fallback: (Promise<FetchReply> & { abort: () => void }) | null = null;
  const exchange = (async (): Promise<FetchReply> => {
    try {
      return await pool.request(method, target, flatHeaders, payload, control);
    } catch (e) {
      if (e instanceof Http1Failure && e.unconnected && !control.ended) {
        if (e.unconnected instanceof Deno.errors.PermissionDenied || e.unconnected.name === "NotCapable") {
          if (direct === pool) direct = null;
          console.error(
            JSON.stringify({
              level: "warn",
              msg: "sockets refused; the project is reached through fetch",
              error: e.message,
            }),
          );
        }
        clearTimeout(timer);
        fallback = fetchExchange(
          method,
          url,
          flatHeaders,
          payload,
          Math.max(1, timeoutMs - (performance.now() - started)),
        );
        return await fallback;
      }
      const failure: FetchFailure = {
        timeout: e instanceof Http1Failure && e.timeout,
        message: e instanceof Error ? e.message : String(e),
      };
      throw failure;
    } finally {
      clearTimeout(timer);
    }
  })() as Promise<FetchReply> & { abort: () => void };
  exchange.abort = () => {
    control.end(false);
    fallback?.abort();
  };
  exchange.catch(() => {});
  return exchange;
}

function installFetch() {
  (globalThis as { __edgeworksFetch?: typeof edgeworksFetch }).__edgeworksFetch = edgeworksFetch;
}

// wasm-bindgen polls an async export's future from a microtask, so a panic
// there surfaces as an uncaught error on the global scope, not as a rejected
// promise; left alone it would end the isolate. One global listener claims
// traps and tells every adapter, which fails its in-flight requests and
// re-instantiates.
const trapListeners = new Set<(e: unknown) => void>();
let globalListenerInstalled = false;

function installTrapListener() {
  if (globalListenerInstalled) return;
  globalListenerInstalled = true;
  globalThis.addEventListener("error", (event: ErrorEvent) => {
    if (isStaleInstanceCallback(event.error)) return event.preventDefault();
    if (!isTrap(event.error)) return;
    event.preventDefault();
    for (const listener of trapListeners) listener(event.error);
  });
  globalThis.addEventListener("unhandledrejection", (event: PromiseRejectionEvent) => {
    if (isStaleInstanceCallback(event.reason)) return event.preventDefault();
    if (!isTrap(event.reason)) return;
    event.preventDefault();
    for (const listener of trapListeners) listener(event.reason);
  });
}

async function readBody(req: Request, limit: number): Promise<Bytes | null> {
  if (!req.body) return null;
  const length = req.headers.get("content-length");
  const declared = Number(length ?? "0");
  if (declared > limit) throw new BodyTooLarge();
  // Nothing to read (a PUT or POST without a body): leave the stream alone.
  if (length === "0") return null;
  if (length !== null && Number.isSafeInteger(declared) && declared >= 0) {
    // The length is known and within the limit (Deno's server refuses a body
    // that differs from it): read it whole. A stream reader would allocate a
    // 64 KiB buffer per request, even for an empty body.
    const body = new Uint8Array(await req.arrayBuffer());
    // A Request built by hand is not held to its header.
    if (body.byteLength > limit) throw new BodyTooLarge();
    return body;
  }
  // Chunked: read until the end or the limit, whichever comes first.
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw new BodyTooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** Bodiless replies' templates, by status and headers up to the request id. */
const templates = new Map<string, Response>();
const MAX_TEMPLATES = 32;

/**
 * A reply without a body (a preflight's 204, mostly) as a copy of a template.
 * Such replies repeat from one request to the next but for the request id,
 * which the pipeline sets last (crates/runtime/src/serve.rs `finish`).
 * `Response.clone()` copies a header list as it is, where building one from
 * pairs validates every name and value again: about 3 µs of a preflight's CPU,
 * on Deno 2.1 and today's. Only the id is set (and validated) per request; the
 * headers and their order are those the pairs would give.
 */
function bodiless(status: number, flat: string): Response {
  // The last pair: `name\nvalue\n` at the end (no name or value holds a line break).
  const valueStart = flat.lastIndexOf("\n", flat.length - 2) + 1;
  const nameStart = flat.lastIndexOf("\n", valueStart - 2) + 1;
  if (valueStart === 0 || flat.slice(nameStart, valueStart - 1) !== "x-request-id") {
    return new Response(null, { status, headers: replyHeaders(flat) });
  }
  const key = flat.slice(0, nameStart);
  let template = templates.get(key);
  if (template === undefined || template.status !== status) {
    template = new Response(null, { status, headers: replyHeaders(key) });
    if (templates.size >= MAX_TEMPLATES) templates.clear();
    templates.set(key, template);
  }
  const reply = template.clone();
  reply.headers.set("x-request-id", flat.slice(valueStart, flat.length - 1));
  return reply;
}

export interface AdapterOptions {
  /** The function's name (logged and passed to the wasm as EDGEWORKS_FUNCTION). */
  name: string;
  /** Environment given to the wasm; defaults to the process environment. */
  env?: () => Record<string, string>;
  maxReadBytes?: number;
}

/** Builds the fetch handler for one wasm function (exported for tests). */
export function createHandler(
  glue: WasmGlue,
  wasmUrl: URL,
  options: AdapterOptions,
): (req: Request) => Promise<Response> {
  const fn = new WasmFunction(glue, wasmUrl);
  const maxRead = options.maxReadBytes ?? DEFAULT_MAX_READ_BYTES;
  const readEnv = options.env ?? (() => Deno.env.toObject());
  let cachedEnv: Record<string, string> | null = null;

  // Each request in flight registers its own rejecter; a trap fails every
  // request still waiting on that instance instead of leaving it hanging.
  // Per-request deferreds (not one long-lived promise every request races
  // against) matter: a reaction attached to a promise that never settles is
  // never released, so racing a shared one leaked memory on every request.
  let generation = 0;
  let inFlight = new Set<(e: unknown) => void>();

  const onTrap = (e: unknown) => {
    console.error(
      JSON.stringify({ level: "error", fn: options.name, msg: "wasm trapped; instance reset", error: String(e) }),
    );
    const failed = inFlight;
    generation += 1;
    inFlight = new Set();
    for (const reject of failed) reject(e);
    try {
      fn.reset();
    } catch (resetError) {
      console.error(
        JSON.stringify({ level: "error", fn: options.name, msg: "wasm reset failed", error: String(resetError) }),
      );
    }
  };
  installTrapListener();
  installFetch();
  trapListeners.add(onTrap);

  // Streams and sockets outlive the call: they join the in-flight set of
  // their generation for as long as they run, so a trap reaches them too.
  const registerFor = (myGeneration: number) => (onTrap: () => void) => {
    const listener = () => onTrap();
    const set = inFlight;
    if (myGeneration !== generation) {
      queueMicrotask(onTrap);
      return () => {};
    }
    set.add(listener);
    return () => set.delete(listener);
  };

  return async (req: Request): Promise<Response> => {
    let headerBytes = 0;
    // The method and URL, then the headers flat: one string into the wasm.
    let request = `${req.method}\n${req.url}\n`;
    // forEach, not for-of: the same pairs without an iterator result per header
    // (a fifth of the adapter's own cost per request).
    req.headers.forEach((v, k) => {
      headerBytes += k.length + v.length + 4;
      request += `${k}\n${v}\n`;
    });
    if (headerBytes > MAX_HEADER_BYTES) {
      return envelope(
        431,
        "headers_too_large",
        `request headers exceed ${MAX_HEADER_BYTES} bytes`,
        crypto.randomUUID(),
      );
    }
    let body: Bytes | null = null;
    // No body (a GET, a PUT without one): no read, no await.
    if (req.body) {
      try {
        body = await readBody(req, maxRead);
      } catch (e) {
        if (e instanceof BodyTooLarge) {
          return envelope(413, "payload_too_large", `request body exceeds ${maxRead} bytes`, crypto.randomUUID());
        }
        return envelope(400, "unreadable_body", "the request body could not be read", crypto.randomUUID());
      }
    }

    if (!fn.loaded) {
      try {
        await fn.ready();
      } catch (e) {
        console.error(JSON.stringify({ level: "error", fn: options.name, msg: "wasm load failed", error: String(e) }));
        return envelope(503, "function_unavailable", "the function failed to load", crypto.randomUUID());
      }
    }

    if (cachedEnv === null) {
      cachedEnv = { ...readEnv(), EDGEWORKS_FUNCTION: options.name };
      configureDirect(cachedEnv);
    }
    const env = cachedEnv;
    const myGeneration = generation;
    const myInFlight = inFlight;
    let abort: ((e: unknown) => void) | null = null;
    try {
      // The reply itself when Rust answered without waiting (a preflight, a
      // refused method or body); a trap there throws right here.
      const answer = fn.handle(request, body, env);
      let reply: WasmReply;
      if (answer instanceof Promise) {
        // One promise per request that the wasm's answer or a trap settles
        // (not a race against a shared one, whose reactions would pile up).
        reply = await new Promise<WasmReply>((resolve, reject) => {
          abort = reject;
          myInFlight.add(reject);
          answer.then(resolve, reject);
        });
      } else {
        reply = answer;
      }
      if (typeof reply === "string") {
        // `status\n`, the headers flat, `\r`, the body: a buffered reply whose
        // body is text or empty (crates/runtime/src/convert.rs `reply_text`).
        const lineEnd = reply.indexOf("\n");
        const headersEnd = reply.indexOf("\r", lineEnd);
        const status = Number(reply.slice(0, lineEnd));
        const flat = reply.slice(lineEnd + 1, headersEnd);
        if (headersEnd + 1 === reply.length || status === 204 || status === 304 || req.method === "HEAD") {
          return bodiless(status, flat);
        }
        return new Response(reply.slice(headersEnd + 1), { status, headers: replyHeaders(flat) });
      }
      const status = reply[0];
      const socket = reply[4];
      if (socket) {
        const out = { status, headers: replyHeaders(reply[1]), body: null, socket };
        return upgradeSocket(req, out, registerFor(myGeneration));
      }
      const stream = reply[3];
      if (stream) {
        const out = { status, headers: replyHeaders(reply[1]), body: null, stream };
        const id = out.headers.find(([k]) => k === "x-request-id")?.[1] ?? crypto.randomUUID();
        const streamed = streamBody(out, registerFor(myGeneration), id);
        return new Response(req.method === "HEAD" ? null : streamed, { status, headers: out.headers });
      }
      const noBody = status === 204 || status === 304 || req.method === "HEAD";
      const content = noBody ? null : reply[2];
      if (content === null && typeof reply[1] === "string") return bodiless(status, reply[1]);
      return new Response(content, { status, headers: replyHeaders(reply[1]) });
    } catch (e) {
      if (isTrap(e)) {
        // Only the first request to see a trap resets; the others already
        // belong to a failed generation.
        if (myGeneration === generation) onTrap(e);
        return envelope(
          500,
          "function_crashed",
          "the function crashed while handling the request",
          crypto.randomUUID(),
        );
      }
      console.error(JSON.stringify({ level: "error", fn: options.name, msg: "unhandled error", error: String(e) }));
      return envelope(500, "internal", "internal error", crypto.randomUUID());
    } finally {
      if (abort) myInFlight.delete(abort);
    }
  };
}

/**
 * Serves one wasm function. Under the Supabase edge runtime Deno.serve binds
 * wherever the runtime says; the local gateway sets EDGEWORKS_FUNCTION_PORT
 * to run each function as its own process on loopback.
 */
export function serveWasm(name: string, glue: WasmGlue, wasmUrl: URL): void {
  const handler = createHandler(glue, wasmUrl, { name });
  const port = Deno.env.get("EDGEWORKS_FUNCTION_PORT");
  if (port) {
    Deno.serve({ hostname: "127.0.0.1", port: Number(port), onListen() {} }, handler);
  } else {
    Deno.serve(handler);
  }
}
