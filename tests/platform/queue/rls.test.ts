// Row level security and function privileges: users see and act on their own jobs
// only; only the service role runs the queue. First through SQL exactly as PostgREST
// sets up a request (role + request.jwt.claims), then through PostgREST itself when
// the local stack is up (SUPABASE_URL and friends set).

import assert from "node:assert/strict";
import {
  asUser,
  claim,
  connect,
  createUser,
  dbTest,
  enqueue,
  HAVE_REST,
  jobById,
  queueName,
  rest,
  SERVICE_KEY,
  sqlstate,
  userJwt,
} from "./_lib.ts";

dbTest("a user reads only their own jobs and events", async (sql) => {
  const queue = queueName("rls_read");
  const alice = await createUser(sql);
  const bob = await createUser(sql);
  const aJob = await enqueue(sql, queue, "k", { owner: alice });
  const bJob = await enqueue(sql, queue, "k", { owner: bob });
  await enqueue(sql, queue, "k"); // no owner: system job

  const seen = await asUser(sql, alice, (tx) => tx`select id from public.jobs where queue = ${queue}`);
  assert.deepEqual(seen.map((r) => r.id), [aJob.id]);
  const events = await asUser(sql, alice, (tx) => tx`select job_id from public.job_events where queue = ${queue}`);
  assert.deepEqual([...new Set(events.map((r) => r.job_id))], [aJob.id]);
  const direct = await asUser(sql, alice, (tx) => tx`select id from public.jobs where id = ${bJob.id}`);
  assert.equal(direct.length, 0);
  const deps = await asUser(sql, alice, (tx) => tx`select * from public.job_dependencies`);
  assert.equal(deps.length, 0);

  // Workers are service-only.
  assert.equal(await sqlstate(asUser(sql, alice, (tx) => tx`select * from public.workers`)), "42501");
  // anon sees nothing at all.
  assert.equal(
    await sqlstate(asUser(sql, null, (tx) => tx`select * from public.jobs`, "anon")),
    "42501",
  );
  // The service role sees everyone's.
  const all = await asUser(sql, null, (tx) => tx`select id from public.jobs where queue = ${queue}`, "service_role");
  assert.equal(all.length, 3);
});

dbTest("a user cancels and locates only their own jobs", async (sql) => {
  const queue = queueName("rls_act");
  const alice = await createUser(sql);
  const bob = await createUser(sql);
  const aJob = await enqueue(sql, queue, "k", { owner: alice });
  const bJob = await enqueue(sql, queue, "k", { owner: bob });

  const [{ p }] = await asUser(sql, alice, (tx) => tx`select public.queue_position(${aJob.id}) as p`);
  assert.equal(p, 1);
  assert.equal(
    await sqlstate(asUser(sql, alice, (tx) => tx`select public.queue_position(${bJob.id})`)),
    "EQ404",
  );
  assert.equal(
    await sqlstate(asUser(sql, alice, (tx) => tx`select public.cancel_job(${bJob.id})`)),
    "EQ404",
  );
  assert.equal((await jobById(sql, bJob.id)).status, "pending");

  const [mine] = await asUser(sql, alice, (tx) => tx`select * from public.cancel_job(${aJob.id})`);
  assert.equal(mine.status, "cancelled");
  const [ev] = await sql`select actor from public.job_events where job_id = ${aJob.id} and to_status = 'cancelled'`;
  assert.equal(ev.actor, `user:${alice}`);
});

dbTest("users cannot run the queue or write its tables", async (sql) => {
  const queue = queueName("rls_deny");
  const alice = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner: alice });
  const [held] = await claim(sql, "w", [queue]);

  const denied: Array<[string, (tx: typeof sql) => Promise<unknown>]> = [
    ["claim_jobs", (tx) => tx`select * from public.claim_jobs('evil', array[${queue}])`],
    ["complete_job", (tx) => tx`select public.complete_job(${held.id}, ${held.lease_token}, null)`],
    ["fail_job", (tx) => tx`select public.fail_job(${held.id}, ${held.lease_token}, 'x')`],
    ["enqueue_job", (tx) => tx`select public.enqueue_job(${queue}, 'k')`],
    ["enqueue_jobs", (tx) => tx`select public.enqueue_jobs('[]'::jsonb)`],
    ["extend_lease", (tx) => tx`select public.extend_lease(${held.id}, ${held.lease_token}, 60)`],
    ["requeue_expired_leases", (tx) => tx`select public.requeue_expired_leases()`],
    ["queue_stats", (tx) => tx`select public.queue_stats(${queue})`],
    ["cleanup_jobs", (tx) => tx`select public.cleanup_jobs(0)`],
    ["heartbeat_worker", (tx) => tx`select public.heartbeat_worker('w')`],
    ["update jobs", (tx) => tx`update public.jobs set status = 'completed' where id = ${job.id}`],
    ["insert jobs", (tx) => tx`insert into public.jobs (queue, kind, owner_id) values (${queue}, 'k', ${alice})`],
    ["delete jobs", (tx) => tx`delete from public.jobs where id = ${job.id}`],
    [
      "insert events",
      (tx) =>
        tx`insert into public.job_events (job_id, queue, to_status, attempt, actor) values (${job.id}, ${queue}, 'completed', 1, 'me')`,
    ],
  ];
  for (const [name, call] of denied) {
    assert.equal(await sqlstate(asUser(sql, alice, call)), "42501", `authenticated: ${name}`);
    assert.equal(await sqlstate(asUser(sql, null, call, "anon")), "42501", `anon: ${name}`);
  }
  // Nothing changed: the job is still held by the real worker.
  const row = await jobById(sql, job.id);
  assert.equal(row.status, "processing");
  assert.equal(row.lease_token, held.lease_token);
});

