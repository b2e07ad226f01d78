// The keep-alive HTTP/1.1 client the adapter uses for the function's own project
// (supabase/functions/_shared/http1.ts): exchanges through __edgeworksFetch for
// SUPABASE_URL, fetch for anything else; bodies by length, chunks or close;
// connections reused, and not reused when the server says so or closed them;
// deadlines, drops and bad headers; TLS.
import { assert, assertEquals, assertRejects } from "../support/assert.ts";
import * as glue from "../fixtures/shim-fixture/pkg/shim_fixture.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";
import { Exchange, Http1Failure, Http1Pool, IDLE_MS } from "../../supabase/functions/_shared/http1.ts";

type Reply = { status: number; headers: string; body: Uint8Array };
type Failure = { timeout: boolean; message: string };
const edgeFetch = () =>
  (globalThis as unknown as {
    __edgeworksFetch: (m: string, u: string, h: string, b: Uint8Array, t: number) =>
      & Promise<Reply>
      & { abort(): void };
  }).__edgeworksFetch;

const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** What the exchange rejected with. */
const failure = async (p: Promise<unknown>) => (await assertRejects(() => p)) as Failure;

/** A project stand-in: counts connections, echoes what it got, streams, stalls. */
function project() {
  const connections = new Set<number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req, info) => {
    connections.add((info.remoteAddr as Deno.NetAddr).port);
    const url = new URL(req.url);
    if (url.pathname === "/chunked") {
      const parts = ["alpha-", "beta-", "x".repeat(40_000)];
      return new Response(
        new ReadableStream({
          start(c) {
            for (const p of parts) c.enqueue(new TextEncoder().encode(p));
            c.close();
          },
        }),
      );
    }
    if (url.pathname === "/slow") await new Promise((r) => setTimeout(r, 1_000));
    const got = await req.text();
    return new Response(
      JSON.stringify({
        method: req.method,
        path: url.pathname + url.search,
        body: got,
        ua: req.headers.get("user-agent"),
        apikey: req.headers.get("apikey"),
      }),
      {
        status: url.pathname === "/created" ? 201 : 200,
        headers: { "content-type": "application/json", "x-one": "1" },
      },
    );
  });
  return { server, connections, base: `http://127.0.0.1:${server.addr.port}` };
}

Deno.test({
  name: "the project's URLs go through one kept connection; other origins go to fetch",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const p = project();
    const other = project();
    try {
      const handler = createHandler(
        glue,
        new URL("../fixtures/shim-fixture/pkg/shim_fixture_bg.wasm", import.meta.url),
        {
          name: "shim-fixture",
          env: () => ({ SUPABASE_URL: p.base }),
        },
      );
      await (await handler(new Request("http://fn.local/", { method: "OPTIONS" }))).body?.cancel();

      const body = new TextEncoder().encode('{"p":1}');
      for (let i = 0; i < 20; i++) {
        const pending = edgeFetch()(
          "POST",
          `${p.base}/created?i=${i}#frag`,
          "apikey\nk-1\ncontent-type\napplication/json\n",
          body,
          5_000,
        );
        const r = await pending;
        assertEquals(r.status, 201);
        assert(r.headers.includes("x-one\n1\n") && r.headers.includes("content-type\napplication/json\n"), r.headers);
        const seen = JSON.parse(text(r.body));
        assertEquals(seen, { method: "POST", path: `/created?i=${i}`, body: '{"p":1}', ua: null, apikey: "k-1" });
      }
      // Twenty exchanges, one connection (fetch would name itself in user-agent).
      assertEquals(p.connections.size, 1);

      const chunked = await edgeFetch()("GET", `${p.base}/chunked`, "", new Uint8Array(), 5_000);
      assertEquals(text(chunked.body), "alpha-beta-" + "x".repeat(40_000));
      assertEquals(p.connections.size, 1);

      const elsewhere = await edgeFetch()("GET", `${other.base}/x`, "", new Uint8Array(), 5_000);
      assert(JSON.parse(text(elsewhere.body)).ua?.startsWith("Deno/"), "another origin is fetch's");
    } finally {
      await p.server.shutdown();
      await other.server.shutdown();
    }
  },
});

Deno.test({
  name: "deadlines, drops and unsendable headers fail the exchange the way fetch's do",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const p = project();
    const pool = new Http1Pool(p.base);
    const run = (method: string, target: string, headers = "", ms = 5_000) => {
      const control = new Exchange();
      const timer = setTimeout(() => control.end(true), ms);
      return pool.request(method, target, headers, null, control).finally(() => clearTimeout(timer));
    };
    try {
      const slow = await failure(run("GET", "/slow", "", 100));
      assert(slow instanceof Http1Failure && slow.timeout, String(slow));

      const control = new Exchange();
      const dropped = pool.request("GET", "/slow", "", null, control);
      setTimeout(() => control.end(false), 50);
      const d = await failure(dropped);
      assertEquals(d.timeout, false);

      const injected = await failure(run("GET", "/x", "x-evil\nv\r\nhost: elsewhere\n"));
      assertEquals(injected.timeout, false);
      assert(/cannot be sent/.test(injected.message), injected.message);
      // Still usable afterwards.
      assertEquals((await run("GET", "/after")).status, 200);

      const refused = await failure(new Http1Pool("http://127.0.0.1:9").request("GET", "/", "", null, new Exchange()));
      assertEquals(refused.timeout, false);
      assertEquals(pool.target(`${p.base}/a b`), null);
      assertEquals(pool.target(`${p.base}x/a`), null);
      assertEquals(pool.target(`${p.base}/a?b=1#c`), "/a?b=1");
    } finally {
      pool.close();
      await p.server.shutdown();
    }
  },
});

