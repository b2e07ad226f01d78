// complete_job_and_claim: a completion that claims the next job in the same call
// (what queue-worker does while it has time for another batch), and the claim's plan.

import assert from "node:assert/strict";
import {
  claim,
  connect,
  dbTest,
  enqueue,
  jobById,
  type JobRow,
  nestedPlans,
  queueName,
  type Sql,
  sqlstate,
} from "./_lib.ts";

async function chain(
  sql: Sql,
  held: { id: string; lease_token: string | null },
  worker: string,
  queues: string[],
  result: unknown = { ok: true },
  batch = 1,
): Promise<JobRow[]> {
  return [
    ...await sql<JobRow[]>`
    select * from public.complete_job_and_claim(
      ${held.id}::uuid, ${held.lease_token}::uuid, ${sql.json(result as never)},
      ${worker}, ${queues}::text[], null, ${batch}, 60)`,
  ];
}

async function history(sql: Sql, id: string): Promise<string[]> {
  const rows = await sql`
    select from_status, to_status, actor, worker_id from public.job_events
     where job_id = ${id} order by id`;
  return rows.map((e) => `${e.from_status}->${e.to_status}:${e.actor}:${e.worker_id}`);
}

dbTest("each completion hands back the next job, logged as a claim and a completion", async (sql) => {
  const queue = queueName("chain");
  const a = await enqueue(sql, queue, "work", { payload: { n: 1 } });
  const b = await enqueue(sql, queue, "work", { payload: { n: 2 } });
  const c = await enqueue(sql, queue, "work", { payload: { n: 3 } });
  const me = `${queue}-w`;

  const [first] = await claim(sql, me, [queue]);
  assert.equal(first.id, a.id);
  const [second] = await chain(sql, first, me, [queue], { n: 1 });
  assert.equal(second.id, b.id);
  assert.equal(second.status, "processing");
  assert.equal(second.worker_id, me);
  assert.ok(second.lease_token);
  const [third] = await chain(sql, second, me, [queue], { n: 2 });
  assert.equal(third.id, c.id);
  // Nothing left: the last completion still happens and the claim comes back empty.
  assert.deepEqual(await chain(sql, third, me, [queue], { n: 3 }), []);

  for (const [job, n] of [[a, 1], [b, 2], [c, 3]] as const) {
    const row = await jobById(sql, job.id);
    assert.equal(row.status, "completed");
    assert.deepEqual(row.result, { n });
    assert.equal(row.lease_token, null);
    assert.deepEqual(await history(sql, job.id), [
      "null->pending:postgres:null",
      `pending->processing:worker:${me}`,
      `processing->completed:worker:${me}`,
    ]);
  }
  const [w] = await sql`select jobs_done::int from public.workers where id = ${me}`;
  assert.equal(w.jobs_done, 3);
});

dbTest("a lost lease aborts the claim with it: nothing changes", async (sql) => {
  const queue = queueName("chain_lost");
  const a = await enqueue(sql, queue, "work");
  const b = await enqueue(sql, queue, "work");
  const [held] = await claim(sql, "late", [queue]);
  assert.equal(held.id, a.id);

  const stale = { id: held.id, lease_token: crypto.randomUUID() };
  assert.equal(await sqlstate(chain(sql, stale, "late", [queue])), "EQ409");
  const unknown = { id: crypto.randomUUID(), lease_token: crypto.randomUUID() };
  assert.equal(await sqlstate(chain(sql, unknown, "late", [queue])), "EQ404");

  // The next job was not claimed, the held one is still held.
  assert.equal((await jobById(sql, b.id)).status, "pending");
  assert.deepEqual(await history(sql, b.id), ["null->pending:postgres:null"]);
  const still = await jobById(sql, a.id);
  assert.equal(still.status, "processing");
  assert.equal(still.lease_token, held.lease_token);

  // The right token still completes it afterwards.
  const [next] = await chain(sql, held, "late", [queue]);
  assert.equal(next.id, b.id);
  assert.equal((await jobById(sql, a.id)).status, "completed");
});

