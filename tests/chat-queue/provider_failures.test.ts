// How chat jobs meet Gemini's failures, with the fake Gemini scripted: server errors
// are retried with backoff, a rejected request and a safety block fail at once with
// the reason, and a 429's Retry-After is honoured (checked on the job's recorded
// transitions in public.job_events, with the database's own timestamps).
import { assert, assertEquals, assertIncludes, assertMatch } from "../support/assert.ts";
import { callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { fakeGemini, jobView, processUntilDone, questionAsked, sessionId, submitOk } from "./_lib.ts";

async function scriptedJob(label: string, steps: unknown[]): Promise<{ jobId: string; question: string }> {
  const user = await createUser();
  const question = `${label} question [${crypto.randomUUID()}]`;
  const jobId = await submitOk(user.token, sessionId(label), question);
  await fakeGemini.reset();
  await fakeGemini.script(steps as any);
  return { jobId, question };
}

async function geminiCallsFor(question: string): Promise<number> {
  return (await fakeGemini.requests()).filter((r) => questionAsked(r) === question).length;
}

Deno.test("500, 500, then 200: the job completes after two retries", async () => {
  const { jobId, question } = await scriptedJob("retry5xx", [{ status: 500 }, { status: 500 }, { status: 200 }]);
  const done = await processUntilDone(jobId, "e2e-retry-5xx");
  const calls = await geminiCallsFor(question);
  await fakeGemini.reset();
  assertEquals(done.status, "completed", JSON.stringify(done));
  assertEquals(done.retry_count, 2);
  assertEquals(done.attempts, 3);
  assert(done.result.content.length > 0);
  assertEquals(calls, 3);
});

Deno.test("400 from Gemini fails the job at once with the provider's message", async () => {
  const message = `Invalid value at 'generation_config.temperature' [${crypto.randomUUID()}]`;
  const { jobId, question } = await scriptedJob("reject400", [{ status: 400, message }]);
  const done = await processUntilDone(jobId, "e2e-reject-400");
  const calls = await geminiCallsFor(question);
  await fakeGemini.reset();
  assertEquals(done.status, "failed", JSON.stringify(done));
  assertIncludes(done.error, message);
  assertEquals(done.attempts, 1, "a rejected request is not retried");
  assertEquals(calls, 1);
  assertEquals(done.result, undefined);
  // A final failure is also kept in error_logs for operators.
  const logged = await withDb((sql) => sql`select code, message from public.error_logs where job_id = ${jobId}`);
  assertEquals(logged.length, 1);
  assertEquals(logged[0].code, "job_failed");
  assertIncludes(logged[0].message, message);
});

Deno.test("a SAFETY finish fails the job with a safety reason", async () => {
  const { jobId } = await scriptedJob("safety", [{ finish: "SAFETY" }]);
  const done = await processUntilDone(jobId, "e2e-safety");
  await fakeGemini.reset();
  assertEquals(done.status, "failed", JSON.stringify(done));
  assertMatch(done.error, /safety/i);
  assertIncludes(done.error, "SAFETY");
  assertEquals(done.attempts, 1, "a blocked answer is not retried");
});

Deno.test("429 with Retry-After: 2 is retried no sooner than two seconds later", async () => {
  const { jobId } = await scriptedJob("ratelimited", [{ status: 429, retry_after: 2 }]);

  // Right after the 429 the job waits; asking for it again is refused until it is due.
  const done = await processUntilDone(jobId, "e2e-retry-after");
  await fakeGemini.reset();
  assertEquals(done.status, "completed", JSON.stringify(done));
  assertEquals(done.retry_count, 1);

  await withDb(async (sql) => {
    const events = await sql`
      select to_status, attempt, error, run_at, created_at from public.job_events
       where job_id = ${jobId} order by id`;
    assertEquals(events.map((e) => e.to_status), ["pending", "processing", "retrying", "processing", "completed"]);
    const failedAt = events[2].created_at as Date;
    const retriedAt = events[3].created_at as Date;
    assertMatch(events[2].error, /429|rate limit/i);
    assert(
      (events[2].run_at as Date).getTime() - failedAt.getTime() >= 2000,
      `run_at ${events[2].run_at.toISOString()} is less than 2 s after the failure ${failedAt.toISOString()}`,
    );
    assert(
      retriedAt.getTime() - failedAt.getTime() >= 2000,
      `retried ${retriedAt.getTime() - failedAt.getTime()} ms after the 429`,
    );
  });
});

Deno.test("a job waiting after a 429 shows its error and an estimate no sooner than its next run", async () => {
  const { jobId } = await scriptedJob("retrying_view", [{ status: 429, retry_after: 30 }]);
  const r = await callFunction("chat-process", { token: stack.serviceKey, body: { job_id: jobId } });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(r.body.data.jobs_processed, 0);
  assertEquals(r.body.data.jobs_failed, 0);
  const view = await jobView(jobId);
  await fakeGemini.reset();
  assertEquals(view.status, "retrying");
  assertEquals(view.retry_count, 0);
  assertMatch(view.error, /429|rate limit/i);
  // Not due yet: no worker may take it.
  const again = await callFunction("chat-process", { token: stack.serviceKey, body: { job_id: jobId } });
  assertEquals(again.status, 409, JSON.stringify(again.body));
  assertEquals(again.body.error.code, "job_not_claimable");
  await withDb(async (sql) => {
    const [job] = await sql`select run_at from public.jobs where id = ${jobId}`;
    assert(
      Date.parse(view.estimated_completion) >= Math.floor((job.run_at as Date).getTime()),
      `estimated_completion ${view.estimated_completion} is before the job may run (${job.run_at.toISOString()})`,
    );
    // Leave nothing waiting for other tests.
    await sql`select public.cancel_job(${jobId}::uuid)`;
  });
});
