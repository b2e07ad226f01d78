// Many workers draining one queue: every job completes exactly once, none is lost,
// even with retried failures along the way.

import assert from "node:assert/strict";
import { claim, complete, connect, dbTest, fail, queueName, type Sql } from "./_lib.ts";

const JOBS = 10_000;
const WORKERS = 8;

async function enqueueAll(sql: Sql, queue: string) {
  for (let start = 0; start < JOBS; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, JOBS - start) }, (_, i) => ({
      queue,
      kind: "drain",
      payload: { n: start + i },
      priority: (start + i) % 3,
      max_attempts: 20,
      // Retries are due at once, so the drain does not wait on wall-clock time.
      backoff_base_ms: 0,
      backoff_cap_ms: 0,
    }));
    const [{ n }] = await sql`select count(*)::int as n from public.enqueue_jobs(${sql.json(batch)})`;
    assert.equal(n, batch.length);
  }
}

dbTest("8 concurrent workers drain 10,000 jobs, each completed exactly once", async (sql) => {
  const queue = queueName("drain");
  await enqueueAll(sql, queue);

  const claimedBy = new Map<string, string>(); // job id -> worker of its completed attempt
  let duplicateCompletions = 0;
  let failures = 0;
  let lostLeases = 0;

  async function worker(index: number) {
    const name = `${queue}-w${index}`;
    const own = connect(1);
    try {
      // Mixed batch sizes exercise both claim paths.
      const batch = index % 2 === 0 ? 1 : 7;
      // Bounded: at most one claim per job plus retries, with room to spare.
      for (let round = 0; round < JOBS * 3; round++) {
        const jobs = await claim(own, name, [queue], batch);
        if (jobs.length === 0) return;
        for (const job of jobs) {
          const n = (job.payload as { n: number }).n;
          // Fail every 13th job on its first attempt: the retry must not complete it twice.
          if (n % 13 === 0 && job.attempts === 1) {
            await fail(own, job, "first attempt fails on purpose");
            failures++;
            continue;
          }
          try {
            await complete(own, job, { by: name });
          } catch (e) {
            if ((e as { code?: string }).code === "EQ409") lostLeases++;
            else throw e;
            continue;
          }
          if (claimedBy.has(job.id)) duplicateCompletions++;
          claimedBy.set(job.id, name);
        }
      }
      throw new Error(`${name} did not finish within its bound`);
    } finally {
      await own.end({ timeout: 5 });
    }
  }

  await Promise.all(Array.from({ length: WORKERS }, (_, i) => worker(i)));

  assert.equal(duplicateCompletions, 0);
  assert.equal(lostLeases, 0);
  assert.equal(claimedBy.size, JOBS);
  assert.equal(failures, Math.ceil(JOBS / 13));

  const [jobs] = await sql`
    select count(*)::int as total,
           count(*) filter (where status = 'completed')::int as completed,
           count(*) filter (where attempts = 2)::int as retried
      from public.jobs where queue = ${queue}`;
  assert.deepEqual(jobs, { total: JOBS, completed: JOBS, retried: failures });

  // The history, not the workers' own bookkeeping, is the witness.
  const [events] = await sql`
    select count(*) filter (where to_status = 'completed')::int as completions,
           count(distinct job_id) filter (where to_status = 'completed')::int as completed_jobs,
           count(*) filter (where to_status = 'processing')::int as claims,
           count(*) filter (where from_status is null)::int as enqueued,
           count(*) filter (where to_status = 'retrying')::int as retries
      from public.job_events where queue = ${queue}`;
  assert.deepEqual(events, {
    completions: JOBS,
    completed_jobs: JOBS,
    claims: JOBS + failures,
    enqueued: JOBS,
    retries: failures,
  });

  const [workers] = await sql`
    select sum(jobs_done)::int as done, sum(jobs_failed)::int as failed, count(*)::int as n
      from public.workers where id like ${queue + "-w%"}`;
  assert.deepEqual(workers, { done: JOBS, failed: failures, n: WORKERS });
}, 2);
