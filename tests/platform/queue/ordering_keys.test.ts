// Ordering keys read from private.job_ordering_keys (20261202001100) instead of a
// partial index on jobs: the table holds exactly the unfinished jobs that have a key,
// whichever way they were created or finished, and the claims serialise a key as
// before, the chained claim included.

import assert from "node:assert/strict";
import {
  assertOutOfApiReach,
  claim,
  complete,
  dbTest,
  enqueue,
  fail,
  type JobRow,
  queueName,
  type Sql,
} from "./_lib.ts";

async function keyRows(sql: Sql, queue: string): Promise<string[]> {
  const rows = await sql`
    select k.job_id from private.job_ordering_keys k where k.queue = ${queue} order by k.seq`;
  return rows.map((r) => r.job_id);
}

async function chain(sql: Sql, held: JobRow, worker: string, queue: string): Promise<JobRow[]> {
  return [
    ...await sql<JobRow[]>`
    select * from public.complete_job_and_claim(${held.id}::uuid, ${held.lease_token}::uuid,
                                                '{}'::jsonb, ${worker}, array[${queue}])`,
  ];
}

dbTest("a chained completion claims the next job of its key, which nobody could claim before", async (sql) => {
  const queue = queueName("okeys_chain");
  const a = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const b = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const c = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const [held] = await claim(sql, "w", [queue]);
  assert.equal(held.id, a.id);
  assert.deepEqual(await claim(sql, "other", [queue]), []);
  const [next] = await chain(sql, held, "w", queue);
  assert.equal(next?.id, b.id);
  assert.deepEqual(await claim(sql, "other", [queue]), []);
  const [last] = await chain(sql, next, "w", queue);
  assert.equal(last?.id, c.id);
  assert.deepEqual(await chain(sql, last, "w", queue), []);
  assert.deepEqual(await keyRows(sql, queue), []);
});

dbTest("the key table holds exactly the unfinished jobs that have a key", async (sql) => {
  const queue = queueName("okeys_rows");
  const plain = await enqueue(sql, queue, "k");
  const j1 = await enqueue(sql, queue, "k", { orderingKey: "s", backoffBaseMs: 0, backoffCapMs: 0 });
  const j2 = await enqueue(sql, queue, "k", { orderingKey: "s", maxAttempts: 1 });
  const j3 = await enqueue(sql, queue, "k", { orderingKey: "t" });
  // enqueue_jobs' one-statement path, and a job inserted by hand.
  const batch = await sql`select id from public.enqueue_jobs(${
    sql.json([{ queue, kind: "k", ordering_key: "u" }, { queue, kind: "k" }])
  })`;
  const [byHand] = await sql`
    insert into public.jobs (queue, kind, ordering_key) values (${queue}, 'k', 'v') returning id`;
  assert.deepEqual(await keyRows(sql, queue), [j1.id, j2.id, j3.id, batch[0].id, byHand.id]);
  assert.ok(!(await keyRows(sql, queue)).includes(plain.id));

  // Claimed and retrying: still held. Failed for good, completed, cancelled, deleted: gone.
  const held = await claim(sql, "w", [queue], 10);
  assert.deepEqual(held.map((j) => j.id).sort(), [plain.id, j1.id, j3.id, batch[0].id, batch[1].id, byHand.id].sort());
  assert.equal((await fail(sql, held.find((j) => j.id === j1.id)!, "again", true)).status, "retrying");
  assert.ok((await keyRows(sql, queue)).includes(j1.id));
  const [r1] = await claim(sql, "w", [queue]);
  assert.equal(r1.id, j1.id, "the retry first; j2 waits for it");
  await complete(sql, r1);
  const [h2] = await claim(sql, "w", [queue]);
  assert.equal(h2.id, j2.id);
  assert.equal((await fail(sql, h2, "boom", false)).status, "failed");
  await sql`select public.cancel_job(${j3.id}::uuid)`;
  await sql`delete from public.jobs where id = ${byHand.id}`;
  const left = await keyRows(sql, queue);
  assert.deepEqual(left, [batch[0].id]);
  // Whatever is left is unfinished, and every unfinished keyed job is there.
  const [{ n }] = await sql`
    select count(*)::int as n from public.jobs
     where queue = ${queue} and ordering_key is not null and status in ('pending', 'processing', 'retrying')`;
  assert.equal(left.length, n);
});

dbTest("the ordering table is out of reach of the API roles, and jobs lost its index", async (sql) => {
  await assertOutOfApiReach(sql, "private.job_ordering_keys");
  const [{ n }] = await sql`
    select count(*)::int as n from pg_indexes where schemaname = 'public' and indexname = 'jobs_ordering_idx'`;
  assert.equal(n, 0);
});
