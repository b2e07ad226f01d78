// The gateway's hop to its upstreams (forward() in scripts/local/gateway.ts,
// the same for /rest/v1 and for functions): a gateway of the test's own, with
// /rest/v1 pointed at a raw HTTP/1.1 upstream the test writes, so what the
// gateway sends on which connection is seen byte for byte, and the upstream
// can close a kept-alive connection at the worst moment: when the next
// request arrives on it. Clients speak over raw sockets with
// `Connection: close`, as node:http's agent-less requests do (the rate-limit
// tests' loopback client). Needs no stack: no functions, no database.
import { assert, assertEquals, assertExcludes, assertIncludes, assertMatch } from "../../support/assert.ts";
import { assertEnvelope } from "../../support/stack.ts";

const GATEWAY = new URL("../../../scripts/local/gateway.ts", import.meta.url).pathname;
const latin1 = new TextDecoder("latin1");

interface Seen {
  /** Which upstream connection (1, 2, ...) and which request on it (0, 1, ...). */
  conn: number;
  nth: number;
  head: string;
  body: string;
  /** False when the upstream closed the connection instead of answering. */
  answered: boolean;
}

/**
 * A raw HTTP/1.1 upstream on 127.0.0.1. It answers 200 with where it saw the
 * request, closes after answering a `Connection: close` request (as servers
 * do), and, with `closeReused`, answers only the first request on each
 * connection: a second one is read in full and met with a close, as a
 * connection the upstream closed just as the gateway reused it.
 */