Deno.test({
  name: "a connection unused for IDLE_MS is closed, not reused",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const p = project();
    const pool = new Http1Pool(p.base);
    try {
      const get = () => pool.request("GET", "/x", "", null, new Exchange());
      await get();
      await get();
      assertEquals(p.connections.size, 1);
      await new Promise((r) => setTimeout(r, IDLE_MS + 100));
      await get();
      assertEquals(p.connections.size, 2);
    } finally {
      pool.close();
      await p.server.shutdown();
    }
  },
});

/** A bare HTTP/1.1 server: answers each connection's requests by `answers`, then closes it. */
function rawServer(answers: (n: number) => string[]) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const seen: string[] = [];
  (async () => {
    for await (const conn of listener) {
      const mine = answers(accepted++);
      (async () => {
        const buf = new Uint8Array(65536);
        let have = "";
        for (const answer of mine) {
          while (!have.includes("\r\n\r\n")) {
            const n = await conn.read(buf).catch(() => null);
            if (!n) return;
            have += new TextDecoder().decode(buf.subarray(0, n));
          }
          const end = have.indexOf("\r\n\r\n") + 4;
          seen.push(have.slice(0, have.indexOf("\r\n")));
          have = have.slice(end);
          await conn.write(new TextEncoder().encode(answer));
        }
        conn.close();
      })();
    }
  })().catch(() => {});
  return { listener, seen, accepted: () => accepted, base: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}` };
}

const ok = (body: string, extra = "") => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`;

Deno.test({
  name: "a connection the server closed is replaced once, without sending the request twice",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // Each connection answers one request, then the server closes it.
    const s = rawServer(() => [ok("one")]);
    const pool = new Http1Pool(s.base);
    try {
      assertEquals(text((await pool.request("POST", "/a", "", new Uint8Array([1]), new Exchange())).body), "one");
      await new Promise((r) => setTimeout(r, 50)); // the close reaches us
      assertEquals(text((await pool.request("POST", "/b", "", new Uint8Array([2]), new Exchange())).body), "one");
      assertEquals(s.seen, ["POST /a HTTP/1.1", "POST /b HTTP/1.1"]);
      assertEquals(s.accepted(), 2);
    } finally {
      pool.close();
      s.listener.close();
    }
  },
});

Deno.test({
  name: "connection: close, HTTP/1.0 and read-to-close answers are not reused; 1xx answers are skipped",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const s = rawServer((n) =>
      [
        [ok("closing", "connection: close\r\n")],
        ["HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"],
        ["HTTP/1.1 200 OK\r\n\r\nto-the-end"],
        ["HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok("after-hints"), ok("again")],
      ][n] ?? []
    );
    const pool = new Http1Pool(s.base);
    try {
      const get = async () => text((await pool.request("GET", "/", "", null, new Exchange())).body);
      assertEquals(await get(), "closing");
      assertEquals(await get(), "old");
      assertEquals(await get(), "to-the-end");
      assertEquals(await get(), "after-hints");
      assertEquals(await get(), "again"); // the fourth connection, kept
      assertEquals(s.accepted(), 4);
    } finally {
      pool.close();
      s.listener.close();
    }
  },
});

Deno.test({
  name: "a malformed answer fails the exchange instead of waiting on it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const bad = [
      "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nab",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
      "SMTP ready\r\n\r\n",
    ];
    const s = rawServer((n) => (n < bad.length ? [bad[n]] : []));
    const pool = new Http1Pool(s.base);
    try {
      for (let i = 0; i < bad.length; i++) {
        const f = await failure(pool.request("GET", `/${i}`, "", null, new Exchange()));
        assert(f instanceof Http1Failure && !f.timeout, `answer ${i}: ${f}`);
      }
    } finally {
      pool.close();
      s.listener.close();
    }
  },
});

Deno.test({
  name: "https: the same exchange over TLS",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      // A throwaway CA and a certificate for localhost signed by it.
      await Deno.writeTextFile(`${dir}/leaf.ext`, "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n");
      for (
        const args of [
          [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=edgeworks-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            `${dir}/ca.key`,
            "-out",
            `${dir}/ca.pem`,
          ],
          [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            `${dir}/key.pem`,
            "-out",
            `${dir}/leaf.csr`,
          ],
          [
            "x509",
            "-req",
            "-in",
            `${dir}/leaf.csr`,
            "-CA",
            `${dir}/ca.pem`,
            "-CAkey",
            `${dir}/ca.key`,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            `${dir}/leaf.ext`,
            "-out",
            `${dir}/cert.pem`,
          ],
        ]
      ) {
        const made = await new Deno.Command("openssl", { args, stdout: "null", stderr: "null" }).output();
        assert(made.success, `openssl ${args[0]}`);
      }
      const ca = await Deno.readTextFile(`${dir}/ca.pem`);
      const cert = await Deno.readTextFile(`${dir}/cert.pem`);
      const key = await Deno.readTextFile(`${dir}/key.pem`);
      const server = Deno.serve(
        { hostname: "127.0.0.1", port: 0, cert, key, onListen() {} },
        (req) => new Response(`secure ${new URL(req.url).pathname}`),
      );
      const pool = new Http1Pool(`https://localhost:${server.addr.port}`, { caCerts: [ca] });
      try {
        for (const path of ["/a", "/b"]) {
          const r = await pool.request("GET", path, "", null, new Exchange());
          assertEquals([r.status, text(r.body)], [200, `secure ${path}`]);
        }
      } finally {
        pool.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
