// 20261201004100: an enqueue reads one index entry for its fair position, with or
// without an owner, however many jobs are waiting (it read every waiting ownerless job
// of the queue and sorted them: 4.8 ms per enqueue on a 34,000-job queue).
// 20261202000400: the index is split by owner again (20261202000100 had merged it).
// 20261202003100: one index again, keyed by coalesce(owner_id, nil uuid), so both reads
// are one equality; queue_stats counts blocked jobs with one read of it.
// 20261202003300: enqueue_jobs calls next_fair_position once per (queue, owner) of a
// batch; the planner had folded its `bases` into the insert's join, once per job.

import assert from "node:assert/strict";
import { claim, complete, createUser, dbTest, enqueue, type JobRow, nestedPlans, queueName } from "./_lib.ts";

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
      assert.match(p, /Index Scan using jobs_waiting_idx/, p);
      assert.doesNotMatch(p, /Sort|Seq Scan|Bitmap/, p);
    }
  }
  const [{ n }] = await sql`select count(*)::int as n from public.jobs where queue = ${queue}`;
  assert.equal(n, 306);
});

dbTest("queue_stats counts blocked jobs, owned and ownerless, with one read of the waiting index", async (sql) => {
  const queue = queueName("stats_plan");
  const owner = await createUser(sql);
  const head = await enqueue(sql, queue, "k");
  await enqueue(sql, queue, "k", { dependsOn: [head.id] });
  await enqueue(sql, queue, "k", { dependsOn: [head.id], owner });
  let stats: { blocked: number } | undefined;
  // Seq scans off: on a small table the planner may scan it; what matters is that the
  // index serves the count (its predicate is implied) and is read once.
  const plans = await nestedPlans(async (tx) => {
    [{ stats }] = await tx`select public.queue_stats(${queue}) as stats`;
  }, { setup: (tx) => tx`set local enable_seqscan = off` });
  assert.equal(stats?.blocked, 2);
  const blocked = plans.filter((p) => /pending_dependencies > 0/.test(p) && /Query Text: select count\(\*\)/.test(p));
  assert.equal(blocked.length, 1, `expected one read for the blocked count, got:\n${plans.join("\n---\n")}`);
  assert.match(blocked[0], /jobs_waiting_idx/, blocked[0]);
  assert.doesNotMatch(blocked[0], /Seq Scan/, blocked[0]);
});

// Fair positions: 1 + greatest(the queue's head, the owner's last waiting position, its
// last in-flight one), jobs without an owner counted as one owner. The same answers
// with the two indexes of 20261202000400 as with the one of 20261202003100.
dbTest("fair positions and the blocked count are kept per owner, ownerless jobs as one owner", async (sql) => {
  const queue = queueName("fair_owners");
  const a = await createUser(sql);
  const b = await createUser(sql);
  const pos = (j: { fair_position: string }) => Number(j.fair_position);

  const n1 = await enqueue(sql, queue, "k");
  const n2 = await enqueue(sql, queue, "k");
  const a1 = await enqueue(sql, queue, "k", { owner: a });
  const n3 = await enqueue(sql, queue, "k");
  const a2 = await enqueue(sql, queue, "k", { owner: a });
  const b1 = await enqueue(sql, queue, "k", { owner: b });
  // Blocked jobs wait too: each is its owner's last waiting position.
  const bBlocked = await enqueue(sql, queue, "k", { owner: b, dependsOn: [n1.id] });
  const nBlocked = await enqueue(sql, queue, "k", { dependsOn: [n1.id] });
  assert.deepEqual(
    [n1, n2, a1, n3, a2, b1, bBlocked, nBlocked].map(pos),
    [1, 2, 2, 3, 3, 2, 3, 4],
  );
  assert.deepEqual([bBlocked.pending_dependencies, nBlocked.pending_dependencies], [1, 1]);

  // A batch places each owner's jobs after that owner's last waiting position.
  const batch = await sql<{ owner_id: string | null; fair_position: string }[]>`
    select owner_id, fair_position from public.enqueue_jobs(${
    sql.json([a, null, b, a, null].map((owner) => ({ queue, kind: "k", owner })) as never)
  }) order by seq`;
  assert.deepEqual(
    batch.map((j) => [j.owner_id, pos(j)]),
    [[a, 4], [null, 5], [b, 4], [a, 5], [null, 6]],
  );

  const stats = async () => (await sql`select public.queue_stats(${queue}) as s`)[0].s;
  let s = await stats();
  assert.deepEqual([s.pending, s.blocked], [13, 2]);

  // The head runs and completes: both dependents become claimable, none is blocked.
  const [held] = await claim(sql, "w", [queue]);
  assert.equal(held.id, n1.id);
  await complete(sql, held);
  s = await stats();
  assert.deepEqual([s.pending, s.processing, s.completed, s.blocked], [12, 0, 1, 0]);
});

// next_fair_position's three reads: the queue's head, the owner's last waiting position
// (both `select j.fair_position ... from public.jobs j`) and its last in-flight one.
const FAIR_POSITION_READ = /Query Text: select (j\.fair_position|max\(j\.fair_position\))\s+from public\.jobs j/;

