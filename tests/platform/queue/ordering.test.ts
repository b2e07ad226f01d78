// Claim order: priority first, then run_at, then enqueue order; delayed jobs wait for
// their run_at; kind and queue filters; several queues in one claim.

import assert from "node:assert/strict";
import { claim, dbTest, enqueue, jobById, makeDue, queueName } from "./_lib.ts";

dbTest("higher priority is claimed first, then oldest, then enqueue order", async (sql) => {
  const queue = queueName("prio");
  const low = await enqueue(sql, queue, "k", { priority: 0, payload: { name: "low" } });
  const high = await enqueue(sql, queue, "k", { priority: 10, payload: { name: "high" } });
  const mid1 = await enqueue(sql, queue, "k", { priority: 5, payload: { name: "mid1" } });
  const mid2 = await enqueue(sql, queue, "k", { priority: 5, payload: { name: "mid2" } });
  const negative = await enqueue(sql, queue, "k", { priority: -3, payload: { name: "neg" } });

  const order: string[] = [];
  for (let i = 0; i < 6; i++) {
    const [job] = await claim(sql, "w", [queue]);
    if (!job) break;
    order.push(job.id);
  }
  assert.deepEqual(order, [high.id, mid1.id, mid2.id, low.id, negative.id]);
});

dbTest("a batch enqueued in one call is claimed in input order", async (sql) => {
  const queue = queueName("fifo");
  const items = Array.from({ length: 20 }, (_, i) => ({ queue, kind: "k", payload: { i } }));
  const rows = await sql`select id from public.enqueue_jobs(${sql.json(items)})`;
  assert.equal(rows.length, 20);
  const claimed = await claim(sql, "w", [queue], 20);
  const byPayload = claimed.map((j) => (j.payload as { i: number }).i).sort((a, b) => a - b);
  assert.deepEqual(byPayload, [...Array(20).keys()]);
  // Returned rows of enqueue_jobs are in input order.
  const ids = rows.map((r) => r.id);
  const [{ ordered }] = await sql`
    select bool_and(prev < seq) as ordered from (
      select seq, lag(seq) over (order by ord) as prev
        from unnest(${ids}::uuid[]) with ordinality as u(id, ord)
        join public.jobs j on j.id = u.id) s where prev is not null`;
  assert.equal(ordered, true);
});

dbTest("batch claim returns the top of the queue, at most p_batch jobs", async (sql) => {
  const queue = queueName("batch");
  for (let p = 0; p < 10; p++) await enqueue(sql, queue, "k", { priority: p });
  const first = await claim(sql, "w", [queue], 4);
  assert.deepEqual(first.map((j) => j.priority).sort((a, b) => b - a), [9, 8, 7, 6]);
  const rest = await claim(sql, "w", [queue], 100);
  assert.equal(rest.length, 6);
  assert.deepEqual(await claim(sql, "w", [queue], 100), []);
});

dbTest("a delayed job is not claimable before its run_at, then is", async (sql) => {
  const queue = queueName("delay");
  const job = await enqueue(sql, queue, "k", { delayMs: 60_000 });
  const [{ delay_ms }] = await sql`
    select (extract(epoch from run_at - created_at) * 1000)::int as delay_ms
      from public.jobs where id = ${job.id}`;
  assert.equal(delay_ms, 60_000);
  assert.deepEqual(await claim(sql, "w", [queue]), []);

  // A later, undelayed job overtakes it.
  const now = await enqueue(sql, queue, "k");
  const [first] = await claim(sql, "w", [queue]);
  assert.equal(first.id, now.id);

  await makeDue(sql, job.id);
  const [due] = await claim(sql, "w", [queue]);
  assert.equal(due.id, job.id);
});

dbTest("a higher-priority job that is not due yet does not block due ones", async (sql) => {
  const queue = queueName("delayprio");
  await enqueue(sql, queue, "k", { priority: 100, delayMs: 3_600_000 });
  const due = await enqueue(sql, queue, "k", { priority: 0 });
  const [job] = await claim(sql, "w", [queue]);
  assert.equal(job.id, due.id);
});

dbTest("kind filter claims only the named kinds", async (sql) => {
  const queue = queueName("kinds");
  const a = await enqueue(sql, queue, "image_fast", { priority: 5 });
  const b = await enqueue(sql, queue, "video_fast");
  const [got] = await claim(sql, "w", [queue], 1, 60, ["video_fast"]);
  assert.equal(got.id, b.id);
  assert.equal((await jobById(sql, a.id)).status, "pending");
});

dbTest("one claim over several queues takes the best jobs across them", async (sql) => {
  const q1 = queueName("multi_a");
  const q2 = queueName("multi_b");
  const other = queueName("multi_c");
  await enqueue(sql, q1, "k", { priority: 1 });
  const top = await enqueue(sql, q2, "k", { priority: 9 });
  const second = await enqueue(sql, q1, "k", { priority: 5 });
  await enqueue(sql, other, "k", { priority: 50 });
  const got = await claim(sql, "w", [q1, q2], 2);
  assert.deepEqual(got.map((j) => j.id).sort(), [top.id, second.id].sort());
  // The surplus head locked during that claim is free again afterwards.
  const [last] = await claim(sql, "w", [q1, q2], 2);
  assert.equal(last.priority, 1);
  assert.deepEqual(await claim(sql, "w", [q1, q2]), []);
});

dbTest("claiming records the worker's heartbeat and queues", async (sql) => {
  const queue = queueName("hb");
  const worker = `${queue}-worker`;
  await claim(sql, worker, [queue]);
  const [w] = await sql`select queues, status from public.workers where id = ${worker}`;
  assert.deepEqual(w, { queues: [queue], status: "active" });
  const [hb] = await sql`select status, queues from public.heartbeat_worker(${worker}, null, 'stopped')`;
  assert.deepEqual(hb, { status: "stopped", queues: [queue] });
});
