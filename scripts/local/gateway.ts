// The local API gateway (Kong's role in a Supabase project), on loopback:
//   /rest/v1/*            -> PostgREST (postrust-server)
//   /storage/v1/s3/*      -> the local S3 server: the SigV4 signature is verified
//                            here and the request re-signed for it (s3_proxy.ts)
//   /storage/v1/*         -> the Storage REST API and TUS uploads (storage_api/),
//                            metadata in the storage schema, bytes in the same S3 server
//   /auth/v1/.well-known/jwks.json -> the local JWKS (HS256 only: no public keys)
//   /functions/v1/<name>  -> that function, each running as its own Deno process under
//                            the edge runtime's restrictions and limits (functions_host.ts)
//   /realtime/v1/*        -> Realtime, served here (realtime/server.ts)
// It logs one line per request (method, path, status, ms) and runs the
// scheduler that stands in for pg_cron + pg_net.
//
// Like Kong in front of a Supabase project, it answers bad requests itself,
// in the standard envelope: a method outside the HTTP API's (405 + Allow), a
// query too long or with too many parameters (414 / 400), a body shorter
// than its Content-Length (400). Heads too big or malformed for the HTTP
// server library are refused before it, by the front (http_front.ts).
// The caller's address sent upstream is the socket peer's, never what the
// client wrote in X-Forwarded-For, so per-IP rate limits cannot be dodged.
//
// Configured by a JSON file named in EW_GATEWAY_CONFIG (written by scripts/serve).

import { clientBodyFailed } from "./request_body.ts";
import { s3Proxy, type S3ProxyConfig } from "./s3_proxy.ts";
import { realtimeServer } from "./realtime/server.ts";
import { storageApi } from "./storage_api/mod.ts";
import { FUNCTION_METHODS, FunctionsHost, limitsFromEnv, readFunctionSpecs } from "./functions_host.ts";
import { serveWithFront } from "./http_front.ts";

interface FunctionSpec {
  name: string;
  entry: string; // absolute path of index.ts
}
interface CronSpec {
  function: string;
  every_seconds: number;
  body: unknown;
}
interface GatewayConfig {
  port: number;
  rest_url: string;
  s3?: S3ProxyConfig | null;
  deno: string;
  functions_root: string;
  config_toml: string;
  functions: FunctionSpec[];
  function_env: Record<string, string>;
  service_role_key: string;
  cron?: CronSpec[];
}

const config: GatewayConfig = JSON.parse(await Deno.readTextFile(Deno.env.get("EW_GATEWAY_CONFIG")!));
// Functions from outside the project, served for one run beside the project's own under
// the same supervision (scripts/bench peer: the TypeScript peers). Each folder there is a
// function; its `_shared/` is readable, as the project's is.
const extraRoot = Deno.env.get("EDGEWORKS_EXTRA_FUNCTIONS_ROOT");
const extraFunctions = extraRoot
  ? (await readFunctionSpecs(null, extraRoot)).map((f) => ({
    ...f,
    staticFiles: [...f.staticFiles, `${extraRoot}/_shared`],
  }))
  : [];
const functionsHost = new FunctionsHost({
  deno: config.deno,
  functions: [
    ...(await readFunctionSpecs(config.config_toml, config.functions_root))
      .filter((f) => config.functions.some((c) => c.name === f.name)),
    ...extraFunctions,
  ],
  sharedDir: `${config.functions_root}/_shared`,
  // A function process inherits nothing: this is its whole environment.
  env: {
    ...config.function_env,
    DENO_DIR: Deno.env.get("DENO_DIR") ?? "",
    DENO_NO_UPDATE_CHECK: "1",
    DENO_TLS_CA_STORE: Deno.env.get("DENO_TLS_CA_STORE") ?? "mozilla,system",
    NO_COLOR: "1",
  },
  limits: limitsFromEnv((k) => Deno.env.get(k)),
});
const S3_PREFIX = "/storage/v1/s3";
const storage = config.s3 ? s3Proxy(config.s3, S3_PREFIX) : null;
const STORAGE_PREFIX = "/storage/v1";
const dbUrl = Deno.env.get("EW_DB_URL");
// Realtime reads the WAL through a slot whose name carries the API port, so
// stacks sharing a Postgres would not share a slot.
const realtime = dbUrl
  ? realtimeServer({
    dbUrl,
    jwtSecret: config.function_env.SUPABASE_JWT_SECRET,
    slot: `edgeworks_realtime_${config.port}`,
  })
  : null;
