// job-callback under attack: who may report, which leases count, which
// transitions exist, where outputs may be. Every refusal changes nothing.
import { assert, assertEquals } from "../support/assert.ts";
import {
  account,
  callFunction,
  claim,
  mediaJob,
  mediaTest,
  queueOk,
  report,
  signed,
  stack,
  userWithCredits,
  withDb,
} from "./_lib.ts";

/** A queued job of a fresh user with 10 credits, and that user. */
async function queued(jobType = "sdxl_image_fast") {
  const user = await userWithCredits(10);
  const jobId = await queueOk(user.token, { jobType, metadata: { prompt: "callback test" } });
  return { user, jobId };
}

/** Everything a refusal must leave alone. */
async function snapshot(jobId: string, userId: string) {
  const j = await mediaJob(jobId);
  const q = await withDb(
    (sql) => sql`select status, progress, lease_token::text from public.jobs where id = ${jobId}`,
    1,
  );
  const imgs = await withDb(
    (sql) => sql`select status, storage_path from public.images where user_id = ${userId} order by id`,
    1,
  );
  return JSON.stringify({ j: [j.status, j.outputs, j.progress, j.credit_state], q, imgs, a: await account(userId) });
}

Deno.test({
  name: "a signed report with the lease moves the job and answers upload URLs under the owner's prefix",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const { lease } = await claim(jobId);
    const r = await report({
      jobId,
      leaseToken: lease,
      status: "processing",
      progress: 10,
      uploads: { count: 2, contentType: "image/png" },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    assertEquals(r.body.uploads.length, 2);
    assert(r.body.uploads[0].path.startsWith(`${user.id}/${jobId}/`));
    assert(!JSON.stringify(r.body).includes(lease), "the lease token is not echoed");
    const put = await fetch(r.body.uploads[0].url, {
      method: "PUT",
      headers: r.body.uploads[0].headers,
      body: new Uint8Array([0x89, 0x50, 0x4e, 0x47]),
    });
    assertEquals(put.status, 200, await put.text());
    const done = await report({ jobId, leaseToken: lease, status: "completed", filePath: r.body.uploads[0].path });
    assertEquals(done.status, 200, JSON.stringify(done.body));
    assertEquals((await mediaJob(jobId)).status, "completed");
    // The same completion again (a retry of the worker's delivery under a new id): acknowledged, unchanged.
    const again = await report({ jobId, leaseToken: lease, status: "completed", filePath: r.body.uploads[0].path });
    assertEquals([again.status, again.body.duplicate, again.body.applied], [200, true, false]);
    assertEquals(await account(user.id), { balance: 9, reserved: 0 });
  },
});

Deno.test({
  name: "forged, unsigned, wrong-role and stale reports are 401/403 and change nothing",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const { lease } = await claim(jobId);
    const before = await snapshot(jobId, user.id);
    const body = JSON.stringify({ jobId, leaseToken: lease, status: "failed", errorMessage: "x" });

    const forged = await callFunction("job-callback", {
      body,
      headers: await signed(body, { secret: "whsec_" + btoa("not the worker secret") }),
    });
    assertEquals([forged.status, forged.body.error.code], [401, "signature_mismatch"]);

    const tampered = await callFunction("job-callback", {
      body: body.replace('"x"', '"y"'),
      headers: await signed(body),
    });
    assertEquals(tampered.status, 401);

    const none = await callFunction("job-callback", { body });
    assertEquals([none.status, none.body.error.code], [401, "signature_missing"]);

    const stale = await callFunction("job-callback", {
      body,
      headers: await signed(body, { ts: Math.floor(Date.now() / 1000) - 301 }),
    });
    assertEquals([stale.status, stale.body.error.code], [401, "signature_expired"]);

    const userToken = await callFunction("job-callback", { body, token: user.token });
    assertEquals(userToken.status, 403);
    const anonKey = await callFunction("job-callback", { body, token: stack.anonKey });
    assertEquals(anonKey.status, 403);

    assertEquals(await snapshot(jobId, user.id), before);
    assert(!JSON.stringify([forged.body, stale.body]).includes("whsec_"), "no secret in errors");
  },
});

