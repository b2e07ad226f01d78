// The pipelines' tables and SQL functions as an attacker holding the anon
// key (or a user's token) sees them over /rest/v1: nothing of another
// user's is readable or writable, no service function is callable, and
// nothing changes.
import { assert, assertEquals } from "../support/assert.ts";
import { createUser, withDb } from "../support/stack.ts";
import { connectPlatform, makePipeline, rest } from "./fakes.ts";

const SERVICE_FUNCTIONS = [
  "pipeline_run_start",
  "pipeline_run_cancel",
  "pipeline_step_begin",
  "pipeline_step_finish",
  "pipeline_step_failed",
  "pipeline_post_reserve",
  "scheduled_jobs_claim_due",
  "scheduled_jobs_fire",
  "scheduled_job_create",
  "oauth_state_consume",
  "oauth_connection_save",
  "oauth_token_acquire",
  "oauth_token_refreshed",
  "oauth_connection_delete",
  "pipeline_prediction_save",
  "pipeline_prediction_update",
  "replicate_webhook_record",
];

async function snapshot() {
  return await withDb((sql) =>
    sql`select (select count(*) from public.pipeline_runs)::int as runs,
               (select count(*) from public.scheduled_jobs)::int as schedules,
               (select count(*) from private.oauth_tokens)::int as tokens,
               (select count(*) from public.posting_queue)::int as posts,
               (select count(*) from public.notifications)::int as notes`
  );
}

Deno.test("pipelines security: no service function is callable with the anon key or a user's token", async () => {
  const user = await createUser();
  const before = await snapshot();
  for (const fn of SERVICE_FUNCTIONS) {
    for (const who of [null, user]) {
      const r = await rest(who, "POST", `rpc/${fn}`, {});
      assert(
        [401, 403, 404].includes(r.status),
        `${fn} as ${who ? "user" : "anon"}: ${r.status} ${JSON.stringify(r.body)}`,
      );
    }
  }
  assertEquals(await snapshot(), before);
});

Deno.test("pipelines security: another user's rows can be neither read nor written", async () => {
  const owner = await createUser();
  await connectPlatform(owner, "twitter");
  const pipeline = await makePipeline(owner, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const attacker = await createUser();
  for (const table of ["pipelines", "pipeline_steps", "oauth_connections", "notifications", "scheduled_jobs"]) {
    const r = await rest(attacker, "GET", `${table}?select=*`);
    assertEquals(r.status, 200);
    assertEquals(r.body.length, 0, `${table} leaked`);
  }
  const anon = await rest(null, "GET", "oauth_connections?select=*");
  assert(anon.status >= 400 || anon.body.length === 0, JSON.stringify(anon.body));
  // A step slipped into someone else's pipeline, a run forged, a schedule rewritten.
  const step = await rest(attacker, "POST", "pipeline_steps", {
    pipeline_id: pipeline,
    position: 2,
    step_type: "post-to-platform",
    config: {},
  });
  assert(step.status >= 400, JSON.stringify(step.body));
  const run = await rest(attacker, "POST", "pipeline_runs", { pipeline_id: pipeline, user_id: owner.id });
  assert(run.status >= 400, JSON.stringify(run.body));
  const mine = await makePipeline(attacker, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const owned = await rest(attacker, "POST", "pipeline_steps", {
    pipeline_id: mine,
    position: 2,
    step_type: "nonsense",
    config: {},
  });
  assert(owned.status >= 400, "step types are checked");
  const steal = await rest(attacker, "PATCH", `pipelines?id=eq.${mine}`, { user_id: owner.id });
  assert(steal.status >= 400, "user_id is not writable");
  const stepsOfOwner = await withDb((sql) =>
    sql`select count(*)::int as n from public.pipeline_steps where pipeline_id = ${pipeline}`
  );
  assertEquals(stepsOfOwner[0].n, 1);
  // Tokens are in a schema the API does not expose.
  const tokens = await rest(attacker, "GET", "oauth_tokens?select=*");
  assert(tokens.status >= 400, JSON.stringify(tokens.body));
});