const storageRest = config.s3 && dbUrl
  ? storageApi({ db_url: dbUrl, jwt_secret: config.function_env.SUPABASE_JWT_SECRET, s3: config.s3 }, STORAGE_PREFIX)
  : null;

/** Methods the APIs behind the gateway take; anything else (TRACE, CONNECT, ...) is refused here. */
const ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/** Far above any real query (a presigned S3 URL's is under 1 KiB), far below the 64 KiB the server library takes. */
const MAX_QUERY_BYTES = 16 * 1024;
const MAX_QUERY_PARAMS = 1000;

function envelope(
  status: number,
  code: string,
  message: string,
  details: unknown = null,
  headers: Record<string, string> = {},
): Response {
  return Response.json(
    { success: false, error: { code, message, details }, request_id: crypto.randomUUID() },
    { status, headers: { "access-control-allow-origin": "*", ...headers } },
  );
}

/** The gateway's own refusals that apply to every route, or null to go on. */
function refuseEarly(req: Request, url: URL): Response | null {
  // Supabase's functions endpoint takes fewer methods than the other APIs (no HEAD).
  const allowed = url.pathname.startsWith("/functions/v1/") ? FUNCTION_METHODS : ALLOWED_METHODS;
  if (!allowed.includes(req.method)) {
    return envelope(405, "method_not_allowed", `method ${req.method} is not allowed`, { allowed }, {
      allow: allowed.join(", "),
    });
  }
  const query = url.search.slice(1);
  // Counted on the raw string: `a&a&a` is three parameters whatever their values.
  const params = query === "" ? 0 : query.split("&").length;
  if (params > MAX_QUERY_PARAMS) {
    return envelope(
      400,
      "too_many_query_parameters",
      `the query has ${params} parameters; at most ${MAX_QUERY_PARAMS}`,
      { limit: MAX_QUERY_PARAMS },
    );
  }
  if (query.length > MAX_QUERY_BYTES) {
    return envelope(414, "query_too_long", `the query string is ${query.length} bytes; at most ${MAX_QUERY_BYTES}`, {
      limit_bytes: MAX_QUERY_BYTES,
    });
  }
  return null;
}

/**
 * PostgREST's error shape, for refusals on /rest/v1 that postrust-server
 * would not make itself: Supabase's PostgREST refuses a token without a
 * numeric `exp`, postrust-server takes it. The signature is still postrust's
 * to check; this only reads the claims.
 */
function refuseTokenForRest(req: Request): Response | null {
  const tokens: string[] = [];
  const auth = req.headers.get("authorization");
  if (auth && /^bearer\s/i.test(auth)) tokens.push(auth.replace(/^bearer\s+/i, "").trim());
  const apikey = req.headers.get("apikey");
  if (apikey) tokens.push(apikey.trim());
  const nowSecs = Date.now() / 1000;
  for (const token of tokens) {
    const parts = token.split(".");
    // Not a JWT (an opaque API key): postrust decides.
    if (parts.length !== 3) continue;
    let exp: unknown;
    try {
      const claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
      exp = claims?.exp;
    } catch {
      return postgrestError(401, "PGRST301", "JWT cannot be decoded");
    }
    if (typeof exp !== "number" || !Number.isFinite(exp)) {
      return postgrestError(401, "PGRST301", "JWT has no numeric exp claim");
    }
    if (exp <= nowSecs) return postgrestError(401, "PGRST303", "JWT expired");
  }
  return null;
}