Deno.test({
  name: "a replayed webhook id is acknowledged without effect; once stale it is 401",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const { lease } = await claim(jobId);
    const progress = JSON.stringify({ jobId, leaseToken: lease, status: "processing", progress: 30 });
    const headers = await signed(progress);
    const first = await callFunction("job-callback", { body: progress, headers });
    assertEquals([first.status, first.body.applied], [200, true]);
    const before = await snapshot(jobId, user.id);
    const replay = await callFunction("job-callback", { body: progress, headers });
    assertEquals([replay.status, replay.body.replayed, replay.body.applied], [200, true, false]);
    assertEquals(await snapshot(jobId, user.id), before);

    // A captured completion replayed after the window: refused before anything is read.
    const old = JSON.stringify({ jobId, leaseToken: lease, status: "failed" });
    const h = await signed(old, { ts: Math.floor(Date.now() / 1000) - 600 });
    assertEquals((await callFunction("job-callback", { body: old, headers: h })).status, 401);
    assertEquals((await mediaJob(jobId)).status, "processing");
  },
});

Deno.test({
  name: "the service-role JWT may report instead of a signature, with the lease all the same",
  ...mediaTest,
  fn: async () => {
    const { jobId } = await queued();
    const { lease } = await claim(jobId);
    const wrongLease = await callFunction("job-callback", {
      token: stack.serviceKey,
      body: { jobId, leaseToken: crypto.randomUUID(), status: "failed" },
    });
    assertEquals([wrongLease.status, wrongLease.body.error.code], [409, "lease_lost"]);
    const r = await callFunction("job-callback", {
      token: stack.serviceKey,
      body: { jobId, leaseToken: lease, status: "failed", errorMessage: "gpu fell over" },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    assertEquals((await mediaJob(jobId)).status, "failed");
  },
});

Deno.test({
  name: "a late report after the lease expired is 409 and changes nothing",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const { lease } = await claim(jobId, 1);
    await new Promise((r) => setTimeout(r, 1500));
    const before = await snapshot(jobId, user.id);
    const late = await report({ jobId, leaseToken: lease, status: "completed", filePath: `${user.id}/${jobId}/0.png` });
    assertEquals([late.status, late.body.error.code], [409, "lease_expired"]);
    assertEquals(await snapshot(jobId, user.id), before);
    // The job runs again under a new lease; the old one stays refused.
    const { lease: second } = await until2(() => claim(jobId));
    assert(second !== lease);
    const stale = await report({ jobId, leaseToken: lease, status: "failed" });
    assertEquals([stale.status, stale.body.error.code], [409, "lease_lost"]);
    assertEquals((await mediaJob(jobId)).status, "processing");
    assertEquals(await account(user.id), { balance: 9, reserved: 1 });
  },
});

async function until2<T>(f: () => Promise<T>): Promise<T> {
  // claim_job sweeps the expired lease itself; one retry covers a sweep in flight.
  try {
    return await f();
  } catch {
    await new Promise((r) => setTimeout(r, 200));
    return await f();
  }
}

Deno.test({
  name: "illegal transitions are 409: a report on an unclaimed job, progress after completion",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const before = await snapshot(jobId, user.id);
    const unclaimed = await report({
      jobId,
      leaseToken: crypto.randomUUID(),
      status: "completed",
      filePath: `${user.id}/x.png`,
    });
    assertEquals([unclaimed.status, unclaimed.body.error.code], [409, "illegal_transition"]);
    assertEquals(await snapshot(jobId, user.id), before);

    const { lease } = await claim(jobId);
    assertEquals((await report({ jobId, leaseToken: lease, status: "failed", errorMessage: "x" })).status, 200);
    const after = await snapshot(jobId, user.id);
    for (const status of ["processing", "completed"]) {
      const r = await report({ jobId, leaseToken: lease, status, filePath: `${user.id}/${jobId}/0.png` });
      assertEquals([r.status, r.body.error.code], [409, "illegal_transition"], status);
    }
    const bogus = await report({ jobId, leaseToken: lease, status: "queued" });
    assertEquals(bogus.status, 422);
    assertEquals(await snapshot(jobId, user.id), after);
    assertEquals(await account(user.id), { balance: 10, reserved: 0 });
  },
});

