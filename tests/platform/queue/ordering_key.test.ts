// Per-key ordering and fairness across owners, in the claim statement itself
// (migration 20261201000200): a job waits for every earlier unfinished job of its
// ordering key; a finished, failed or cancelled one lets the next go; one owner's
// backlog does not starve another owner's single job.
import assert from "node:assert/strict";
import { claim, complete, createUser, dbTest, enqueue, fail, type JobRow, queueName, type Sql } from "./_lib.ts";

async function cancel(sql: Sql, id: string) {
  await sql`select public.cancel_job(${id}::uuid)`;
}

dbTest("jobs of one ordering key are claimed one at a time, in enqueue order", async (sql) => {
  const queue = queueName("okey");
  const a: JobRow[] = [];
  for (let i = 0; i < 3; i++) a.push(await enqueue(sql, queue, "k", { orderingKey: "s1" }));
  const other = await enqueue(sql, queue, "k", { orderingKey: "s2" });

  // A batch of 10 gets the head of each key only.
  const first = await claim(sql, "w1", [queue], 10);
  assert.deepEqual(first.map((j) => j.id).sort(), [a[0].id, other.id].sort());
  // A second worker finds nothing while both heads are running.
  assert.deepEqual(await claim(sql, "w2", [queue], 10), []);

  await complete(sql, first.find((j) => j.id === a[0].id)!);
  const second = await claim(sql, "w2", [queue], 10);
  assert.deepEqual(second.map((j) => j.id), [a[1].id]);
});

dbTest("a job that failed for good or was cancelled lets the next job of its key run", async (sql) => {
  const queue = queueName("okey_fail");
  const j1 = await enqueue(sql, queue, "k", { orderingKey: "s", maxAttempts: 1 });
  const j2 = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const j3 = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const [c1] = await claim(sql, "w", [queue], 5);
  assert.equal(c1.id, j1.id);
  const failed = await fail(sql, c1, "boom", false);
  assert.equal(failed.status, "failed");
  await cancel(sql, j2.id);
  const [c3] = await claim(sql, "w", [queue], 5);
  assert.equal(c3?.id, j3.id);
});

dbTest("a retrying job keeps its key's later jobs waiting", async (sql) => {
  const queue = queueName("okey_retry");
  const j1 = await enqueue(sql, queue, "k", { orderingKey: "s", backoffBaseMs: 0, backoffCapMs: 0 });
  const j2 = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const [c1] = await claim(sql, "w", [queue], 5);
  assert.equal(c1.id, j1.id);
  const retry = await fail(sql, c1, "try again", true);
  assert.equal(retry.status, "retrying");
  const next = await claim(sql, "w", [queue], 5);
  assert.deepEqual(next.map((j) => j.id), [j1.id], "the retry comes first, not the next job");
  const [waiting] = await sql`select status from public.jobs where id = ${j2.id}`;
  assert.equal(waiting.status, "pending");
});

dbTest("claim_job refuses a job whose earlier same-key job is unfinished", async (sql) => {
  const queue = queueName("okey_one");
  await enqueue(sql, queue, "k", { orderingKey: "s" });
  const j2 = await enqueue(sql, queue, "k", { orderingKey: "s" });
  const got = await sql`select * from public.claim_job(${j2.id}::uuid, 'w', array[${queue}]::text[])`;
  assert.equal(got.length, 0);
  const [row] = await sql`select status, attempts from public.jobs where id = ${j2.id}`;
  assert.deepEqual({ ...row }, { status: "pending", attempts: 0 });
});

dbTest("one owner's backlog of 100 does not starve another owner's single job", async (sql) => {
  const queue = queueName("fair");
  const heavy = await createUser(sql);
  const light = await createUser(sql);
  await sql`select public.enqueue_jobs(${
    sql.json(Array.from({ length: 100 }, () => ({ queue, kind: "k", owner: heavy })) as never)
  })`;
  const single = await enqueue(sql, queue, "k", { owner: light });
  const order: string[] = [];
  for (let i = 0; i < 3; i++) {
    const [j] = await claim(sql, "w", [queue], 1);
    order.push(j.owner_id!);
    await complete(sql, j);
  }
  assert.ok(order.includes(light), `the light owner's job was not among the first 3 claims: ${order}`);
  const [row] = await sql`select status from public.jobs where id = ${single.id}`;
  assert.equal(row.status, "completed");
});

dbTest("fairness holds for jobs enqueued one by one, and FIFO holds within one owner", async (sql) => {
  const queue = queueName("fair_seq");
  const a = await createUser(sql);
  const b = await createUser(sql);
  const aJobs: JobRow[] = [];
  for (let i = 0; i < 20; i++) aJobs.push(await enqueue(sql, queue, "k", { owner: a }));
  const bJob = await enqueue(sql, queue, "k", { owner: b });
  const claimed = await claim(sql, "w", [queue], 3);
  assert.ok(claimed.some((j) => j.id === bJob.id), "b's job is in the first batch of 3");
  const aClaimed = claimed.filter((j) => j.owner_id === a).map((j) => j.id);
  assert.deepEqual(aClaimed, aJobs.slice(0, aClaimed.length).map((j) => j.id), "a's jobs in order");
});