dbTest("bad claim arguments are refused before the completion", async (sql) => {
  const queue = queueName("chain_args");
  const a = await enqueue(sql, queue, "work");
  const [held] = await claim(sql, "careful", [queue]);
  for (
    const [batch, queues, worker] of [
      [0, [queue], "careful"],
      [1001, [queue], "careful"],
      [1, [] as string[], "careful"],
      [1, [queue], ""],
      [1, [queue], "w".repeat(201)],
    ] as const
  ) {
    assert.equal(await sqlstate(chain(sql, held, worker, [...queues], { ok: true }, batch)), "22023");
  }
  assert.equal(
    await sqlstate(sql`select * from public.complete_job_and_claim(null, null, null, 'careful', array[${queue}])`),
    "22023",
  );
  // A NULL batch or lease length, and lease lengths out of range.
  for (const [batch, seconds] of [[null, 60], [1, null], [1, 0], [1, 86401]]) {
    assert.equal(
      await sqlstate(sql`
        select * from public.complete_job_and_claim(${held.id}::uuid, ${held.lease_token}::uuid, null,
          'careful', array[${queue}], null, ${batch}::int, ${seconds}::int)`),
      "22023",
      `batch ${batch}, lease seconds ${seconds}`,
    );
  }
  // A bad worker name wins over a lost lease, as it did when it was checked first.
  const stale = { id: held.id, lease_token: crypto.randomUUID() };
  assert.equal(await sqlstate(chain(sql, stale, "", [queue])), "22023");
  assert.equal(await sqlstate(chain(sql, stale, "careful", [queue])), "EQ409");
  const row = await jobById(sql, a.id);
  assert.equal(row.status, "processing");
  assert.equal(row.lease_token, held.lease_token);
});

dbTest("the completion releases a dependent that the same call claims", async (sql) => {
  const queue = queueName("chain_deps");
  const first = await enqueue(sql, queue, "first");
  const then = await enqueue(sql, queue, "then", { dependsOn: [first.id] });
  const me = `${queue}-w`;
  const [held] = await claim(sql, me, [queue]);
  assert.equal(held.id, first.id);
  // Blocked until the completion, claimed by it.
  assert.deepEqual(await claim(sql, `${me}-other`, [queue]), []);
  const [next] = await chain(sql, held, me, [queue]);
  assert.equal(next.id, then.id);
  assert.equal((await jobById(sql, first.id)).status, "completed");
});

dbTest("several queues, and a worker other than the holder, chain like claim_jobs", async (sql) => {
  const [q1, q2] = [queueName("chain_multi"), queueName("chain_multi")];
  const a = await enqueue(sql, q1, "work");
  const b = await enqueue(sql, q2, "work", { priority: 5 });
  const me = `${q1}-w`;
  const [held] = await claim(sql, me, [q1]);
  assert.equal(held.id, a.id);
  // Handing over: another worker name claims with the completion, over two queues.
  const successor = `${q1}-successor`;
  const [next] = await chain(sql, held, successor, [q1, q2]);
  assert.equal(next.id, b.id);
  assert.equal(next.worker_id, successor);
  assert.equal((await jobById(sql, a.id)).status, "completed");
  const workers = await sql`
    select id, status, queues, jobs_done::int from public.workers where id in (${me}, ${successor}) order by id`;
  assert.deepEqual(workers.map((w) => [w.id, w.status, w.queues, w.jobs_done]), [
    [successor, "active", [q1, q2], 0],
    [me, "active", [q1], 1],
  ]);
  // And with one queue the successor's heartbeat names that queue.
  const [last] = await chain(sql, next, successor, [q1]).then(async (r) => {
    assert.deepEqual(r, []);
    return await sql`select queues from public.workers where id = ${successor}`;
  });
  assert.deepEqual(last.queues, [q1]);
});

dbTest("a holder whose worker row is gone, or says another status, gets it back active", async (sql) => {
  const queue = queueName("chain_row");
  for (let i = 0; i < 3; i++) await enqueue(sql, queue, "work");
  const me = `${queue}-w`;
  const [held] = await claim(sql, me, [queue]);
  await sql`delete from public.workers where id = ${me}`;
  const [next] = await chain(sql, held, me, [queue]);
  const [row] = await sql`select status, queues, jobs_done::int from public.workers where id = ${me}`;
  // The completion had no row to count in; the claim recorded the worker again.
  assert.deepEqual({ ...row }, { status: "active", queues: [queue], jobs_done: 0 });
  await sql`update public.workers set status = 'idle' where id = ${me}`;
  await chain(sql, next, me, [queue]);
  const [again] = await sql`select status, jobs_done::int from public.workers where id = ${me}`;
  assert.deepEqual({ ...again }, { status: "active", jobs_done: 1 });
});

dbTest("a chained claim of several jobs of one queue comes back in claim order, each logged", async (sql) => {
  const queue = queueName("chain_batch");
  const first = await enqueue(sql, queue, "work", { priority: 9 });
  const low = await enqueue(sql, queue, "work");
  const high = await enqueue(sql, queue, "work", { priority: 5 });
  const mid = await enqueue(sql, queue, "work", { priority: 2 });
  const me = `${queue}-w`;
  const [held] = await claim(sql, me, [queue]);
  assert.equal(held.id, first.id);
  const next = await chain(sql, held, me, [queue], { ok: true }, 3);
  assert.deepEqual(next.map((j) => j.id), [high.id, mid.id, low.id]);
  for (const job of next) {
    assert.equal(job.status, "processing");
    assert.equal(job.worker_id, me);
    assert.deepEqual(await history(sql, job.id), [
      "null->pending:postgres:null",
      `pending->processing:worker:${me}`,
    ]);
  }
  assert.deepEqual(await history(sql, first.id), [
    "null->pending:postgres:null",
    `pending->processing:worker:${me}`,
    `processing->completed:worker:${me}`,
  ]);
});

