// job-processor end to end: schedules validated and stored, due schedules
// enqueued exactly once by racing processors, missed runs caught up once,
// failing scheduled runs deactivating the schedule with a notification.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, stack, type TestUser, withDb } from "../support/stack.ts";
import { driveUntil, makePipeline } from "./fakes.ts";

async function schedule(user: TestUser, pipeline: string, cron: string, extra: Record<string, unknown> = {}) {
  const r = await callFunction("job-processor", {
    token: user.token,
    body: { pipeline_id: pipeline, cron_expression: cron, ...extra },
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  return r.body.data;
}

const processDue = () => callFunction("job-processor", { method: "GET", token: stack.serviceKey });

Deno.test("job-processor: a bad expression or zone is a 422 that names the field", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  for (
    const [body, field, part] of [
      [{ cron_expression: "61 * * * *" }, "cron_expression", "minute"],
      [{ cron_expression: "* * * *" }, "cron_expression", "expression"],
      [{ cron_expression: "0 0 30 2 *" }, "cron_expression", "day_of_month"],
      [{ cron_expression: "0 9 * * *", timezone: "Mars/Olympus_Mons" }, "timezone", "timezone"],
      [{ cron_expression: "0 9 * * *", timezone: "Europe/Londonn" }, "timezone", "timezone"],
      [{ cron_expression: "0 9 * * *", timezone: "+01" }, "timezone", "timezone"],
    ] as const
  ) {
    const r = await callFunction("job-processor", { token: user.token, body: { pipeline_id: pipeline, ...body } });
    assertEquals(r.status, 422, JSON.stringify(r.body));
    assertEquals(r.body.error.details.fields[0].field, field);
    assertEquals(r.body.error.details.fields[0].part, part);
  }
  const rows = await withDb((sql) => sql`select 1 from public.scheduled_jobs where user_id = ${user.id}`);
  assertEquals(rows.length, 0);
});

Deno.test("job-processor: a schedule answers its next runs in the user's zone", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const s = await schedule(user, pipeline, "30 9 * * MON-FRI", { timezone: "Europe/London" });
  assertEquals(s.next_runs.length, 5);
  for (const t of s.next_runs) {
    const local = new Intl.DateTimeFormat("en-GB", {
      timeZone: "Europe/London",
      hour: "2-digit",
      minute: "2-digit",
      weekday: "short",
    }).format(new Date(t));
    assert(/^(Mon|Tue|Wed|Thu|Fri) 09:30$/.test(local), local);
  }
  assertEquals(s.schedule.next_run_at.slice(0, 16), s.next_runs[0].slice(0, 16));
  const dup = await callFunction("job-processor", {
    token: user.token,
    body: { pipeline_id: pipeline, cron_expression: "30 9 * * MON-FRI", timezone: "Europe/London" },
  });
  assertEquals(dup.status, 409);
  assertEnvelope(dup.body, "schedule_exists");
});

Deno.test("job-processor: a schedule in a zone with a 30-minute DST shift runs at its wall time", async () => {
  // The wasm has no tz database: the zone's offsets come from the host's Intl.
  const user = await createUser();
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const s = await schedule(user, pipeline, "30 2 * * *", { timezone: "Australia/Lord_Howe" });
  assertEquals(s.next_runs.length, 5);
  const fmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Australia/Lord_Howe",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  });
  for (const t of s.next_runs) assertEquals(fmt.format(new Date(t)), "02:30", t);
  for (let i = 1; i < s.next_runs.length; i++) {
    const gap = Date.parse(s.next_runs[i]) - Date.parse(s.next_runs[i - 1]);
    assert(Math.abs(gap - 86_400_000) <= 1_800_000, `${s.next_runs[i - 1]} -> ${s.next_runs[i]}`);
  }
});

Deno.test("job-processor: processors racing over a due schedule enqueue it once", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const s = await schedule(user, pipeline, "*/5 * * * *");
  await withDb((sql) =>
    sql`update public.scheduled_jobs set next_run_at = date_trunc('minute', now()) where id = ${s.schedule.id}`
  );
  const answers = await Promise.all(Array.from({ length: 4 }, processDue));
  for (const a of answers) assertEquals(a.status, 200, JSON.stringify(a.body));
  const runs = await withDb((sql) =>
    sql`select scheduled_for from public.pipeline_runs where scheduled_job_id = ${s.schedule.id}`
  );
  assertEquals(runs.length, 1);
  const [row] = await withDb((sql) =>
    sql`select next_run_at > now() as ahead, last_run_at from public.scheduled_jobs where id = ${s.schedule.id}`
  );
  assert(row.ahead, "the schedule moved to its next time");
  // Firing again finds nothing due.
  await processDue();
  const again = await withDb((sql) =>
    sql`select 1 from public.pipeline_runs where scheduled_job_id = ${s.schedule.id}`
  );
  assertEquals(again.length, 1);
});

Deno.test("job-processor: hours of missed runs become one catch-up run, never a burst", async () => {
  const user = await createUser();
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const s = await schedule(user, pipeline, "*/5 * * * *");
  await withDb((sql) =>
    sql`update public.scheduled_jobs set next_run_at = date_trunc('hour', now()) - interval '3 hours' where id = ${s.schedule.id}`
  );
  await processDue();
  const runs = await withDb((sql) =>
    sql`select scheduled_for, now() - scheduled_for < interval '5 minutes' as latest from public.pipeline_runs where scheduled_job_id = ${s.schedule.id}`
  );
  assertEquals(runs.length, 1);
  assert(runs[0].latest, "the catch-up run stands for the latest missed time");
});

Deno.test("job-processor: a scheduled run that keeps failing deactivates its schedule and notifies", async () => {
  const user = await createUser();
  // Never connected: the post step fails for good.
  const pipeline = await makePipeline(user, [{
    step_type: "post-to-platform",
    config: { platform: "tiktok", text: "x" },
  }]);
  const s = await schedule(user, pipeline, "0 * * * *", { max_retries: 0 });
  await withDb((sql) =>
    sql`update public.scheduled_jobs set next_run_at = now() - interval '1 second' where id = ${s.schedule.id}`
  );
  const fired = await processDue();
  assertEquals(fired.body.data.fired >= 1, true, JSON.stringify(fired.body));
  const sched = await driveUntil("the schedule to be turned off", async () => {
    const [row] = await withDb((sql) =>
      sql`select is_active, last_error from public.scheduled_jobs where id = ${s.schedule.id}`
    );
    return row.is_active ? undefined : row;
  });
  assert(sched.last_error.includes("post-to-platform"), sched.last_error);
  const notes = await withDb((sql) =>
    sql`select kind from public.notifications where user_id = ${user.id} order by created_at`
  );
  assert(notes.some((n) => n.kind === "schedule_deactivated"), JSON.stringify(notes));
});

Deno.test("job-processor: only the scheduler may process due schedules; jobId runs one now", async () => {
  const user = await createUser();
  const r = await callFunction("job-processor", { method: "GET", token: user.token });
  assertEquals(r.status, 403);
  const pipeline = await makePipeline(user, [{ step_type: "generate-content", config: { prompt: "x" } }]);
  const s = await schedule(user, pipeline, "@daily");
  const now = await callFunction("job-processor", { token: user.token, body: { jobId: s.schedule.id } });
  assertEquals(now.status, 200, JSON.stringify(now.body));
  assert(now.body.data.run.run_id);
  const stranger = await createUser();
  const theirs = await callFunction("job-processor", { token: stranger.token, body: { jobId: s.schedule.id } });
  assertEquals(theirs.status, 404);
});
