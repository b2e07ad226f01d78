// The whole path with the reference worker: queue-job -> claim -> upload ->
// signed job-callback -> completed assets, and the failure, cancel and
// shutdown paths, with credits checked at each step.
import { createClient } from "@supabase/supabase-js";
import { assert, assertEquals } from "../support/assert.ts";
import {
  account,
  claim,
  jobReaches,
  ledger,
  mediaJob,
  mediaTest,
  PNG_SIGNATURE,
  pngSize,
  queueOk,
  readObject,
  stack,
  startWorker,
  until,
  userWithCredits,
  withDb,
} from "./_lib.ts";

Deno.test({
  name: "a queued SDXL job is claimed, rendered, stored and completed; credits reserved then committed",
  ...mediaTest,
  fn: async () => {
    const worker = startWorker();
    try {
      const user = await userWithCredits(10);
      const jobId = await queueOk(user.token, {
        jobType: "sdxl_image_fast",
        metadata: { prompt: "a lighthouse at dusk", num_images: 2 },
      });
      assertEquals(await account(user.id), { balance: 9, reserved: 1 });
      const done = await jobReaches(jobId, ["completed", "failed"]);
      assertEquals(done.status, "completed", done.error_message);
      assertEquals(done.credit_state, "committed");
      assertEquals(done.outputs.length, 2);
      assert(done.outputs.every((p: string) => p.startsWith(`${user.id}/${jobId}/`)), done.outputs.join());
      assertEquals(await account(user.id), { balance: 9, reserved: 0 });
      assertEquals((await ledger(user.id)).map((l) => l.kind), ["grant", "reserve", "commit"]);

      const images = await withDb(
        (sql) => sql`select * from public.images where job_id = ${jobId} order by created_at`,
        1,
      );
      assertEquals(images.length, 2);
      assert(images.every((i: any) => i.status === "completed" && i.user_id === user.id));
      assertEquals(images[0].id, done.image_id, "the row queue-job created is the first output");
      for (const img of images) {
        const png = await readObject(img.storage_path);
        assertEquals([...png.slice(0, 8)], PNG_SIGNATURE);
        assertEquals(pngSize(png), [256, 256]);
      }
      const [a, b] = await Promise.all(images.map((i: any) => readObject(i.storage_path)));
      assert(a.length !== b.length || a.some((x, i) => x !== b[i]), "two images of one job differ");

      // The owner reads the result with their own token; another user sees nothing.
      const mine = createClient(stack.url, stack.anonKey, {
        global: { headers: { Authorization: `Bearer ${user.token}` } },
        auth: { persistSession: false },
      });
      const { data } = await mine.from("images").select("id, storage_path").eq("job_id", jobId);
      assertEquals(data?.length, 2);
      const stranger = await userWithCredits(0);
      const theirs = createClient(stack.url, stack.anonKey, {
        global: { headers: { Authorization: `Bearer ${stranger.token}` } },
        auth: { persistSession: false },
      });
      const { data: none } = await theirs.from("images").select("id").eq("job_id", jobId);
      assertEquals(none?.length ?? 0, 0);
    } finally {
      await worker.stop();
    }
  },
});

Deno.test({
  name: "a 7B video job stores an animated PNG, a video row and the enhanced prompt",
  ...mediaTest,
  fn: async () => {
    const worker = startWorker();
    try {
      const user = await userWithCredits(20);
      const jobId = await queueOk(user.token, { jobType: "video7b_fast_enhanced", metadata: { prompt: "waves" } });
      const done = await jobReaches(jobId, ["completed", "failed"]);
      assertEquals(done.status, "completed", done.error_message);
      assert(done.enhanced_prompt?.startsWith("waves, "), done.enhanced_prompt);
      const videos = await withDb((sql) => sql`select * from public.videos where job_id = ${jobId}`, 1);
      assertEquals(videos.length, 1);
      assertEquals(videos[0].status, "completed");
      assertEquals(videos[0].enhanced_prompt, done.enhanced_prompt);
      const apng = await readObject(videos[0].storage_path);
      assertEquals([...apng.slice(0, 8)], PNG_SIGNATURE);
      assert(new TextDecoder("latin1").decode(apng.slice(0, 200)).includes("acTL"), "animated");
      assertEquals(await account(user.id), { balance: 8, reserved: 0 });
    } finally {
      await worker.stop();
    }
  },
});

