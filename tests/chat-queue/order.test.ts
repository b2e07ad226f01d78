// The chat queue answers each session in order and serves users fairly
// (issue 20): the claim itself holds a session's later questions back until the
// earlier ones have finished, and one user's backlog cannot starve another's
// question.
import { assert, assertEquals, assertIncludes } from "../support/assert.ts";
import { callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { drain, fakeGemini, questionAsked, sessionId, submitOk } from "./_lib.ts";

Deno.test("five questions submitted at once into one session are answered strictly in order, each with all earlier exchanges", async () => {
  const user = await createUser();
  const session = sessionId("order");
  const tag = crypto.randomUUID().slice(0, 8);
  const questions = Array.from({ length: 5 }, (_, i) => `question ${i + 1} of ${tag}`);
  // Submitted concurrently: their order is the order the database gave them.
  const ids = await Promise.all(questions.map((q) => submitOk(user.token, session, q)));
  const submitted = await withDb((sql) =>
    sql`select c.job_id, m.content from public.chat_jobs c join public.chat_messages m on m.id = c.user_message_id
         where c.session_id = ${session} order by m.created_at, c.created_at`
  );
  assertEquals(submitted.length, 5);
  await fakeGemini.reset();

  // Two workers at once, each taking batches of 5.
  const done = drain(ids, 30_000);
  const second = (async () => {
    for (let i = 0; i < 20; i++) {
      const r = await callFunction("queue-worker", { token: stack.serviceKey, body: { batch_size: 5 } });
      assertEquals(r.status, 200, JSON.stringify(r.body));
    }
  })();
  const [views] = await Promise.all([done, second]);
  for (const id of ids) assertEquals(views.get(id).status, "completed", JSON.stringify(views.get(id)));

  // Each answer started only after the previous one completed.
  const timeline = await withDb((sql) =>
    sql`select j.id, j.started_at, j.completed_at from public.jobs j
         where j.id = any(${submitted.map((s) => s.job_id)}::uuid[])`
  );
  const byId = new Map(timeline.map((t) => [t.id, t]));
  for (let i = 1; i < submitted.length; i++) {
    const prev = byId.get(submitted[i - 1].job_id)!;
    const cur = byId.get(submitted[i].job_id)!;
    assert(
      (cur.started_at as Date).getTime() >= (prev.completed_at as Date).getTime(),
      `question ${i + 1} started before question ${i} completed`,
    );
  }

  // Each prompt holds every earlier question and answer of the session.
  const asked = (await fakeGemini.requests()).filter((r) => questionAsked(r).includes(tag));
  assertEquals(asked.map((r) => questionAsked(r)), submitted.map((s) => s.content), "asked in submission order");
  const answers = await withDb((sql) =>
    sql`select m.content from public.chat_jobs c join public.chat_messages m on m.id = c.assistant_message_id
         where c.session_id = ${session} order by c.created_at`
  );
  for (let i = 1; i < asked.length; i++) {
    const prompt = JSON.stringify(asked[i].body);
    for (let k = 0; k < i; k++) {
      assertIncludes(prompt, JSON.stringify(submitted[k].content).slice(1, -1));
    }
    assert(answers.length >= i);
  }
  await fakeGemini.reset();
});

Deno.test("a question that fails for good lets the next question of its session run", async () => {
  const user = await createUser();
  const session = sessionId("order-fail");
  const first = await submitOk(user.token, session, `this one fails ${crypto.randomUUID()}`);
  const second = await submitOk(user.token, session, `this one follows ${crypto.randomUUID()}`);
  await fakeGemini.reset();
  await fakeGemini.script([{ status: 400, message: "rejected for the test" }]);
  const views = await drain([first, second]);
  await fakeGemini.reset();
  assertEquals(views.get(first).status, "failed");
  assertEquals(views.get(second).status, "completed");
});

Deno.test("one user's 100 questions do not starve another user's one question", async () => {
  const heavy = await createUser();
  const light = await createUser();
  // The backlog goes in through chat_submit directly: 100 calls to chat-submit
  // from one user would (rightly) meet its rate limit first.
  const heavyIds: string[] = await withDb(async (sql) => {
    const ids: string[] = [];
    for (let s = 0; s < 10; s++) {
      const session = sessionId(`heavy-${s}`);
      for (let q = 0; q < 10; q++) {
        const [{ r }] = await sql`select public.chat_submit(${heavy.id}::uuid, ${session}, ${`heavy ${s}.${q}`}) as r`;
        ids.push(r.job_id);
      }
    }
    return ids;
  });
  const lightId = await submitOk(light.token, sessionId("light"), "my one question");
  await fakeGemini.reset();
  // One worker, one job per claim, until the light question is answered (other
  // tests' leftovers may be claimed too; only the relative order matters).
  for (let i = 0; i < 40; i++) {
    const r = await callFunction("chat-process", { token: stack.serviceKey, body: { batch_size: 1 } });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const [j] = await withDb((sql) => sql`select status from public.jobs where id = ${lightId}`);
    if (j.status === "completed") break;
  }
  const claimed = await withDb((sql) =>
    sql`select id from public.jobs where id = any(${[...heavyIds, lightId]}::uuid[]) and started_at is not null
         order by started_at, id`
  );
  const rank = claimed.findIndex((j) => j.id === lightId);
  assert(rank >= 0 && rank < 3, `the other user's question was claim ${rank + 1} of this test's jobs`);
  // Tidy: the heavy backlog is cancelled so it does not slow later tests.
  await withDb((sql) =>
    sql`update public.jobs set status = 'cancelled', completed_at = now()
         where id = any(${heavyIds}::uuid[]) and status in ('pending', 'retrying')`
  );
});