dbTest("the service role runs the queue through the same privileges PostgREST uses", async (sql) => {
  const queue = queueName("rls_service");
  const [job] = await asUser(sql, null, (tx) => tx`select * from public.enqueue_job(${queue}, 'k')`, "service_role");
  const [held] = await asUser(
    sql,
    null,
    (tx) => tx`select * from public.claim_jobs('svc', array[${queue}])`,
    "service_role",
  );
  assert.equal(held.id, job.id);
  const [done] = await asUser(
    sql,
    null,
    (tx) => tx`select * from public.complete_job(${held.id}, ${held.lease_token}, '{"ok":1}'::jsonb)`,
    "service_role",
  );
  assert.equal(done.status, "completed");
  // Service role reads but does not write the tables directly.
  assert.equal(
    await sqlstate(asUser(sql, null, (tx) => tx`delete from public.jobs where id = ${job.id}`, "service_role")),
    "42501",
  );
});

// ---------------------------------------------------------------------------
// The same through PostgREST (the path edge functions and browsers take).
// ---------------------------------------------------------------------------

Deno.test({
  name: "PostgREST: users read and cancel only their own jobs; claim and complete are denied",
  ignore: !HAVE_REST,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const sql = connect(2);
    try {
      const queue = queueName("rest_rls");
      const alice = await createUser(sql);
      const bob = await createUser(sql);
      const aliceJwt = await userJwt(alice);

      const created = await rest("/rpc/enqueue_job", SERVICE_KEY, {
        body: { p_queue: queue, p_kind: "k", p_owner: alice },
      });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const aJob = created.body as { id: string; status: string };
      assert.equal(aJob.status, "pending");
      const bJob = await enqueue(sql, queue, "k", { owner: bob });

      const list = await rest(`/jobs?queue=eq.${queue}&select=id`, aliceJwt);
      assert.equal(list.status, 200);
      assert.deepEqual(list.body, [{ id: aJob.id }]);
      const peek = await rest(`/jobs?id=eq.${bJob.id}&select=id`, aliceJwt);
      assert.deepEqual(peek.body, []);

      const pos = await rest("/rpc/queue_position", aliceJwt, { body: { p_job: aJob.id } });
      assert.equal(pos.status, 200);
      assert.equal(pos.body, 1);

      const steal = await rest("/rpc/cancel_job", aliceJwt, { body: { p_job: bJob.id } });
      assert.ok(steal.status >= 400, `cancel of another user's job: ${steal.status}`);
      assert.equal((steal.body as { code?: string }).code, "EQ404");
      assert.equal((await jobById(sql, bJob.id)).status, "pending");

      const claimTry = await rest("/rpc/claim_jobs", aliceJwt, {
        body: { p_worker: "evil", p_queues: [queue] },
      });
      assert.ok([401, 403].includes(claimTry.status), `claim as user: ${claimTry.status}`);
      assert.equal((claimTry.body as { code?: string }).code, "42501");

      const [held] = await claim(sql, "w", [queue]);
      const completeTry = await rest("/rpc/complete_job", aliceJwt, {
        body: { p_job: held.id, p_lease_token: held.lease_token, p_result: null },
      });
      assert.ok([401, 403].includes(completeTry.status), `complete as user: ${completeTry.status}`);
      assert.equal((await jobById(sql, held.id)).status, "processing");

      const write = await rest(`/jobs?id=eq.${aJob.id}`, aliceJwt, {
        method: "PATCH",
        body: { status: "completed" },
      });
      assert.ok(write.status >= 400, `direct PATCH: ${write.status}`);

      const cancel = await rest("/rpc/cancel_job", aliceJwt, { body: { p_job: aJob.id } });
      assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
      assert.ok(["cancelled", "completed"].includes((cancel.body as { status: string }).status));
    } finally {
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "PostgREST: a worker with the service key claims, completes, and is refused a stale lease",
  ignore: !HAVE_REST,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const queue = queueName("rest_worker");
    const enq = await rest("/rpc/enqueue_jobs", SERVICE_KEY, {
      body: { p_jobs: [{ queue, kind: "k", priority: 1 }, { queue, kind: "k", priority: 2 }] },
    });
    assert.equal(enq.status, 200, JSON.stringify(enq.body));
    assert.equal((enq.body as unknown[]).length, 2);
    const claimed = await rest("/rpc/claim_jobs", SERVICE_KEY, {
      body: { p_worker: "rest-worker", p_queues: [queue], p_batch: 5, p_lease_seconds: 30 },
    });
    assert.equal(claimed.status, 200, JSON.stringify(claimed.body));
    const jobs = claimed.body as Array<{ id: string; lease_token: string; priority: number }>;
    assert.equal(jobs.length, 2);
    for (const j of jobs) {
      const done = await rest("/rpc/complete_job", SERVICE_KEY, {
        body: { p_job: j.id, p_lease_token: j.lease_token, p_result: { ok: true } },
      });
      assert.equal(done.status, 200, JSON.stringify(done.body));
      assert.equal((done.body as { status: string }).status, "completed");
    }
    const again = await rest("/rpc/complete_job", SERVICE_KEY, {
      body: { p_job: jobs[0].id, p_lease_token: jobs[0].lease_token, p_result: null },
    });
    assert.ok(again.status >= 400);
    assert.equal((again.body as { code?: string }).code, "EQ409");
    const stats = await rest("/rpc/queue_stats", SERVICE_KEY, { body: { p_queue: queue } });
    assert.equal(stats.status, 200);
    assert.equal((stats.body as { completed: number }).completed, 2);
  },
});
