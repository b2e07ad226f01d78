// Dependencies: a job is claimable only once everything it depends on completed; a
// failed or cancelled dependency fails its dependents, transitively.

import assert from "node:assert/strict";
import { claim, complete, connect, dbTest, enqueue, fail, jobById, queueName, sqlstate } from "./_lib.ts";

dbTest("a job waits until all its dependencies completed", async (sql) => {
  const queue = queueName("deps");
  const a = await enqueue(sql, queue, "step_a");
  const b = await enqueue(sql, queue, "step_b");
  const c = await enqueue(sql, queue, "join", { dependsOn: [a.id, b.id], priority: 100 });
  assert.equal(c.pending_dependencies, 2);

  const [pos] = await sql`select public.queue_position(${c.id}) as p`;
  assert.equal(pos.p, null); // blocked: no meaningful position yet

  const first = await claim(sql, "w", [queue], 10);
  assert.deepEqual(first.map((j) => j.id).sort(), [a.id, b.id].sort());

  await complete(sql, first.find((j) => j.id === a.id)!);
  assert.equal((await jobById(sql, c.id)).pending_dependencies, 1);
  assert.deepEqual(await claim(sql, "w", [queue]), []);

  await complete(sql, first.find((j) => j.id === b.id)!);
  const [got] = await claim(sql, "w", [queue]);
  assert.equal(got?.id, c.id);

  const deps = await sql`select depends_on from public.job_dependencies where job_id = ${c.id}`;
  assert.deepEqual(deps.map((d) => d.depends_on).sort(), [a.id, b.id].sort());
});

dbTest("depending on an already completed job does not block", async (sql) => {
  const queue = queueName("deps_done");
  const a = await enqueue(sql, queue, "k");
  await complete(sql, (await claim(sql, "w", [queue]))[0]);
  const b = await enqueue(sql, queue, "k", { dependsOn: [a.id] });
  assert.equal(b.pending_dependencies, 0);
  assert.equal((await claim(sql, "w", [queue]))[0]?.id, b.id);
});

dbTest("a failed dependency fails its dependents transitively, and only them", async (sql) => {
  const queue = queueName("deps_fail");
  const root = await enqueue(sql, queue, "root", { maxAttempts: 1 });
  const child = await enqueue(sql, queue, "child", { dependsOn: [root.id] });
  const grandchild = await enqueue(sql, queue, "grandchild", { dependsOn: [child.id] });
  const sibling = await enqueue(sql, queue, "sibling");
  const unrelated = await enqueue(sql, queue, "needs_sibling", { dependsOn: [sibling.id] });

  const [held] = await claim(sql, "w", [queue], 1, 60, ["root"]);
  const failed = await fail(sql, held, "boom");
  assert.equal(failed.status, "failed");

  for (const id of [child.id, grandchild.id]) {
    const row = await jobById(sql, id);
    assert.equal(row.status, "failed");
    assert.match(row.last_error ?? "", new RegExp(`dependency ${root.id} failed`));
    assert.ok(row.completed_at);
  }
  assert.equal((await jobById(sql, sibling.id)).status, "pending");
  assert.equal((await jobById(sql, unrelated.id)).status, "pending");

  const events = await sql`
    select job_id, from_status, to_status, actor from public.job_events
     where job_id in (${child.id}, ${grandchild.id}) and to_status = 'failed'`;
  assert.equal(events.length, 2);
  for (const e of events) {
    assert.equal(e.from_status, "pending");
    assert.equal(e.actor, "system:dependency");
  }
});

dbTest("a cancelled dependency fails its dependents", async (sql) => {
  const queue = queueName("deps_cancel");
  const a = await enqueue(sql, queue, "k");
  const b = await enqueue(sql, queue, "k", { dependsOn: [a.id] });
  const [c] = await sql`select status from public.cancel_job(${a.id})`;
  assert.equal(c.status, "cancelled");
  assert.equal((await jobById(sql, b.id)).status, "failed");
});

dbTest("depending on a job that already failed yields a failed job", async (sql) => {
  const queue = queueName("deps_dead");
  const a = await enqueue(sql, queue, "k", { maxAttempts: 1 });
  await fail(sql, (await claim(sql, "w", [queue]))[0], "gone");
  const b = await enqueue(sql, queue, "k", { dependsOn: [a.id] });
  assert.equal(b.status, "failed");
  assert.match(b.last_error ?? "", /dependency/);
  assert.deepEqual(await claim(sql, "w", [queue]), []);
});

dbTest("a retried dependency does not release or fail its dependents", async (sql) => {
  const queue = queueName("deps_retry");
  const a = await enqueue(sql, queue, "k", { maxAttempts: 3 });
  const b = await enqueue(sql, queue, "k", { dependsOn: [a.id] });
  await fail(sql, (await claim(sql, "w", [queue]))[0], "transient");
  const row = await jobById(sql, b.id);
  assert.equal(row.status, "pending");
  assert.equal(row.pending_dependencies, 1);
});

dbTest("an unknown dependency is refused", async (sql) => {
  const queue = queueName("deps_unknown");
  const state = await sqlstate(enqueue(sql, queue, "k", { dependsOn: [crypto.randomUUID()] }));
  assert.equal(state, "22023");
});

dbTest("a dependency completing while dependents are enqueued never strands them", async (sql) => {
  // Races enqueue (which reads the dependency's status) against complete (which
  // releases the dependents it can see). Every dependent must end up claimable.
  const queue = queueName("deps_race");
  const a = connect(1);
  const b = connect(1);
  try {
    for (let round = 0; round < 25; round++) {
      const parent = await enqueue(sql, queue, "parent");
      const [held] = await claim(sql, "w", [queue], 1, 60, ["parent"]);
      assert.equal(held.id, parent.id);
      const [child] = await Promise.all([
        enqueue(a, queue, "child", { dependsOn: [parent.id] }),
        complete(b, held),
      ]);
      const row = await jobById(sql, child.id);
      assert.equal(row.pending_dependencies, 0, `round ${round}`);
      const [got] = await claim(sql, "w", [queue], 1, 60, ["child"]);
      assert.equal(got?.id, child.id, `round ${round}`);
      await complete(sql, got);
    }
  } finally {
    await a.end({ timeout: 5 });
    await b.end({ timeout: 5 });
  }
});
