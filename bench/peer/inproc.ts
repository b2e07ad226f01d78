// In-process cost of one request, Rust (the real wasm through the real adapter) against
// the TypeScript peer, with I/O stubbed: fetch answers PostgREST's replies from memory,
// so what is measured is the function's own work per request, nothing on the wire.
//
//   scripts/bench peer --inproc [--requests 20000] [--rounds 5] [--peers DIR] [--paths fixed,chat-submit]
//                               [--against DIR] [--warm 500] [--thread]
//
// --against DIR also loads another build of the Rust side from DIR (a copy of
// supabase/functions/{_shared,health,chat-submit} from another tree, built there) and
// rotates it with this one and the peer in every round: before and after in one process.
// --thread counts the main thread's CPU (nanoseconds, where JS and wasm run) instead of
// the process's (10 ms ticks, every thread, GC and compilers included).
//
// Paths: `fixed` (PUT -> 405: what every request pays before any work), `preflight`
// (OPTIONS, the CORS answer, also refused before any work), `health`
// (GET: rate limit + rpc/health_ping; the Rust one makes them one rpc/health_check) and
// `chat-submit` (POST as a signed-in user: validation and cleaning, the JWT, then
// rpc/rate_limit_take + rpc/chat_submit for the peer, one rpc/chat_submit_limited for
// Rust, each answered what the SQL answers). The environment is a realistic one (the
// stack's variables plus padding to ~50), the same for both. Figures: process CPU
// (utime + stime, every thread) per request, median of the rounds, the sides alternating.

import * as healthGlue from "../../supabase/functions/health/pkg/health.js";
import * as chatSubmitGlue from "../../supabase/functions/chat-submit/pkg/chat_submit.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";
import type { WasmGlue } from "../../supabase/functions/_shared/loader.ts";
import { userAccessToken } from "../../scripts/local/jwt.ts";

const args = Deno.args;
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const N = Number(opt("--requests", "20000"));
const ROUNDS = Number(opt("--rounds", "5"));
const PEERS = opt("--peers", new URL("../../../shared/peers/ts", import.meta.url).pathname);
const AGAINST = opt("--against", "");
const WARM = Number(opt("--warm", "500"));
const THREAD = args.includes("--thread");

// A stack-like environment: what scripts/serve hands a function, padded to ~50 names.
const env: Record<string, string> = {
  SUPABASE_URL: "http://127.0.0.1:54321",
  SUPABASE_ANON_KEY: "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.anon-signature-for-bench-000000",
  SUPABASE_SERVICE_ROLE_KEY: "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.service-signature-000",
  SUPABASE_JWT_SECRET: "super-secret-jwt-token-with-at-least-32-characters-long",
  SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:54322/postgres",
  SUPABASE_PUBLISHABLE_KEYS: '{"default":"anon"}',
  SUPABASE_SECRET_KEYS: '{"default":"service"}',
  S3_ENDPOINT: "http://127.0.0.1:54321/storage/v1/s3",
  S3_REGION: "local",
  S3_ACCESS_KEY_ID: "bench-access-key-id",
  S3_SECRET_ACCESS_KEY: "bench-secret-access-key-0000",
  ENVIRONMENT: "development",
  RATE_LIMIT_HEALTH: "1000000/1000000",
  RATE_LIMIT_HEALTH_TS: "1000000/1000000",
  RATE_LIMIT_CHAT_SUBMIT: "1000000/1000000",
  RATE_LIMIT_CHAT_SUBMIT_TS: "1000000/1000000",
};
for (let i = 0; Object.keys(env).length < 50; i++) env[`BENCH_SETTING_${i}`] = `value-${i}-${"x".repeat(20)}`;
for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);

