// Rate limiting that holds across isolates: the Postgres token bucket under 20
// concurrent connections, and a public endpoint hammered through the gateway.
// Each HTTP test connects from a loopback address of its own (127.x.y.z): the
// gateway vouches for its socket peer and drops the client's X-Forwarded-For,
// so that is the only way to be a different client. Bounds are computed from
// the elapsed time each test measures itself, so a slow machine makes them
// looser, never wrong.
import { assert, assertEquals, assertMatch } from "../../support/assert.ts";
import { assertEnvelope, stack, withDb } from "../../support/stack.ts";
import { type LoopbackAnswer, randomLoopback, requestFrom } from "../../support/loopback_client.ts";

Deno.test("rate_limit_take under 20 concurrent connections never allows more than capacity + refill × elapsed", async () => {
  const capacity = 10;
  const refillPerSec = 1.0;
  const clients = 20;
  const callsEach = 30;
  const key = `e2e-hammer:${crypto.randomUUID()}`;
  await withDb(async (sql) => {
    // One dedicated connection per client, so the 20 really run at once.
    const conns = await Promise.all(Array.from({ length: clients }, () => sql.reserve()));
    let allowed = 0;
    let refused = 0;
    let badTokens = 0;
    const started = performance.now();
    try {
      await Promise.all(conns.map(async (conn) => {
        for (let i = 0; i < callsEach; i++) {
          const [row] = await conn`select * from public.rate_limit_take(${key}, 1, ${capacity}, ${refillPerSec})`;
          if (row.allowed) allowed++;
          else refused++;
          if (!(row.tokens >= 0 && row.tokens <= capacity)) badTokens++;
        }
      }));
    } finally {
      for (const c of conns) c.release();
    }
    const elapsedSec = (performance.now() - started) / 1000;
    const ceiling = capacity + refillPerSec * elapsedSec;
    assertEquals(allowed + refused, clients * callsEach);
    assertEquals(badTokens, 0, "tokens stay within [0, capacity]");
    assert(allowed >= capacity, `only ${allowed} allowed: the full bucket's ${capacity} tokens must all be spendable`);
    assert(
      allowed <= ceiling,
      `${allowed} allowed in ${elapsedSec.toFixed(2)} s; at most ${
        ceiling.toFixed(2)
      } (capacity ${capacity} + ${refillPerSec}/s)`,
    );
    await sql`delete from public.rate_limit_buckets where key = ${key}`;
  }, 21);
});

/** A forged X-Forwarded-For value: something a client might claim to be. */
function randomIp(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

// health's limit: 120 burst, 2 per second (the test stack does not override it).
const HEALTH_CAPACITY = 120;
const HEALTH_REFILL_PER_SEC = 2;

Deno.test("hammering health from one address: 429 with Retry-After and X-RateLimit-*, 2xx within the limit", async () => {
  // A loopback address of this test's own, so its bucket is fresh and no other test drains it.
  const source = randomLoopback();
  const concurrency = 8;
  const maxRequests = 600;
  let sent = 0;
  let ok = 0;
  // Anything else, with the start of its body (a gateway 502 names its cause).
  const other: string[] = [];
  const refusals: LoopbackAnswer[] = [];
  const okHeaders: Headers[] = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    // Stop once enough refusals are seen (or the cap is reached): enough to judge.
    while (sent < maxRequests && !(sent >= 200 && refusals.length >= 20)) {
      sent++;
      const r = await requestFrom(source, stack.functionUrl("health"));
      if (r.status === 200) {
        ok++;
        if (okHeaders.length < 5) okHeaders.push(r.headers);
      } else if (r.status === 429) {
        refusals.push(r);
      } else {
        other.push(`${r.status} ${r.text.slice(0, 200)}`);
      }
    }
  }));
  const elapsedSec = (performance.now() - started) / 1000;
  assertEquals(other, [], "only 200 and 429");
  assert(refusals.length > 0, `no 429 after ${sent} requests in ${elapsedSec.toFixed(1)} s`);
  const ceiling = HEALTH_CAPACITY + HEALTH_REFILL_PER_SEC * elapsedSec + 1;
  assert(
    ok <= ceiling,
    `${ok} requests succeeded in ${elapsedSec.toFixed(2)} s; the limit allows ${ceiling.toFixed(1)}`,
  );
  assert(ok >= HEALTH_CAPACITY, `only ${ok} succeeded: the burst of ${HEALTH_CAPACITY} must be usable`);

  for (const h of okHeaders) {
    assertEquals(h.get("x-ratelimit-limit"), String(HEALTH_CAPACITY));
    assertMatch(h.get("x-ratelimit-remaining") ?? "", /^\d+$/);
    assertMatch(h.get("x-ratelimit-reset") ?? "", /^\d+$/);
  }
  const refused = refusals[0];
  assertMatch(refused.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
  assertEquals(refused.headers.get("x-ratelimit-limit"), String(HEALTH_CAPACITY));
  assertEquals(refused.headers.get("x-ratelimit-remaining"), "0");
  assertMatch(refused.headers.get("x-ratelimit-reset") ?? "", /^\d+$/);
  assertEnvelope(JSON.parse(refused.text));

  // A client at another address has its own bucket.
  const elsewhere = await requestFrom(randomLoopback(), stack.functionUrl("health"));
  assertEquals(elsewhere.status, 200);
});

Deno.test("forging X-Forwarded-For does not escape the per-address limit: 200 requests with 200 values get 429s", async () => {
  const source = randomLoopback();
  const total = 200;
  let ok = 0;
  let refused = 0;
  // Anything else, with the start of its body (a gateway 502 names its cause).
  const other: string[] = [];
  const started = performance.now();
  // Sequential in 8 lanes, each request claiming a new address of its own.
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < total) {
      next++;
      const r = await requestFrom(source, stack.functionUrl("health"), {
        headers: { "x-forwarded-for": randomIp(), "x-real-ip": randomIp(), apikey: stack.anonKey },
      });
      if (r.status === 200) ok++;
      else if (r.status === 429) refused++;
      else other.push(`${r.status} ${r.text.slice(0, 200)}`);
    }
  }));
  const elapsedSec = (performance.now() - started) / 1000;
  assertEquals(other, [], "only 200 and 429");
  assertEquals(ok + refused, total);
  // One bucket, whatever the headers said: at most a burst plus what refilled meanwhile.
  const ceiling = HEALTH_CAPACITY + HEALTH_REFILL_PER_SEC * elapsedSec + 1;
  assert(
    ok <= ceiling,
    `${ok} of ${total} forged-XFF requests succeeded in ${elapsedSec.toFixed(1)} s; limit ${ceiling}`,
  );
  // Unless the machine took over 40 s for 200 requests, the burst ran out.
  if (ceiling < total) assert(refused > 0, `no 429 in ${total} requests (${elapsedSec.toFixed(1)} s)`);
});
