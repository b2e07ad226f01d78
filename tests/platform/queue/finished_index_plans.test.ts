// 20261202003500: jobs_finished_idx is `where completed_at is not null` (a null test
// costs almost nothing to compile on every update of jobs; the status test it replaces
// cost thousands of instructions). The planner reads a partial index only where the
// statement's WHERE implies its predicate, so each statement that reads finished jobs
// says `completed_at is not null` or compares completed_at; those over processing jobs
// (jobs_lease_idx, still `where status = 'processing'`) say the status or compare
// lease_expires_at. With sequential and bitmap scans off, as the queue functions plan, a
// statement whose WHERE did not imply its index's predicate would read another index
// or the table.

import assert from "node:assert/strict";
import { claim, complete, createUser, dbTest, enqueue, expireLease, fail, nestedPlans, queueName } from "./_lib.ts";

/** The plans whose query text matches `text` (at least one): each reads `index`, none scans the table. */
function assertReads(plans: string[], text: RegExp, index: RegExp): string[] {
  const found = plans.filter((p) => text.test(p));
  assert.ok(found.length > 0, `expected a plan for ${text}, got:\n${plans.join("\n---\n")}`);
  for (const p of found) {
    assert.match(p, index, p);
    assert.doesNotMatch(p, /Seq Scan on jobs|Bitmap Heap Scan on jobs/, p);
  }
  return found;
}

dbTest("statements over processing and finished jobs read jobs_lease_idx and jobs_finished_idx", async (sql) => {
  const queue = queueName("finished_plans");
  const owner = await createUser(sql);
  // One job in each state the two indexes hold: completed, failed, cancelled, processing.
  await enqueue(sql, queue, "k");
  await complete(sql, (await claim(sql, "w", [queue]))[0]);
  await enqueue(sql, queue, "k", { maxAttempts: 1 });
  await fail(sql, (await claim(sql, "w", [queue]))[0], "boom", false);
  const cancelled = await enqueue(sql, queue, "k");
  await sql`select public.cancel_job(${cancelled.id}::uuid)`;
  await enqueue(sql, queue, "k", { owner });
  await enqueue(sql, queue, "k");
  const running = await claim(sql, "w", [queue], 2);
  assert.equal(running.length, 2);

  let stats: Record<string, number> | undefined;
  const plans = await nestedPlans(async (tx) => {
    // Both forms of next_fair_position's read of the last processing position.
    await enqueue(tx, queue, "k", { owner });
    await enqueue(tx, queue, "k");
    [{ stats }] = await tx`select public.queue_stats(${queue}) as stats`;
    await tx`select private.chat_queue_timing(${queue})`;
    await tx`select public.cleanup_jobs()`;
    // The expired-lease probes: the claim's (private.claim_preamble), the chained call's,
    // and the requeue they call.
    await claim(tx, "w2", [queue]);
    const [next] = await claim(tx, "w2", [queue]);
    await tx`select * from public.complete_job_and_claim(${next.id}::uuid, ${next.lease_token}::uuid, null,
                                                        'w2', ${[queue]}::text[], null, 1, 60)`;
    await expireLease(tx, running[0].id);
    await tx`select public.requeue_expired_leases(${[queue]}::text[])`;
    // The history view reads the claim and completion events off completed jobs.
    await tx`set local enable_bitmapscan = on`;
    await tx`select count(*) from public.job_events where queue = ${queue}`;
  }, {
    setup: async (tx) => {
      await tx`set local enable_seqscan = off`;
      await tx`set local enable_bitmapscan = off`;
    },
    rollback: true,
  });
  assert.deepEqual(
    [stats?.processing, stats?.completed, stats?.failed, stats?.cancelled],
    [2, 1, 1, 1],
  );

  const lease = /using jobs_lease_idx/;
  const finished = /using jobs_finished_idx/;
  // next_fair_position: with an owner and without. With an owner, the owner's index is as
  // good a read (the planner picks by the statistics of the moment).
  assertReads(
    plans,
    /Query Text: select max\(j\.fair_position\)[^]*j\.owner_id = p_owner/,
    /using jobs_(lease|owner)_idx/,
  );
  assertReads(plans, /Query Text: select max\(j\.fair_position\)[^]*j\.owner_id is null/, lease);
  // queue_stats: the processing count, the finished counts, the timing window.
  assertReads(
    plans,
    /Query Text: select count\(\*\)\s+from public\.jobs j\s+where j\.queue = p_queue and j\.status = 'processing'\n/,
    lease,
  );
  assertReads(plans, /Query Text: select count\(\*\) filter \(where j\.status = 'completed'\) as completed/, finished);
  assertReads(plans, /Query Text: select count\(\*\) as n,[^]*j\.completed_at >= now\(\)/, finished);
  assertReads(plans, /Query Text: jsonb_build_object\(\s*'avg_processing_ms'/, finished);
  // cleanup_jobs: the walk over finished queues (both arms) and the per-status ranges.
  const [cleanup] = assertReads(plans, /Query Text: with recursive queues \(name\)/, finished);
  assert.ok((cleanup.match(/using jobs_finished_idx/g) ?? []).length >= 3, cleanup);
  // The expired-lease probes and the requeue.
  assertReads(plans, /Query Text: exists \(select 1 from public\.jobs j\s[^]*lease_expires_at < now\(\)/, lease);
  assertReads(
    plans,
    /Query Text: SELECT from public\.jobs j\s+where j\.status = 'processing'[^]*lease_expires_at < now\(\)/,
    lease,
  );
  assertReads(plans, /Query Text: with moved as \([^]*lease_expires_at < now\(\)/, lease);
  // job_events: the completion branch, and the claim branch's completed arm.
  // (An OR of two partial indexes is a BitmapOr, so bitmap scans are on for this one.)
  const history = plans.find((p) => /Query Text: select count\(\*\) from public\.job_events/.test(p)) ?? "";
  assert.ok((history.match(/jobs_finished_idx/g) ?? []).length >= 2, history);
  assert.doesNotMatch(history, /Seq Scan on jobs/, history);
});
