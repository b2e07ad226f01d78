// Memory stays flat under load: thousands of requests through the real adapter
// and the real health wasm, which makes two fetches per request (the rate
// limiter and the database ping) to a stub PostgREST. Every request used to
// leave something behind (an abort-timer closure in the fetch client, a
// reaction on a promise in the adapter); on the hosted runtime an isolate that
// keeps growing is killed at 256 MB.
//
// Needs `--v8-flags=--expose-gc` (scripts/test passes it) to measure the heap
// after a full collection rather than whenever V8 felt like collecting.
import { assert, assertEquals } from "../support/assert.ts";
import * as glue from "../../supabase/functions/health/pkg/health.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";

const WARMUP = 1_000;
const REQUESTS = Number(Deno.env.get("EDGEWORKS_LEAK_REQUESTS") ?? 10_000);
const CONCURRENCY = 8;
/** Growth allowed after a full GC: noise from V8's own caches, not per-request state. */
const BUDGET_BYTES = 3 * 1024 * 1024;

const gc = (globalThis as { gc?: () => void }).gc;

async function settledHeap(): Promise<number> {
  // Several rounds: wasm-bindgen frees closures through FinalizationRegistry
  // callbacks, which only run between turns of the event loop.
  for (let i = 0; i < 6; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 10));
  }
  return Deno.memoryUsage().heapUsed;
}

Deno.test({
  name: "heap after a full GC stays flat over thousands of fetching requests",
  // The stub server and the fetch connection pool live for the whole test.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    assert(typeof gc === "function", "run with --v8-flags=--expose-gc (as scripts/test does)");
    const stub = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const path = new URL(req.url).pathname;
      const body = path.endsWith("/rpc/rate_limit_take")
        ? [{ allowed: true, tokens: 100 }]
        : { server_time: "2026-01-01T00:00:00Z", server_version: "15" };
      return Response.json(body);
    });
    const url = `http://127.0.0.1:${stub.addr.port}`;
    const handler = createHandler(
      glue,
      new URL("../../supabase/functions/health/pkg/health_bg.wasm", import.meta.url),
      {
        name: "health",
        env: () => ({
          SUPABASE_URL: url,
          SUPABASE_ANON_KEY: "anon-key-for-test-0000",
          SUPABASE_SERVICE_ROLE_KEY: "service-key-for-test-0000",
          RATE_LIMIT_HEALTH: "1000000/1000000",
        }),
      },
    );

    let bad = 0;
    const run = async (n: number) => {
      let next = 0;
      const lane = async () => {
        while (next < n) {
          next++;
          const r = await handler(
            new Request("http://local/health", { headers: { "x-forwarded-for": "203.0.113.9" } }),
          );
          if (r.status !== 200) bad++;
          await r.body?.cancel();
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    };

    // The function logs a line per request; the test measures memory, not the console.
    const { log, error } = console;
    console.log = () => {};
    console.error = () => {};
    let before = 0, after = 0, seconds = 0;
    try {
      await run(WARMUP);
      before = await settledHeap();
      const started = performance.now();
      await run(REQUESTS);
      seconds = (performance.now() - started) / 1000;
      after = await settledHeap();
    } finally {
      console.log = log;
      console.error = error;
      await stub.shutdown();
    }
    assertEquals(bad, 0, "every request answered 200");
    const mb = (b: number) => (b / 1024 / 1024).toFixed(1);
    console.log(
      `leak check: ${REQUESTS} requests in ${seconds.toFixed(1)} s; heap ${mb(before)} MB -> ${mb(after)} MB ` +
        `(${((after - before) / REQUESTS).toFixed(0)} bytes/request)`,
    );
    assert(
      after - before < BUDGET_BYTES,
      `heap grew by ${mb(after - before)} MB over ${REQUESTS} requests (budget ${mb(BUDGET_BYTES)} MB)`,
    );
  },
});
