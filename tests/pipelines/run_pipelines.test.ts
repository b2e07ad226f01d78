// run-pipelines end to end: steps as queue jobs, retries, memoized results,
// one post per (run, step, platform), cancel and resume.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { connectPlatform, driveUntil, fakeOAuth, makePipeline } from "./fakes.ts";

async function runRow(runId: string) {
  const [r] = await withDb((sql) => sql`select status, error from public.pipeline_runs where id = ${runId}`);
  return r;
}

async function history(runId: string) {
  return await withDb((sql) =>
    sql`select position, step_type, status, attempts, result, error from public.pipeline_history
         where run_id = ${runId} order by position`
  );
}

Deno.test("run-pipelines: a failing post is retried, then the run finishes with exactly one post", async () => {
  const twitter = fakeOAuth("twitter");
  const user = await createUser();
  await connectPlatform(user, "twitter");
  const pipeline = await makePipeline(user, [
    { step_type: "generate-content", config: { prompt: "Write one sentence about cats." } },
    { step_type: "post-to-platform", config: { platform: "twitter" } },
    { step_type: "schedule-pipeline" },
  ]);
  const postsBefore = (await twitter.posts()).length;
  // The platform fails the first post with a 503 (definitely not posted).
  await twitter.script([{ path: "/2/tweets", status: 503 }]);
  const start = await callFunction("run-pipelines", { token: user.token, body: { pipelineId: pipeline } });
  assertEquals(start.status, 200, JSON.stringify(start.body));
  const runId = start.body.data.run_id;
  const done = await driveUntil("the run to finish", async () => {
    const r = await runRow(runId);
    return ["succeeded", "failed"].includes(r.status) ? r : undefined;
  });
  assertEquals(done.status, "succeeded", JSON.stringify(await history(runId)));
  const steps = await history(runId);
  assertEquals(steps.map((s) => [s.step_type, s.status, s.attempts]), [
    ["generate-content", "succeeded", 1], // memoized: not repeated by the retry
    ["post-to-platform", "succeeded", 2],
    ["schedule-pipeline", "succeeded", 1],
  ]);
  assertEquals((await twitter.posts()).length - postsBefore, 1);
  const posts = await withDb((sql) =>
    sql`select status, external_post_id, attempts from public.posting_queue where run_id = ${runId}`
  );
  assertEquals(posts.length, 1);
  assertEquals(posts[0].status, "posted");
  assertEquals(posts[0].attempts, 2);
  assertEquals(steps[1].result.post_id, posts[0].external_post_id);

  // The owner reads the run and its steps; another user cannot.
  const mine = await callFunction("run-pipelines", { method: "GET", token: user.token, query: `run_id=${runId}` });
  assertEquals(mine.body.data.run.status, "succeeded");
  assertEquals(mine.body.data.steps.length, 3);
  const other = await createUser();
  const theirs = await callFunction("run-pipelines", { method: "GET", token: other.token, query: `run_id=${runId}` });
  assertEquals(theirs.status, 404);
});

Deno.test("run-pipelines: a cancelled run stops, and resumes where it stopped", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [
    { step_type: "generate-content", config: { prompt: "Hello" } },
    { step_type: "generate-content", config: { prompt: "Again" } },
  ]);
  const start = await callFunction("run-pipelines", { token: user.token, body: { pipeline_id: pipeline } });
  const runId = start.body.data.run_id;
  const cancel = await callFunction("run-pipelines", { token: user.token, body: { run_id: runId, action: "cancel" } });
  assertEquals(cancel.status, 200, JSON.stringify(cancel.body));
  assertEquals(cancel.body.data.jobs_cancelled, 1);
  await callFunction("run-pipelines", { method: "GET", token: stack.serviceKey, query: "max_duration_ms=3000" });
  assertEquals((await runRow(runId)).status, "cancelled");
  assertEquals((await history(runId)).length, 0, "no step ran after the cancel");
  const again = await callFunction("run-pipelines", { token: user.token, body: { run_id: runId, action: "cancel" } });
  assertEquals(again.status, 409);
  assertEnvelope(again.body, "run_finished");

  const resume = await callFunction("run-pipelines", { token: user.token, body: { run_id: runId, action: "resume" } });
  assertEquals(resume.status, 200, JSON.stringify(resume.body));
  const done = await driveUntil("the resumed run", async () => {
    const r = await runRow(runId);
    return r.status === "succeeded" ? r : undefined;
  });
  assertEquals(done.status, "succeeded");
  assertEquals((await history(runId)).map((s) => s.attempts), [1, 1]);
});

Deno.test("run-pipelines: a step that cannot succeed stops the run with its reason and notifies", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [
    { step_type: "post-to-platform", config: { platform: "linkedin", text: "hi" } }, // never connected
    { step_type: "generate-content", config: { prompt: "never reached" } },
  ]);
  const runId =
    (await callFunction("run-pipelines", { token: user.token, body: { pipelineId: pipeline } })).body.data.run_id;
  const done = await driveUntil("the run to fail", async () => {
    const r = await runRow(runId);
    return r.status === "failed" ? r : undefined;
  });
  assert(done.error.includes("step 1 (post-to-platform) failed"), done.error);
  assert(done.error.includes("connection_not_found"), done.error);
  assertEquals((await history(runId)).map((s) => s.status), ["failed"]);
  const notes = await withDb((sql) => sql`select kind from public.notifications where user_id = ${user.id}`);
  assertEquals(notes.map((n) => n.kind), ["pipeline_run_failed"]);
});

Deno.test("run-pipelines: other users' pipelines, bad ids and anonymous callers are refused", async () => {
  const owner = await createUser();
  const pipeline = await makePipeline(owner, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const stranger = await createUser();
  let r = await callFunction("run-pipelines", { token: stranger.token, body: { pipelineId: pipeline } });
  assertEquals(r.status, 404);
  assertEnvelope(r.body, "pipeline_not_found");
  r = await callFunction("run-pipelines", { token: owner.token, body: { pipelineId: "not-a-uuid" } });
  assertEquals(r.status, 422);
  r = await callFunction("run-pipelines", { token: owner.token, method: "GET" });
  assertEquals(r.status, 422, "a user cannot run the batch worker");
  r = await callFunction("run-pipelines", { token: null, body: { pipelineId: pipeline } });
  assertEquals(r.status, 401);
  const runs = await withDb((sql) => sql`select 1 from public.pipeline_runs where pipeline_id = ${pipeline}`);
  assertEquals(runs.length, 0);
});

Deno.test("run-pipelines: the one queue-worker runs pipeline steps too (their kinds are registered)", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [
    { step_type: "generate-content", config: { prompt: "one" } },
    { step_type: "generate-content", config: { prompt: "two" } },
  ]);
  const runId =
    (await callFunction("run-pipelines", { token: user.token, body: { pipelineId: pipeline } })).body.data.run_id;
  for (let i = 0; i < 20 && (await runRow(runId)).status !== "succeeded"; i++) {
    const r = await callFunction("queue-worker", {
      token: stack.serviceKey,
      body: { job_types: ["pipeline_step"], max_duration_ms: 3000 },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
  }
  assertEquals((await runRow(runId)).status, "succeeded");
  assertEquals((await history(runId)).map((s) => s.status), ["succeeded", "succeeded"]);
});
