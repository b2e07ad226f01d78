// The local API gateway (Kong's role in a Supabase project), on loopback:
//   /rest/v1/*            -> PostgREST (postrust-server)
//   /storage/v1/s3/*      -> the local S3 server: the SigV4 signature is verified
//                            here and the request re-signed for it (s3_proxy.ts)
//   /auth/v1/.well-known/jwks.json -> the local JWKS (HS256 only: no public keys)
//   /functions/v1/<name>  -> that function, each running as its own Deno process
// It logs one line per request (method, path, status, ms) and runs the
// scheduler that stands in for pg_cron + pg_net.
//
// Configured by a JSON file named in EW_GATEWAY_CONFIG (written by scripts/serve).

import { s3Proxy, type S3ProxyConfig } from "./s3_proxy.ts";

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
  functions: FunctionSpec[];
  function_env: Record<string, string>;
  service_role_key: string;
  cron?: CronSpec[];
}

const config: GatewayConfig = JSON.parse(await Deno.readTextFile(Deno.env.get("EW_GATEWAY_CONFIG")!));
const children: Deno.ChildProcess[] = [];
const routes = new Map<string, string>(); // function name -> base URL
const S3_PREFIX = "/storage/v1/s3";
const storage = config.s3 ? s3Proxy(config.s3, S3_PREFIX) : null;

function envelope(status: number, code: string, message: string): Response {
  return Response.json(
    { success: false, error: { code, message }, request_id: crypto.randomUUID() },
    { status, headers: { "access-control-allow-origin": "*" } },
  );
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitForPort(port: number, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${what} did not start listening on ${port}`);
}

async function startFunction(spec: FunctionSpec): Promise<void> {
  const port = freePort();
  const cmd = new Deno.Command(config.deno, {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      `--allow-read=${config.functions_root}`,
      spec.entry,
    ],
    env: { ...config.function_env, EDGEWORKS_FUNCTION_PORT: String(port) },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  });
  const child = cmd.spawn();
  children.push(child);
  await waitForPort(port, `function ${spec.name}`);
  routes.set(spec.name, `http://127.0.0.1:${port}`);
  child.status.then((s) => {
    if (!shuttingDown) {
      console.error(`function ${spec.name} exited (code ${s.code}); restarting`);
      routes.delete(spec.name);
      startFunction(spec).catch((e) => console.error(`restart of ${spec.name} failed: ${e}`));
    }
  });
}

async function proxy(req: Request, target: string, info: Deno.ServeHandlerInfo): Promise<Response> {
  const headers = new Headers(req.headers);
  const client = (info.remoteAddr as Deno.NetAddr).hostname;
  const prior = headers.get("x-forwarded-for");
  headers.set("x-forwarded-for", prior ? `${prior}, ${client}` : client);
  headers.set("x-forwarded-host", headers.get("host") ?? "");
  headers.set("x-forwarded-proto", "http");
  try {
    const resp = await fetch(target, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
      // @ts-ignore: Deno needs duplex for streamed request bodies
      duplex: "half",
    });
    return new Response(resp.body, { status: resp.status, headers: resp.headers });
  } catch (e) {
    return envelope(502, "upstream_unavailable", `upstream did not answer: ${(e as Error).message}`);
  }
}

async function route(req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  if (path.startsWith("/rest/v1/") || path === "/rest/v1") {
    return proxy(req, config.rest_url + path.slice("/rest/v1".length) + url.search, info);
  }
  if (path === S3_PREFIX || path.startsWith(S3_PREFIX + "/")) {
    if (!storage) return envelope(404, "storage_disabled", "no local S3 server is configured");
    return storage(req);
  }
  if (path === "/auth/v1/.well-known/jwks.json") {
    return Response.json({ keys: [] });
  }
  const m = path.match(/^\/functions\/v1\/([A-Za-z0-9_-]+)(\/.*)?$/);
  if (m) {
    const base = routes.get(m[1]);
    if (!base) {
      if (config.functions.some((f) => f.name === m[1])) {
        return envelope(503, "function_starting", `function ${m[1]} is (re)starting`);
      }
      return envelope(404, "function_not_found", `no function named ${m[1]}`);
    }
    // As on Supabase, the function sees /<name>/... as its path.
    return proxy(req, `${base}/${m[1]}${m[2] ?? ""}${url.search}`, info);
  }
  return envelope(404, "not_found", `no route for ${path}`);
}

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* already gone */ }
  }
  setTimeout(() => Deno.exit(0), 300);
}
Deno.addSignalListener("SIGINT", shutdown);
Deno.addSignalListener("SIGTERM", shutdown);

await Promise.all(config.functions.map(startFunction));

Deno.serve({ hostname: "127.0.0.1", port: config.port, onListen() {} }, async (req, info) => {
  const t0 = performance.now();
  const resp = await route(req, info);
  const path = new URL(req.url).pathname;
  console.log(`${req.method} ${path} ${resp.status} ${Math.round(performance.now() - t0)}ms`);
  return resp;
});

// The scheduler: what pg_cron + pg_net do in production.
for (const job of config.cron ?? []) {
  setInterval(async () => {
    const base = routes.get(job.function);
    if (!base) return;
    try {
      const r = await fetch(`${base}/${job.function}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${config.service_role_key}`,
          "x-request-id": `cron-${job.function}-${Date.now()}`,
        },
        body: JSON.stringify(job.body ?? {}),
      });
      await r.body?.cancel();
      if (!r.ok) console.error(`cron ${job.function}: ${r.status}`);
    } catch (e) {
      console.error(`cron ${job.function}: ${(e as Error).message}`);
    }
  }, job.every_seconds * 1000);
}
console.log(`gateway ready on http://127.0.0.1:${config.port}`);
