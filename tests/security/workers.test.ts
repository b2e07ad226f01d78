// Worker endpoints under abuse: chat-process with a job of another queue, and the
// workers table under a scheduler that calls queue-worker every few seconds.
import { assertEquals } from "../support/assert.ts";
import { callFunction, stack, withDb } from "../support/stack.ts";

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
  const count = () =>
    withDb(async (sql) =>
      (await sql`select count(*)::int as n from public.workers where id like 'queue-worker-%'`)[0].n as number
    );
  const first = await callFunction("queue-worker", { token: stack.serviceKey, body: {} });
  assertEquals(first.status, 200, JSON.stringify(first.body));
  const rowsAfterFirst = await count();
  const ids = new Set<string>([first.body.data.worker_id]);
  for (let i = 0; i < 5; i++) {
    const r = await callFunction("queue-worker", { token: stack.serviceKey, body: {} });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    ids.add(r.body.data.worker_id);
  }
  assertEquals(ids.size, 1, `one isolate, one worker id: ${[...ids].join(", ")}`);
  assertEquals(await count(), rowsAfterFirst, "no new worker rows");
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
