// The one Deno.serve adapter shared by every function. It turns a Request into
// the plain {method, url, headers, body} the wasm `handle` export takes and the
// answer back into a Response. If the wasm traps (a Rust panic aborts), every
// request in flight on that instance is answered with a 500 envelope and the
// module is re-instantiated, so the next request succeeds.

import { type Bytes, type WasmGlue, type WasmRequest, WasmFunction } from "./loader.ts";

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
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > limit) throw new BodyTooLarge();
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
    console.error(JSON.stringify({ level: "error", fn: options.name, msg: "wasm trapped; instance reset", error: String(e) }));
    const failed = inFlight;
    generation += 1;
    inFlight = new Set();
    for (const reject of failed) reject(e);
    try {
      fn.reset();
    } catch (resetError) {
      console.error(JSON.stringify({ level: "error", fn: options.name, msg: "wasm reset failed", error: String(resetError) }));
    }
  };
  installTrapListener();
  trapListeners.add(onTrap);

  return async (req: Request): Promise<Response> => {
    const requestId = crypto.randomUUID();
    let headerBytes = 0;
    const headers: [string, string][] = [];
    for (const [k, v] of req.headers) {
      headerBytes += k.length + v.length + 4;
      headers.push([k, v]);
    }
    if (headerBytes > MAX_HEADER_BYTES) {
      return envelope(431, "headers_too_large", `request headers exceed ${MAX_HEADER_BYTES} bytes`, requestId);
    }
    let body: Bytes | null;
    try {
      body = await readBody(req, maxRead);
    } catch (e) {
      if (e instanceof BodyTooLarge) {
        return envelope(413, "payload_too_large", `request body exceeds ${maxRead} bytes`, requestId);
      }
      return envelope(400, "unreadable_body", "the request body could not be read", requestId);
    }

    try {
      await fn.ready();
    } catch (e) {
      console.error(JSON.stringify({ level: "error", fn: options.name, msg: "wasm load failed", error: String(e) }));
      return envelope(503, "function_unavailable", "the function failed to load", requestId);
    }

    cachedEnv ??= { ...readEnv(), EDGEWORKS_FUNCTION: options.name };
    const wasmRequest: WasmRequest = { method: req.method, url: req.url, headers, body };
    const myGeneration = generation;
    const myInFlight = inFlight;
    const aborted = Promise.withResolvers<never>();
    aborted.promise.catch(() => {});
    myInFlight.add(aborted.reject);
    try {
      const out = await Promise.race([fn.handle(wasmRequest, cachedEnv), aborted.promise]);
      const noBody = out.status === 204 || out.status === 304 || req.method === "HEAD";
      return new Response(noBody ? null : out.body, { status: out.status, headers: out.headers });
    } catch (e) {
      if (isTrap(e)) {
        // Only the first request to see a trap resets; the others already
        // belong to a failed generation.
        if (myGeneration === generation) onTrap(e);
        return envelope(500, "function_crashed", "the function crashed while handling the request", requestId);
      }
      console.error(JSON.stringify({ level: "error", fn: options.name, msg: "unhandled error", error: String(e) }));
      return envelope(500, "internal", "internal error", requestId);
    } finally {
      myInFlight.delete(aborted.reject);
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