function postgrestError(status: number, code: string, message: string): Response {
  return Response.json({ code, details: null, hint: null, message }, {
    status,
    headers: {
      "access-control-allow-origin": "*",
      "www-authenticate": `Bearer error="invalid_token", error_description="${message}"`,
    },
  });
}

/** Headers through which a client could claim another address; replaced by the socket peer's. */
const CLIENT_ADDRESS_HEADERS = ["x-forwarded-for", "x-real-ip", "forwarded"];

/**
 * Hop-by-hop request headers (RFC 9110 §7.6.1): they speak of the client's
 * connection to the gateway, not of the gateway's to the upstream, so they are
 * not passed on, nor are the headers `Connection` names. A client's
 * `Connection: close` above all (node:http sends one without an agent):
 * passed on, the upstream (Deno 2.1's server) closed each connection after
 * one answer, without saying so in it, while the gateway's fetch (Deno 2.9)
 * pooled the connection all the same; a request that took one from the pool
 * before its close was seen was written to a closing connection, and
 * fetch's own retry did not always save it: now and then a 502 "connection
 * closed before message completed" for a request no upstream saw.
 * Content-Length stays: it frames the body the gateway streams on.
 */
const HOP_BY_HOP_HEADERS = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

function dropHopByHop(headers: Headers): void {
  const named = (headers.get("connection") ?? "").split(",").map((h) => h.trim().toLowerCase());
  for (const h of [...HOP_BY_HOP_HEADERS, ...named]) {
    if (h !== "" && h !== "content-length") headers.delete(h);
  }
}

/**
 * Sends the request on to `target` with the gateway's forwarding headers;
 * throws on a network error. `upgrade` keeps the client's Upgrade (the
 * WebSocket relay asks a function that refused the upgrade again over HTTP,
 * as the same upgrade request, so it answers with its own refusal).
 */
async function forward(
  req: Request,
  target: string,
  info: Deno.ServeHandlerInfo,
  signal?: AbortSignal,
  upgrade = false,
): Promise<Response> {
  const headers = new Headers(req.headers);
  dropHopByHop(headers);
  const upgradeTo = req.headers.get("upgrade");
  if (upgrade && upgradeTo) {
    headers.set("connection", "upgrade");
    headers.set("upgrade", upgradeTo);
  }
  // The one address the gateway can vouch for is its socket peer; whatever the
  // client wrote in these headers is dropped, so it cannot pick its rate-limit bucket.
  for (const h of CLIENT_ADDRESS_HEADERS) headers.delete(h);
  const client = (info.remoteAddr as Deno.NetAddr).hostname;
  headers.set("x-forwarded-for", client);
  headers.set("x-real-ip", client);
  headers.set("x-forwarded-host", headers.get("host") ?? "");
  headers.set("x-forwarded-proto", "http");
  // Bodies pass through untouched, so upstreams must not compress them: Deno
  // 2.1's Deno.serve (the functions') gzips on request, and fetch would hand
  // back the inflated body under a `content-encoding: gzip` header. The
  // gateway's own server compresses for the client.
  headers.set("accept-encoding", "identity");
  // A kept-alive connection that closes under a request before any answer is
  // fetch's to retry: Deno's sends the request again, once, when it can replay
  // the body (pinned by tests/platform/core/gateway_upstream.test.ts).
  const resp = await fetch(target, {
    method: req.method,
    headers,
    body: req.body,
    redirect: "manual",
    signal,
    // @ts-ignore: Deno needs duplex for streamed request bodies
    duplex: "half",
  });
  return new Response(resp.body, { status: resp.status, headers: resp.headers });
}

/**
 * What a failed fetch says went wrong, innermost cause last ("fetch failed:
 * ... connection closed before message completed"), without the URL's query
 * (it may carry an API key or a token) or a request body.
 */
