// The hosted runtime's surface on the running local stack (scripts/serve):
// the functions endpoint's methods, and the env a function is given.
import { assert, assertEquals } from "../../support/assert.ts";
import { stack } from "../../support/stack.ts";

const SIX = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

// (TRACE and CONNECT are refused by fetch itself, so the gateway's answer to them is not testable from here.)
Deno.test("the functions endpoint answers 405 with Allow for HEAD and other methods outside Supabase's six", async () => {
  for (const method of ["HEAD", "PROPFIND", "PURGE"]) {
    const r = await fetch(stack.functionUrl("health"), { method });
    await r.body?.cancel();
    assertEquals(r.status, 405, method);
    assertEquals(r.headers.get("allow"), SIX, method);
  }
});

Deno.test("the six methods reach the function", async () => {
  for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) {
    const r = await fetch(stack.functionUrl("health"), { method });
    await r.body?.cancel();
    // health itself takes GET (and OPTIONS); the others get health's own 405, not the gateway's.
    if (method === "GET") assertEquals(r.status, 200);
    else if (method === "OPTIONS") assertEquals(r.status, 204);
    else assert(r.headers.get("allow") !== SIX, `${method} was refused by the gateway`);
  }
});