dbTest("a batch enqueue reads each queue and owner's fair position once, not once per job", async (sql) => {
  const [q1, q2] = [queueName("batch_bases_1"), queueName("batch_bases_2")];
  const owner = await createUser(sql);
  // 10 jobs in four (queue, owner) groups.
  const items = [
    [q1, null],
    [q1, owner],
    [q2, null],
    [q1, null],
    [q2, owner],
    [q1, owner],
    [q2, null],
    [q1, null],
    [q2, owner],
    [q1, owner],
  ].map(([queue, o]) => ({ queue, kind: "k", owner: o }));
  let n = 0;
  const plans = await nestedPlans(async (tx) => {
    [{ n }] = await tx`select count(*)::int as n from public.enqueue_jobs(${sql.json(items as never)})`;
  }, { rollback: true });
  assert.equal(n, 10);
  const reads = plans.filter((p) => FAIR_POSITION_READ.test(p));
  // Three reads per group; 30 (three per job) when `bases` was folded into the join.
  assert.equal(
    reads.length,
    4 * 3,
    `fair position reads:\n${reads.map((p) => p.match(FAIR_POSITION_READ)?.[0]).join("\n")}`,
  );
});

// The batch's positions come from the state before its insert: per (queue, owner) the
// base is next_fair_position then, and the n-th job of the group gets base + n. Where
// every queue has a claimable head that the batch's jobs (priority 0, later positions)
// do not displace, enqueue_job one job at a time gives the same positions; in an empty
// queue it does not (its first job becomes the head the next owner's job is placed
// after), and the batch places each group from the empty queue.
dbTest("a mixed batch gets the fair positions of one-by-one enqueues, from the state before the batch", async (sql) => {
  const [a, b, c, d] = [await createUser(sql), await createUser(sql), await createUser(sql), await createUser(sql)];
  const pos = (j: { fair_position: string }) => Number(j.fair_position);

  // The same backlog in two sets of queues: the batch goes to one, the same jobs one
  // at a time to the other.
  const backlog = async (q1: string, q2: string) => {
    const n1 = await enqueue(sql, q1, "k");
    const placed = [n1, await enqueue(sql, q1, "k")];
    for (let i = 0; i < 3; i++) placed.push(await enqueue(sql, q1, "k", { owner: a }));
    placed.push(await enqueue(sql, q1, "k", { owner: d }));
    // Priority 5: each is the queue's head while it waits, then claimed.
    const d2 = await enqueue(sql, q1, "k", { owner: d, priority: 5 });
    const b1 = await enqueue(sql, q1, "k", { owner: b, priority: 5 });
    const held = await claim(sql, "w", [q1], 2);
    assert.deepEqual(held.map((j) => j.id).sort(), [d2.id, b1.id].sort());
    // Blocked, and still b's last waiting position.
    const b2 = await enqueue(sql, q1, "k", { owner: b, dependsOn: [n1.id] });
    placed.push(d2, b1, b2);
    for (let i = 0; i < 2; i++) placed.push(await enqueue(sql, q2, "k"));
    return placed.map(pos);
  };
  const [x1, x2, x3] = [queueName("mixed_x1"), queueName("mixed_x2"), queueName("mixed_x3")];
  const [y1, y2] = [queueName("mixed_y1"), queueName("mixed_y2")];
  // n1 n2 a1 a2 a3 d1 d2 b1 b2 | m1 m2
  const before = [1, 2, 2, 3, 4, 2, 3, 4, 5, 1, 2];
  assert.deepEqual(await backlog(x1, x2), before);
  assert.deepEqual(await backlog(y1, y2), before);

  // Queue 1: head n1 (1); no owner waits at 2; a at 4; b waits at 5 (blocked) and runs
  // at 4; c is new; d waits at 2 and runs at 3. Queue 2: head m1 (1), no owner at 2, a
  // new. Queue 3 is empty: each group starts at 1.
  // [queue, owner, ordering key, expected fair position]
  type Item = [number, string | null, string | null, number];
  const jobs: Item[] = [
    [1, null, null, 3],
    [1, a, "s1", 5],
    [2, a, null, 2],
    [1, b, null, 6],
    [1, null, "s1", 4],
    [2, null, null, 3],
    [1, c, null, 2],
    [1, a, "s2", 6],
    [2, a, null, 3],
    [1, b, null, 7],
    [2, null, "s1", 4],
    [1, c, null, 3],
    [1, d, null, 4],
  ];
  const empty: Item[] = [[3, a, null, 1], [3, null, null, 1], [3, a, null, 2]];

  const x = [x1, x2, x3];
  const items = [...jobs, ...empty].map(([q, owner, key], i) => ({
    queue: x[q - 1],
    kind: `k${i % 2}`,
    owner,
    ordering_key: key,
    payload: { i },
  }));
  const batch = await sql<JobRow[]>`select * from public.enqueue_jobs(${sql.json(items as never)}) order by seq`;
  assert.deepEqual(batch.map((j) => j.payload), items.map((j) => j.payload), "in input order");
  assert.deepEqual(batch.map(pos), [...jobs, ...empty].map((j) => j[3]));

  const y = [y1, y2];
  const oneByOne: JobRow[] = [];
  for (const [i, [q, owner, key]] of jobs.entries()) {
    oneByOne.push(await enqueue(sql, y[q - 1], `k${i % 2}`, { owner, orderingKey: key, payload: { i } }));
  }
  assert.deepEqual(oneByOne.map(pos), jobs.map((j) => j[3]));
  // Every other column the caller chose or the queue set, queue names mapped back.
  const shape = (j: JobRow & { ordering_key?: string | null }, queues: string[]) => ({
    queue: queues.indexOf(j.queue) + 1,
    kind: j.kind,
    payload: j.payload,
    priority: j.priority,
    status: j.status,
    attempts: j.attempts,
    max_attempts: j.max_attempts,
    pending_dependencies: j.pending_dependencies,
    owner_id: j.owner_id,
    ordering_key: j.ordering_key,
    fair_position: j.fair_position,
  });
  assert.deepEqual(batch.slice(0, jobs.length).map((j) => shape(j, x)), oneByOne.map((j) => shape(j, y)));
});
