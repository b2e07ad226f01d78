// The local gateway's own answers to bad requests (scripts/local/gateway.ts):
// methods outside the API's, bodies shorter than their Content-Length, queries
// too long or with too many parameters, heads too big or malformed for the
// HTTP server library (the front) — each a 4xx in the standard envelope,
// never a 502 or an empty body — and, on /rest/v1, tokens Supabase's PostgREST
// would refuse for their `exp` (401 in PostgREST's error shape), with nothing
// written. Requests a fetch client will not send (TRACE, a short body) go over
// a raw socket.
import { assert, assertEquals, assertMatch } from "../../support/assert.ts";
import { assertEnvelope, createUser, signJwt, stack, type TestUser, withDb } from "../../support/stack.ts";

interface RawAnswer {
  status: number;
  headers: Headers;
  body: string;
}

/** Sends `head` (and `body`), half-closes, and reads the whole answer. */
async function raw(head: string, body = ""): Promise<RawAnswer> {
  const u = new URL(stack.url);
  const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
  try {
    await conn.write(new TextEncoder().encode(head + body));
    await conn.closeWrite();
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(
      chunks.reduce((a, c) => {
        const out = new Uint8Array(a.length + c.length);
        out.set(a);
        out.set(c, a.length);
        return out;
      }, new Uint8Array()),
    );
    const split = text.indexOf("\r\n\r\n");
    const [statusLine, ...lines] = text.slice(0, split).split("\r\n");
    const headers = new Headers();
    for (const l of lines) {
      const i = l.indexOf(":");
      headers.append(l.slice(0, i).trim(), l.slice(i + 1).trim());
    }
    return { status: Number(statusLine.split(" ")[1]), headers, body: text.slice(split + 4) };
  } finally {
    conn.close();
  }
}

