// Leases: a crashed worker's job comes back and is finished by another worker; the
// crashed worker's late answer is refused; leases can be extended; progress is tied
// to the lease.

import assert from "node:assert/strict";
import { claim, complete, dbTest, enqueue, expireLease, fail, jobById, queueName, sqlstate } from "./_lib.ts";

dbTest(
  "a job whose worker died is requeued and completed by another worker; the late complete is refused",
  async (sql) => {
    const queue = queueName("lease");
    const job = await enqueue(sql, queue, "work");

    const [held] = await claim(sql, "dead-worker", [queue], 1, 30);
    assert.equal(held.id, job.id);
    assert.equal(held.status, "processing");
    assert.ok(held.lease_token);

    // Still leased: nobody else gets it and the sweep leaves it alone.
    assert.deepEqual(await claim(sql, "live-worker", [queue]), []);
    const [{ n: none }] = await sql`select public.requeue_expired_leases(array[${queue}]) as n`;
    assert.equal(none, 0);

    await expireLease(sql, job.id);
    const [{ n }] = await sql`select public.requeue_expired_leases(array[${queue}]) as n`;
    assert.equal(n, 1);
    const requeued = await jobById(sql, job.id);
    assert.equal(requeued.status, "retrying");
    assert.equal(requeued.lease_token, null);
    assert.match(requeued.last_error ?? "", /lease expired: worker dead-worker/);

    const [again] = await claim(sql, "live-worker", [queue]);
    assert.equal(again.id, job.id);
    assert.equal(again.attempts, 2);
    assert.notEqual(again.lease_token, held.lease_token);

    // The dead worker wakes up: its complete and its fail are both refused.
    assert.equal(await sqlstate(complete(sql, held, { from: "dead" })), "EQ409");
    assert.equal(await sqlstate(fail(sql, held, "late")), "EQ409");

    const done = await complete(sql, again, { from: "live" });
    assert.equal(done.status, "completed");
    assert.deepEqual(done.result, { from: "live" });
    // And completing twice is refused even with the right token.
    assert.equal(await sqlstate(complete(sql, again)), "EQ409");

    const events = await sql`
    select from_status, to_status, actor, worker_id from public.job_events
     where job_id = ${job.id} order by id`;
    assert.deepEqual(events.map((e) => `${e.from_status}->${e.to_status}:${e.actor}:${e.worker_id}`), [
      "null->pending:postgres:null",
      "pending->processing:worker:dead-worker",
      "processing->retrying:system:lease_expiry:dead-worker",
      "retrying->processing:worker:live-worker",
      "processing->completed:worker:live-worker",
    ]);

    const [w] = await sql`select jobs_done::int, jobs_failed::int from public.workers where id = 'dead-worker'`;
    assert.deepEqual(w, { jobs_done: 0, jobs_failed: 1 });
  },
);

dbTest("claim itself sweeps expired leases of its queues", async (sql) => {
  const queue = queueName("sweep");
  const job = await enqueue(sql, queue, "work");
  const [held] = await claim(sql, "crashy", [queue]);
  await expireLease(sql, job.id);
  const [again] = await claim(sql, "healthy", [queue]);
  assert.equal(again?.id, held.id);
  assert.equal(again.worker_id, "healthy");
});

dbTest("an expired lease on the last attempt fails the job", async (sql) => {
  const queue = queueName("lastlease");
  const job = await enqueue(sql, queue, "work", { maxAttempts: 1 });
  await claim(sql, "w", [queue]);
  await expireLease(sql, job.id);
  const [{ n }] = await sql`select public.requeue_expired_leases(array[${queue}]) as n`;
  assert.equal(n, 1);
  const row = await jobById(sql, job.id);
  assert.equal(row.status, "failed");
  assert.ok(row.completed_at);
  assert.match(row.last_error ?? "", /attempt 1 of 1/);
});

dbTest("extend_lease pushes the expiry and keeps the job from the sweep", async (sql) => {
  const queue = queueName("extend");
  const job = await enqueue(sql, queue, "work");
  const [held] = await claim(sql, "w", [queue], 1, 5);
  const [{ ok }] = await sql`
    select public.extend_lease(${held.id}, ${held.lease_token}, 600)
           >= now() + interval '599 seconds' as ok`;
  assert.equal(ok, true);
  const [{ n }] = await sql`select public.requeue_expired_leases(array[${queue}]) as n`;
  assert.equal(n, 0);
  assert.equal(
    await sqlstate(sql`select public.extend_lease(${held.id}, ${crypto.randomUUID()}, 60)`),
    "EQ409",
  );
  await complete(sql, held);
  assert.equal(
    await sqlstate(sql`select public.extend_lease(${job.id}, ${held.lease_token}, 60)`),
    "EQ409",
  );
});

dbTest("progress is recorded under the lease and refused without it", async (sql) => {
  const queue = queueName("progress");
  const job = await enqueue(sql, queue, "work");
  const [held] = await claim(sql, "w", [queue]);
  const [{ p }] = await sql`select public.report_progress(${held.id}, ${held.lease_token}, 40) as p`;
  assert.equal(p, 40);
  assert.equal((await jobById(sql, job.id)).progress, 40);
  assert.equal(
    await sqlstate(sql`select public.report_progress(${held.id}, ${held.lease_token}, 101)`),
    "22023",
  );
  assert.equal(
    await sqlstate(sql`select public.report_progress(${held.id}, ${crypto.randomUUID()}, 50)`),
    "EQ409",
  );
  const done = await complete(sql, held);
  assert.equal(done.progress, 100);
});

dbTest("a lease token of an unknown job is reported as not found", async (sql) => {
  const state = await sqlstate(
    sql`select * from public.complete_job(${crypto.randomUUID()}, ${crypto.randomUUID()}, null)`,
  );
  assert.equal(state, "EQ404");
});
