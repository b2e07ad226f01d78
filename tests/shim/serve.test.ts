// Unit tests of the shared Deno adapter, on a real wasm (tests/fixtures/shim-fixture)
// built by `scripts/build --fixtures`: a real Rust panic traps a real instance.
import { assert, assertEquals } from "../support/assert.ts";
import * as glue from "../fixtures/shim-fixture/pkg/shim_fixture.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";

const wasmUrl = new URL("../fixtures/shim-fixture/pkg/shim_fixture_bg.wasm", import.meta.url);
const handler = createHandler(glue, wasmUrl, { name: "shim-fixture", env: () => ({}), maxReadBytes: 1 << 20 });
const url = (p: string) => `http://fixture.local/shim-fixture${p}`;

Deno.test("a normal request is handled by the wasm", async () => {
  const r = await handler(new Request(url("/echo"), { method: "POST", body: '{"a":1}' }));
  assertEquals(r.status, 200);
  const body = await r.json();
  assertEquals(body.data.body, { a: 1 });
});

Deno.test("a panic answers 500 in the envelope and the next request succeeds", async () => {
  const crashed = await handler(new Request(url("/panic")));
  assertEquals(crashed.status, 500);
  const body = await crashed.json();
  assertEquals(body.success, false);
  assertEquals(body.error.code, "function_crashed");
  assert(body.request_id);

  const next = await handler(new Request(url("/echo")));
  assertEquals(next.status, 200);
  assertEquals((await next.json()).success, true);
});

Deno.test("requests in flight when the instance traps get a 500, not a hang, and their late callbacks do not end the isolate", async () => {
  const slow = handler(new Request(url("/slow")));
  await new Promise((r) => setTimeout(r, 20));
  const crashed = await handler(new Request(url("/panic")));
  assertEquals(crashed.status, 500);
  await crashed.body?.cancel();
  const inFlight = await slow;
  assertEquals(inFlight.status, 500);
  assertEquals((await inFlight.json()).error.code, "function_crashed");
  const after = await handler(new Request(url("/echo")));
  assertEquals(after.status, 200);
  await after.body?.cancel();
  // The trapped instance's 300 ms sleep still fires, into the replaced instance:
  // the test outlives it, so an unclaimed error from it would fail this test.
  await new Promise((r) => setTimeout(r, 400));
  const later = await handler(new Request(url("/echo")));
  assertEquals(later.status, 200);
  await later.body?.cancel();
});

Deno.test("repeated panics keep recovering", async () => {
  for (let i = 0; i < 5; i++) {
    const c = await handler(new Request(url("/panic")));
    assertEquals(c.status, 500);
    await c.body?.cancel();
    const ok = await handler(new Request(url("/echo")));
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
  }
});

Deno.test("a non-UTF-8 body is a 400 envelope, not a crash", async () => {
  const r = await handler(new Request(url("/echo"), { method: "POST", body: new Uint8Array([0xff, 0xfe, 0x00, 0xc3]) }));
  assertEquals(r.status, 400);
  const body = await r.json();
  assertEquals(body.success, false);
  assertEquals(body.error.code, "invalid_json");
});

Deno.test("huge headers are refused with 431", async () => {
  const r = await handler(new Request(url("/echo"), { headers: { "x-big": "a".repeat(64 * 1024) } }));
  assertEquals(r.status, 431);
  assertEquals((await r.json()).error.code, "headers_too_large");
});

Deno.test("a body past the adapter's read cap is refused with 413 without reading it all", async () => {
  const r = await handler(new Request(url("/echo"), { method: "POST", body: new Uint8Array((1 << 20) + 1) }));
  assertEquals(r.status, 413);
  assertEquals((await r.json()).error.code, "payload_too_large");
});

Deno.test("a body past the function's own limit is refused by the wasm with 413", async () => {
  const h = createHandler(glue, wasmUrl, { name: "shim-fixture", env: () => ({ MAX_BODY_BYTES: "100" }) });
  const r = await h(new Request(url("/echo"), { method: "POST", body: "x".repeat(101) }));
  assertEquals(r.status, 413);
  const body = await r.json();
  assertEquals(body.error.code, "payload_too_large");
  assertEquals(body.error.details.limit_bytes, 100);
});

Deno.test("an unknown method is a 405, not a crash", async () => {
  const r = await handler(new Request(url("/echo"), { method: "PROPFIND" }));
  assertEquals(r.status, 405);
  await r.body?.cancel();
});

Deno.test("a refused request is answered without a promise from the wasm, in the envelope, with CORS and its id", async () => {
  const r = await handler(
    new Request(url("/echo"), {
      method: "PUT",
      headers: { "x-request-id": "req-fixed-1" },
    }),
  );
  assertEquals(r.status, 405);
  assertEquals(r.headers.get("x-request-id"), "req-fixed-1");
  assertEquals(r.headers.get("content-type"), "application/json");
  assert(r.headers.get("allow"));
  assertEquals(r.headers.get("access-control-allow-origin"), "*");
  const body = await r.json();
  assertEquals(body, {
    success: false,
    error: {
      code: "method_not_allowed",
      message: `method not allowed; use ${r.headers.get("allow")}`,
    },
    request_id: "req-fixed-1",
  });
  // The export's own answer: the reply itself, not a promise of it.
  // A buffered reply with a text body (or none) is one string: status, the
  // headers flat, a carriage return, the body.
  const reply = glue.handle(`PUT\n${url("/echo")}\n`, null, {});
  assert(typeof reply === "string");
  const [head, envelope] = [reply.slice(0, reply.indexOf("\r")), reply.slice(reply.indexOf("\r") + 1)];
  assert(head.startsWith("405\ncontent-type\napplication/json\nallow\n"), head);
  assert(head.endsWith(`\nx-request-id\n${JSON.parse(envelope).request_id}\n`), head);
  assertEquals(JSON.parse(envelope).error.code, "method_not_allowed");
  const preflight = glue.handle(`OPTIONS\n${url("/echo")}\norigin\nhttp://a.example\n`, null, {});
  assert(typeof preflight === "string" && preflight.startsWith("204\naccess-control-allow-origin\n*\n"), preflight);
  assert(preflight.endsWith("\n\r"), preflight);
  assert(glue.handle(`GET\n${url("/echo")}\n`, null, {}) instanceof Promise);
});

Deno.test("a trap in the synchronous stage answers 500 and resets the instance", async () => {
  let resets = 0;
  let trap = true;
  const fake = {
    initSync: (m: { module: BufferSource | WebAssembly.Module }) => glue.initSync(m),
    handle: (...args: Parameters<typeof glue.handle>) => {
      if (trap) throw new WebAssembly.RuntimeError("unreachable");
      return glue.handle(...args);
    },
    __wbg_reset_state: () => {
      resets += 1;
      glue.__wbg_reset_state();
    },
  };
  const h = createHandler(fake, wasmUrl, {
    name: "shim-fixture",
    env: () => ({}),
  });
  const crashed = await h(new Request(url("/echo"), { method: "PUT" }));
  assertEquals(crashed.status, 500);
  assertEquals((await crashed.json()).error.code, "function_crashed");
  assertEquals(resets, 1);
  trap = false;
  const next = await h(new Request(url("/echo"), { method: "PUT" }));
  assertEquals(next.status, 405);
  await next.body?.cancel();
});
