// Exactly once per submit (issue 20): an Idempotency-Key on chat-submit returns the
// original response to a retry and creates nothing; a different request under the
// same key is refused; concurrent retries make one job. And a pending question can
// be cancelled by its owner, giving its place back and letting the next one run.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { jobView, processUntilDone, sessionId, submitOk } from "./_lib.ts";

const jobsIn = (session: string) =>
  withDb(async (sql) =>
    (await sql`select count(*)::int as n from public.chat_jobs where session_id = ${session}`)[0].n as number
  );

Deno.test("ten concurrent submits with one Idempotency-Key make one job and ten identical answers", async () => {
  const user = await createUser();
  const session = sessionId("idem");
  const key = `retry-${crypto.randomUUID()}`;
  const body = { session_id: session, message: "asked once, retried ten times" };
  const answers = await Promise.all(
    Array.from({ length: 10 }, () =>
      callFunction("chat-submit", { token: user.token, body, headers: { "idempotency-key": key } })
    ),
  );
  for (const a of answers) assertEquals(a.status, 200, JSON.stringify(a.body));
  const datas = answers.map((a) => JSON.stringify(a.body.data));
  assertEquals(new Set(datas).size, 1, `answers differ: ${datas.join("\n")}`);
  assertEquals(await jobsIn(session), 1);
  const replays = answers.filter((a) => a.headers.get("idempotent-replayed") === "true").length;
  assertEquals(replays, 9, "all but the first are marked as replays");
  // The question was counted once.
  assertEquals(answers[0].body.data.questions_remaining, 9);
});

Deno.test("the same Idempotency-Key with a different body is 422 idempotency_key_reused and creates nothing", async () => {
  const user = await createUser();
  const session = sessionId("idem-reuse");
  const key = `k-${crypto.randomUUID()}`;
  const first = await callFunction("chat-submit", {
    token: user.token,
    body: { session_id: session, message: "first" },
    headers: { "idempotency-key": key },
  });
  assertEquals(first.status, 200, JSON.stringify(first.body));
  const other = await callFunction("chat-submit", {
    token: user.token,
    body: { session_id: session, message: "something else" },
    headers: { "idempotency-key": key },
  });
  assertEquals(other.status, 422, JSON.stringify(other.body));
  assertEnvelope(other.body, "idempotency_key_reused");
  assertEquals(await jobsIn(session), 1);
  // Keys are per user: another user may use the same key.
  const stranger = await createUser();
  const theirs = await callFunction("chat-submit", {
    token: stranger.token,
    body: { session_id: sessionId("idem-other"), message: "first" },
    headers: { "idempotency-key": key },
  });
  assertEquals(theirs.status, 200, JSON.stringify(theirs.body));
  assert(theirs.body.data.job_id !== first.body.data.job_id);
});

Deno.test("a malformed Idempotency-Key is 422 and creates nothing", async () => {
  const user = await createUser();
  const session = sessionId("idem-bad");
  for (const key of ["x".repeat(256), "has space"]) {
    const r = await callFunction("chat-submit", {
      token: user.token,
      body: { session_id: session, message: "hello" },
      headers: { "idempotency-key": key },
    });
    assertEquals(r.status, 422, JSON.stringify(r.body));
    assertEnvelope(r.body);
  }
  assertEquals(await jobsIn(session), 0);
});

Deno.test("the owner cancels a pending question: its place is given back and the next question runs", async () => {
  const user = await createUser();
  const session = sessionId("cancel");
  const first = await submitOk(user.token, session, "never mind this one");
  const second = await submitOk(user.token, session, "answer this one");
  const r = await callFunction("chat-status", { method: "DELETE", token: user.token, body: { job_id: first } });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(r.body.data.job.status, "cancelled");
  const [s] = await withDb((sql) => sql`select question_count from public.chat_sessions where id = ${session}`);
  assertEquals(s.question_count, 1, "a cancelled question does not count against the limit");
  const done = await processUntilDone(second, "e2e-after-cancel");
  assertEquals(done.status, "completed");
  // Cancelling again is harmless; cancelling a finished question is a conflict.
  const again = await callFunction("chat-status", { method: "DELETE", token: user.token, body: { job_id: first } });
  assertEquals(again.status, 200);
  const late = await callFunction("chat-status", { method: "DELETE", token: user.token, body: { job_id: second } });
  assertEquals(late.status, 409, JSON.stringify(late.body));
  assertEnvelope(late.body, "job_not_cancellable");
});

Deno.test("nobody cancels another user's question", async () => {
  const owner = await createUser();
  const other = await createUser();
  const job = await submitOk(owner.token, sessionId("cancel-other"), "mine");
  const r = await callFunction("chat-status", { method: "DELETE", token: other.token, body: { job_id: job } });
  assertEquals(r.status, 404, JSON.stringify(r.body));
  assertEnvelope(r.body, "job_not_found");
  assertEquals((await jobView(job, stack.serviceKey)).status, "pending");
  await withDb((sql) => sql`update public.jobs set status = 'cancelled', completed_at = now() where id = ${job}`);
});