function request(method: string, target: string, headers: Record<string, string> = {}): string {
  const host = new URL(stack.url).host;
  const lines = Object.entries({ host, connection: "close", ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
  return `${method} ${target} HTTP/1.1\r\n${lines.join("")}\r\n`;
}

function envelopeOf(a: RawAnswer, code: string) {
  const body = JSON.parse(a.body);
  assertEnvelope(body, code);
  assert("details" in body.error && typeof body.request_id === "string", a.body);
  return body;
}

async function sessionsOf(user: TestUser): Promise<number> {
  return await withDb(async (sql) => {
    const [{ n }] = await sql`select count(*)::int as n from public.chat_sessions where owner_id = ${user.id}`;
    return n as number;
  }, 1);
}

Deno.test("TRACE and other methods outside the API answer 405 with Allow in the envelope, on every route", async () => {
  for (const [method, path] of [["TRACE", "/functions/v1/health"], ["TRACE", "/rest/v1/fields"], ["PROPFIND", "/"]]) {
    const a = await raw(request(method, path));
    assertEquals(a.status, 405, `${method} ${path}: ${a.body}`);
    // Supabase's functions endpoint takes six methods (no HEAD); the other APIs take HEAD too.
    const allow = path.startsWith("/functions/v1/")
      ? "GET, POST, PUT, PATCH, DELETE, OPTIONS"
      : "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    assertEquals(a.headers.get("allow"), allow, `${method} ${path}`);
    envelopeOf(a, "method_not_allowed");
  }
});

Deno.test("a body shorter than its Content-Length is 400 body_incomplete, and nothing is written", async () => {
  const user = await createUser();
  const partial = JSON.stringify({ id: `short-${crypto.randomUUID().slice(0, 8)}` });
  const a = await raw(
    request("POST", "/rest/v1/chat_sessions", {
      apikey: stack.anonKey,
      authorization: `Bearer ${user.token}`,
      "content-type": "application/json",
      "content-length": String(partial.length + 100),
    }),
    partial,
  );
  assertEquals(a.status, 400, a.body);
  envelopeOf(a, "body_incomplete");
  assertEquals(await sessionsOf(user), 0);

  // The same to a function.
  const f = await raw(
    request("POST", "/functions/v1/chat-submit", {
      apikey: stack.anonKey,
      authorization: `Bearer ${user.token}`,
      "content-type": "application/json",
      "content-length": "500",
    }),
    '{"session_id": "x", "question": "cut sh',
  );
  assert(f.status >= 400 && f.status < 500, `chat-submit with a short body: ${f.status} ${f.body}`);
  assertEnvelope(JSON.parse(f.body));
  assertEquals(await sessionsOf(user), 0);
});

Deno.test("5,000 query parameters are 400 too_many_query_parameters and a 17 KiB query is 414, in the envelope", async () => {
  const many = Array.from({ length: 5_000 }, () => "a").join("&");
  for (const path of ["/functions/v1/health", "/rest/v1/fields"]) {
    const a = await raw(request("GET", `${path}?${many}`, { apikey: stack.anonKey }));
    assertEquals(a.status, 400, `${path}: ${a.body}`);
    envelopeOf(a, "too_many_query_parameters");
    const long = await raw(request("GET", `${path}?q=${"x".repeat(17 * 1024)}`, { apikey: stack.anonKey }));
    assertEquals(long.status, 414, `${path}: ${long.body}`);
    envelopeOf(long, "query_too_long");
  }
  // Control: an ordinary query goes through.
  const ok = await fetch(`${stack.functionUrl("health")}?verbose=1&x=2`);
  assertEquals(ok.status, 200, await ok.text());
});

Deno.test("heads the HTTP server library would refuse with a bare 400 get the envelope: 80 KB URI 414, 100 KB of headers 431, a malformed request line 400", async () => {
  // 20,000 parameters of `a=1`: an 80 KB URI, past what the server library parses.
  const many = Array.from({ length: 20_000 }, () => "a=1").join("&");
  for (const path of ["/functions/v1/health", "/rest/v1/fields"]) {
    const a = await raw(request("GET", `${path}?${many}`, { apikey: stack.anonKey }));
    assertEquals(a.status, 414, `${path}: ${a.body}`);
    envelopeOf(a, "uri_too_long");
  }
  const headers: Record<string, string> = { apikey: stack.anonKey };
  for (let i = 0; i < 10; i++) headers[`x-filler-${i}`] = "v".repeat(10 * 1024);
  const big = await raw(request("GET", "/functions/v1/health", headers));
  assertEquals(big.status, 431, big.body);
  envelopeOf(big, "header_fields_too_large");
  const bad = await raw(`GET /functions/v1/health HTTP/1.1 extra\r\nhost: x\r\nconnection: close\r\n\r\n`);
  assertEquals(bad.status, 400, bad.body);
  envelopeOf(bad, "malformed_request");
});

/** A user's token with the given claims changes (a key set to undefined is left out). */
async function tokenFor(user: TestUser, change: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    sub: user.id,
    aud: "authenticated",
    role: "authenticated",
    iat: now - 5,
    exp: now + 3600,
  };
  for (const [k, v] of Object.entries(change)) {
    if (v === undefined) delete claims[k];
    else claims[k] = v;
  }
  return await signJwt(claims);
}

async function createSession(token: string, apikey = stack.anonKey) {
  const r = await fetch(`${stack.url}/rest/v1/chat_sessions`, {
    method: "POST",
    headers: { apikey, authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ id: `exp-${crypto.randomUUID().slice(0, 12)}` }),
  });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

Deno.test("/rest/v1 refuses a correctly signed token without a numeric exp, or expired, with 401 PGRST30x; nothing written", async () => {
  const user = await createUser();
  const cases: [string, Record<string, unknown>, string][] = [
    ["no exp", { exp: undefined }, "PGRST301"],
    ["exp as a string", { exp: String(Math.floor(Date.now() / 1000) + 3600) }, "PGRST301"],
    ["exp null", { exp: null }, "PGRST301"],
    ["expired", { exp: Math.floor(Date.now() / 1000) - 60 }, "PGRST303"],
  ];
  for (const [what, change, code] of cases) {
    const r = await createSession(await tokenFor(user, change));
    assertEquals(r.status, 401, `${what}: ${r.text}`);
    const body = JSON.parse(r.text);
    assertEquals(Object.keys(body).sort(), ["code", "details", "hint", "message"], what);
    assertEquals([body.code, body.details, body.hint], [code, null, null], what);
    assertMatch(r.headers.get("www-authenticate") ?? "", /^Bearer error="invalid_token"/);
  }
  // In the apikey header too, whatever the Authorization header holds.
  const viaApikey = await createSession(user.token, await tokenFor(user, { exp: undefined }));
  assertEquals(viaApikey.status, 401, viaApikey.text);
  assertEquals(await sessionsOf(user), 0, "no refused request wrote a row");

  // Control: the same request with the user's ordinary token is accepted.
  const ok = await createSession(user.token);
  assertEquals(ok.status, 201, ok.text);
  assertEquals(await sessionsOf(user), 1);
});
