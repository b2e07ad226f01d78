// The worker side through the gateway: concurrent queue-workers never process a
// job twice (checked on every job's recorded transitions and on what reached
// Gemini), chat-process takes exactly the job it is given, both are service-role
// only, and queue-worker clamps the seed's 5-minute default to the edge wall clock.
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { drain, fakeGemini, invoke, questionAsked, serviceClient, sessionId, submitOk } from "./_lib.ts";

Deno.test("two queue-workers running at once never process the same job", async () => {
  await withDb(async (sql) => {
    // 40 questions: 4 users, a session each, 10 questions a session.
    const users = await Promise.all(Array.from({ length: 4 }, () => createUser(sql)));
    const questions = new Map<string, string>(); // job id -> question
    await Promise.all(users.map(async (u, ui) => {
      const session = sessionId(`two-workers-${ui}`);
      for (let i = 0; i < 10; i++) {
        const q = `two workers: user ${ui} question ${i} [${crypto.randomUUID()}]`;
        questions.set(await submitOk(u.token, session, q), q);
      }
    }));
    const jobIds = [...questions.keys()];
    assertEquals(jobIds.length, 40);

    // A little latency per answer keeps both workers busy at the same time.
    await fakeGemini.reset();
    await fakeGemini.script(Array.from({ length: 60 }, () => ({ delay_ms: 20 })));
    const service = serviceClient();
    const workerIds = [
      `e2e-worker-a-${crypto.randomUUID().slice(0, 8)}`,
      `e2e-worker-b-${crypto.randomUUID().slice(0, 8)}`,
    ];
    const runs = await Promise.all(
      workerIds.map((worker_id) => invoke(service, "queue-worker", { body: { worker_id, batch_size: 5 } })),
    );
    for (const r of runs) assertEquals(r.status, 200, JSON.stringify(r.body));
    const processed = runs.reduce((n, r) => n + r.body.data.jobs_processed, 0);
    assert(processed >= 40, `the workers processed ${processed} jobs`);
    const sent = await fakeGemini.requests();
    await fakeGemini.reset();

    // Every job: claimed once, completed once, by one of the two workers.
    const events = await sql`
      select job_id::text, to_status, worker_id from public.job_events
       where job_id = any(${jobIds}::uuid[]) order by job_id, id`;
    const byJob = new Map<string, { to_status: string; worker_id: string | null }[]>();
    for (const e of events) {
      const list = byJob.get(e.job_id) ?? [];
      list.push({ to_status: e.to_status, worker_id: e.worker_id });
      byJob.set(e.job_id, list);
    }
    assertEquals(byJob.size, 40);
    for (const [id, list] of byJob) {
      assertEquals(list.map((e) => e.to_status), ["pending", "processing", "completed"], `job ${id}`);
      assert(workerIds.includes(list[2].worker_id!), `job ${id} completed by ${list[2].worker_id}`);
      assertEquals(list[1].worker_id, list[2].worker_id, `job ${id} completed by a worker that did not claim it`);
    }
    // And Gemini was asked each question exactly once.
    for (const q of questions.values()) {
      assertEquals(sent.filter((r) => questionAsked(r) === q).length, 1, `asked ${q}`);
    }
    const [{ answers }] = await sql`
      select count(*)::int as answers from public.chat_messages
       where role = 'assistant' and job_id = any(${jobIds}::uuid[])`;
    assertEquals(answers, 40, "one stored answer per job");
  });
});

Deno.test("chat-process with a job_id takes exactly that job, once", async () => {
  const user = await createUser();
  // Two sessions: within one session the second question waits for the first
  // (the next test pins that).
  const first = await submitOk(user.token, sessionId("process-one-a"), "first, left waiting");
  const second = await submitOk(user.token, sessionId("process-one-b"), "second, processed by id");
  const worker_id = `e2e-process-${crypto.randomUUID().slice(0, 8)}`;
  const r = await invoke(serviceClient(), "chat-process", { body: { job_id: second, worker_id } });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  const d = r.body.data;
  assertEquals(d.jobs_processed, 1);
  assertEquals(d.jobs_failed, 0);
  assertEquals(d.worker_id, worker_id);
  assert(typeof d.processing_time_ms === "number");
  assertEquals(typeof d.next_job_available, "boolean");

  const views = await Promise.all(
    [first, second].map((job_id) => callFunction("chat-status", { token: user.token, body: { job_id } })),
  );
  assertEquals(views.map((v) => v.body.data.job.status), ["pending", "completed"]);

  const again = await callFunction("chat-process", { token: stack.serviceKey, body: { job_id: second } });
  assertEquals(again.status, 409);
  assertEquals(again.body.error.code, "job_not_claimable");
  const unknown = await callFunction("chat-process", {
    token: stack.serviceKey,
    body: { job_id: crypto.randomUUID() },
  });
  assertEquals(unknown.status, 409);
  await drain([first]);
});

