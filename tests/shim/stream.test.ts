// Streamed replies and WebSockets through the shared adapter, on the real
// wasm fixture (tests/fixtures/shim-fixture, built by `scripts/build --fixtures`):
// SSE order and ids, Last-Event-ID, a client abort reaching the Rust
// producer and its upstream fetch, a panic mid-stream, and an echo socket
// authenticated by a token in Sec-WebSocket-Protocol.
import { assert, assertEquals } from "../support/assert.ts";
import * as glue from "../fixtures/shim-fixture/pkg/shim_fixture.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";
import { signJwt } from "../../scripts/local/jwt.ts";

const SECRET = "shim-stream-test-secret-at-least-32-bytes";
const wasmUrl = new URL("../fixtures/shim-fixture/pkg/shim_fixture_bg.wasm", import.meta.url);
const handler = createHandler(glue, wasmUrl, {
  name: "shim-fixture",
  // SUPABASE_URL names the project; HS256 tokens never fetch its JWKS.
  env: () => ({ SUPABASE_JWT_SECRET: SECRET, SUPABASE_URL: "http://127.0.0.1:9" }),
  maxReadBytes: 1 << 20,
});

/** A service-role token as the platform signs API keys (HS256, no sub/aud). */
async function serviceToken(secret = SECRET): Promise<string> {
  return await signJwt({ role: "service_role", iss: "supabase", exp: Math.floor(Date.now() / 1000) + 600 }, secret);
}

/** Parses an event stream into {id, event, data} records. */
function parseSse(text: string) {
  return text.split("\n\n").filter((b) => b.trim() && !b.startsWith(":")).map((block) => {
    const e: Record<string, string> = {};
    for (const line of block.split("\n")) {
      const i = line.indexOf(": ");
      e[line.slice(0, i)] = (e[line.slice(0, i)] ? e[line.slice(0, i)] + "\n" : "") + line.slice(i + 2);
    }
    return e;
  });
}

function serve(): { url: string; server: Deno.HttpServer } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/shim-fixture`, server };
}

Deno.test("1,000 SSE events arrive in order with their ids", async () => {
  const r = await handler(new Request("http://f.local/shim-fixture/sse?n=1000"));
  assertEquals(r.status, 200);
  assert(r.headers.get("content-type")?.startsWith("text/event-stream"));
  const events = parseSse(await r.text()).filter((e) => e.event !== "hello");
  assertEquals(events.length, 1000);
  events.forEach((e, i) => {
    assertEquals(e.id, String(i + 1));
    assertEquals(e.data, `event ${i + 1}`);
  });
});

Deno.test("a reconnect's Last-Event-ID reaches the handler, which resumes after it", async () => {
  const r = await handler(new Request("http://f.local/shim-fixture/sse?n=10", { headers: { "last-event-id": "7" } }));
  const events = parseSse(await r.text());
  assertEquals(JSON.parse(events[0].data), { last_event_id: "7" });
  assertEquals(events.slice(1).map((e) => e.id), ["8", "9", "10"]);
});

Deno.test("a client abort stops the Rust producer and aborts its upstream fetch within 1 s", async () => {
  const upstreamAborted = Promise.withResolvers<number>();
  const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    // Answers only once the caller gave up, so the server can shut down.
    return new Promise<Response>((answer) =>
      req.signal.addEventListener("abort", () => {
        upstreamAborted.resolve(Date.now());
        answer(new Response(null));
      })
    );
  });
  const upstreamUrl = `http://127.0.0.1:${(upstream.addr as Deno.NetAddr).port}/hang`;
  const { url, server } = serve();
  try {
    const client = new AbortController();
    const r = await fetch(`${url}/sse-upstream?url=${encodeURIComponent(upstreamUrl)}`, { signal: client.signal });
    const reader = r.body!.getReader();
    await reader.read(); // "started": the producer is now awaiting the upstream
    await new Promise((res) => setTimeout(res, 100));
    const live = await (await handler(new Request("http://f.local/shim-fixture/live"))).json();
    assertEquals(live.data.live, 1);
    const abortedAt = Date.now();
    client.abort();
    await reader.cancel().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<number>((res) => timer = setTimeout(() => res(-1), 1000));
    const seen = await Promise.race([upstreamAborted.promise, deadline]);
    clearTimeout(timer);
    assert(seen > 0 && seen - abortedAt < 1000, "the upstream fetch was not aborted within 1 s");
    const after = await (await handler(new Request("http://f.local/shim-fixture/live"))).json();
    assertEquals(after.data.live, 0);
  } finally {
    await server.shutdown();
    await upstream.shutdown();
  }
});

Deno.test("a panic mid-stream ends the stream with an error event and the next request succeeds", async () => {
  const r = await handler(new Request("http://f.local/shim-fixture/sse-panic"));
  const events = parseSse(await r.text());
  const last = events[events.length - 1];
  assertEquals(last.event, "error");
  assertEquals(JSON.parse(last.data).code, "function_crashed");
  const next = await handler(new Request("http://f.local/shim-fixture/echo"));
  assertEquals(next.status, 200);
  await next.body?.cancel();
});

function open(
  url: string,
  protocols: string[],
): Promise<{ ws: WebSocket; opened: boolean; closed: Promise<CloseEvent> }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    const closed = new Promise<CloseEvent>((res) => ws.addEventListener("close", (e) => res(e)));
    ws.onopen = () => resolve({ ws, opened: true, closed });
    ws.onerror = () => resolve({ ws, opened: false, closed });
  });
}

function nextMessage(ws: WebSocket): Promise<string> {
  return new Promise((res) => ws.addEventListener("message", (e) => res(String(e.data)), { once: true }));
}

Deno.test("a WebSocket with its token in Sec-WebSocket-Protocol echoes through Rust", async () => {
  const { url, server } = serve();
  try {
    const { ws, opened, closed } = await open(`${url.replace("http", "ws")}/ws`, ["edgeworks", await serviceToken()]);
    assert(opened);
    assertEquals(ws.protocol, "edgeworks");
    for (const text of ["one", "two", "three"]) {
      const reply = nextMessage(ws);
      ws.send(text);
      assertEquals(await reply, text);
    }
    ws.close(1000);
    await closed;
  } finally {
    await server.shutdown();
  }
});

Deno.test("a WebSocket with a bad token is refused before the upgrade", async () => {
  const { url, server } = serve();
  try {
    const { opened, closed } = await open(`${url.replace("http", "ws")}/ws`, [
      "edgeworks",
      await serviceToken("another-secret-of-at-least-32-bytes!!"),
    ]);
    assertEquals(opened, false);
    await closed;
    const plain = await handler(new Request("http://f.local/shim-fixture/ws", { headers: { upgrade: "websocket" } }));
    assertEquals(plain.status, 401);
    await plain.body?.cancel();
  } finally {
    await server.shutdown();
  }
});

Deno.test("a panic mid-socket closes it with 1011 and the next connection works", async () => {
  const { url, server } = serve();
  try {
    const first = await open(`${url.replace("http", "ws")}/ws`, ["edgeworks", await serviceToken()]);
    assert(first.opened);
    first.ws.send("panic");
    const closed = await first.closed;
    assertEquals(closed.code, 1011);
    const second = await open(`${url.replace("http", "ws")}/ws`, ["edgeworks", await serviceToken()]);
    assert(second.opened);
    const reply = nextMessage(second.ws);
    second.ws.send("again");
    assertEquals(await reply, "again");
    second.ws.close(1000);
    await second.closed;
  } finally {
    await server.shutdown();
  }
});
