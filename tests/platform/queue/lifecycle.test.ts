// Cancellation, queue position, stats, cleanup, notifications, argument checks and
// the trigger that guards the state machine.

import assert from "node:assert/strict";
import { claim, complete, dbTest, enqueue, fail, jobById, queueName, sqlstate } from "./_lib.ts";

dbTest("cancelling pending, retrying and processing jobs; finished jobs are left as they are", async (sql) => {
  const queue = queueName("cancel");
  const pending = await enqueue(sql, queue, "k");
  const [c1] = await sql`select * from public.cancel_job(${pending.id})`;
  assert.equal(c1.status, "cancelled");
  assert.ok(c1.completed_at);
  assert.deepEqual(await claim(sql, "w", [queue]), []);

  const retrying = await enqueue(sql, queue, "k");
  await fail(sql, (await claim(sql, "w", [queue]))[0], "x");
  assert.equal((await jobById(sql, retrying.id)).status, "retrying");
  const [c2] = await sql`select * from public.cancel_job(${retrying.id})`;
  assert.equal(c2.status, "cancelled");

  const running = await enqueue(sql, queue, "k");
  const [held] = await claim(sql, "w", [queue]);
  assert.equal(held.id, running.id);
  const [c3] = await sql`select * from public.cancel_job(${running.id})`;
  assert.equal(c3.status, "cancelled");
  assert.equal(c3.lease_token, null);
  // The worker's answer after cancellation is refused.
  assert.equal(await sqlstate(complete(sql, held)), "EQ409");

  const done = await enqueue(sql, queue, "k");
  await complete(sql, (await claim(sql, "w", [queue]))[0]);
  const [c4] = await sql`select * from public.cancel_job(${done.id})`;
  assert.equal(c4.status, "completed");
  const [c5] = await sql`select * from public.cancel_job(${pending.id})`;
  assert.equal(c5.status, "cancelled");

  assert.equal(await sqlstate(sql`select public.cancel_job(${crypto.randomUUID()})`), "EQ404");
});

dbTest("queue position counts the waiting jobs ahead in claim order", async (sql) => {
  const queue = queueName("position");
  const a = await enqueue(sql, queue, "k");
  const b = await enqueue(sql, queue, "k");
  const urgent = await enqueue(sql, queue, "k", { priority: 5 });
  const later = await enqueue(sql, queue, "k", { delayMs: 3_600_000 });
  await enqueue(sql, queueName("position_other"), "k", { priority: 99 });

  const pos = async (id: string) => (await sql`select public.queue_position(${id}) as p`)[0].p;
  assert.equal(await pos(urgent.id), 1);
  assert.equal(await pos(a.id), 2);
  assert.equal(await pos(b.id), 3);
  assert.equal(await pos(later.id), 4);

  const [held] = await claim(sql, "w", [queue]);
  assert.equal(held.id, urgent.id);
  assert.equal(await pos(urgent.id), 0);
  assert.equal(await pos(a.id), 1);
  assert.equal(await pos(b.id), 2);

  await complete(sql, held);
  assert.equal(await pos(urgent.id), null);
});

// The claim index answers it (from 20261201003100 to 20261201004100 the planner could
// also pick jobs_waiting_tenant_idx, since split by owner into indexes this query's
// conditions do not imply). What matters is that finished jobs are never read.
dbTest("queue position reads an index of waiting jobs, not a scan of finished jobs", async (sql) => {
  const queue = queueName("position_plan");
  const job = await enqueue(sql, queue, "k");
  await sql`set enable_seqscan = off`;
  try {
    const plan = await sql.unsafe(`
      explain select count(*) from public.jobs j
       where j.queue = '${queue}' and j.status in ('pending', 'retrying')
         and j.pending_dependencies = 0 and j.priority = 0
         and (j.run_at, j.seq) < (now(), ${Number(job.seq)})`);
    const text = plan.map((r) => r["QUERY PLAN"]).join("\n");
    assert.match(text, /jobs_claim_idx/);
    assert.doesNotMatch(text, /Seq Scan|jobs_finished_idx|jobs_pkey/);
  } finally {
    await sql`reset enable_seqscan`;
  }
});