Deno.test("chat-process {job_id} refuses a question whose session has an earlier one unanswered", async () => {
  const user = await createUser();
  const session = sessionId("process-in-order");
  const first = await submitOk(user.token, session, "asked first");
  const second = await submitOk(user.token, session, "asked second");
  const early = await callFunction("chat-process", { token: stack.serviceKey, body: { job_id: second } });
  assertEquals(early.status, 409, JSON.stringify(early.body));
  assertEquals(early.body.error.code, "job_not_claimable");
  const views = await drain([first, second]);
  assertEquals([views.get(first).status, views.get(second).status], ["completed", "completed"]);
});

Deno.test("chat-process and queue-worker refuse users: 403 service_role_required", async () => {
  const user = await createUser();
  for (const name of ["chat-process", "queue-worker"]) {
    const asUser = await callFunction(name, { token: user.token, body: {} });
    assertEquals(asUser.status, 403, `${name}: ${JSON.stringify(asUser.body)}`);
    assertEquals(asUser.body.error.code, "service_role_required");
    const asAnon = await callFunction(name, { token: stack.anonKey, body: {} });
    assertEquals(asAnon.status, 403, `${name} with the anon key`);
    assertEquals(asAnon.body.error.code, "service_role_required");
    const nobody = await callFunction(name, { token: null, body: {} });
    assertEquals(nobody.status, 401);
    assertEquals(nobody.body.error.code, "missing_token");
  }
});

Deno.test("queue-worker clamps max_duration_ms 300000 to the edge wall clock and says why", async () => {
  const r = await callFunction("queue-worker", {
    token: stack.serviceKey,
    body: { max_duration_ms: 300_000, batch_size: 1, job_types: ["chat_completion"] },
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  const d = r.body.data;
  assertEquals(d.continuous, false);
  assert(d.max_duration_ms < 300_000 && d.max_duration_ms <= 150_000, `budget ${d.max_duration_ms}`);
  assertEquals(d.max_duration_clamped.requested_ms, 300_000);
  assertMatch(d.max_duration_clamped.reason, /wall clock/);
  for (
    const k of ["worker_id", "jobs_processed", "jobs_failed", "processing_time_ms", "next_job_available", "iterations"]
  ) {
    assert(k in d, `queue-worker answer lacks ${k}`);
  }

  // A budget under the clamp is kept as asked, with no clamp note.
  const short = await callFunction("queue-worker", {
    token: stack.serviceKey,
    body: { max_duration_ms: 1_000, continuous: true },
  });
  assertEquals(short.status, 200, JSON.stringify(short.body));
  assertEquals(short.body.data.continuous, true);
  assertEquals(short.body.data.max_duration_ms, 1_000);
  assertEquals(short.body.data.max_duration_clamped, undefined);

  const wrongType = await callFunction("queue-worker", {
    token: stack.serviceKey,
    body: { job_types: ["image_generation"] },
  });
  assertEquals(wrongType.status, 422);
  assertEquals(wrongType.body.error.code, "validation_failed");
});

Deno.test("queue-worker records its heartbeat in worker_status", async () => {
  const worker_id = `e2e-heartbeat-${crypto.randomUUID().slice(0, 8)}`;
  const r = await callFunction("queue-worker", { token: stack.serviceKey, body: { worker_id } });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  await withDb(async (sql) => {
    const rows =
      await sql`select status, queues, last_heartbeat from public.worker_status where worker_id = ${worker_id}`;
    assertEquals(rows.length, 1);
    assertEquals(rows[0].status, "idle", "a batch-mode worker that finished says so");
    assert(rows[0].queues.includes("chat"));
  });
});