function failureCause(e: unknown): string {
  const parts: string[] = [];
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 5; cur = cur.cause, depth++) {
    parts.push(cur.message);
  }
  if (parts.length === 0) parts.push(String(e));
  return parts.join(": ").replace(/(\bhttps?:\/\/[^\s?#)]*)[?#][^\s)]*/g, "$1");
}

function upstreamFailed(e: unknown): Response {
  if (clientBodyFailed(e)) {
    return envelope(400, "body_incomplete", "the request body ended before its Content-Length (or was cut off)");
  }
  const cause = failureCause(e);
  console.error(JSON.stringify({ level: "error", msg: "upstream did not answer", cause }));
  return envelope(502, "upstream_unavailable", `upstream did not answer: ${cause}`);
}

async function proxy(req: Request, target: string, info: Deno.ServeHandlerInfo): Promise<Response> {
  try {
    return await forward(req, target, info);
  } catch (e) {
    return upstreamFailed(e);
  }
}

const HANDSHAKE_HEADERS = [
  "upgrade", "connection", "host", "sec-websocket-key", "sec-websocket-version",
  "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
];

/**
 * A WebSocket to a function (Supabase relays them to functions): the gateway
 * opens its own socket to the function with the client's subprotocols and
 * headers, upgrades the client with the protocol the function chose, and
 * relays frames and closes both ways. A function that refuses the upgrade is
 * asked again over plain HTTP, so the client gets its status and envelope.
 */
async function relayWebSocket(req: Request, target: string, info: Deno.ServeHandlerInfo): Promise<Response> {
  const headers = new Headers(req.headers);
  for (const h of [...HANDSHAKE_HEADERS, ...CLIENT_ADDRESS_HEADERS]) headers.delete(h);
  const client = (info.remoteAddr as Deno.NetAddr).hostname;
  headers.set("x-forwarded-for", client);
  headers.set("x-real-ip", client);
  const protocols = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim()).filter(Boolean);
  const upstream = new WebSocket(target.replace(/^http/, "ws"), { protocols, headers } as unknown as string[]);
  upstream.binaryType = "arraybuffer";
  const early: (string | ArrayBuffer)[] = [];
  upstream.onmessage = (e) => early.push(e.data);
  const opened = await new Promise<boolean>((resolve) => {
    upstream.onopen = () => resolve(true);
    upstream.onerror = () => resolve(false);
    upstream.onclose = () => resolve(false);
  });
  if (!opened) {
    const refusal = await forward(req, target, info, undefined, true);
    if (refusal.status === 101) {
      await refusal.body?.cancel();
      return envelope(502, "upstream_unavailable", "the function accepted the upgrade only on the second try");
    }
    return refusal;
  }
  const { socket, response } = Deno.upgradeWebSocket(req, upstream.protocol ? { protocol: upstream.protocol } : {});
  socket.binaryType = "arraybuffer";
  // 1005/1006 describe a close, they cannot be sent in one.
  const code = (c: number) => (c === 1000 || (c >= 3000 && c <= 4999) || (c >= 1001 && c <= 1014 && c !== 1005 && c !== 1006) ? c : 1000);
  const closeBoth = (c: number, reason: string) => {
    for (const s of [socket, upstream]) {
      if (s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING) {
        try {
          s.close(code(c), reason);
        } catch { /* already closing */ }
      }
    }
  };
  socket.onopen = () => {
    for (const m of early.splice(0)) socket.send(m);
    upstream.onmessage = (e) => socket.readyState === WebSocket.OPEN && socket.send(e.data);
  };
  socket.onmessage = (e) => upstream.readyState === WebSocket.OPEN && upstream.send(e.data);
  socket.onclose = (e) => closeBoth(e.code, e.reason);
  upstream.onclose = (e) => closeBoth(e.code, e.reason);
  socket.onerror = () => closeBoth(1011, "");
  upstream.onerror = () => closeBoth(1011, "");
  return response;
}

/** A function's request, run by the supervisor that enforces the hosted limits. */
async function invokeFunction(
  req: Request,
  name: string,
  rest: string,
  info: Deno.ServeHandlerInfo,
): Promise<Response> {
  try {
    // As on Supabase, the function sees /<name>/... as its path.
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return await functionsHost.handle(name, (base) => relayWebSocket(req, `${base}/${name}${rest}`, info));
    }
    return await functionsHost.handle(name, (base, signal) => forward(req, `${base}/${name}${rest}`, info, signal));
  } catch (e) {
    return upstreamFailed(e);
  }
}

