// 20261201004100: an enqueue reads one index entry for its fair position, with or
// without an owner, however many jobs are waiting (it read every waiting ownerless job
// of the queue and sorted them: 4.8 ms per enqueue on a 34,000-job queue).
// 20261202000400: the index is split by owner again (20261202000100 had merged it).

import assert from "node:assert/strict";
import { createUser, dbTest, enqueue, nestedPlans, queueName } from "./_lib.ts";

dbTest("the fair position of a new job is one index probe, owner or not", async (sql) => {
  const queue = queueName("enqueue_plan");
  const owner = await createUser(sql);
  // Enough waiting jobs that a scan of them would show as one.
  await sql`select count(*) from public.enqueue_jobs((
    select jsonb_agg(jsonb_build_object('queue', ${queue}::text, 'kind', 'k')) from generate_series(1, 300)))`;
  for (const o of [null, owner]) {
    const plans = await nestedPlans(async (tx) => {
      for (let i = 0; i < 3; i++) await enqueue(tx, queue, "k", { owner: o });
    });
    const own = plans.filter((p) => /order by j\.fair_position desc limit 1/.test(p));
    assert.equal(own.length, 3, `expected three reads of the owner's last position, got:\n${plans.join("\n---\n")}`);
    for (const p of own) {
      assert.match(p, o === null ? /jobs_waiting_ownerless_idx/ : /jobs_waiting_owner_idx/, p);
      assert.doesNotMatch(p, /Sort|Seq Scan|Bitmap/, p);
    }
  }
  const [{ n }] = await sql`select count(*)::int as n from public.jobs where queue = ${queue}`;
  assert.equal(n, 306);
});
