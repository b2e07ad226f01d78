// 20261202000200: a job's claim and completion are carried by its row, and
// public.job_events (a view) shows them beside the stored history. Whatever path a job
// takes, its history must read as before: one row per transition, in order, each
// exactly once, the same through SQL, through PostgREST as its owner and as the service
// role; nobody else sees it, and the stored table is not reachable beyond that.

import assert from "node:assert/strict";
import {
  ANON_KEY,
  asUser,
  claim,
  complete,
  createUser,
  dbTest,
  enqueue,
  expireLease,
  fail,
  HAVE_REST,
  makeDue,
  queueName,
  rest,
  SERVICE_KEY,
  type Sql,
  sqlstate,
  SUPABASE_URL,
  userJwt,
} from "./_lib.ts";

interface Event {
  id: string | number;
  from_status: string | null;
  to_status: string;
  attempt: number;
  actor: string;
  worker_id: string | null;
  error: string | null;
}

/** One line per event; the creation's actor depends on who enqueued, so it is left out. */
function lines(events: Event[]): string[] {
  return events.map((e) =>
    [`${e.from_status}->${e.to_status}`, `#${e.attempt}`, e.from_status === null ? "" : e.actor, e.worker_id, e.error]
      .filter((part) => part).join(" ")
  );
}

async function sqlHistory(sql: Sql, id: string): Promise<Event[]> {
  return [
    ...await sql<Event[]>`
    select id::text, from_status, to_status, attempt, actor, worker_id, error
      from public.job_events where job_id = ${id} order by id`,
  ];
}

/** The history as SQL, the owner (REST) and the service role (REST) read it: all equal. */
async function historyEverywhere(sql: Sql, id: string, owner: string): Promise<string[]> {
  const viaSql = await sqlHistory(sql, id);
  const ids = viaSql.map((e) => BigInt(e.id));
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1] < ids[i], `ids increase: ${ids}`);
  const full = viaSql.map((e) => ({ ...e, id: String(e.id) }));
  if (HAVE_REST) {
    const path = `/job_events?job_id=eq.${id}&order=id&select=id,from_status,to_status,attempt,actor,worker_id,error`;
    for (const bearer of [await userJwt(owner), SERVICE_KEY]) {
      const r = await rest(path, bearer);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual((r.body as Event[]).map((e) => ({ ...e, id: String(e.id) })), full);
    }
  }
  return lines(viaSql);
}

async function chainComplete(
  sql: Sql,
  held: { id: string; lease_token: string | null },
  worker: string,
  queue: string,
) {
  return await sql`
    select id from public.complete_job_and_claim(${held.id}::uuid, ${held.lease_token}::uuid, '{}'::jsonb,
                                                 ${worker}, array[${queue}]::text[], null, 1, 60)`;
}

dbTest("a job retried and then completed has its whole history, in order, once", async (sql) => {
  const queue = queueName("hist_retry");
  const owner = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner, maxAttempts: 3 });
  const [first] = await claim(sql, "w1", [queue]);
  await fail(sql, first, "boom");
  await makeDue(sql, job.id);
  const [second] = await claim(sql, "w2", [queue]);
  assert.equal(second.id, job.id);
  // While it runs: the claim of the second attempt is already there.
  assert.deepEqual((await historyEverywhere(sql, job.id, owner)).slice(-1), ["retrying->processing #2 worker w2"]);
  assert.equal((await chainComplete(sql, second, "w2", queue)).length, 0);
  assert.deepEqual(await historyEverywhere(sql, job.id, owner), [
    "null->pending #0",
    "pending->processing #1 worker w1",
    "processing->retrying #1 worker w1 boom",
    "retrying->processing #2 worker w2",
    "processing->completed #2 worker w2",
  ]);
});

dbTest("a job cancelled while processing keeps its claim in its history", async (sql) => {
  const queue = queueName("hist_cancel");
  const owner = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner });
  await claim(sql, "w1", [queue]);
  await sql`select public.cancel_job(${job.id}::uuid)`;
  const h = await historyEverywhere(sql, job.id, owner);
  assert.deepEqual(h.slice(0, 2), ["null->pending #0", "pending->processing #1 worker w1"]);
  assert.equal(h.length, 3);
  assert.match(h[2], /^processing->cancelled #1 /);
});

dbTest("a lease that ran out, a claim by another worker and a completion: each once, in order", async (sql) => {
  const queue = queueName("hist_lease");
  const owner = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner, maxAttempts: 3 });
  await claim(sql, "w1", [queue]);
  await expireLease(sql, job.id);
  await sql`select public.requeue_expired_leases(array[${queue}]::text[])`;
  await makeDue(sql, job.id);
  const [again] = await claim(sql, "w2", [queue]);
  await complete(sql, again);
  const h = await historyEverywhere(sql, job.id, owner);
  assert.equal(h.length, 5, h.join("\n"));
  assert.deepEqual(h.slice(0, 2), ["null->pending #0", "pending->processing #1 worker w1"]);
  assert.match(h[2], /^processing->retrying #1 system:lease_expiry w1 lease expired/);
  assert.deepEqual(h.slice(3), ["retrying->processing #2 worker w2", "processing->completed #2 worker w2"]);
});

