// health and chat-submit take their rate-limit token inside their one SQL call
// (health_check, chat_submit_limited): a successful request is one PostgREST
// round trip, and every request still costs exactly one token — a request
// refused before its SQL (a bad body) takes it the standalone way
// (rpc/rate_limit_take), and a 429 wins over its own error.
//
// Round trips are counted in the gateway's log, which has a line per request it
// forwards, the functions' calls to PostgREST included
// ($EDGEWORKS_STATE_DIR/logs/gateway.log; scripts/test sets the state dir).
import { assert, assertEquals, assertMatch } from "../../support/assert.ts";
import { assertEnvelope, callFunction, createUser, eventually, stack, withDb } from "../../support/stack.ts";
import { randomLoopback, requestFrom } from "../../support/loopback_client.ts";

function logPath(): string {
  const state = Deno.env.get("EDGEWORKS_STATE_DIR") ?? new URL("../../../.local", import.meta.url).pathname;
  return `${state.replace(/\/+$/, "")}/logs/gateway.log`;
}

async function logSince(offset: number): Promise<string> {
  const bytes = await Deno.readFile(logPath());
  return new TextDecoder().decode(bytes.subarray(offset));
}

/** PostgREST calls in the gateway log since `offset`, by rpc name. */
async function rpcCalls(offset: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const m of (await logSince(offset)).matchAll(/^POST \/rest\/v1\/rpc\/([a-z_]+) /gm)) {
    counts[m[1]] = (counts[m[1]] ?? 0) + 1;
  }
  return counts;
}

Deno.test("a successful health request is one PostgREST call (health_check), with the rate-limit headers", async () => {
  const source = randomLoopback();
  const start = (await Deno.stat(logPath())).size;
  const n = 5;
  for (let i = 0; i < n; i++) {
    const r = await requestFrom(source, stack.functionUrl("health"));
    assertEquals(r.status, 200, r.text);
    assertEquals(r.headers.get("x-ratelimit-limit"), "120");
    assertMatch(r.headers.get("x-ratelimit-remaining") ?? "", /^\d+$/);
    assertEquals(JSON.parse(r.text).data.database.ok, true);
  }
  const calls = await eventually("the gateway logged the calls", async () => {
    const c = await rpcCalls(start);
    return (c.health_check ?? 0) >= n ? c : undefined;
  });
  assertEquals(calls.health_check, n, JSON.stringify(calls));
  assertEquals(calls.rate_limit_take ?? 0, 0, `no standalone token take on success: ${JSON.stringify(calls)}`);
  assertEquals(calls.health_ping ?? 0, 0, JSON.stringify(calls));
});