Deno.test({
  name: "a job the backend fails is marked failed and refunded",
  ...mediaTest,
  fn: async () => {
    const worker = startWorker();
    try {
      const user = await userWithCredits(5);
      const jobId = await queueOk(user.token, {
        jobType: "image_high",
        metadata: { prompt: "x", local_fail: "out of GPU memory" },
      });
      const done = await jobReaches(jobId, ["completed", "failed"]);
      assertEquals(done.status, "failed");
      assertEquals(done.error_message, "out of GPU memory");
      assertEquals(done.credit_state, "refunded");
      assertEquals(await account(user.id), { balance: 5, reserved: 0 });
      assertEquals((await ledger(user.id)).map((l) => l.kind), ["grant", "reserve", "refund"]);
      const img = await withDb((sql) => sql`select status from public.images where id = ${done.image_id}`, 1);
      assertEquals(img[0].status, "failed");
    } finally {
      await worker.stop();
    }
  },
});

Deno.test({
  name: "a running job cancelled by its owner stops at the worker's next contact (heartbeat or report) and is refunded",
  ...mediaTest,
  fn: async () => {
    // Lease 3 s: heartbeats every second.
    const worker = startWorker({ MEDIA_WORKER_LEASE_SECONDS: "3" });
    try {
      const user = await userWithCredits(10);
      const jobId = await queueOk(user.token, {
        jobType: "sdxl_image_high",
        metadata: { prompt: "slow", local_render_ms: 20_000 },
      });
      await jobReaches(jobId, ["processing"]);
      await until("a progress report", async () => ((await mediaJob(jobId)).progress > 0 ? true : undefined));
      const owner = createClient(stack.url, stack.anonKey, {
        global: { headers: { Authorization: `Bearer ${user.token}` } },
        auth: { persistSession: false },
      });
      const { data, error } = await owner.rpc("media_cancel_job", { p_job: jobId });
      assertEquals(error, null);
      assertEquals((data as any).status, "cancelled");
      assertEquals(await account(user.id), { balance: 10, reserved: 0 });
      await until(
        "the worker to stop the job",
        () => worker.output().includes(`"ending":"cancelled"`) ? true : undefined,
        10_000,
      );
      // Stopped, not finished: no output, no completion afterwards.
      await new Promise((r) => setTimeout(r, 500));
      const after = await mediaJob(jobId);
      assertEquals([after.status, after.outputs.length], ["cancelled", 0]);
      assertEquals((await ledger(user.id)).map((l) => l.kind), ["grant", "reserve", "refund"]);
      // The worker is free again: the next job runs.
      const next = await queueOk(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: "next" } });
      assertEquals((await jobReaches(next, ["completed", "failed"])).status, "completed");
    } finally {
      await worker.stop();
    }
  },
});

Deno.test({
  name: "after a cancel the worker's heartbeat answers stop (cancelled) and renews nothing",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(3);
    const jobId = await queueOk(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: "beat" } });
    const { lease } = await claim(jobId, 30);
    const beat = async () =>
      (await withDb((sql) => sql`select public.media_heartbeat(${jobId}::uuid, ${lease}::uuid, 30) as b`, 1))[0].b;
    assertEquals((await beat()).continue, true);
    const owner = createClient(stack.url, stack.anonKey, {
      global: { headers: { Authorization: `Bearer ${user.token}` } },
      auth: { persistSession: false },
    });
    assertEquals((await owner.rpc("media_cancel_job", { p_job: jobId })).error, null);
    assertEquals(await beat(), { continue: false, reason: "cancelled" });
    const lapsed = await beat();
    assertEquals(lapsed.continue, false);
    assertEquals((await mediaJob(jobId)).status, "cancelled");
    assertEquals(await account(user.id), { balance: 3, reserved: 0 });
  },
});

Deno.test({
  name: "another user's cancel is refused and changes nothing",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(3);
    const jobId = await queueOk(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: "mine" } });
    const other = await userWithCredits(0);
    const c = createClient(stack.url, stack.anonKey, {
      global: { headers: { Authorization: `Bearer ${other.token}` } },
      auth: { persistSession: false },
    });
    const { error } = await c.rpc("media_cancel_job", { p_job: jobId });
    assert(error, "refused");
    assertEquals((await mediaJob(jobId)).status, "queued");
    const anon = createClient(stack.url, stack.anonKey, { auth: { persistSession: false } });
    assert((await anon.rpc("media_cancel_job", { p_job: jobId })).error, "anon refused");
    await withDb((sql) => sql`select public.cancel_job(${jobId}::uuid)`, 1);
  },
});

