// 20261202002000: the statements that reach one job by id and lease token (complete,
// fail, extend, report progress, the chained call, the media heartbeat and release, the
// pipeline and chat lease checks, claim_job's expired-lease probe) go through jobs_pkey.
// They also said `status = 'processing'`, which made the partial index jobs_lease_idx
// usable: with statistics that said few jobs were processing the planner scanned that
// whole index with id as a filter, and a session kept that plan (the queue functions keep
// generic plans) when thousands were processing.

import assert from "node:assert/strict";
import postgres from "postgres";
import { claim, dbTest, enqueue, type JobRow, nestedPlans, queueName, type Sql } from "./_lib.ts";

dbTest("a job found by id and lease token is read through the primary key, not jobs_lease_idx", async (sql) => {
  const queue = queueName("lease_plans");
  for (let i = 0; i < 8; i++) await enqueue(sql, queue, "k");

  let jobs: JobRow[] = [];
  const plans = await nestedPlans(async (tx) => {
    const [a, b, c, d, e, f] = jobs;
    // As the chained call plans (and as a session plans after five calls, when its
    // plans are generic): sequential and bitmap scans off, one plan for any job.
    await tx`set local plan_cache_mode = force_generic_plan`;
    await tx`set local enable_seqscan = off`;
    await tx`set local enable_bitmapscan = off`;
    // Whether the call succeeds or not, its statements were planned and logged.
    const attempt = async (run: (sp: Sql) => Promise<unknown>) => {
      try {
        await (tx as unknown as postgres.TransactionSql).savepoint((sp) => run(sp as unknown as Sql));
      } catch { /* lease lost or no such job: the plan is what is looked at */ }
    };
    await attempt((sp) => sp`select public.report_progress(${a.id}::uuid, ${a.lease_token}::uuid, 10)`);
    await attempt((sp) => sp`select public.extend_lease(${a.id}::uuid, ${a.lease_token}::uuid, 60)`);
    await attempt((sp) => sp`select public.complete_job(${a.id}::uuid, ${a.lease_token}::uuid, '{}'::jsonb)`);
    await attempt((sp) => sp`select public.fail_job(${b.id}::uuid, ${b.lease_token}::uuid, 'boom', false)`);
    await attempt((sp) =>
      sp`select * from public.complete_jobs(${sp.json([{ job: c.id, lease_token: c.lease_token }])})`
    );
    await attempt((sp) =>
      sp`select * from public.complete_job_and_claim(${d.id}::uuid, ${d.lease_token}::uuid, null,
                                                     'lease-plans', ${[queue]}::text[], null, 1, 60)`
    );
    await attempt((sp) => sp`select public.media_heartbeat(${e.id}::uuid, ${e.lease_token}::uuid, 30)`);
    await attempt((sp) => sp`select public.media_release_job(${e.id}::uuid, ${e.lease_token}::uuid)`);
    await attempt((sp) => sp`select private.pipeline_check_lease(${f.id}::uuid, ${f.lease_token}::uuid)`);
    await attempt((sp) => sp`select public.chat_job_context(${f.id}::uuid, ${f.lease_token}::uuid)`);
    const [waiting] = await tx`select id from public.jobs where queue = ${queue} and status = 'pending' limit 1`;
    await attempt((sp) => sp`select * from public.claim_job(${waiting.id}::uuid, 'lease-plans', ${[queue]}::text[])`);
  }, {
    // Statistics that say no job is processing, as on a quiet queue: the other tests'
    // processing jobs are deleted in this transaction (rolled back), then ANALYZE.
    setup: async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`delete from public.jobs where status = 'processing'`;
      await tx`set local session_replication_role = origin`;
      await tx`analyze public.jobs`;
      jobs = await claim(tx, "lease-plans", [queue], 6);
      assert.equal(jobs.length, 6);
    },
    rollback: true,
  });

  // The statements that take one job by id: p_job, or complete_jobs' ids.
  const byId = plans.filter((p) => /\bid = p_job\b|j\.id = i\.id and j\.lease_token = i\.token/.test(p));
  const functions = [
    "report_progress",
    "extend_lease",
    "complete_job",
    "fail_job",
    "complete_jobs",
    "complete_job_and_claim",
    "media_heartbeat",
    "media_release_job",
    "pipeline_check_lease",
    "chat_job_context",
    "claim_job",
  ];
  assert.ok(byId.length >= functions.length, `expected a plan per function, got:\n${plans.join("\n---\n")}`);
  const onLease = byId.filter((p) => /jobs_lease_idx/.test(p));
  assert.deepEqual(onLease, [], `statements by id that read jobs_lease_idx:\n${onLease.join("\n---\n")}`);
  const lease = byId.filter((p) => /lease_token = (p_lease_token|i\.token)|lease_token is not null/.test(p));
  for (const p of lease) assert.match(p, /jobs_pkey/, p);
});

// 20261202003600: complete_jobs joined its items to jobs by a filter over every (row, item)
// pair, after reading the rows by `id = any(ids)` (a bitmap scan here, a sequential scan
// when its generic plan was made while jobs was small).
dbTest("complete_jobs reaches each item's job by one primary-key probe", async (sql) => {
  const queue = queueName("complete_jobs_plan");
  for (let i = 0; i < 6; i++) await enqueue(sql, queue, "k");
  let completed: boolean[] = [];
  const plans = await nestedPlans(async (tx) => {
    const held = await claim(tx, "batch-plans", [queue], 6);
    assert.equal(held.length, 6);
    for (const part of [held.slice(0, 3), held.slice(3)]) {
      const rows = await tx<{ completed: boolean }[]>`
        select completed from public.complete_jobs(${
        tx.json(part.map((j) => ({ job: j.id, lease_token: j.lease_token })) as never)
      })`;
      completed = completed.concat(rows.map((r) => r.completed));
    }
  }, { rollback: true });
  assert.deepEqual(completed, [true, true, true, true, true, true]);
  const updates = plans.filter((p) => /with done as \(\s*update public\.jobs j/.test(p));
  assert.equal(updates.length, 2, `expected two completion plans, got:\n${plans.join("\n---\n")}`);
  for (const p of updates) {
    assert.match(p, /Index Scan using jobs_pkey on jobs j[^\n]*\n\s+Index Cond: \(id = i\.id\)/, p);
    assert.doesNotMatch(p, /Seq Scan on jobs|Bitmap Heap Scan on jobs|Join Filter: \(\(j\.id/, p);
  }
});
