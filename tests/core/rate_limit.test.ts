// Rate limiting that holds across isolates: the Postgres token bucket under 20
// concurrent connections, and a public endpoint hammered from one IP through the
// gateway. Bounds are computed from the elapsed time each test measures itself,
// so a slow machine makes them looser, never wrong.
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { assertEnvelope, stack, withDb } from "../support/stack.ts";

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

function randomIp(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

Deno.test("hammering health from one IP: 429 with Retry-After and X-RateLimit-*, 2xx within the limit", async () => {
  // health's limit: 120 burst, 2 per second (the test stack does not override it).
  const capacity = 120;
  const refillPerSec = 2;
  const ip = randomIp();
  const concurrency = 8;
  const maxRequests = 600;
  let sent = 0;
  let ok = 0;
  const other: number[] = [];
  const refusals: Response[] = [];
  const okHeaders: Headers[] = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    // Stop once enough refusals are seen (or the cap is reached): enough to judge.
    while (sent < maxRequests && !(sent >= 200 && refusals.length >= 20)) {
      sent++;
      const r = await fetch(stack.functionUrl("health"), { headers: { "x-forwarded-for": ip } });
      if (r.status === 200) {
        ok++;
        if (okHeaders.length < 5) okHeaders.push(r.headers);
        await r.body?.cancel();
      } else if (r.status === 429) {
        refusals.push(new Response(await r.text(), { status: 429, headers: r.headers }));
      } else {
        other.push(r.status);
        await r.body?.cancel();
      }
    }
  }));
  const elapsedSec = (performance.now() - started) / 1000;
  assertEquals(other, [], "only 200 and 429");
  assert(refusals.length > 0, `no 429 after ${sent} requests in ${elapsedSec.toFixed(1)} s`);
  const ceiling = capacity + refillPerSec * elapsedSec + 1;
  assert(
    ok <= ceiling,
    `${ok} requests succeeded in ${elapsedSec.toFixed(2)} s; the limit allows ${ceiling.toFixed(1)}`,
  );
  assert(ok >= capacity, `only ${ok} succeeded: the burst of ${capacity} must be usable`);

  for (const h of okHeaders) {
    assertEquals(h.get("x-ratelimit-limit"), String(capacity));
    assertMatch(h.get("x-ratelimit-remaining") ?? "", /^\d+$/);
    assertMatch(h.get("x-ratelimit-reset") ?? "", /^\d+$/);
  }
  const refused = refusals[0];
  assertMatch(refused.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
  assertEquals(refused.headers.get("x-ratelimit-limit"), String(capacity));
  assertEquals(refused.headers.get("x-ratelimit-remaining"), "0");
  assertMatch(refused.headers.get("x-ratelimit-reset") ?? "", /^\d+$/);
  assertEnvelope(await refused.json());

  // Another client IP has its own bucket.
  const other_ip = await fetch(stack.functionUrl("health"), { headers: { "x-forwarded-for": randomIp() } });
  await other_ip.body?.cancel();
  assertEquals(other_ip.status, 200);
});