function rawUpstream(opts: { closeReused: boolean }) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Seen[] = [];
  const open = new Set<Deno.Conn>();
  let conns = 0;
  const serve = async (c: Deno.Conn, conn: number) => {
    open.add(c);
    let pending = "";
    const buf = new Uint8Array(16 * 1024);
    try {
      for (let nth = 0;; nth++) {
        // A whole request: the head, then a Content-Length body.
        while (!pending.includes("\r\n\r\n")) {
          const n = await c.read(buf);
          if (n === null) return;
          pending += latin1.decode(buf.subarray(0, n));
        }
        const end = pending.indexOf("\r\n\r\n");
        const head = pending.slice(0, end);
        const length = Number(head.match(/\r\ncontent-length:\s*(\d+)/i)?.[1] ?? 0);
        while (pending.length < end + 4 + length) {
          const n = await c.read(buf);
          if (n === null) return;
          pending += latin1.decode(buf.subarray(0, n));
        }
        const body = pending.slice(end + 4, end + 4 + length);
        pending = pending.slice(end + 4 + length);
        if (opts.closeReused && nth > 0) {
          seen.push({ conn, nth, head, body, answered: false });
          return;
        }
        seen.push({ conn, nth, head, body, answered: true });
        const answer = JSON.stringify({ conn, nth });
        await c.write(new TextEncoder().encode(
          `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${answer.length}\r\n\r\n${answer}`,
        ));
        if (/\r\nconnection:[^\r]*\bclose\b/i.test(head)) return;
      }
    } catch {
      // The gateway went away.
    } finally {
      open.delete(c);
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const c of listener) serve(c, ++conns);
    } catch { /* closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    seen,
    async close() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await accepting;
    },
  };
}

/** A gateway of its own on a free port, /rest/v1 -> `restUrl`; stopped (and its logs returned) after `fn`. */
async function withGateway(restUrl: string, fn: (port: number) => Promise<void>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ew-gateway-upstream-" });
  await Deno.mkdir(`${dir}/functions`);
  try {
    // A port found free may be taken before the gateway binds it: then another, a few times at most.
    for (let attempt = 1;; attempt++) {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const run = await runGateway(dir, port, restUrl, fn);
      if (run.started || attempt === 3 || !run.logs.includes("AddrInUse")) {
        assert(run.started, `the gateway did not start:\n${run.logs}`);
        return run.logs;
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the gateway on `port` and `fn` once it is ready; whether it started, and everything it logged. */
async function runGateway(
  dir: string,
  port: number,
  restUrl: string,
  fn: (port: number) => Promise<void>,
): Promise<{ started: boolean; logs: string }> {
  await Deno.writeTextFile(
    `${dir}/gateway.json`,
    JSON.stringify({
      port,
      rest_url: restUrl,
      s3: null,
      deno: Deno.execPath(),
      functions_root: `${dir}/functions`,
      config_toml: null,
      functions: [],
      function_env: { SUPABASE_JWT_SECRET: "gateway-upstream-test-secret-000000000000" },
      service_role_key: "",
      cron: [],
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      `--allow-write=${dir}`,
      GATEWAY,
    ],
    clearEnv: true,
    env: {
      EW_GATEWAY_CONFIG: `${dir}/gateway.json`,
      DENO_DIR: Deno.env.get("DENO_DIR") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let logs = "";
  let exited = false;
  const status = child.status.finally(() => (exited = true));
  const drain = async (s: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of s) logs += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  let started = false;
  try {
    const deadline = Date.now() + 30_000;
    while (!logs.includes("gateway ready") && !exited && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    started = logs.includes("gateway ready");
    if (started) await fn(port);
  } finally {
    if (!exited) child.kill("SIGTERM");
    await status;
    await drained;
  }
  return { started, logs };
}

interface Answer {
  status: number;
  body: string;
}

/** One request on a connection of its own, `Connection: close` among `headers`; read to the end. */
async function request(port: number, head: string, headers: string[], body = ""): Promise<Answer> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [head, "host: 127.0.0.1", ...headers];
    if (body) lines.push(`content-length: ${new TextEncoder().encode(body).length}`);
    await c.write(new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n${body}`));
    let text = "";
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break;
      text += latin1.decode(buf.subarray(0, n));
    }
    const end = text.indexOf("\r\n\r\n");
    assert(end > 0, `no answer: ${JSON.stringify(text.slice(0, 200))}`);
    return { status: Number(text.slice(9, 12)), body: text.slice(end + 4) };
  } finally {
    c.close();
  }
}

const headerNames = (head: string) => head.split("\r\n").slice(1).map((l) => l.slice(0, l.indexOf(":")).toLowerCase());

Deno.test("a client's Connection: close and the hop-by-hop headers it names stay at the gateway; the upstream connection is kept", async () => {
  const upstream = rawUpstream({ closeReused: false });
  try {
    await withGateway(`http://127.0.0.1:${upstream.port}`, async (port) => {
      for (let i = 0; i < 3; i++) {
        const r = await request(port, `GET /rest/v1/things?i=${i} HTTP/1.1`, [
          "connection: close, x-hop",
          "x-hop: for the gateway only",
          "keep-alive: timeout=5",
          "te: trailers",
          "x-kept: yes",
        ]);
        assertEquals(r.status, 200, r.body);
      }
    });
  } finally {
    await upstream.close();
  }
  assertEquals(upstream.seen.length, 3);
  for (const s of upstream.seen) {
    const names = headerNames(s.head);
    for (const hop of ["connection", "keep-alive", "te", "x-hop"]) {
      assert(!names.includes(hop), `${hop} reached the upstream:\n${s.head}`);
    }
    assert(names.includes("x-kept"), `an end-to-end header was dropped:\n${s.head}`);
  }
  // Not closed after each request, so not a fresh connection per request.
  assertEquals(upstream.seen.map((s) => s.conn), [1, 1, 1]);
});

// What the gateway relies on when an upstream closes a kept-alive connection
// just as the next request is written on it: fetch sends the request again,
// once, on a fresh connection, so the client never sees that race.
Deno.test("a GET written on a kept-alive upstream connection that closes under it is answered from a fresh one", async () => {
  const upstream = rawUpstream({ closeReused: true });
  const answers: Answer[] = [];
  try {
    await withGateway(`http://127.0.0.1:${upstream.port}`, async (port) => {
      for (let i = 0; i < 3; i++) {
        answers.push(await request(port, `GET /rest/v1/things?i=${i} HTTP/1.1`, ["connection: close"]));
      }
    });
  } finally {
    await upstream.close();
  }
  assertEquals(answers.map((a) => a.status), [200, 200, 200], JSON.stringify(answers));
  // Each later GET met a closing connection first, then got its answer on a new one.
  assertEquals(
    upstream.seen.map((s) => [s.conn, s.nth, s.answered]),
    [[1, 0, true], [1, 1, false], [2, 0, true], [2, 1, false], [3, 0, true]],
  );
});

Deno.test("an upstream that is down is a 502 upstream_unavailable naming the cause, without the URL's query", async () => {
  // A port nothing listens on.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const downPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const key = "do-not-echo-this-key";
  let answer: Answer | null = null;
  const logs = await withGateway(`http://127.0.0.1:${downPort}`, async (port) => {
    answer = await request(port, `POST /rest/v1/rpc/take?apikey=${key} HTTP/1.1`, [
      "connection: close",
      "content-type: application/json",
    ], '{"n":1}');
  });
  assertEquals(answer!.status, 502, answer!.body);
  const envelope = JSON.parse(answer!.body);
  assertEnvelope(envelope, "upstream_unavailable");
  assertMatch(envelope.error.message, /^upstream did not answer: .*Connection refused/);
  assertIncludes(envelope.error.message, `/rpc/take`);
  assertExcludes(answer!.body, key, "the query's API key");
  assertIncludes(logs, "upstream did not answer");
  assertExcludes(logs, key, "the query's API key");
});
