// The real health wasm, in-process, pointed at a database that is not there.
import { assert, assertEquals } from "../support/assert.ts";
import * as glue from "../../supabase/functions/health/pkg/health.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";

Deno.test("health answers 503 with the reason when PostgREST is unreachable", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close(); // nothing listens there now
  const handler = createHandler(glue, new URL("../../supabase/functions/health/pkg/health_bg.wasm", import.meta.url), {
    name: "health",
    env: () => ({
      SUPABASE_URL: `http://127.0.0.1:${port}`,
      SUPABASE_ANON_KEY: "anon-key-for-test-0000",
      SUPABASE_SERVICE_ROLE_KEY: "service-key-for-test-0000",
    }),
  });
  const r = await handler(new Request("http://local/health"));
  assertEquals(r.status, 503);
  const body = await r.json();
  assertEquals(body.error.code, "database_unavailable");
  assert(String(body.error.details.reason).includes("unreachable"), body.error.details.reason);
  assert(!JSON.stringify(body).includes("anon-key-for-test-0000"));
  assert(!JSON.stringify(body).includes("service-key-for-test-0000"));
  // The rate limiter could not reach the database either: it let the check through.
  assertEquals(r.headers.get("x-ratelimit-limit"), null);
});

Deno.test("health without configuration is a 500 naming the variable, not its value", async () => {
  const handler = createHandler(glue, new URL("../../supabase/functions/health/pkg/health_bg.wasm", import.meta.url), {
    name: "health",
    env: () => ({}),
  });
  const r = await handler(new Request("http://local/health"));
  assertEquals(r.status, 500);
  const body = await r.json();
  assertEquals(body.error.code, "misconfigured");
  assert(/SUPABASE_[A-Z_]+/.test(body.error.message), body.error.message);
});
