// Worker endpoints under abuse: chat-process with a job of another queue, and the
// workers table under a scheduler that calls queue-worker every few seconds.
import { assert, assertEquals } from "../../support/assert.ts";
import { callFunction, stack, withDb } from "../../support/stack.ts";

Deno.test("chat-process {job_id} of another queue answers 409 and leaves the job alone", async () => {
  const queue = `other_${crypto.randomUUID().slice(0, 8).replace(/-/g, "")}`;
  const job = await withDb(async (sql) => {
    const [j] = await sql`select * from public.enqueue_job(${queue}, 'image_render', '{"x":1}'::jsonb)`;
    return j;
  });
  const before = await withDb((sql) =>
    sql`select status, attempts, last_error, worker_id, lease_token,
               (select count(*) from public.job_events e where e.job_id = j.id)::int as events
          from public.jobs j where id = ${job.id}`
  );
  const r = await callFunction("chat-process", { token: stack.serviceKey, body: { job_id: job.id } });
  assertEquals(r.status, 409, JSON.stringify(r.body));
  assertEquals(r.body.error.code, "job_not_claimable");
  const after = await withDb((sql) =>
    sql`select status, attempts, last_error, worker_id, lease_token,
               (select count(*) from public.job_events e where e.job_id = j.id)::int as events
          from public.jobs j where id = ${job.id}`
  );
  assertEquals([...after], [...before], "the other queue's job is untouched");
  assertEquals(after[0].status, "pending");
});

Deno.test("repeated queue-worker calls keep one worker row per isolate", async () => {
  const rows = () =>
    withDb(async (sql) =>
      new Set((await sql`select id from public.workers where id like 'queue-worker-%'`).map((w) => w.id as string))
    );
  const first = await callFunction("queue-worker", { token: stack.serviceKey, body: {} });
  assertEquals(first.status, 200, JSON.stringify(first.body));
  const before = await rows();
  const ids = new Set<string>([first.body.data.worker_id]);
  for (let i = 0; i < 5; i++) {
    const r = await callFunction("queue-worker", { token: stack.serviceKey, body: {} });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    ids.add(r.body.data.worker_id);
  }
  // The local supervisor retires a worker process at half its wall clock, as the
  // hosted runtime does; a call that lands on the fresh process brings one new id.
  assert(ids.size <= 2, `one isolate, one worker id (two across a retirement): ${[...ids].join(", ")}`);
  const added = [...(await rows())].filter((id) => !before.has(id));
  assertEquals(added.length, ids.size - 1, `new worker rows: ${added.join(", ")}`);
});

Deno.test("workers silent for more than 15 minutes are reaped by queue-worker's housekeeping", async () => {
  const dead = `dead-worker-${crypto.randomUUID().slice(0, 8)}`;
  const alive = `live-worker-${crypto.randomUUID().slice(0, 8)}`;
  await withDb(async (sql) => {
    await sql`insert into public.workers (id, queues, status, last_heartbeat_at)
              values (${dead}, array['chat'], 'active', now() - interval '16 minutes'),
                     (${alive}, array['chat'], 'active', now() - interval '2 minutes')`;
  });
  const r = await callFunction("queue-worker", { token: stack.serviceKey, body: {} });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  const left = await withDb((sql) => sql`select id from public.workers where id in (${dead}, ${alive})`);
  assertEquals(left.map((w) => w.id), [alive]);
  await withDb((sql) => sql`delete from public.workers where id = ${alive}`);
});