Deno.test({
  name: "a worker shut down mid-job hands the job back and another worker finishes it",
  ...mediaTest,
  fn: async () => {
    const first = startWorker({ MEDIA_WORKER_ID: "shutdown-first" });
    const user = await userWithCredits(5);
    const jobId = await queueOk(user.token, {
      jobType: "image_fast",
      metadata: { prompt: "handed back", local_render_ms: 10_000 },
    });
    await jobReaches(jobId, ["processing"]);
    const out = await first.stop();
    assert(out.includes("releasing claimed jobs"), out);
    const released = await mediaJob(jobId);
    assertEquals(released.status, "queued", "released, not failed");
    const attempts = await withDb((sql) => sql`select attempts from public.jobs where id = ${jobId}`, 1);
    assertEquals(attempts[0].attempts, 0, "a release is not charged an attempt");
    await withDb(
      (sql) => sql`update public.media_jobs set metadata = '{"prompt":"handed back"}' where id = ${jobId}`,
      1,
    );
    const second = startWorker({ MEDIA_WORKER_ID: "shutdown-second" });
    try {
      assertEquals((await jobReaches(jobId, ["completed", "failed"])).status, "completed");
      assertEquals(await account(user.id), { balance: 2, reserved: 0 });
    } finally {
      await second.stop();
    }
  },
});

Deno.test({
  name: "a job not started within the queue TTL expires and is refunded",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(4);
    const rows = await withDb(
      (sql) =>
        sql`select (public.media_queue_job(${user.id}::uuid, 'image_fast', 'late', '', '{}'::jsonb,
                                          p_ttl_seconds => 1) -> 'job' ->> 'id') as id`,
      1,
    );
    const jobId = rows[0].id;
    assertEquals(await account(user.id), { balance: 1, reserved: 3 });
    await new Promise((r) => setTimeout(r, 1200));
    // Any claim sweeps first; nothing of this user's is handed out.
    const claimed = await withDb(
      (sql) =>
        sql`select c from public.media_claim_jobs('ttl-test', array['wan_queue'], 1, 5) c
           where c ->> 'job_id' = ${jobId}`,
      1,
    );
    assertEquals(claimed.length, 0);
    const j = await mediaJob(jobId);
    assertEquals([j.status, j.credit_state], ["expired", "refunded"]);
    assertEquals(await account(user.id), { balance: 4, reserved: 0 });
    // Put back anything else the sweep's claim took.
    await withDb((sql) =>
      sql`select public.media_release_job(j.id, j.lease_token) from public.jobs j
           where j.worker_id = 'ttl-test' and j.status = 'processing'`, 1);
  },
});

Deno.test({
  name: "with MEDIA_BACKEND=openai the worker stores what a remote Images API returned",
  ...mediaTest,
  fn: async () => {
    // A local fake speaking OpenAI's POST /v1/images/generations with b64_json answers.
    const png = Uint8Array.from(
      atob(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
      ),
      (c) => c.charCodeAt(0),
    );
    const seen: any[] = [];
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      const body = await req.json();
      seen.push({ path: new URL(req.url).pathname, auth: req.headers.get("authorization"), body });
      const b64 = btoa(String.fromCharCode(...png));
      return Response.json({ created: 1, data: Array.from({ length: body.n }, () => ({ b64_json: b64 })) });
    });
    const worker = startWorker({
      MEDIA_BACKEND: "openai",
      MEDIA_BACKEND_URL: `http://127.0.0.1:${server.addr.port}`,
      MEDIA_BACKEND_API_KEY: "sk-fake-images",
    });
    try {
      const user = await userWithCredits(5);
      const jobId = await queueOk(user.token, {
        jobType: "sdxl_image_high",
        metadata: { prompt: "a red kite", num_images: 2 },
      });
      const done = await jobReaches(jobId, ["completed", "failed"]);
      assertEquals(done.status, "completed", done.error_message);
      assertEquals(seen.length, 1);
      assertEquals([seen[0].path, seen[0].auth, seen[0].body.n, seen[0].body.size], [
        "/v1/images/generations",
        "Bearer sk-fake-images",
        2,
        "512x512",
      ]);
      for (const key of done.outputs) assertEquals([...await readObject(key)], [...png]);
      assert(!worker.output().includes("sk-fake-images"), "the API key is not logged");
    } finally {
      await worker.stop();
      await server.shutdown();
    }
  },
});