// PostgREST, from memory.
const realFetch = globalThis.fetch;
globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
  const url = input instanceof Request ? input.url : String(input);
  const json = (body: unknown) =>
    Promise.resolve(new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } }));
  if (url.includes("/rpc/rate_limit_take")) return json([{ allowed: true, tokens: 999_999 }]);
  if (url.includes("/rpc/health_ping")) {
    return json({ server_time: "2026-12-01T00:00:00.000Z", server_version: "15.18" });
  }
  // The Rust health takes its token in the same call (rate limit + ping).
  if (url.includes("/rpc/health_check")) {
    return json({
      server_time: "2026-12-01T00:00:00.000Z",
      server_version: "15.18",
      rate_limit: { allowed: true, tokens: 999_999 },
    });
  }
  // What chat_submit answers for a new session (private.chat_queue_timing's fields
  // included); chat_submit_limited adds the token it took.
  const submitted = {
    job_id: "0b4f5e0c-7d1e-4f57-9a43-2f0d8a1c6e11",
    status: "pending",
    samples: 0,
    session_id: "bench-session",
    queue_position: 1,
    max_questions: 10,
    active_workers: 0,
    question_count: 1,
    avg_processing_ms: 0,
  };
  if (url.includes("/rpc/chat_submit_limited")) {
    return json({ ...submitted, rate_limit: { allowed: true, tokens: 999_999 } });
  }
  if (url.includes("/rpc/chat_submit")) return json(submitted);
  return realFetch(input, init);
};

// The peer registers its handler with Deno.serve at import: capture it instead.
let peerHandler: ((req: Request) => Promise<Response>) | null = null;
(Deno as unknown as { serve: unknown }).serve = (a: unknown, b?: unknown) => {
  peerHandler = (typeof a === "function" ? a : b) as (req: Request) => Promise<Response>;
  return { finished: Promise.resolve(), shutdown: () => Promise.resolve() };
};
type Handler = (req: Request) => Promise<Response>;
async function peer(name: string): Promise<Handler> {
  peerHandler = null;
  await import(`${PEERS}/${name}/index.ts`);
  const handler = peerHandler as Handler | null;
  if (!handler) throw new Error(`the peer ${name} did not call Deno.serve`);
  return handler;
}
const functions = new URL("../../supabase/functions/", import.meta.url);
const rustFunction = (name: string, glue: WasmGlue, wasm: string, root = functions, create = createHandler): Handler =>
  create(glue, new URL(`${name}/pkg/${wasm}`, root), {
    name,
    // fetch is stubbed above; the adapter's direct client for SUPABASE_URL
    // (http1.ts) would go to the wire, so this measures the fetch path.
    env: () => ({ ...env, EDGEWORKS_HTTP_CLIENT: "fetch" }),
  });
// The other build, its adapter and glue as that tree has them.
const against = AGAINST
  ? await (async () => {
    const root = new URL(`file://${Deno.realPathSync(AGAINST)}/supabase/functions/`);
    const shared = await import(new URL("_shared/serve.ts", root).href);
    const health = await import(new URL("health/pkg/health.js", root).href);
    const chat = await import(new URL("chat-submit/pkg/chat_submit.js", root).href);
    return {
      health: rustFunction("health", health, "health_bg.wasm", root, shared.createHandler),
      chatSubmit: rustFunction("chat-submit", chat, "chat_submit_bg.wasm", root, shared.createHandler),
    };
  })()
  : null;
const sides = {
  health: {
    ts: await peer("health-ts"),
    rust: rustFunction("health", healthGlue, "health_bg.wasm"),
    before: against?.health,
  },
  chatSubmit: {
    ts: await peer("chat-submit-ts"),
    rust: rustFunction("chat-submit", chatSubmitGlue, "chat_submit_bg.wasm"),
    before: against?.chatSubmit,
  },
};
// The stack's demo user, as scripts/serve mints it.
const userToken = await userAccessToken({
  secret: env.SUPABASE_JWT_SECRET,
  apiUrl: env.SUPABASE_URL,
  sub: "00000000-0000-4000-8000-000000000001",
  email: "demo@edgeworks.local",
  expiresIn: 24 * 3600,
  extra: { app_metadata: { provider: "email" } },
});

