// The hosted runtime's limits, enforced by the local supervisor
// (scripts/local/functions_host.ts) on fixture functions (tests/fixtures/edge).
import { assert, assertEquals } from "../../support/assert.ts";
import { call, callbackServer, startHost } from "./_host.ts";

async function workerLimit(r: Response) {
  assertEquals(r.status, 546);
  assertEquals(r.headers.get("sb-error-code"), "WORKER_LIMIT");
  assertEquals((await r.json()).code, "WORKER_LIMIT");
}

Deno.test("a request that takes 400 MB gets 546 WORKER_LIMIT and the next request works on a fresh process", async () => {
  const host = await startHost({ memoryMb: 256 });
  try {
    const before = await (await call(host, "memory")).json();
    await workerLimit(await call(host, "memory", "?mb=400"));
    const after = await call(host, "memory");
    assertEquals(after.status, 200);
    const body = await after.json();
    assertEquals(body.held_mb, 0);
    assert(body.pid !== before.pid, "a new process serves after the limit");
  } finally {
    await host.stop();
  }
});

Deno.test("memory under the limit is left alone", async () => {
  const host = await startHost({ memoryMb: 256 });
  try {
    const r = await call(host, "memory", "?mb=64");
    assertEquals(r.status, 200);
    assertEquals((await r.json()).held_mb, 64);
  } finally {
    await host.stop();
  }
});

Deno.test("a request that keeps the CPU busy past the 2 s limit gets 546 and the next request works", async () => {
  const host = await startHost({ cpuMs: 2000 });
  try {
    // A 6 s busy loop: well past 2 s of CPU even when the machine is shared.
    await workerLimit(await call(host, "cpu", "?ms=6000"));
    const next = await call(host, "cpu", "?ms=0");
    assertEquals(next.status, 200);
    await next.body?.cancel();
  } finally {
    await host.stop();
  }
});

Deno.test("a short burst of CPU is under the limit", async () => {
  const host = await startHost({ cpuMs: 2000 });
  try {
    const r = await call(host, "cpu", "?ms=100");
    assertEquals(r.status, 200);
    await r.body?.cancel();
  } finally {
    await host.stop();
  }
});

Deno.test("a function that never answers gets 504 at the request timeout, and the function keeps serving", async () => {
  const host = await startHost({ requestTimeoutMs: 1000 });
  try {
    const r = await call(host, "hang", "?hang=1");
    assertEquals(r.status, 504);
    assertEquals((await r.json()).code, "IDLE_TIMEOUT");
    const next = await call(host, "hang");
    assertEquals(next.status, 200);
    await next.body?.cancel();
  } finally {
    await host.stop();
  }
});

Deno.test("EdgeRuntime.waitUntil work finishes after the response has been sent", async () => {
  const host = await startHost();
  const cb = callbackServer();
  try {
    const r = await call(host, "background", `?callback=${encodeURIComponent(cb.url)}`);
    assertEquals(r.status, 200);
    assertEquals(await r.json(), { answered: true });
    // The background work waits 300 ms before it reports: the answer came first.
    assertEquals(cb.bodies.length, 0);
    assertEquals(await cb.next(10_000), "background work done");
  } finally {
    await host.stop();
    await cb.close();
  }
});

Deno.test("at half the wall clock the process gets beforeunload (WallClockTime) and new requests go to a fresh one", async () => {
  const host = await startHost({ wallClockMs: 2000 });
  const cb = callbackServer();
  try {
    const first = await (await call(host, "lifecycle", `?callback=${encodeURIComponent(cb.url)}`)).json();
    assertEquals(await cb.next(10_000), "WallClockTime");
    const second = await (await call(host, "lifecycle")).json();
    assert(second.pid !== first.pid, "a retired process takes no new requests");
  } finally {
    await host.stop();
    await cb.close();
  }
});

Deno.test("a request in flight when its process is retired still gets its answer", async () => {
  // Retirement at 1 s, wall clock at 2 s; the request is busy for 1.3 s.
  const host = await startHost({ wallClockMs: 2000, cpuMs: 60_000 });
  try {
    const r = await call(host, "cpu", "?ms=1300");
    assertEquals(r.status, 200);
    await r.body?.cancel();
  } finally {
    await host.stop();
  }
});

Deno.test("a request still running at the wall clock gets 546, not before", async () => {
  const host = await startHost({ wallClockMs: 1000, cpuMs: 60_000 });
  try {
    const t0 = Date.now();
    const r = await call(host, "cpu", "?ms=3000");
    const elapsed = Date.now() - t0;
    await workerLimit(r);
    // Retirement came at 500 ms; only the wall clock stops a request.
    assert(elapsed >= 900, `stopped after ${elapsed} ms, before the wall clock`);
  } finally {
    await host.stop();
  }
});
