// The gateway's HTTP/1.1 front (scripts/local/http_front.ts) around a tiny
// inner handler, over raw sockets: heads the server library would refuse with
// a bare 400 get the envelope (414, 431, 400, 408), and everything else goes
// through as before — keep-alive, pipelining, chunked bodies, WebSockets — with
// the handler seeing the socket peer as the client, whatever the client writes.
import net from "node:net";
import { assert, assertEquals } from "../../support/assert.ts";
import { randomLoopback } from "../../support/loopback_client.ts";
import { type FrontLimits, serveWithFront } from "../../../scripts/local/http_front.ts";

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

/** Starts a front with a handler that echoes what it saw; stopped by `fn`'s end. */
async function withFront(
  fn: (port: number, innerPort: number) => Promise<void>,
  limits: Partial<FrontLimits> = {},
): Promise<void> {
  const server = serveWithFront({ hostname: "127.0.0.1", port: 0, limits, log: () => {} }, async (req, info) => {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("no", { status: 426 });
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo:${e.data}`);
      return response;
    }
    if (url.pathname === "/slow") await new Promise((r) => setTimeout(r, Number(url.searchParams.get("ms"))));
    const body = new Uint8Array(await req.arrayBuffer());
    return Response.json({
      method: req.method,
      path: url.pathname,
      peer: info.remoteAddr.hostname,
      xff: req.headers.get("x-forwarded-for"),
      bodyBytes: body.length,
      bodyText: new TextDecoder().decode(body.subarray(0, 64)),
      trailer: req.headers.get("x-trailer"),
    });
  });
  try {
    await fn(server.port, server.innerPort);
  } finally {
    await server.shutdown();
  }
}

/** A raw connection that reads whole HTTP/1.1 answers (Content-Length or chunked). */
class RawClient {
  private pending = new Uint8Array();
  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** More bytes, or false at end of stream. */
  private async more(): Promise<boolean> {
    const b = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.conn.read(b);
    } catch {
      n = null;
    }
    if (n === null) return false;
    const out = new Uint8Array(this.pending.length + n);
    out.set(this.pending);
    out.set(b.subarray(0, n), this.pending.length);
    this.pending = out;
    return true;
  }

  private text(from: number, to: number): string {
    return new TextDecoder().decode(this.pending.subarray(from, to));
  }

  private indexOf(seq: string, from = 0): number {
    const s = new TextEncoder().encode(seq);
    outer: for (let i = from; i + s.length <= this.pending.length; i++) {
      for (let j = 0; j < s.length; j++) if (this.pending[i + j] !== s[j]) continue outer;
      return i;
    }
    return -1;
  }

  /** The next answer; null if the connection ended first. */
  async answer(): Promise<Answer | null> {
    let end: number;
    while ((end = this.indexOf("\r\n\r\n")) < 0) if (!(await this.more())) return null;
    const [statusLine, ...lines] = this.text(0, end).split("\r\n");
    const headers = new Headers();
    for (const l of lines) headers.append(l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim());
    let pos = end + 4;
    let body = "";
    if (headers.get("transfer-encoding") === "chunked") {
      for (;;) {
        let le: number;
        while ((le = this.indexOf("\r\n", pos)) < 0) if (!(await this.more())) return null;
        const size = parseInt(this.text(pos, le), 16);
        while (this.pending.length < le + 2 + size + 2) if (!(await this.more())) return null;
        body += this.text(le + 2, le + 2 + size);
        pos = le + 2 + size + 2;
        if (size === 0) break;
      }
    } else {
      const len = Number(headers.get("content-length") ?? 0);
      while (this.pending.length < pos + len) if (!(await this.more())) return null;
      body = this.text(pos, pos + len);
      pos += len;
    }
    this.pending = this.pending.slice(pos);
    return { status: Number(statusLine.split(" ")[1]), headers, body };
  }

  /** True if the server closed the connection (nothing more to read). */
  async closedByServer(): Promise<boolean> {
    return this.pending.length === 0 && !(await this.more());
  }

  close() {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** One request on a fresh connection, half-closed after sending, and its answer. */
async function once(port: number, request: string | Uint8Array): Promise<Answer> {
  const c = await RawClient.open(port);
  try {
    await c.send(request);
    const a = await c.answer();
    assert(a !== null, "the connection ended without an answer");
    return a;
  } finally {
    c.close();
  }
}

function assertFrontEnvelope(a: Answer, status: number, code: string) {
  assertEquals(a.status, status, a.body);
  const body = JSON.parse(a.body);
  assertEquals(body.success, false);
  assertEquals(body.error.code, code);
  assert(typeof body.error.message === "string" && typeof body.request_id === "string", a.body);
  assertEquals(a.headers.get("content-type"), "application/json");
  assertEquals(a.headers.get("connection"), "close");
}

const get = (target: string, extra = "") => `GET ${target} HTTP/1.1\r\nhost: x\r\n${extra}\r\n`;

Deno.test("front: 20,000 query parameters (an 80 KB URI) are 414 uri_too_long in the envelope", async () => {
  await withFront(async (port) => {
    const query = Array.from({ length: 20_000 }, () => "a=1").join("&");
    assertFrontEnvelope(await once(port, get(`/p?${query}`)), 414, "uri_too_long");
  });
});

Deno.test("front: 100 KB of headers is 431, and so are more header fields than the limit", async () => {
  await withFront(async (port) => {
    const big = Array.from({ length: 10 }, (_, i) => `x-h${i}: ${"v".repeat(10 * 1024)}\r\n`).join("");
    assertFrontEnvelope(await once(port, get("/p", big)), 431, "header_fields_too_large");
    const many = Array.from({ length: 150 }, (_, i) => `x-h${i}: v\r\n`).join("");
    assertFrontEnvelope(await once(port, get("/p", many)), 431, "header_fields_too_many");
  });
});

Deno.test("front: malformed heads are 400 malformed_request in the envelope, never a bare 400", async () => {
  await withFront(async (port) => {
    for (
      const bad of [
        "GET  /p HTTP/1.1\r\nhost: x\r\n\r\n", // two spaces
        "GET /p HTTP/9.9\r\nhost: x\r\n\r\n",
        "G@T /p HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /p\x01 HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /p HTTP/1.1\r\nx-a : b\r\n\r\n", // space before the colon
        "GET /p HTTP/1.1\r\nhost: x\r\n folded\r\n\r\n",
        "GET /p HTTP/1.1\nhost: x\n\r\n\r\n", // bare LF
        // Framing the front and the server could disagree on (request smuggling):
        "POST /p HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /p HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        "POST /p HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
      ]
    ) {
      assertFrontEnvelope(await once(port, bad), 400, "malformed_request");
    }
  });
});

Deno.test("front: a head that is not finished within the head timeout is 408, in time", async () => {
  await withFront(async (port) => {
    const c = await RawClient.open(port);
    try {
      const started = performance.now();
      await c.send("GET /p HTTP/1.1\r\nhost: x\r\nx-slow: ");
      const a = await c.answer();
      const ms = performance.now() - started;
      assert(a !== null);
      assertFrontEnvelope(a, 408, "request_timeout");
      assert(ms >= 250 && ms < 3000, `answered after ${ms} ms; the timeout is 300 ms`);
    } finally {
      c.close();
    }
    // A connection that sends nothing at all gets the same.
    const silent = await RawClient.open(port);
    try {
      const a = await silent.answer();
      assert(a !== null);
      assertFrontEnvelope(a, 408, "request_timeout");
    } finally {
      silent.close();
    }
  }, { headTimeoutMs: 300 });
});

Deno.test("front: the longest head it lets through is one the inner server parses", async () => {
  await withFront(async (port) => {
    // Request line and header section at their limits (32 KiB, 24 KiB).
    const target = "/p?" + "q".repeat(32 * 1024 - "GET  HTTP/1.1".length - 3);
    const line = `GET ${target} HTTP/1.1`;
    assertEquals(line.length, 32 * 1024);
    const fill = 24 * 1024 - "host: x\r\nx-big: \r\n\r\n".length;
    const a = await once(port, `${line}\r\nhost: x\r\nx-big: ${"v".repeat(fill)}\r\n\r\n`);
    assertEquals(a.status, 200, a.body);
    // One byte more is the front's refusal.
    const over = await once(port, `${line}q\r\nhost: x\r\n\r\n`);
    assertFrontEnvelope(over, 414, "uri_too_long");
  });
});

Deno.test("front: keep-alive, a chunked POST with trailers and a pipelined pair all get their own answers", async () => {
  await withFront(async (port) => {
    const c = await RawClient.open(port);
    try {
      // Two requests one after the other on one connection.
      await c.send(get("/one"));
      assertEquals(JSON.parse((await c.answer())!.body).path, "/one");
      await c.send(get("/two"));
      assertEquals(JSON.parse((await c.answer())!.body).path, "/two");

      // Chunked, sent in pieces that split the size lines and the data.
      const chunks = [
        "POST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r",
        "\nhello\r\n1",
        "0\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n",
      ];
      for (const part of chunks) {
        await c.send(part);
        await new Promise((r) => setTimeout(r, 20));
      }
      const posted = JSON.parse((await c.answer())!.body);
      assertEquals([posted.path, posted.bodyBytes, posted.bodyText], ["/chunked", 21, "hello0123456789abcdef"]);

      // Pipelined: a POST with a Content-Length body and a GET in one write.
      await c.send(
        "POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nbody" + get("/second"),
      );
      const first = JSON.parse((await c.answer())!.body);
      const second = JSON.parse((await c.answer())!.body);
      assertEquals([first.path, first.bodyText, second.path], ["/first", "body", "/second"]);

      // Connection: close is honoured: the answer, then the end of the connection.
      await c.send(get("/last", "connection: close\r\n"));
      assertEquals(JSON.parse((await c.answer())!.body).path, "/last");
      assert(await c.closedByServer(), "the connection stays open after Connection: close");
    } finally {
      c.close();
    }
  });
});

Deno.test("front: an answer slower than the idle timeout still arrives, and a refusal waits for earlier answers", async () => {
  await withFront(async (port) => {
    const c = await RawClient.open(port);
    try {
      // The handler takes 600 ms; the connection is idle for 200 ms meanwhile.
      await c.send(get("/slow?ms=600") + get(`/p?${"a=1&".repeat(20_000)}`));
      const slow = await c.answer();
      assertEquals(JSON.parse(slow!.body).path, "/slow");
      // The pipelined oversize request is refused after the first answer, in order.
      assertFrontEnvelope((await c.answer())!, 414, "uri_too_long");
    } finally {
      c.close();
    }
  }, { idleTimeoutMs: 200 });
});

Deno.test("front: a WebSocket upgrade switches to raw piping; a refused upgrade keeps the connection for requests", async () => {
  await withFront(async (port) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        ws.send("a");
        ws.send("b".repeat(100_000));
      };
      ws.onmessage = (e) => {
        got.push(String(e.data));
        if (got.length === 2) resolve();
      };
      ws.onerror = () => reject(new Error("websocket error"));
    });
    ws.close();
    await new Promise((r) => ws.onclose = r);
    assertEquals(got[0], "echo:a");
    assertEquals(got[1].length, "echo:".length + 100_000);

    // Upgrade asked for and refused: the connection goes on with HTTP.
    const c = await RawClient.open(port);
    try {
      await c.send(get("/ws", "upgrade: nonsense\r\nconnection: upgrade\r\n"));
      assertEquals((await c.answer())!.status, 426);
      await c.send(get("/after"));
      assertEquals(JSON.parse((await c.answer())!.body).path, "/after");
    } finally {
      c.close();
    }
  });
});

/** One GET from a chosen loopback source address, with extra header lines. */
function getFrom(localAddress: string, port: number, extra: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress }, () => {
      s.end(get("/who", extra + "connection: close\r\n"));
    });
    let text = "";
    s.on("data", (d: Uint8Array) => text += new TextDecoder().decode(d));
    s.on("end", () => resolve(text.slice(text.indexOf("\r\n\r\n") + 4)));
    s.on("error", reject);
  });
}

Deno.test("front: the handler sees the socket peer as the client, whatever the client writes, and nothing bypasses the front", async () => {
  await withFront(async (port, innerPort) => {
    const source = randomLoopback();
    const seen = JSON.parse(
      await getFrom(source, port, "x-forwarded-for: 10.9.9.9\r\nx-real-ip: 10.9.9.9\r\nforwarded: for=10.9.9.9\r\n"),
    );
    assertEquals(seen.peer, source);
    // A connection straight to the inner port is not through the front: refused.
    const direct = await once(innerPort, get("/who", "connection: close\r\n"));
    assertEquals(direct.status, 403, direct.body);
    assertEquals(JSON.parse(direct.body).error.code, "not_through_gateway");
  });
});

Deno.test("front: a client that half-closes after a slow request still gets its answer", async () => {
  await withFront(async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(get("/slow?ms=300"));
      await c.conn.closeWrite();
      const a = await c.answer();
      assertEquals(JSON.parse(a!.body).path, "/slow");
      assert(await c.closedByServer());
    } finally {
      c.close();
    }
  });
});