// Logs go nowhere: both sides write one line per request, the terminal is not measured.
console.log = () => {};
console.error = () => {};
const out = (s: string) => Deno.stdout.writeSync(new TextEncoder().encode(s + "\n"));

function cpuMs(): number {
  if (THREAD) return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1e6;
  const s = Deno.readTextFileSync("/proc/self/stat");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

const headers = { "x-forwarded-for": "10.0.0.1", authorization: `Bearer ${env.SUPABASE_ANON_KEY}` };
let asked = 0;
type Sides = { ts: Handler; rust: Handler; before?: Handler };
const paths: Record<string, [Sides, () => Request]> = {
  fixed: [sides.health, () => new Request("http://127.0.0.1:8000/health", { method: "PUT", headers })],
  preflight: [
    sides.health,
    () =>
      new Request("http://127.0.0.1:8000/health", {
        method: "OPTIONS",
        headers: { origin: "http://app.example", "access-control-request-method": "GET" },
      }),
  ],
  health: [sides.health, () => new Request("http://127.0.0.1:8000/health", { headers })],
  // As the load bench asks it (bench.ts): a new session and question each time.
  "chat-submit": [sides.chatSubmit, () => {
    const i = asked++;
    return new Request("http://127.0.0.1:8000/chat-submit", {
      method: "POST",
      headers: {
        "x-forwarded-for": "10.0.0.1",
        authorization: `Bearer ${userToken}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ session_id: `pb-inproc-${i}`, message: `What is ${i} plus ${i}? Answer briefly.` }),
    });
  }],
};

async function round(handler: (req: Request) => Promise<Response>, make: () => Request, n: number): Promise<number> {
  const c0 = cpuMs();
  for (let i = 0; i < n; i++) await (await handler(make())).arrayBuffer();
  return ((cpuMs() - c0) / n) * 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
out(
  `in-process, I/O stubbed; ${N} requests per round, median of ${ROUNDS} alternating rounds; ${
    THREAD ? "main thread" : "process"
  } CPU µs per request`,
);
const only = opt("--paths", "");
for (const [name, [{ ts, rust, before }, make]] of Object.entries(paths)) {
  if (only && !only.split(",").includes(name)) continue;
  const order: [string, Handler][] = [["rust", rust], ["ts", ts]];
  if (before) order.unshift(["before", before]);
  // Every side must give the same answer, or the figures compare different work.
  const first = [];
  for (const [, h] of order) first.push(await h(make()));
  if (new Set(first.map((r) => r.status)).size !== 1) {
    const answers = await Promise.all(first.map(async (r) => `${r.status} ${await r.text()}`));
    throw new Error(`${name}: ${order.map(([k], i) => `${k} answered ${answers[i]}`).join(", ")}`);
  }
  for (const r of first) await r.arrayBuffer();
  for (const [, h] of order) await round(h, make, WARM);
  const res: Record<string, number[]> = Object.fromEntries(order.map(([k]) => [k, []]));
  for (let i = 0; i < ROUNDS; i++) {
    // The sides take turns going first.
    for (let j = 0; j < order.length; j++) {
      const [k, h] = order[(i + j) % order.length];
      res[k].push(await round(h, make, N));
    }
  }
  const f = (k: string) => `${k} ${median(res[k]).toFixed(THREAD ? 1 : 0).padStart(5)} µs`;
  out(
    `  ${name.padEnd(11)} ${before ? `${f("before")}   ` : ""}${f("rust")}   ${f("ts")}   rust/ts ${
      (median(res.rust) / median(res.ts)).toFixed(2)
    }${before ? `   rust/before ${(median(res.rust) / median(res.before)).toFixed(2)}` : ""}`,
  );
}
Deno.exit(0);
