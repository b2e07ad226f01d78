// The Rust functions' buffered fetch goes through one adapter helper,
// `__edgeworksFetch` (supabase/functions/_shared/serve.ts, called from
// crates/runtime/src/fetch.rs). Its deadline covers the headers and the body,
// a deadline that passed is told apart from any other failure (Rust maps the
// first to TransportError::Timeout, the second to Network), and the body it
// was handed (a view of wasm memory) is copied before the call returns.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import * as glue from "../fixtures/shim-fixture/pkg/shim_fixture.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";

createHandler(glue, new URL("../fixtures/shim-fixture/pkg/shim_fixture_bg.wasm", import.meta.url), {
  name: "shim-fixture",
  env: () => ({}),
});

type Reply = { status: number; headers: string; body: Uint8Array };
type Failure = { timeout: boolean; message: string };
const edgeFetch = (globalThis as unknown as {
  __edgeworksFetch: (m: string, u: string, h: string, b: Uint8Array, t: number) => Promise<Reply>;
}).__edgeworksFetch;

/** What the exchange rejected with. */
const failure = async (p: Promise<Reply>) => (await assertRejects(() => p)) as Failure;

Deno.test({
  name: "an exchange answers status, flat headers and body; the body sent is a copy",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const got = new Uint8Array(await req.arrayBuffer());
      return new Response(got, { status: 201, headers: { "x-seen": req.headers.get("x-sent") ?? "" } });
    });
    try {
      const body = new Uint8Array([1, 2, 3]);
      const pending = edgeFetch("POST", `http://127.0.0.1:${server.addr.port}/`, "x-sent\nyes\n", body, 5_000);
      body.fill(9); // the wasm reuses its memory as soon as the call returns
      const r = await pending;
      assertEquals(r.status, 201);
      assert(r.headers.includes("x-seen\nyes\n"), r.headers);
      assertEquals([...r.body], [1, 2, 3]);
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "a deadline passed before the headers or during the body is a timeout; a refused connection is not",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      if (req.url.endsWith("/slow-head")) await new Promise((r) => setTimeout(r, 1_000));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode("first"));
          timer = setTimeout(() => c.close(), 1_000);
        },
        cancel() {
          clearTimeout(timer);
        },
      });
      return new Response(req.url.endsWith("/slow-body") ? stalled : "ok");
    });
    const base = `http://127.0.0.1:${server.addr.port}`;
    try {
      const head = await failure(edgeFetch("GET", `${base}/slow-head`, "", new Uint8Array(), 100));
      assertEquals(head.timeout, true);
      const body = await failure(edgeFetch("GET", `${base}/slow-body`, "", new Uint8Array(), 200));
      assertEquals(body.timeout, true);
      const refused = await failure(edgeFetch("GET", "http://127.0.0.1:9/", "", new Uint8Array(), 5_000));
      assertEquals(refused.timeout, false);
      assert(refused.message.length > 0);
    } finally {
      await server.shutdown();
    }
  },
});