dbTest("6 chaining workers drain 3,000 jobs, each completed exactly once", async (sql) => {
  const queue = queueName("chain_drain");
  const JOBS = 3000;
  for (let start = 0; start < JOBS; start += 1000) {
    const batch = Array.from({ length: 1000 }, (_, i) => ({ queue, kind: "drain", payload: { n: start + i } }));
    await sql`select count(*) from public.enqueue_jobs(${sql.json(batch)})`;
  }
  const completedBy = new Map<string, string>();
  let duplicates = 0;

  async function worker(index: number) {
    const name = `${queue}-w${index}`;
    const own = connect(1);
    try {
      let [held] = await claim(own, name, [queue]);
      // Bounded: one call per job at most, with room to spare.
      for (let round = 0; held && round < JOBS * 2; round++) {
        const next = await chain(own, held, name, [queue], { by: name });
        if (completedBy.has(held.id)) duplicates++;
        completedBy.set(held.id, name);
        held = next[0];
      }
      assert.equal(held, undefined, `${name} did not finish within its bound`);
    } finally {
      await own.end({ timeout: 5 });
    }
  }
  await Promise.all(Array.from({ length: 6 }, (_, i) => worker(i)));

  assert.equal(duplicates, 0);
  assert.equal(completedBy.size, JOBS);
  const [events] = await sql`
    select count(*) filter (where to_status = 'completed')::int as completions,
           count(distinct job_id) filter (where to_status = 'completed')::int as completed_jobs,
           count(*) filter (where to_status = 'processing')::int as claims
      from public.job_events where queue = ${queue}`;
  assert.deepEqual(events, { completions: JOBS, completed_jobs: JOBS, claims: JOBS });
  const [w] = await sql`
    select sum(jobs_done)::int as done from public.workers where id like ${queue + "-w%"}`;
  assert.equal(w.done, JOBS);
}, 2);

dbTest("the claim reaches its rows through the primary key, never a join or a scan", async (sql) => {
  for (const queues of [[queueName("chain_plan")], [queueName("chain_plan"), queueName("chain_plan")]]) {
    for (const q of queues) {
      for (let i = 0; i < 3; i++) await enqueue(sql, q, "work");
    }
    // Several calls, so the plan cache's generic plan is the one shown.
    const plans = await nestedPlans(async (tx) => {
      for (let i = 0; i < 3; i++) assert.equal((await claim(tx, "planner", queues, 1)).length, 1);
    });
    const claims = plans.filter((p) => /Update on jobs/.test(p));
    assert.equal(claims.length, 3, `expected three claim plans, got:\n${plans.join("\n---\n")}`);
    for (const p of claims) {
      // The update's only input is the primary-key lookup of the locked ids (the
      // 20261201002000 claim joined them back, which a large table turned into a
      // hash join sized from the claim index: 15-20 ms per claim).
      assert.match(
        p,
        /Update on jobs j[^\n]*\n(?:\s+InitPlan[^\n]*\n\s+->\s+CTE Scan[^\n]*\n)?\s+->\s+Index Scan using jobs_pkey on jobs j[^\n]*\n\s+Index Cond: \(id = ANY/,
        p,
      );
      assert.match(p, /jobs_claim_idx/);
      assert.doesNotMatch(p, /Hash Join|Merge Join|Seq Scan on jobs/, p);
    }
  }
});

dbTest("the chained claim updates the row it locked by its address, not through an index", async (sql) => {
  const queue = queueName("chain_tid");
  for (let i = 0; i < 5; i++) await enqueue(sql, queue, "work");
  const me = `${queue}-w`;
  const plans = await nestedPlans(async (tx) => {
    let [held] = await claim(tx, me, [queue]);
    for (let i = 0; i < 3; i++) {
      [held] = await chain(tx, held, me, [queue]);
      assert.equal(held.status, "processing");
    }
  }, { rollback: true });
  const updates = plans.filter((p) => /where j\.ctid = v_tid/.test(p));
  assert.equal(updates.length, 3, `expected three claim updates, got:\n${plans.join("\n---\n")}`);
  for (const p of updates) {
    assert.match(p, /Update on jobs j[^\n]*\n\s+->\s+Tid Scan on jobs j[^\n]*\n\s+TID Cond: \(ctid = /, p);
  }
});