dbTest("a change made by hand after a worker's claim keeps the claim, logged once", async (sql) => {
  const queue = queueName("hist_hand");
  const owner = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner });
  await claim(sql, "w1", [queue]);
  await sql`update public.jobs set status = 'completed', lease_token = null, lease_expires_at = null
             where id = ${job.id}`;
  const h = await historyEverywhere(sql, job.id, owner);
  assert.deepEqual(h.slice(0, 2), ["null->pending #0", "pending->processing #1 worker w1"]);
  assert.equal(h.length, 3, h.join("\n"));
  assert.match(h[2], /^processing->completed #1 sql:/);
});

dbTest("claims and completions in batches log one claim and one completion per job", async (sql) => {
  const queue = queueName("hist_batch");
  for (let i = 0; i < 5; i++) await enqueue(sql, queue, "k");
  const held = await claim(sql, "w1", [queue], 5);
  assert.equal(held.length, 5);
  const [{ n }] = await sql`
    select count(*)::int as n from public.complete_jobs(${
    sql.json(held.map((j) => ({ job: j.id, lease_token: j.lease_token })) as never)
  }) where completed`;
  assert.equal(n, 5);
  for (const j of held) {
    assert.deepEqual(lines(await sqlHistory(sql, j.id)), [
      "null->pending #0",
      "pending->processing #1 worker w1",
      "processing->completed #1 worker w1",
    ]);
  }
  // Deleting finished jobs takes their whole history with them.
  await sql`delete from public.jobs where queue = ${queue}`;
  const [{ left }] = await sql`select count(*)::int as left from public.job_events where queue = ${queue}`;
  assert.equal(left, 0);
});

dbTest("nobody else reads a job's history, and the stored history is reachable no further", async (sql) => {
  const queue = queueName("hist_rls");
  const alice = await createUser(sql);
  const bob = await createUser(sql);
  const job = await enqueue(sql, queue, "k", { owner: alice });
  const [held] = await claim(sql, "w1", [queue]);
  await fail(sql, held, "boom");
  await makeDue(sql, job.id);
  await claim(sql, "w2", [queue]);

  const count = (tx: Sql, table: string) =>
    tx.unsafe(`select count(*)::int as n from ${table} where job_id = '${job.id}'`).then((r) => r[0].n);
  // Alice: her four events through the view (creation, first claim, retry: stored; the
  // running claim: on the row); through the stored table, only part of what she sees.
  assert.equal(await asUser(sql, alice, (tx) => count(tx, "public.job_events")), 4);
  assert.equal(await asUser(sql, alice, (tx) => count(tx, "job_history.job_events")), 3);
  // Bob sees none of it, either way.
  assert.equal(await asUser(sql, bob, (tx) => count(tx, "public.job_events")), 0);
  assert.equal(await asUser(sql, bob, (tx) => count(tx, "job_history.job_events")), 0);
  // Anonymous callers reach neither; nobody but the queue writes either.
  assert.equal(await sqlstate(asUser(sql, null, (tx) => count(tx, "public.job_events"), "anon")), "42501");
  assert.equal(await sqlstate(asUser(sql, null, (tx) => count(tx, "job_history.job_events"), "anon")), "42501");
  for (const table of ["public.job_events", "job_history.job_events"]) {
    assert.equal(
      await sqlstate(asUser(sql, alice, (tx) => tx.unsafe(`delete from ${table} where job_id = '${job.id}'`))),
      "42501",
    );
    assert.equal(
      await sqlstate(asUser(sql, null, (tx) => tx.unsafe(`update ${table} set error = 'x'`), "service_role")),
      "42501",
    );
  }

  if (!HAVE_REST) return;
  const mine = await rest(`/job_events?job_id=eq.${job.id}&select=id`, await userJwt(alice));
  assert.equal((mine.body as unknown[]).length, 4);
  const theirs = await rest(`/job_events?job_id=eq.${job.id}&select=id`, await userJwt(bob));
  assert.deepEqual([theirs.status, theirs.body], [200, []]);
  const anon = await rest(`/job_events?job_id=eq.${job.id}&select=id`, ANON_KEY);
  assert.ok(anon.status === 401 || anon.status === 403, `anon: ${anon.status}`);
  const write = await rest("/job_events", await userJwt(alice), {
    body: { job_id: job.id, queue, to_status: "completed", attempt: 1, actor: "me" },
  });
  assert.ok(write.status === 401 || write.status === 403, `write: ${write.status} ${JSON.stringify(write.body)}`);
  // PostgREST does not serve the stored history's schema to anyone.
  for (const bearer of [await userJwt(alice), SERVICE_KEY]) {
    const res = await fetch(`${SUPABASE_URL}/rest/v1/job_events?select=id`, {
      headers: {
        apikey: bearer === SERVICE_KEY ? SERVICE_KEY : ANON_KEY,
        authorization: `Bearer ${bearer}`,
        "accept-profile": "job_history",
      },
    });
    const body = await res.text();
    assert.equal(res.status, 406, body);
  }
});