Deno.test("a successful chat-submit is one PostgREST call (chat_submit_limited) and takes one token", async () => {
  const user = await createUser();
  const key = `chat-submit:user:${user.id}`;
  const start = (await Deno.stat(logPath())).size;
  const started = performance.now();
  const n = 3;
  for (let i = 0; i < n; i++) {
    const r = await callFunction("chat-submit", {
      token: user.token,
      body: { session_id: `one-trip-${crypto.randomUUID()}`, message: `question ${i}` },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    assertEquals(r.headers.get("x-ratelimit-limit"), "30");
    assert(Number(r.headers.get("x-ratelimit-remaining")) <= 29, "a token was taken");
  }
  const calls = await eventually("the gateway logged the calls", async () => {
    const c = await rpcCalls(start);
    return (c.chat_submit_limited ?? 0) >= n ? c : undefined;
  });
  assertEquals(calls.chat_submit_limited, n, JSON.stringify(calls));
  assertEquals(calls.rate_limit_take ?? 0, 0, `no standalone token take on success: ${JSON.stringify(calls)}`);
  await withDb(async (sql) => {
    const [b] = await sql`select tokens from public.rate_limit_buckets where key = ${key}`;
    // Exactly three tokens gone (not six), less what refilled meanwhile (0.5/s).
    const elapsedSec = (performance.now() - started) / 1000;
    assert(b && b.tokens >= 27 - 0.01 && b.tokens <= 27 + 0.5 * elapsedSec + 0.01, `bucket holds ${b?.tokens}`);
  });
});

Deno.test("chat-submit with a bad body still costs a token: after the burst a valid question gets 429", async () => {
  const user = await createUser();
  const key = `chat-submit:user:${user.id}`;
  const started = performance.now();
  const statuses: number[] = [];
  const start = (await Deno.stat(logPath())).size;
  // 30 is the burst; 0.5/s refills one token every 2 s.
  for (let i = 0; i < 32; i++) {
    const r = await callFunction("chat-submit", { token: user.token, body: { session_id: "bad", message: "" } });
    statuses.push(r.status);
    assertEnvelope(r.body);
  }
  const valid = await callFunction("chat-submit", {
    token: user.token,
    body: { session_id: `after-bad-${crypto.randomUUID()}`, message: "a real question" },
  });
  const elapsedSec = (performance.now() - started) / 1000;
  const refilled = Math.floor(elapsedSec * 0.5);
  assertEquals(statuses.slice(0, 30), Array(30).fill(422), "the burst's bad bodies are 422");
  const refused = statuses.filter((s) => s === 429).length;
  assert(refused >= 2 - refilled, `only ${refused} of the last bad bodies got 429 (${elapsedSec.toFixed(1)} s)`);
  if (refilled === 0) {
    assertEquals(valid.status, 429, JSON.stringify(valid.body));
    assertEnvelope(valid.body, "rate_limited");
    assertMatch(valid.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
  }
  await withDb(async (sql) => {
    const [b] = await sql`select tokens from public.rate_limit_buckets where key = ${key}`;
    assert(b.tokens < 1 + elapsedSec * 0.5, `bucket holds ${b.tokens} after ${elapsedSec.toFixed(1)} s`);
    if (valid.status === 429) {
      const [{ n }] = await sql`select count(*)::int as n from public.chat_sessions where owner_id = ${user.id}`;
      assertEquals(n, 0, "a refused question creates nothing");
    }
  });
  // The bad bodies took their tokens the standalone way.
  const calls = await rpcCalls(start);
  assert((calls.rate_limit_take ?? 0) >= 32, JSON.stringify(calls));
});

Deno.test("health_check and chat_submit_limited are for the service role only", async () => {
  const user = await createUser();
  for (
    const [fn, body] of [["health_check", { p_rate_key: "health:ip:203.0.113.1" }], ["chat_submit_limited", {
      p_rate_key: `chat-submit:user:${user.id}`,
      p_rate_cost: 1,
      p_rate_capacity: 30,
      p_rate_refill_per_sec: 0.5,
      p_user: user.id,
      p_session_id: "nope",
      p_message: "hi",
    }]] as const
  ) {
    for (const token of [stack.anonKey, user.token]) {
      const r = await fetch(`${stack.url}/rest/v1/rpc/${fn}`, {
        method: "POST",
        headers: { apikey: stack.anonKey, authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const text = await r.text();
      assert(r.status === 401 || r.status === 403 || r.status === 404, `${fn}: ${r.status} ${text}`);
    }
  }
});

Deno.test("chat_submit_limited: refused, it creates nothing; a submit that raises takes no token", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const key = `chat-submit:user:${user.id}`;
    const call = (session: string, field: string | null = null) =>
      sql`select public.chat_submit_limited(${key}, 1, 30, 0.5::double precision, ${user.id}::uuid, ${session},
            'a question', ${field}) as r`;
    // A failing submit (no such field) raises and takes no token (the function then
    // takes it with rate_limit_take): no bucket row written.
    const missing = await call("limited-1", "no-such-field").then(() => null, (e) => e);
    assertEquals(missing?.code, "EC404");
    assertEquals((await sql`select count(*)::int as n from public.rate_limit_buckets where key = ${key}`)[0].n, 0);
    // Allowed: the work's answer and the decision.
    const [{ r: ok }] = await call("limited-1");
    assertEquals(ok.rate_limit.allowed, true);
    assert(ok.rate_limit.tokens >= 29 && ok.rate_limit.tokens < 29.5, JSON.stringify(ok));
    assertEquals(ok.session_id, "limited-1");
    // An empty bucket: the refusal only, and no session, message or job.
    await sql`update public.rate_limit_buckets set tokens = 0,
                updated_ms = (extract(epoch from clock_timestamp()) * 1000)::bigint where key = ${key}`;
    const [{ r: refused }] = await call("limited-2");
    assertEquals(Object.keys(refused), ["rate_limit"]);
    assertEquals(refused.rate_limit.allowed, false);
    const [{ n }] = await sql`select count(*)::int as n from public.chat_sessions where id = 'limited-2'`;
    assertEquals(n, 0, "a refused submit creates nothing");
  });
});
