// The core's HTTP conventions through the gateway, on real functions: JWT
// refusals, CORS preflight, the body-size limit and validation that lists every
// bad field at once.
import { assert, assertEquals } from "../../support/assert.ts";
import { assertEnvelope, callFunction, createUser, signJwt, stack } from "../../support/stack.ts";

const validBody = () => ({ session_id: `core-${crypto.randomUUID()}`, message: "Is this accepted?" });

Deno.test("a token signed with the wrong secret is a 401 envelope", async () => {
  const user = await createUser();
  const now = Math.floor(Date.now() / 1000);
  const forged = await signJwt(
    { sub: user.id, aud: "authenticated", role: "authenticated", iat: now - 5, exp: now + 3600 },
    "not-the-project-secret-but-long-enough-0000",
  );
  const r = await callFunction("chat-submit", { token: forged, body: validBody() });
  assertEquals(r.status, 401);
  assertEnvelope(r.body, "token_bad_signature");
  assert(r.headers.get("www-authenticate")?.startsWith("Bearer"), "401 carries WWW-Authenticate");
  assertEquals(r.body.request_id, r.headers.get("x-request-id"));
});

Deno.test("an expired token is a 401 with its own code", async () => {
  const user = await createUser();
  const now = Math.floor(Date.now() / 1000);
  const expired = await signJwt({
    sub: user.id,
    aud: "authenticated",
    role: "authenticated",
    iat: now - 7200,
    exp: now - 3600,
  });
  const forged = await signJwt(
    { sub: user.id, aud: "authenticated", role: "authenticated", iat: now - 5, exp: now + 3600 },
    "not-the-project-secret-but-long-enough-0000",
  );
  const a = await callFunction("chat-submit", { token: expired, body: validBody() });
  const b = await callFunction("chat-submit", { token: forged, body: validBody() });
  const c = await callFunction("chat-submit", { token: null, body: validBody() });
  assertEquals([a.status, b.status, c.status], [401, 401, 401]);
  assertEnvelope(a.body, "token_expired");
  assertEquals(new Set([a.body.error.code, b.body.error.code, c.body.error.code]).size, 3, "distinct codes");
  // The same token is accepted before it expires: the refusal is about time, not the user.
  const fresh = await callFunction("chat-submit", { token: user.token, body: validBody() });
  assertEquals(fresh.status, 200, JSON.stringify(fresh.body));
});

Deno.test("OPTIONS preflight is 204 with the CORS headers supabase-js needs", async () => {
  for (const name of ["chat-submit", "chat-status", "health"]) {
    const r = await fetch(stack.functionUrl(name), {
      method: "OPTIONS",
      headers: {
        origin: "http://app.local",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, x-client-info, apikey, content-type",
      },
    });
    await r.body?.cancel();
    assertEquals(r.status, 204, name);
    assertEquals(r.headers.get("access-control-allow-origin"), "*");
    const allowed = (r.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(",").map((h) => h.trim());
    for (const h of ["authorization", "x-client-info", "apikey", "content-type"]) {
      assert(allowed.includes(h), `${name}: ${h} not in ${allowed}`);
    }
    assert((r.headers.get("access-control-allow-methods") ?? "").includes("POST"), name);
  }
});

Deno.test("a 2 MiB body is refused with 413", async () => {
  const user = await createUser();
  const big = JSON.stringify({ session_id: "big", message: "x".repeat(2 * 1024 * 1024) });
  const r = await callFunction("chat-submit", { token: user.token, body: big });
  assertEquals(r.status, 413);
  assertEnvelope(r.body, "payload_too_large");
});

Deno.test("a body with three invalid fields is one 422 listing all three", async () => {
  const user = await createUser();
  const r = await callFunction("chat-submit", {
    token: user.token,
    body: { session_id: 7, message: false, priority: 99 },
  });
  assertEquals(r.status, 422);
  assertEnvelope(r.body, "validation_failed");
  const fields = r.body.error.details.fields;
  assertEquals(fields.map((f: any) => f.field).sort(), ["message", "priority", "session_id"]);
  for (const f of fields) assert(typeof f.code === "string" && typeof f.message === "string", JSON.stringify(f));
});

Deno.test("malformed JSON is a 400 that says where", async () => {
  const user = await createUser();
  const r = await callFunction("chat-submit", { token: user.token, body: '{"session_id": "s", "message": ' });
  assertEquals(r.status, 400);
  assertEnvelope(r.body, "invalid_json");
  assertEquals(r.body.error.details, { line: 1, column: 31 });
});