dbTest("stats count jobs per status and time completed work", async (sql) => {
  const queue = queueName("stats");
  const ids = [];
  for (let i = 0; i < 6; i++) ids.push((await enqueue(sql, queue, "k", { maxAttempts: 1 })).id);
  await enqueue(sql, queue, "k", { delayMs: 3_600_000 });
  const blocker = await enqueue(sql, queue, "k", { delayMs: 3_600_000 });
  await enqueue(sql, queue, "k", { dependsOn: [blocker.id] });

  const held = await claim(sql, `${queue}-w`, [queue], 5);
  assert.equal(held.length, 5);
  await complete(sql, held[0]);
  await complete(sql, held[1]);
  await fail(sql, held[2], "x");
  await sql`select public.cancel_job(${held[3].id})`;
  // Pin processing times so avg and p95 are exact: 1 s and 3 s.
  await sql`update public.jobs set started_at = completed_at - interval '1 second' where id = ${held[0].id}`;
  await sql`update public.jobs set started_at = completed_at - interval '3 seconds' where id = ${held[1].id}`;

  const [{ s }] = await sql`select public.queue_stats(${queue}) as s`;
  assert.equal(s.queue, queue);
  assert.equal(s.pending, 4); // 1 due + 2 delayed + 1 blocked
  assert.equal(s.processing, 1);
  assert.equal(s.retrying, 0);
  assert.equal(s.completed, 2);
  assert.equal(s.failed, 1);
  assert.equal(s.cancelled, 1);
  assert.equal(s.blocked, 1);
  assert.equal(s.delayed, 2);
  assert.equal(s.completed_in_window, 2);
  assert.equal(Number(s.avg_processing_ms), 2000);
  assert.equal(Number(s.p95_processing_ms), 2900);
  assert.ok(Number(s.oldest_pending_age_ms) >= 0);
  assert.equal(s.active_workers, 1);
  assert.equal(s.window_seconds, 3600);

  const [{ e }] = await sql`select public.queue_stats(${queueName("empty")}) as e`;
  assert.equal(e.pending, 0);
  assert.equal(e.avg_processing_ms, null);
  assert.equal(e.oldest_pending_age_ms, null);
});

dbTest("cleanup removes finished jobs past the retention with their events, keeps the rest", async (sql) => {
  const queue = queueName("cleanup");
  const old = await enqueue(sql, queue, "k");
  await complete(sql, (await claim(sql, "w", [queue]))[0]);
  const recent = await enqueue(sql, queue, "k");
  await complete(sql, (await claim(sql, "w", [queue]))[0]);
  const waiting = await enqueue(sql, queue, "k");
  // Age one finished job past the retention (and the waiting one, which must stay).
  await sql`update public.jobs set completed_at = now() - interval '2 days' where id = ${old.id}`;
  await sql`update public.jobs set created_at = now() - interval '2 days' where id = ${waiting.id}`;

  // Limit 1 per call: loop (bounded) until nothing is left to delete.
  let deleted = 0;
  for (let i = 0; i < 1000; i++) {
    const [{ r }] = await sql`select public.cleanup_jobs(86400, 1) as r`;
    deleted += r.jobs_deleted;
    if (r.jobs_deleted < 1) break;
  }
  assert.ok(deleted >= 1);
  const left = await sql`select id from public.jobs where queue = ${queue}`;
  assert.deepEqual(left.map((r) => r.id).sort(), [recent.id, waiting.id].sort());
  const [{ n }] = await sql`select count(*)::int as n from public.job_events where job_id = ${old.id}`;
  assert.equal(n, 0);
});

