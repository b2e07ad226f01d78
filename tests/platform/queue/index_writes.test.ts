// 20261201003100: the claim no longer writes jobs_tenant_idx (an owner's in-flight jobs
// are read through jobs_lease_idx at enqueue) and completion no longer writes
// jobs_cleanup_idx (cleanup_jobs walks jobs_finished_idx). Same answers as before:
// fair positions still count in-flight jobs, cleanup still takes every finished queue
// and status, at most p_limit per call, and never a job that is not finished, even
// while workers claim and complete.

import assert from "node:assert/strict";
import { claim, complete, connect, createUser, dbTest, enqueue, fail, queueName } from "./_lib.ts";

dbTest("an owner's in-flight jobs still count for its next fair position", async (sql) => {
  const alice = await createUser(sql);
  const bob = await createUser(sql);
  for (const owner of [alice, null]) {
    const queue = queueName("fair_inflight");
    const first = [];
    for (let i = 0; i < 3; i++) first.push(await enqueue(sql, queue, "k", { owner }));
    assert.deepEqual(first.map((j) => Number(j.fair_position)), [1, 2, 3]);
    // All three run: nothing of this owner waits, the queue has no head.
    assert.equal((await claim(sql, "w", [queue], 3)).length, 3);
    const other = await enqueue(sql, queue, "k", { owner: bob });
    const next = await enqueue(sql, queue, "k", { owner });
    // Bob's job starts at the (empty) head; the owner's next one after its last
    // in-flight position, exactly as when processing jobs were in the tenant index.
    assert.equal(Number(other.fair_position), 1);
    assert.equal(Number(next.fair_position), 4);
    const [firstClaim] = await claim(sql, "w", [queue]);
    assert.equal(firstClaim.id, other.id);
  }
});

dbTest("cleanup takes every finished queue and status past the retention, at most p_limit a call", async (sql) => {
  const queues = [queueName("clean_a"), queueName("clean_b")];
  const old: string[] = [];
  const kept: string[] = [];
  for (const queue of queues) {
    const done = await enqueue(sql, queue, "k");
    await complete(sql, (await claim(sql, "w", [queue]))[0]);
    const failed = await enqueue(sql, queue, "k", { maxAttempts: 1 });
    await fail(sql, (await claim(sql, "w", [queue]))[0], "boom", false);
    const cancelled = await enqueue(sql, queue, "k");
    await sql`select public.cancel_job(${cancelled.id}::uuid)`;
    old.push(done.id, failed.id, cancelled.id);
    const recent = await enqueue(sql, queue, "k");
    await complete(sql, (await claim(sql, "w", [queue]))[0]);
    const running = await enqueue(sql, queue, "k");
    await claim(sql, "w", [queue]);
    const waiting = await enqueue(sql, queue, "k");
    kept.push(recent.id, running.id, waiting.id);
    // Unfinished jobs with old timestamps must stay all the same.
    await sql`update public.jobs set created_at = now() - interval '3 days'
               where id in (${running.id}::uuid, ${waiting.id}::uuid)`;
  }
  await sql`update public.jobs set completed_at = now() - interval '2 days' where id = any(${old}::uuid[])`;

  for (let i = 0; i < 1000; i++) {
    const [{ r }] = await sql`select public.cleanup_jobs(86400, 2) as r`;
    assert.ok(r.jobs_deleted <= 2, `deleted ${r.jobs_deleted} with p_limit 2`);
    if (r.jobs_deleted < 2) break;
  }
  const left = await sql`select id from public.jobs where queue = any(${queues}::text[])`;
  assert.deepEqual(left.map((r) => r.id).sort(), [...kept].sort());
  const [{ gone }] = await sql`
    select count(*)::int as gone from public.job_events where job_id = any(${old}::uuid[])`;
  assert.equal(gone, 0);
  // The history of what stays is whole: enqueue, claim, completion.
  const [{ events }] = await sql`
    select count(*)::int as events from public.job_events where job_id = ${kept[0]}::uuid`;
  assert.equal(events, 3);
});

dbTest("cleanup racing claims and completions never loses a job nor completes one twice", async (sql) => {
  const queue = queueName("clean_race");
  const n = 200;
  const items = Array.from({ length: n }, (_, i) => ({ queue, kind: "k", payload: { i } }));
  const enqueued = (await sql`select id from public.enqueue_jobs(${sql.json(items)})`).map((r) => r.id);

  const completed: string[] = [];
  let working = 4;
  const worker = async (w: number) => {
    const own = connect(1);
    try {
      for (;;) {
        const jobs = await claim(own, `race-w${w}`, [queue]);
        if (jobs.length === 0) break;
        // Throws EQ409 if the job lost its lease (deleted or changed under the worker).
        const done = await complete(own, jobs[0]);
        assert.equal(done.status, "completed");
        completed.push(done.id);
      }
    } finally {
      working--;
      await own.end({ timeout: 5 });
    }
  };
  const cleaner = async () => {
    const own = connect(1);
    let deleted = 0;
    try {
      while (working > 0) {
        const [{ r }] = await own`select public.cleanup_jobs(0, 25) as r`;
        deleted += r.jobs_deleted;
      }
    } finally {
      await own.end({ timeout: 5 });
    }
    return deleted;
  };
  const [deleted] = await Promise.all([cleaner(), ...[0, 1, 2, 3].map(worker)]);

  assert.equal(completed.length, n);
  assert.equal(new Set(completed).size, n);
  assert.deepEqual([...completed].sort(), [...enqueued].sort());
  // What the cleaner did not take is completed, with one completion event each.
  const left = await sql`
    select j.status, (select count(*) from public.job_events e
                       where e.job_id = j.id and e.to_status = 'completed')::int as completions
      from public.jobs j where j.queue = ${queue}`;
  assert.ok(left.every((r) => r.status === "completed" && r.completions === 1));
  assert.equal(left.length + deleted >= n, true);
}, 8);
