// ai-replicate end to end against the fake Replicate: a prediction created
// with a webhook, its signed webhook handled (video copied into Storage),
// forged, stale and replayed webhooks refused, failures recorded, cancel.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, need, stack, withDb } from "../support/stack.ts";
import { fakeReplicate } from "./fakes.ts";
import { signWebhook } from "../support/fake_replicate.ts";

const VIDEO = {
  type: "video",
  prompt: "a cat chasing a ball",
  options: { image_url: "https://example.test/cat.png", duration: 2, fps: 7, motion: 100, seed: 42 },
};

async function prediction(id: string) {
  const [row] = await withDb((sql) => sql`select * from public.pipeline_predictions where id = ${id}`);
  return row;
}

async function create(token: string) {
  const r = await callFunction("ai-replicate", { token, body: VIDEO });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  return r.body.data as { prediction_id: string; replicate_id: string; status: string };
}

Deno.test("ai-replicate: a webhook-reported success copies the video into Storage and completes the record", async () => {
  const user = await createUser();
  const created = await create(user.token);
  assertEquals(created.status, "starting");
  const finished = await fakeReplicate.finish({ id: created.replicate_id, status: "succeeded" });
  assertEquals(finished.webhook.status, 200, finished.webhook.body);
  const row = await prediction(created.prediction_id);
  assertEquals(row.status, "succeeded");
  assertEquals(row.storage_bucket, "generated-content");
  assertEquals(row.storage_path, `${user.id}/replicate/${created.replicate_id}.mp4`);
  assertEquals(row.input.video_length, "14_frames_with_svd");
  // The copy is in Storage under the user's folder, byte for byte.
  const stored = await fetch(`${stack.url}/storage/v1/object/generated-content/${row.storage_path}`, {
    headers: { authorization: `Bearer ${stack.serviceKey}`, apikey: stack.serviceKey },
  });
  assertEquals(stored.status, 200);
  const original = await fetch(row.output_url);
  assertEquals(new Uint8Array(await stored.arrayBuffer()), new Uint8Array(await original.arrayBuffer()));
  // The owner sees it; someone else does not.
  const mine = await callFunction("ai-replicate", {
    method: "GET",
    token: user.token,
    query: `prediction_id=${created.prediction_id}`,
  });
  assertEquals(mine.body.data.status, "succeeded");
  const other = await createUser();
  const theirs = await callFunction("ai-replicate", {
    method: "GET",
    token: other.token,
    query: `prediction_id=${created.prediction_id}`,
  });
  assertEquals(theirs.status, 404);

  // A genuine delivery replayed within the tolerance changes nothing.
  const [delivery] = (await fakeReplicate.deliveries()).filter((d) => d.body.includes(created.replicate_id));
  const replay = await callFunction("ai-replicate", { token: null, headers: delivery.headers, body: delivery.body });
  assertEquals(replay.status, 200);
  assertEquals(replay.body.data.duplicate, true);
});

Deno.test("ai-replicate: forged, altered and stale webhooks are refused and change nothing", async () => {
  const user = await createUser();
  const created = await create(user.token);
  const body = JSON.stringify({
    id: created.replicate_id,
    status: "succeeded",
    output: "https://evil.test/x.mp4",
    error: null,
  });
  const id = `msg_${crypto.randomUUID().replaceAll("-", "")}`;
  const now = Math.floor(Date.now() / 1000);
  const send = async (headers: Record<string, string>, b = body) =>
    await callFunction("ai-replicate", {
      token: null,
      headers: { "content-type": "application/json", ...headers },
      body: b,
    });

  const forged = await send({
    "webhook-id": id,
    "webhook-timestamp": String(now),
    "webhook-signature": await signWebhook("whsec_d3Jvbmcgc2VjcmV0", id, now, body),
  });
  assertEquals(forged.status, 401);
  assertEnvelope(forged.body, "signature_mismatch");
  const secret = need("REPLICATE_WEBHOOK_SECRET");
  const genuine = await signWebhook(secret, id, now, body);
  const altered = await send(
    { "webhook-id": id, "webhook-timestamp": String(now), "webhook-signature": genuine },
    body.replace("succeeded", "failed"),
  );
  assertEnvelope(altered.body, "signature_mismatch");
  const old = now - 3600;
  const stale = await send({
    "webhook-id": id,
    "webhook-timestamp": String(old),
    "webhook-signature": await signWebhook(secret, id, old, body),
  });
  assertEquals(stale.status, 401);
  assertEnvelope(stale.body, "signature_expired");
  const unsigned = await send({ "webhook-id": id });
  assertEquals(unsigned.status, 401);
  assertEquals((await prediction(created.prediction_id)).status, "starting");
});

Deno.test("ai-replicate: a failed prediction is recorded with Replicate's reason", async () => {
  const user = await createUser();
  const created = await create(user.token);
  const finished = await fakeReplicate.finish({
    id: created.replicate_id,
    status: "failed",
    error: "CUDA out of memory",
  });
  assertEquals(finished.webhook.status, 200, finished.webhook.body);
  const row = await prediction(created.prediction_id);
  assertEquals(row.status, "failed");
  assertEquals(row.error, "CUDA out of memory");
  assertEquals(row.storage_path, null);
});

Deno.test("ai-replicate: the owner cancels a running prediction", async () => {
  const user = await createUser();
  const created = await create(user.token);
  const r = await callFunction("ai-replicate", {
    token: user.token,
    body: { action: "cancel", prediction_id: created.prediction_id },
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals((await prediction(created.prediction_id)).status, "canceled");
  const again = await callFunction("ai-replicate", {
    token: user.token,
    body: { action: "cancel", prediction_id: created.prediction_id },
  });
  assertEquals(again.status, 409);
});

Deno.test("ai-replicate: parameters the model cannot honour are a 422 naming the field", async () => {
  const user = await createUser();
  const bad = async (options: Record<string, unknown>) =>
    await callFunction("ai-replicate", {
      token: user.token,
      body: { type: "video", options: { image_url: "https://example.test/a.png", ...options } },
    });
  for (
    const [options, field] of [
      [{ fps: 60 }, "options.fps"],
      [{ duration: 5, fps: 24 }, "options.duration"],
      [{ width: 640, height: 480 }, "options.width"],
      [{ motion: 300 }, "options.motion"],
      [{ seed: -1 }, "options.seed"],
      [{ image_url: "ftp://x/y.png" }, "options.image_url"],
    ] as const
  ) {
    const r = await bad(options);
    assertEquals(r.status, 422, JSON.stringify(r.body));
    assertEquals(r.body.error.details.fields[0].field, field);
  }
  const unknown = await bad({ frames: 99 });
  assertEquals(unknown.status, 422);
  const anon = await callFunction("ai-replicate", { token: null, body: VIDEO });
  assertEquals(anon.status, 401);
  const rows = await withDb((sql) => sql`select 1 from public.pipeline_predictions where user_id = ${user.id}`);
  assertEquals(rows.length, 0);
});