function route(req: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  const early = refuseEarly(req, url);
  if (early) return early;
  if (path.startsWith("/rest/v1/") || path === "/rest/v1") {
    const refused = refuseTokenForRest(req);
    if (refused) return refused;
    return proxy(req, config.rest_url + path.slice("/rest/v1".length) + url.search, info);
  }
  if (path === S3_PREFIX || path.startsWith(S3_PREFIX + "/")) {
    if (!storage) return envelope(404, "storage_disabled", "no local S3 server is configured");
    return storage(req);
  }
  if (path.startsWith(STORAGE_PREFIX + "/")) {
    if (!storageRest) return envelope(404, "storage_disabled", "no local S3 server or database is configured");
    return storageRest.handle(req, path.slice(STORAGE_PREFIX.length));
  }
  if (path.startsWith("/realtime/v1/")) {
    return realtime?.handle(req) ?? envelope(404, "not_found", `no route for ${path}`);
  }
  if (path === "/auth/v1/.well-known/jwks.json") {
    return Response.json({ keys: [] });
  }
  const m = path.match(/^\/functions\/v1\/([A-Za-z0-9_-]+)(\/.*)?$/);
  if (m) {
    if (!functionsHost.has(m[1])) return envelope(404, "function_not_found", `no function named ${m[1]}`);
    return invokeFunction(req, m[1], `${m[2] ?? ""}${url.search}`, info);
  }
  return envelope(404, "not_found", `no route for ${path}`);
}

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  realtime?.stop();
  functionsHost.stop().finally(() => Deno.exit(0));
  setTimeout(() => Deno.exit(0), 2000);
}
Deno.addSignalListener("SIGINT", shutdown);
Deno.addSignalListener("SIGTERM", shutdown);

// The public port is bound before any function boots: the ports the stack's
// pieces were given are free only until someone binds them, and a function
// process picking a free port of its own could otherwise take this one.
// Requests that arrive meanwhile wait for the boot below.
let markBooted = () => {};
const booted = new Promise<void>((resolve) => (markBooted = resolve));

// Behind the front (http_front.ts), which owns the public port, so heads the
// server library would refuse with a bare 400 get the envelope too.
serveWithFront({ hostname: "127.0.0.1", port: config.port }, async (req, info) => {
  await booted;
  const t0 = performance.now();
  const resp = await route(req, info);
  const path = new URL(req.url).pathname;
  console.log(`${req.method} ${path} ${resp.status} ${Math.round(performance.now() - t0)}ms`);
  return resp;
});

// Every function boots now, as before a first request; later ones boot on demand.
await functionsHost.start();
markBooted();

// The scheduler: what pg_cron + pg_net do in production.
for (const job of config.cron ?? []) {
  setInterval(async () => {
    if (!functionsHost.has(job.function)) return;
    try {
      const r = await functionsHost.handle(job.function, (base, signal) =>
        fetch(`${base}/${job.function}`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${config.service_role_key}`,
            "x-request-id": `cron-${job.function}-${Date.now()}`,
          },
          body: JSON.stringify(job.body ?? {}),
          signal,
        }));
      await r.body?.cancel();
      if (!r.ok) console.error(`cron ${job.function}: ${r.status}`);
    } catch (e) {
      console.error(`cron ${job.function}: ${(e as Error).message}`);
    }
  }, job.every_seconds * 1000);
}
console.log(`gateway ready on http://127.0.0.1:${config.port}`);
