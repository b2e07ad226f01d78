// queue-job through the gateway: the seed's answer, routing, credits and refusals.
import { assert, assertEquals } from "../support/assert.ts";
import { account, cancelAll, createUser, ledger, mediaTest, queueJob, userWithCredits, withDb } from "./_lib.ts";

const ALL_TYPES = [
  "sdxl_image_fast",
  "sdxl_image_high",
  "image_fast",
  "image_high",
  "video_fast",
  "video_high",
  "image7b_fast_enhanced",
  "image7b_high_enhanced",
  "video7b_fast_enhanced",
  "video7b_high_enhanced",
];

Deno.test({
  name: "queue-job answers the seed's shape and reserves the type's credits",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(10);
    const r = await queueJob(user.token, {
      jobType: "sdxl_image_fast",
      metadata: { prompt: "a red fox", negative_prompt: "Blurry, cats", credits: 0, queue: "wan_queue" },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const b = r.body;
    assertEquals(b.success, true);
    assertEquals(typeof b.message, "string");
    assertEquals(b.modelVariant, "sdxl-lightning-4step");
    assert(b.queueLength >= 1, `queueLength ${b.queueLength}`);
    assertEquals(b.job.status, "queued");
    assertEquals(b.job.queue, "sdxl_queue", "the client's metadata.queue is ignored");
    assertEquals(b.job.credits, 1, "the client's metadata.credits is ignored");
    assertEquals(b.job.negative_prompt.toLowerCase().split("blurry").length, 2, b.job.negative_prompt);
    assert(b.job.negative_prompt.endsWith("cats"));
    assert(b.job.image_id, "an image row was created for the job");
    assertEquals(b.debug.userId, user.id);
    assertEquals(b.debug.hasPrompt, true);
    assertEquals(b.debug.redisConfigured, "postgres");
    assert(!JSON.stringify(b).includes("eyJ"), "no token in the answer");
    assertEquals(await account(user.id), { balance: 9, reserved: 1 });
    assertEquals((await ledger(user.id)).map((l) => l.kind), ["grant", "reserve"]);
    await cancelAll(user.id);
    assertEquals(await account(user.id), { balance: 10, reserved: 0 }, "a cancelled queued job is refunded");
  },
});

Deno.test({
  name: "every job type routes to its queue with its model variant and cost",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(1000);
    let spent = 0;
    for (const jobType of ALL_TYPES) {
      const r = await queueJob(user.token, { jobType, metadata: { prompt: "x" } });
      assertEquals(r.status, 200, `${jobType}: ${JSON.stringify(r.body)}`);
      assertEquals(r.body.job.queue, jobType.startsWith("sdxl_") ? "sdxl_queue" : "wan_queue", jobType);
      assertEquals(r.body.modelVariant, r.body.job.model_variant);
      assertEquals(r.body.job.credits, r.body.debug.credits, `${jobType}: SQL and Rust catalogues agree`);
      assertEquals(r.body.job.expected_duration_ms, r.body.debug.expectedDurationMs, jobType);
      assertEquals(jobType.startsWith("video") ? !!r.body.job.video_id : !!r.body.job.image_id, true, jobType);
      spent += r.body.job.credits;
    }
    assertEquals(await account(user.id), { balance: 1000 - spent, reserved: spent });
    await cancelAll(user.id);
  },
});

Deno.test({
  name: "an unknown job type is a 400 listing the valid ones",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(5);
    const r = await queueJob(user.token, { jobType: "sdxl_image_ultra" });
    assertEquals(r.status, 400);
    assertEquals(r.body.success, false);
    assertEquals(r.body.error.code, "unknown_job_type");
    assertEquals(r.body.error.details.validJobTypes, ALL_TYPES);
    assert(typeof r.body.request_id === "string");
    assertEquals(await account(user.id), { balance: 5, reserved: 0 });
  },
});

Deno.test({
  name: "bad bodies and callers are refused in the envelope and change nothing",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(5);
    for (
      const body of [
        {},
        { jobType: 7 },
        { jobType: "image_fast", projectId: "not-a-uuid" },
        { jobType: "image_fast", metadata: { prompt: "a\u0000b" } },
        { jobType: "image_fast", metadata: "nope" },
      ]
    ) {
      const r = await queueJob(user.token, body);
      assertEquals(r.status, 422, JSON.stringify(body));
      assertEquals(r.body.success, false);
    }
    assertEquals((await queueJob(user.token, "{not json")).status, 400);
    assertEquals((await queueJob("", { jobType: "image_fast" })).status, 401);
    const other = await createUser();
    const theirs = await withDb(
      (sql) => sql`insert into public.projects (user_id, title) values (${other.id}, 'theirs') returning id`,
      1,
    );
    const r = await queueJob(user.token, { jobType: "image_fast", projectId: theirs[0].id });
    assertEquals([r.status, r.body.error.code], [404, "project_not_found"]);
    assertEquals(await account(user.id), { balance: 5, reserved: 0 });
  },
});

Deno.test({
  name: "without enough credits queue-job is a 402 and queues nothing",
  ...mediaTest,
  fn: async () => {
    const broke = await createUser();
    const r = await queueJob(broke.token, { jobType: "sdxl_image_fast", metadata: { prompt: "x" } });
    assertEquals([r.status, r.body.error.code], [402, "insufficient_credits"]);
    const poor = await userWithCredits(9);
    const v = await queueJob(poor.token, { jobType: "video_fast" });
    assertEquals(v.status, 402);
    assertEquals(v.body.error.details, { required: 10, balance: 9 });
    const jobs = await withDb(
      (sql) => sql`select count(*)::int as n from public.media_jobs where user_id in (${broke.id}, ${poor.id})`,
      1,
    );
    assertEquals(jobs[0].n, 0);
  },
});

Deno.test({
  name: "50 concurrent queue-jobs on a balance for 10 accept exactly 10",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(10);
    const answers = await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) => queueJob(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: `burst ${i}` } }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    assertEquals(statuses.filter((s) => s === 200).length, 10, JSON.stringify(statuses));
    assertEquals(statuses.filter((s) => s === 402).length, 40, JSON.stringify(statuses));
    assertEquals(await account(user.id), { balance: 0, reserved: 10 });
    const reserves = (await ledger(user.id)).filter((l) => l.kind === "reserve");
    assertEquals(reserves.length, 10);
    await cancelAll(user.id);
    assertEquals(await account(user.id), { balance: 10, reserved: 0 });
  },
});