dbTest("enqueue notifies listeners on jobs_<queue> when the job is claimable now", async (sql) => {
  const queue = queueName("notify");
  const got: string[] = [];
  const listener = await sql.listen(`jobs_${queue}`, (payload) => got.push(payload));
  try {
    await enqueue(sql, queue, "first_kind");
    await enqueue(sql, queue, "delayed_kind", { delayMs: 60_000 });
    await enqueue(sql, queue, "second_kind");
    for (let i = 0; i < 200 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    // Order of arrival is the commit order; the delayed job sent nothing.
    assert.deepEqual(got, ["first_kind", "second_kind"]);
  } finally {
    await listener.unlisten();
  }
});

dbTest("bad arguments are refused with 22023 and a message naming them", async (sql) => {
  const cases: Array<[string, Promise<unknown>]> = [
    ["p_queue", sql`select public.enqueue_job('Bad Queue!', 'k')`],
    ["p_kind", sql`select public.enqueue_job('ok_queue', '')`],
    ["p_delay_ms", sql`select public.enqueue_job('ok_queue', 'k', p_delay_ms => -1)`],
    ["p_max_attempts", sql`select public.enqueue_job('ok_queue', 'k', p_max_attempts => 0)`],
    ["p_backoff", sql`select public.enqueue_job('ok_queue', 'k', p_backoff_base_ms => 10, p_backoff_cap_ms => 5)`],
    ["p_batch", sql`select public.claim_jobs('w', array['ok_queue'], p_batch => 0)`],
    ["p_queues", sql`select public.claim_jobs('w', array[]::text[])`],
    ["p_lease_seconds", sql`select public.claim_jobs('w', array['ok_queue'], p_lease_seconds => 0)`],
    ["p_jobs", sql`select public.enqueue_jobs('{"queue":"q"}'::jsonb)`],
    ["unknown key", sql`select public.enqueue_jobs('[{"queue":"q","kind":"k","prio":1}]'::jsonb)`],
    ["p_retention_seconds", sql`select public.cleanup_jobs(-1)`],
  ];
  for (const [name, p] of cases) {
    try {
      await p;
      assert.fail(`${name}: accepted`);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      assert.equal(err.code, "22023", `${name}: ${err.message}`);
      assert.ok(
        err.message?.includes(name.startsWith("p_") ? name : name.split(" ")[0]),
        `${name}: ${err.message}`,
      );
    }
  }
});

dbTest("the trigger rejects transitions outside the state machine, even from direct SQL", async (sql) => {
  const queue = queueName("guard");
  const job = await enqueue(sql, queue, "k");
  assert.equal(
    await sqlstate(sql`update public.jobs set status = 'completed' where id = ${job.id}`),
    "22023",
  );
  const [held] = await claim(sql, "w", [queue]);
  await complete(sql, held);
  assert.equal(
    await sqlstate(sql`update public.jobs set status = 'pending' where id = ${job.id}`),
    "22023",
  );
  assert.equal(
    await sqlstate(sql`insert into public.jobs (queue, kind, status) values (${queue}, 'k', 'completed')`),
    "22023",
  );
});

// 20261202000100: the rule "a processing job holds a lease, no other job does" moved
// from a CHECK into the triggers; direct SQL is refused as before, same SQLSTATE.
dbTest("a processing job holds a lease and no other does, even through direct SQL", async (sql) => {
  const queue = queueName("lease_rule");
  const waiting = await enqueue(sql, queue, "k");
  // A waiting job given a lease, or set processing without one.
  assert.equal(
    await sqlstate(sql`update public.jobs set lease_token = gen_random_uuid(),
                         lease_expires_at = now() + interval '1 minute' where id = ${waiting.id}`),
    "23514",
  );
  assert.equal(
    await sqlstate(sql`update public.jobs set status = 'processing' where id = ${waiting.id}`),
    "23514",
  );
  // A running job losing half or all of its lease, without or with a status change.
  const [held] = await claim(sql, "w", [queue]);
  for (
    const change of [
      sql`update public.jobs set lease_token = null where id = ${held.id}`,
      sql`update public.jobs set lease_expires_at = null where id = ${held.id}`,
      sql`update public.jobs set status = 'failed' where id = ${held.id}`,
    ]
  ) {
    assert.equal(await sqlstate(change), "23514");
  }
  // A job created with a lease.
  assert.equal(
    await sqlstate(sql`insert into public.jobs (queue, kind, lease_token, lease_expires_at)
                       values (${queue}, 'k', gen_random_uuid(), now())`),
    "23514",
  );
  // Nothing of the refused statements stayed; the lease still completes the job.
  const [after] = await sql`select status, lease_token from public.jobs where id = ${held.id}`;
  assert.deepEqual([after.status, after.lease_token], ["processing", held.lease_token]);
  assert.equal(held.id, waiting.id);
  assert.equal((await sql`select 1 from public.jobs where queue = ${queue}`).length, 1);
  await complete(sql, held);
  const [{ status }] = await sql`select status from public.jobs where id = ${held.id}`;
  assert.equal(status, "completed");
});

dbTest("a legal status change made by hand is logged with the SQL role as actor", async (sql) => {
  const queue = queueName("by_hand");
  const job = await enqueue(sql, queue, "k");
  await sql`update public.jobs set status = 'cancelled', completed_at = now() where id = ${job.id}`;
  const [ev] = await sql`
    select from_status, to_status, actor from public.job_events
     where job_id = ${job.id} and to_status = 'cancelled'`;
  assert.deepEqual({ ...ev }, { from_status: "pending", to_status: "cancelled", actor: "sql:postgres" });
});

dbTest(
  "a history is one row per transition whoever made it; an update that keeps the status logs nothing",
  async (sql) => {
    const queue = queueName("history");
    const job = await enqueue(sql, queue, "k");
    // Not a transition: neither refused (pending -> pending is not in the state machine)
    // nor logged.
    await sql`update public.jobs set status = status, priority = 1 where id = ${job.id}`;
    const [held] = await claim(sql, "w", [queue]);
    await sql`update public.jobs set status = 'cancelled', lease_token = null, lease_expires_at = null,
                   completed_at = now() where id = ${held.id}`;
    await sql`update public.jobs set status = 'cancelled' where id = ${held.id}`;
    const events = await sql`
    select from_status, to_status, actor, attempt from public.job_events
     where job_id = ${job.id} order by id`;
    assert.deepEqual(events.map((e) => `${e.from_status}->${e.to_status}:${e.actor}:${e.attempt}`), [
      "null->pending:postgres:0",
      "pending->processing:worker:1",
      "processing->cancelled:sql:postgres:1",
    ]);
  },
);

dbTest("after a queue function returns, hand-made changes in the same transaction are still logged", async (sql) => {
  const queue = queueName("same_tx");
  const a = await enqueue(sql, queue, "k");
  const b = await enqueue(sql, queue, "k");
  await sql.begin(async (tx) => {
    const [held] = await tx`select * from public.claim_jobs('w', array[${queue}])`;
    await tx`select public.complete_job(${held.id}, ${held.lease_token}, null)`;
    await tx`update public.jobs set status = 'cancelled', completed_at = now()
              where id = ${held.id === a.id ? b.id : a.id}`;
  });
  const events = await sql`
    select to_status, actor from public.job_events
     where queue = ${queue} and from_status is not null order by to_status`;
  assert.deepEqual(events.map((e) => `${e.to_status}:${e.actor}`), [
    "cancelled:sql:postgres",
    "completed:worker",
    "processing:worker",
  ]);
});

dbTest("complete_jobs completes a batch in one call and reports stale leases instead of failing", async (sql) => {
  const queue = queueName("complete_many");
  const parent = await enqueue(sql, queue, "k");
  await enqueue(sql, queue, "k");
  await enqueue(sql, queue, "k");
  const child = await enqueue(sql, queue, "child", { dependsOn: [parent.id] });
  const claimed = await claim(sql, "w", [queue], 3);
  assert.equal(claimed.length, 3);
  // The parent first; the last one loses its lease before the batch comes back.
  const held = [
    claimed.find((j) => j.id === parent.id)!,
    ...claimed.filter((j) => j.id !== parent.id),
  ];
  await sql`select public.cancel_job(${held[2].id})`;
  const unknown = crypto.randomUUID();
  const items = [
    ...held.map((j) => ({ job: j.id, lease_token: j.lease_token, result: { id: j.id } })),
    { job: unknown, lease_token: crypto.randomUUID() },
  ];
  const rows = await sql`select * from public.complete_jobs(${sql.json(items)})`;
  assert.deepEqual(
    rows.map((r) => ({ ...r })),
    [
      { job_id: held[0].id, completed: true, status: "completed" },
      { job_id: held[1].id, completed: true, status: "completed" },
      { job_id: held[2].id, completed: false, status: "cancelled" },
      { job_id: unknown, completed: false, status: null },
    ],
  );
  assert.deepEqual((await jobById(sql, held[0].id)).result, { id: held[0].id });
  // The parent was among them: its dependent is released.
  assert.equal((await jobById(sql, child.id)).pending_dependencies, 0);
  const [{ n }] = await sql`
    select count(*)::int as n from public.job_events
     where queue = ${queue} and to_status = 'completed' and actor = 'worker'`;
  assert.equal(n, 2);
  const [w] = await sql`select jobs_done::int from public.workers where id = 'w'`;
  assert.ok(w.jobs_done >= 2);
  assert.equal(
    await sqlstate(sql`select * from public.complete_jobs('[{"job": "x"}]'::jsonb)`),
    "22023",
  );
});

dbTest("enqueue_jobs mixes plain jobs with dedup and dependencies, in input order", async (sql) => {
  const queue = queueName("mixed_batch");
  const first = await enqueue(sql, queue, "k", { dedupKey: "dup" });
  const items = [
    { queue, kind: "plain", priority: 3 },
    { queue, kind: "dup", dedup_key: "dup" },
    { queue, kind: "after", depends_on: [first.id] },
  ];
  const rows = await sql`select id, kind, pending_dependencies from public.enqueue_jobs(${sql.json(items)})`;
  assert.equal(rows.length, 3);
  assert.equal(rows[0].kind, "plain");
  assert.equal(rows[1].id, first.id); // deduplicated: the existing job
  assert.equal(rows[2].pending_dependencies, 1);
  const plain = await sql`select id from public.enqueue_jobs(${
    sql.json([{ queue, kind: "a" }, { queue, kind: "b", delay_ms: 5000 }])
  })`;
  assert.equal(plain.length, 2);
  const [{ delayed }] =
    await sql`select count(*)::int as delayed from public.jobs where queue = ${queue} and run_at > now()`;
  assert.equal(delayed, 1);
});

dbTest("another migration's function that names its actor is logged under that actor", async (sql) => {
  const queue = queueName("foreign_fn");
  const job = await enqueue(sql, queue, "k");
  await sql.begin(async (tx) => {
    await tx`select set_config('edgeworks.job_actor', 'chat:claim', true)`;
    await tx`update public.jobs set status = 'processing', attempts = 1, worker_id = 'w',
                    lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'
              where id = ${job.id}`;
  });
  const [ev] = await sql`
    select actor, worker_id from public.job_events where job_id = ${job.id} and to_status = 'processing'`;
  assert.deepEqual({ ...ev }, { actor: "chat:claim", worker_id: "w" });
});
