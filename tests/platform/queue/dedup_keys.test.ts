// Dedup keys held in private.job_dedup_keys (20261202001000) instead of a partial
// unique index on jobs: the same answers as before. One unfinished job per
// (queue, key); the key is free again once that job completed, failed for good, was
// cancelled or deleted; a retry keeps it; concurrent enqueues racing the holder's
// completion never leave two unfinished jobs of one key; API roles cannot reach the
// table.

import assert from "node:assert/strict";
import {
  assertOutOfApiReach,
  claim,
  complete,
  connect,
  dbTest,
  enqueue,
  fail,
  type JobRow,
  queueName,
  type Sql,
} from "./_lib.ts";

async function unfinished(sql: Sql, queue: string, key: string): Promise<string[]> {
  const rows = await sql`
    select id from public.jobs
     where queue = ${queue} and dedup_key = ${key} and status in ('pending', 'processing', 'retrying')`;
  return rows.map((r) => r.id);
}

dbTest("the key is free after completion, final failure, cancel; a retry keeps it", async (sql) => {
  const queue = queueName("dkey_ends");
  const ends: Array<[string, (j: JobRow) => Promise<unknown>]> = [
    ["completed", (j) => complete(sql, j)],
    ["failed", (j) => fail(sql, j, "boom", false)],
    ["cancelled", (j) => sql`select public.cancel_job(${j.id}::uuid)`],
  ];
  for (const [status, end] of ends) {
    const key = `k-${status}`;
    const first = await enqueue(sql, queue, "k", { dedupKey: key });
    const [held] = await claim(sql, "w", [queue]);
    assert.equal(held.id, first.id);
    assert.equal((await enqueue(sql, queue, "k", { dedupKey: key })).id, first.id);
    await end(held);
    const [row] = await sql`select status from public.jobs where id = ${first.id}`;
    assert.equal(row.status, status);
    const next = await enqueue(sql, queue, "k", { dedupKey: key });
    assert.notEqual(next.id, first.id);
    assert.equal(next.status, "pending");
    assert.deepEqual(await unfinished(sql, queue, key), [next.id]);
    // The new holder deduplicates in its turn.
    assert.equal((await enqueue(sql, queue, "k", { dedupKey: key })).id, next.id);
    await sql`select public.cancel_job(${next.id}::uuid)`;
  }
  // A retrying job still holds its key.
  const key = "k-retry";
  const job = await enqueue(sql, queue, "k", { dedupKey: key, backoffBaseMs: 0, backoffCapMs: 0 });
  const [held] = await claim(sql, "w", [queue]);
  assert.equal(held.id, job.id);
  assert.equal((await fail(sql, held, "again", true)).status, "retrying");
  assert.equal((await enqueue(sql, queue, "k", { dedupKey: key })).id, job.id);
});

dbTest("a chained completion frees the key; the same key in one enqueue_jobs batch is one job", async (sql) => {
  const queue = queueName("dkey_chain");
  const first = await enqueue(sql, queue, "k", { dedupKey: "c" });
  const [held] = await claim(sql, "w", [queue]);
  await sql`select * from public.complete_job_and_claim(${held.id}::uuid, ${held.lease_token}::uuid,
                                                        '{}'::jsonb, 'w', array[${queue}])`;
  const again = await enqueue(sql, queue, "k", { dedupKey: "c" });
  assert.notEqual(again.id, first.id);
  const items = [
    { queue, kind: "b", dedup_key: "batch" },
    { queue, kind: "b", dedup_key: "batch" },
    { queue, kind: "b", dedup_key: "c" },
  ];
  const rows = await sql`select id from public.enqueue_jobs(${sql.json(items)})`;
  assert.equal(rows[0].id, rows[1].id);
  assert.equal(rows[2].id, again.id);
});

dbTest("a deleted job's key is free, and its key row goes with it", async (sql) => {
  const queue = queueName("dkey_delete");
  const job = await enqueue(sql, queue, "k", { dedupKey: "d" });
  await sql`delete from public.jobs where id = ${job.id}`;
  const [{ n }] = await sql`select count(*)::int as n from private.job_dedup_keys where queue = ${queue}`;
  assert.equal(n, 0);
  const next = await enqueue(sql, queue, "k", { dedupKey: "d" });
  assert.notEqual(next.id, job.id);
  // Cleanup of finished jobs takes their key rows too.
  await sql`select public.cancel_job(${next.id}::uuid)`;
  await sql`update public.jobs set completed_at = now() - interval '2 days' where id = ${next.id}`;
  for (let i = 0; i < 100; i++) {
    const [{ r }] = await sql`select public.cleanup_jobs(86400, 1000) as r`;
    if (r.jobs_deleted < 1000) break;
  }
  const [{ left }] = await sql`
    select (select count(*) from public.jobs where queue = ${queue})::int
         + (select count(*) from private.job_dedup_keys where queue = ${queue})::int as left`;
  assert.equal(left, 0);
  // A key row left behind by hand (its job gone) does not hold the key either.
  await sql`insert into private.job_dedup_keys (queue, dedup_key, job_id)
            values (${queue}, 'stale', gen_random_uuid())`;
  const fresh = await enqueue(sql, queue, "k", { dedupKey: "stale" });
  assert.equal(fresh.status, "pending");
  const [key] = await sql`select job_id from private.job_dedup_keys where queue = ${queue} and dedup_key = 'stale'`;
  assert.equal(key.job_id, fresh.id);
});

dbTest("enqueues racing the completion of the key's holder never leave two unfinished jobs", async (sql) => {
  const queue = queueName("dkey_race");
  const clients = Array.from({ length: 6 }, () => connect(1));
  const worker = connect(1);
  try {
    for (let round = 0; round < 15; round++) {
      const key = `r-${round}`;
      const holder = await enqueue(sql, queue, "k", { dedupKey: key });
      const [held] = await claim(worker, "w", [queue]);
      assert.equal(held.id, holder.id);
      const [, ...rows] = await Promise.all([
        complete(worker, held),
        ...clients.map((c, i) => enqueue(c, queue, "k", { dedupKey: key, payload: { by: i } })),
      ]);
      const ids = new Set(rows.map((r) => (r as JobRow).id));
      ids.delete(holder.id);
      // Those that came after the completion share one new job.
      assert.ok(ids.size <= 1, `round ${round}: ${[...ids].join(",")}`);
      const open = await unfinished(sql, queue, key);
      assert.deepEqual(open, [...ids]);
      if (open.length) await sql`select public.cancel_job(${open[0]}::uuid)`;
    }
  } finally {
    await Promise.all([...clients, worker].map((c) => c.end({ timeout: 5 })));
  }
}, 2);

dbTest("the key table is out of reach of the API roles", async (sql) => {
  await assertOutOfApiReach(sql, "private.job_dedup_keys");
  // And jobs no longer carries the partial unique index.
  const [{ n }] = await sql`
    select count(*)::int as n from pg_indexes where schemaname = 'public' and indexname = 'jobs_dedup_idx'`;
  assert.equal(n, 0);
});