Deno.test({
  name: "outputs outside the owner's prefix are 400: traversal, other users, foreign hosts, other buckets",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const other = await userWithCredits(0);
    const { lease } = await claim(jobId);
    const before = await snapshot(jobId, user.id);
    const attempts: Record<string, unknown>[] = [
      { filePath: `${user.id}/../${other.id}/x.png` },
      { filePath: `${user.id}/%2e%2e/${other.id}/x.png` },
      { filePath: `../../etc/passwd` },
      { filePath: `${other.id}/${jobId}/0.png` },
      { imageUrls: [`${user.id}/${jobId}/0.png`, `${other.id}/steal.png`] },
      { outputUrl: `https://evil.example/storage/v1/s3/media/${user.id}/x.mp4` },
      { outputUrl: `${stack.url}/storage/v1/s3/avatars/${user.id}/x.png` },
      { filePath: `/${user.id}/x.png` },
      {},
    ];
    for (const outputs of attempts) {
      const r = await report({ jobId, leaseToken: lease, status: "completed", ...outputs });
      assertEquals(r.status, 400, JSON.stringify(outputs) + " " + JSON.stringify(r.body));
      assertEquals(r.body.success, false);
    }
    assertEquals(await snapshot(jobId, user.id), before);
    const ok = await report({
      jobId,
      leaseToken: lease,
      status: "completed",
      outputUrl: `${stack.url}/storage/v1/s3/media/${user.id}/${jobId}/0.png`,
    });
    assertEquals(ok.status, 200, JSON.stringify(ok.body));
    assertEquals((await mediaJob(jobId)).outputs, [`${user.id}/${jobId}/0.png`]);
  },
});

Deno.test({
  name: "an enhanced prompt is stored for 7B jobs and refused for others",
  ...mediaTest,
  fn: async () => {
    const plain = await queued("image_fast");
    const { lease } = await claim(plain.jobId);
    const r = await report({
      jobId: plain.jobId,
      leaseToken: lease,
      status: "completed",
      outputUrl: `${plain.user.id}/${plain.jobId}/0.png`,
      enhancedPrompt: "better",
    });
    assertEquals(r.status, 400);
    const seven = await queued("image7b_high_enhanced");
    const c = await claim(seven.jobId);
    const ok = await report({
      jobId: seven.jobId,
      leaseToken: c.lease,
      status: "completed",
      outputUrl: `${seven.user.id}/${seven.jobId}/0.png`,
      enhancedPrompt: "callback test, golden hour, 35mm",
    });
    assertEquals(ok.status, 200, JSON.stringify(ok.body));
    const img = await withDb((sql) => sql`select enhanced_prompt from public.images where job_id = ${seven.jobId}`, 1);
    assertEquals(img[0].enhanced_prompt, "callback test, golden hour, 35mm");
  },
});

Deno.test({
  name: "the worker secret and lease tokens never reach the logs",
  ...mediaTest,
  fn: async () => {
    const { user, jobId } = await queued();
    const { lease } = await claim(jobId);
    await report({ jobId, leaseToken: lease, status: "processing", progress: 5 });
    await report({ jobId, leaseToken: crypto.randomUUID(), status: "failed" });
    await report({ jobId, leaseToken: lease, status: "completed", filePath: `${user.id}/${jobId}/0.png` });
    const state = Deno.env.get("EDGEWORKS_STATE_DIR");
    if (!state) return; // only scripts/test and private stacks know where the logs are
    await new Promise((r) => setTimeout(r, 200));
    const log = await Deno.readTextFile(`${state}/logs/gateway.log`);
    assert(log.includes(jobId), "the reports were logged");
    assert(!log.includes(lease), "a lease token was logged");
    const secret = Deno.env.get("MEDIA_WORKER_SECRET")!;
    assert(!log.includes(secret) && !log.includes(secret.slice(6)), "the worker secret was logged");
  },
});
