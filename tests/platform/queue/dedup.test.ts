// Dedup keys: one unfinished job per (queue, key), also under concurrent enqueues;
// the key is free again once the job finished.

import assert from "node:assert/strict";
import { claim, complete, connect, dbTest, enqueue, queueName } from "./_lib.ts";

dbTest("enqueueing a dedup key twice returns the existing unfinished job", async (sql) => {
  const queue = queueName("dedup");
  const first = await enqueue(sql, queue, "k", { dedupKey: "session-1", payload: { v: 1 } });
  const second = await enqueue(sql, queue, "k", { dedupKey: "session-1", payload: { v: 2 } });
  assert.equal(second.id, first.id);
  assert.deepEqual(second.payload, { v: 1 });
  const other = await enqueue(sql, queue, "k", { dedupKey: "session-2" });
  assert.notEqual(other.id, first.id);
  // Same key in another queue is another job.
  const elsewhere = await enqueue(sql, queueName("dedup_other"), "k", { dedupKey: "session-1" });
  assert.notEqual(elsewhere.id, first.id);

  // While processing, still deduplicated.
  const [held] = await claim(sql, "w", [queue], 1);
  assert.equal(held.id, first.id);
  assert.equal((await enqueue(sql, queue, "k", { dedupKey: "session-1" })).id, first.id);

  // Finished: the key is free.
  await complete(sql, held);
  const fresh = await enqueue(sql, queue, "k", { dedupKey: "session-1" });
  assert.notEqual(fresh.id, first.id);
  assert.equal(fresh.status, "pending");

  const [{ n }] = await sql`select count(*)::int as n from public.jobs where queue = ${queue}`;
  assert.equal(n, 3);
});

dbTest("concurrent enqueues with one dedup key create exactly one job", async (sql) => {
  const queue = queueName("dedup_race");
  const clients = Array.from({ length: 8 }, () => connect(1));
  try {
    for (let round = 0; round < 20; round++) {
      const key = `race-${round}`;
      const rows = await Promise.all(
        clients.map((c, i) => enqueue(c, queue, "k", { dedupKey: key, payload: { by: i } })),
      );
      const ids = new Set(rows.map((r) => r.id));
      assert.equal(ids.size, 1, `round ${round}: ${[...ids].join(",")}`);
    }
  } finally {
    await Promise.all(clients.map((c) => c.end({ timeout: 5 })));
  }
  const [{ jobs, keys }] = await sql`
    select count(*)::int as jobs, count(distinct dedup_key)::int as keys
      from public.jobs where queue = ${queue}`;
  assert.deepEqual({ jobs, keys }, { jobs: 20, keys: 20 });
  const [{ events }] = await sql`
    select count(*)::int as events from public.job_events where queue = ${queue}`;
  assert.equal(events, 20);
});
