// The foundation through the gateway: health with raw fetch and supabase-js,
// PostgREST with anon key / user token / wrongly signed token, routing.
import { assert, assertEquals } from "../../support/assert.ts";
import { createClient } from "@supabase/supabase-js";
import { assertEnvelope, stack, userToken } from "../../support/stack.ts";

Deno.test("health answers 200 with a real database round trip (raw fetch)", async () => {
  const r = await fetch(stack.functionUrl("health"));
  const body = await r.json();
  assertEquals(r.status, 200);
  assertEquals(body.success, true);
  assertEquals(body.data.database.ok, true);
  assert(typeof body.data.database.latency_ms === "number");
  assertEquals(body.data.database.server_version, 15);
  assert(body.data.build.version);
  assert(r.headers.get("x-request-id"));
});

Deno.test("health through supabase-js functions.invoke", async () => {
  const supabase = createClient(stack.url, stack.anonKey, { auth: { persistSession: false } });
  const { data, error } = await supabase.functions.invoke("health", { method: "GET" });
  assertEquals(error, null);
  assertEquals(data.success, true);
  assertEquals(data.data.status, "ok");
});

Deno.test("a client x-request-id is echoed", async () => {
  const r = await fetch(stack.functionUrl("health"), { headers: { "x-request-id": "test-req-42" } });
  await r.body?.cancel();
  assertEquals(r.headers.get("x-request-id"), "test-req-42");
});

Deno.test("OPTIONS preflight is answered with CORS headers", async () => {
  const r = await fetch(stack.functionUrl("health"), {
    method: "OPTIONS",
    headers: { origin: "http://app.local", "access-control-request-method": "POST" },
  });
  await r.body?.cancel();
  assertEquals(r.status, 204);
  assertEquals(r.headers.get("access-control-allow-origin"), "*");
  assert(r.headers.get("access-control-allow-headers")!.includes("x-client-info"));
});

Deno.test("a method the function does not take is 405 with Allow", async () => {
  const r = await fetch(stack.functionUrl("health"), { method: "DELETE" });
  assertEquals(r.status, 405);
  assert(r.headers.get("allow")!.includes("GET"));
  assertEnvelope(await r.json(), "method_not_allowed");
});

Deno.test("an unknown function is a 404 envelope", async () => {
  const r = await fetch(stack.functionUrl("no-such-function"));
  assertEquals(r.status, 404);
  assertEnvelope(await r.json(), "function_not_found");
});

async function rest(path: string, token: string) {
  const r = await fetch(`${stack.url}/rest/v1${path}`, {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  return { status: r.status, body: await r.json() };
}

Deno.test("PostgREST through the gateway: anon key, user token, wrong secret", async () => {
  const anon = await rest("/rpc/health_ping", stack.anonKey);
  assertEquals(anon.status, 200);
  assertEquals(anon.body.server_version, 15);

  const user = await rest("/rpc/health_ping", await userToken());
  assertEquals(user.status, 200);

  const forged = await rest("/rpc/health_ping", await userToken(undefined, { secret: "not-the-project-secret-at-all-0000" }));
  assertEquals(forged.status, 401);
});
