// Retries: exponential backoff with full jitter and a cap, Retry-After as a lower
// bound, max attempts, non-retryable errors. Delays are read from run_at against the
// transition's own timestamp (same transaction), never from the wall clock.

import assert from "node:assert/strict";
import { claim, dbTest, enqueue, fail, jobById, makeDue, queueName, type Sql } from "./_lib.ts";

// min(cap, base * 2^(attempt - 1)); the same table pins Backoff::ceiling_ms in
// crates/queue/src/state.rs.
const CEILINGS: Array<[number, number]> = [
  [0, 1_000],
  [1, 1_000],
  [2, 2_000],
  [3, 4_000],
  [5, 16_000],
  [10, 512_000],
  [11, 600_000],
  [64, 600_000],
  [65, 600_000],
  [2_147_483_647, 600_000],
];

function ceiling(attempt: number, base: number, cap: number): number {
  return Math.min(cap, base * 2 ** (Math.max(attempt, 1) - 1));
}

/** Delay (ms) the last retry scheduled: run_at minus the transition time. */
async function lastRetryDelay(sql: Sql, jobId: string): Promise<number> {
  const [row] = await sql`
    select (extract(epoch from run_at - created_at) * 1000)::numeric as delay
      from public.job_events
     where job_id = ${jobId} and to_status = 'retrying'
     order by id desc limit 1`;
  return Number(row.delay);
}

dbTest("backoff_ceiling_ms doubles from the base up to the cap", async (sql) => {
  for (const [attempt, expected] of CEILINGS) {
    const [{ c }] = await sql`select public.backoff_ceiling_ms(${attempt}, 1000, 600000)::int as c`;
    assert.equal(c, expected, `attempt ${attempt}`);
  }
  const [{ z }] = await sql`select public.backoff_ceiling_ms(7, 0, 0)::int as z`;
  assert.equal(z, 0);
});

dbTest("each retry waits a jittered delay within [0, ceiling], then max attempts fails the job", async (sql) => {
  const queue = queueName("retry");
  const base = 1_000;
  const cap = 5_000;
  const job = await enqueue(sql, queue, "k", { maxAttempts: 5, backoffBaseMs: base, backoffCapMs: cap });

  for (let attempt = 1; attempt <= 4; attempt++) {
    const [held] = await claim(sql, "w", [queue]);
    assert.equal(held?.id, job.id, `attempt ${attempt} claimable`);
    assert.equal(held.attempts, attempt);
    const after = await fail(sql, held, `failure ${attempt}`);
    assert.equal(after.status, "retrying");
    assert.equal(after.last_error, `failure ${attempt}`);

    const delay = await lastRetryDelay(sql, job.id);
    assert.ok(Number.isInteger(delay), `whole milliseconds: ${delay}`);
    assert.ok(delay >= 0 && delay <= ceiling(attempt, base, cap), `attempt ${attempt}: ${delay}`);

    // Not claimable before run_at (unless the jitter drew 0 ms) ...
    if (delay > 0) assert.deepEqual(await claim(sql, "w", [queue]), []);
    // ... and claimable once it passed.
    await makeDue(sql, job.id);
  }

  const [last] = await claim(sql, "w", [queue]);
  assert.equal(last.attempts, 5);
  const final = await fail(sql, last, "failure 5");
  assert.equal(final.status, "failed");
  assert.ok(final.completed_at);
  assert.deepEqual(await claim(sql, "w", [queue]), []);

  const events = await sql`
    select to_status from public.job_events where job_id = ${job.id} order by id`;
  assert.deepEqual(events.map((e) => e.to_status), [
    "pending",
    ...Array(4).fill(["processing", "retrying"]).flat(),
    "processing",
    "failed",
  ]);
});

dbTest("delays spread over the whole jitter range (full jitter)", async (sql) => {
  const queue = queueName("jitter");
  const n = 120;
  const items = Array.from({ length: n }, () => ({
    queue,
    kind: "k",
    backoff_base_ms: 1000,
    backoff_cap_ms: 60000,
  }));
  await sql`select count(*) from public.enqueue_jobs(${sql.json(items)})`;
  for (let i = 0; i < 2; i++) {
    // Second round: attempt 2, ceiling 2000.
    const held = await claim(sql, "w", [queue], n);
    assert.equal(held.length, n);
    for (const j of held) await fail(sql, j, "again");
    await sql`update public.jobs set run_at = now() - interval '1 ms' where queue = ${queue}`;
  }
  const rows = await sql`
    select e.attempt, (extract(epoch from e.run_at - e.created_at) * 1000)::float8 as delay
      from public.job_events e where e.queue = ${queue} and e.to_status = 'retrying'`;
  for (const attempt of [1, 2]) {
    const c = ceiling(attempt, 1000, 60000);
    const delays = rows.filter((r) => r.attempt === attempt).map((r) => r.delay as number);
    assert.equal(delays.length, n);
    assert.ok(delays.every((d) => d >= 0 && d <= c));
    // Both halves of [0, ceiling] occur (a miss has probability 2^-119).
    assert.ok(delays.some((d) => d < c / 2), `attempt ${attempt}: nothing below half`);
    assert.ok(delays.some((d) => d > c / 2), `attempt ${attempt}: nothing above half`);
  }
});

dbTest("retry_after is a lower bound, even above the cap", async (sql) => {
  const queue = queueName("retry_after");
  const job = await enqueue(sql, queue, "k", { backoffBaseMs: 1000, backoffCapMs: 5000 });
  await fail(sql, (await claim(sql, "w", [queue]))[0], "429", true, 7_000);
  assert.equal(await lastRetryDelay(sql, job.id), 7_000);
  await makeDue(sql, job.id);
  await fail(sql, (await claim(sql, "w", [queue]))[0], "429", true, 1_500);
  const delay = await lastRetryDelay(sql, job.id);
  assert.ok(delay >= 1_500 && delay <= 2_000, `${delay}`);
});

dbTest("a non-retryable error fails the job at once", async (sql) => {
  const queue = queueName("fatal");
  const job = await enqueue(sql, queue, "k", { maxAttempts: 5 });
  const after = await fail(sql, (await claim(sql, "w", [queue]))[0], "bad input", false);
  assert.equal(after.status, "failed");
  assert.equal(after.attempts, 1);
  assert.equal((await jobById(sql, job.id)).last_error, "bad input");
});

dbTest("max_attempts 1 never retries", async (sql) => {
  const queue = queueName("once");
  await enqueue(sql, queue, "k", { maxAttempts: 1 });
  const after = await fail(sql, (await claim(sql, "w", [queue]))[0], "nope");
  assert.equal(after.status, "failed");
});
