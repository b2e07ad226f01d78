// The upload pipeline end to end with the V2UploadClient: a 12 MB PDF in
// three presigned, checksummed parts, completion verified against storage,
// then the processing chain storage -> parse -> embed -> completed driven by
// signed webhooks; progress and ETA seen on the way, over Realtime and from
// progress-tracker. Resume from a second client, and after a "reload".
import { assert, assertEquals } from "../support/assert.ts";
import { callFunction, createUser, eventually, need, stack, withDb } from "../support/stack.ts";
import {
  client,
  documentRow,
  enableFlagFor,
  memoryStore,
  MiB,
  pdfFile,
  runUploadJobs,
  sendWebhook,
  V2UploadClient,
} from "./_lib.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test(
  "a 12 MB PDF goes up in parts, is verified, and finishes storage -> parse -> embed -> completed",
  opts,
  async () => {
    const user = await createUser();
    await withDb(async (sql) => {
      await enableFlagFor(sql, "llama_parse_integration", user.id);
      await enableFlagFor(sql, "external_embedding", user.id);
    });
    const c = client(user.token);
    const seen: any[] = [];
    const unsubscribe = c.subscribeToProgress(user.id, (p) => seen.push(p));
    try {
      // Let the channel join before anything happens.
      await new Promise((r) => setTimeout(r, 500));
      const file = pdfFile(12 * MiB, "twelve.pdf");
      const init = await c.initializeUpload(file);
      assertEquals(init.uploadMethod, "multipart");
      assertEquals(init.parts.length, 3);
      for (const p of init.parts) assert(p.headers["x-amz-checksum-sha256"], "each part URL pins its SHA-256");
      const local: any[] = [];
      const id = await c.uploadFile(file, init, (p) => local.push(p));
      assertEquals(id, init.documentId);
      assert(local.some((p) => p.progress > 0 && p.progress < 100), "progress between 0 and 100 was reported");
      assert(local.some((p) => p.eta !== null && p.eta.seconds >= 0), "a local ETA was reported");
      assertEquals(local.at(-1).status, "processing");

      const doc = await documentRow(id);
      assertEquals(doc.sha256_verified, true);
      assertEquals(doc.sniffed_content_type, "application/pdf");
      assertEquals(doc.processing_step, "parse");

      // Parse goes to LlamaParse (flag on): the job hands it the document by a presigned
      // URL (the fake downloads it, as LlamaParse does) and waits for its webhook.
      await runUploadJobs();
      const submitted = await documentRow(id);
      assertEquals(submitted.processing_step, "parse");
      const llama = await (await fetch(`${need("UPLOAD_LLAMA_PARSE_BASE_URL")}/__requests`)).json();
      const job = llama.find((r: any) => r.id === submitted.llama_parse_job_id);
      assert(job, `LlamaParse received the job: ${JSON.stringify(llama)}`);
      assertEquals([job.fetched_status, job.fetched_bytes, job.fetched_prefix], [200, 12 * MiB, "%PDF-"]);
      assertEquals(job.webhook_url, `${stack.url}/functions/v1/processing-webhook`);
      // The parser reports progress through progress-tracker (service role): an ETA with a band.
      for (const [i, pct] of [10, 25, 40, 55].entries()) {
        const r = await callFunction("progress-tracker", {
          token: stack.serviceKey,
          body: { documentId: id, stage: "parse", progress: pct },
        });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        if (i < 3) await new Promise((res) => setTimeout(res, 120));
      }
      const progress = await c.getProgress(id);
      assertEquals(progress.processingStep, "parse");
      assert(progress.eta !== null, `an ETA: ${JSON.stringify(progress)}`);
      assert(progress.eta!.lowSeconds <= progress.eta!.seconds && progress.eta!.seconds <= progress.eta!.highSeconds);
      assert(progress.eta!.confidence > 0 && progress.eta!.confidence <= 1);

      const stranger = await sendWebhook("llamaparse", { documentId: id, status: "completed", jobId: "another-job" });
      assertEquals([stranger.status, stranger.body.error.code], [409, "external_job_mismatch"]);
      const parsed = await sendWebhook("llamaparse", { documentId: id, status: "completed", jobId: job.id });
      assertEquals(parsed.status, 200, JSON.stringify(parsed.body));
      assert(parsed.body.data.result.nextJobId, "the embed job was enqueued");
      const afterParse = await documentRow(id);
      assertEquals(afterParse.processing_step, "embed");
      assertEquals(afterParse.llama_parse_job_id, job.id);

      await runUploadJobs();
      const embedded = await sendWebhook("embedding", { documentId: id, status: "completed" });
      assertEquals(embedded.status, 200, JSON.stringify(embedded.body));
      const done = await documentRow(id);
      assertEquals([done.status, done.processing_step, done.progress], ["completed", "completed", 100]);

      // Realtime: progress broadcasts and status changes reached the subscriber.
      await eventually(
        "the completion over Realtime",
        () => Promise.resolve(seen.some((p) => p.documentId === id && p.status === "completed") ? true : undefined),
      );
      assert(
        seen.some((p) => p.documentId === id && p.processingStep === "parse" && p.progress > 0),
        "a progress broadcast",
      );
      const rows = await withDb((sql) =>
        sql`select payload from public.realtime_progress_updates where document_id = ${id} order by created_at`
      );
      // Status changes only, never one row per percent.
      assert(rows.length >= 3 && rows.length <= 8, `status-change rows: ${rows.length}`);
    } finally {
      unsubscribe();
      await c.supabase.removeAllChannels();
    }
  },
);

/** A fetch that fails every PUT of part `n` with a non-retryable 400 (the upload stops there). */
function failingPart(n: number): typeof fetch {
  return (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (init?.method === "PUT" && url.includes(`partNumber=${n}&`)) {
      return Promise.resolve(new Response("<Error><Code>Injected</Code></Error>", { status: 400 }));
    }
    return fetch(input, init);
  };
}

Deno.test("a second client of the same user resumes from the parts the server holds", opts, async () => {
  const user = await createUser();
  const file = pdfFile(12 * MiB, "resume.pdf");
  const first = client(user.token, { fetch: failingPart(2), concurrency: 1 });
  const init = await first.initializeUpload(file);
  const err = await first.uploadFile(file, init).catch((e) => e);
  assertEquals(err.code, "part_failed");
  const held = await callFunction("upload-handler", {
    method: "GET",
    token: user.token,
    query: `documentId=${init.documentId}&resume=true`,
  });
  assertEquals(held.status, 200, JSON.stringify(held.body));
  assertEquals(held.body.data.storedParts, [1]);

  // Another device: no local state, only the document id and the file.
  const puts: string[] = [];
  const second = new V2UploadClient(stack.url, stack.anonKey, {
    accessToken: user.token,
    store: memoryStore(),
    enableRealtime: false,
    fetch: (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (init?.method === "PUT" && url.includes("partNumber=")) puts.push(/partNumber=(\d+)/.exec(url)![1]);
      return fetch(input, init);
    },
  });
  await second.resumeUpload(file, init.documentId);
  assertEquals(puts.sort(), ["2", "3"], "only the missing parts were sent");
  const doc = await documentRow(init.documentId);
  assertEquals([doc.status, doc.sha256_verified], ["processing", true]);
});

Deno.test("after a reload the same file's upload picks up where it stopped", opts, async () => {
  const user = await createUser();
  const file = pdfFile(11 * MiB, "reload.pdf");
  const store = memoryStore();
  const before = client(user.token, { store, fetch: failingPart(3), concurrency: 1 });
  const init = await before.initializeUpload(file);
  await before.uploadFile(file, init).catch(() => {});
  assertEquals(store.size(), 1, "the unfinished upload is remembered");

  const after = client(user.token, { store });
  const resumed = await after.initializeUpload(file);
  assertEquals(resumed.documentId, init.documentId);
  assertEquals(resumed.storedParts, [1, 2]);
  assertEquals(resumed.parts.map((p) => p.partNumber), [3]);
  await after.uploadFile(file, resumed);
  assertEquals((await documentRow(init.documentId)).status, "processing");
  assertEquals(store.size(), 0);
});

Deno.test(
  "the same bytes again are the user's own duplicate; another user's copy is never revealed",
  opts,
  async () => {
    const [a, b] = [await createUser(), await createUser()];
    const file = pdfFile(64 * 1024, "small.pdf", 42);
    const ca = client(a.token);
    const first = await ca.initializeUpload(file);
    assertEquals(first.uploadMethod, "single");
    await ca.uploadFile(file, first);
    const again = await client(a.token).initializeUpload(file);
    assertEquals([again.duplicate, again.documentId], [true, first.documentId]);

    const cb = client(b.token);
    const theirs = await cb.initializeUpload(file);
    assertEquals(theirs.duplicate, false, "B's hash claim does not find A's document");
    assert(theirs.documentId !== first.documentId);
    await cb.uploadFile(file, theirs);
    assertEquals((await documentRow(theirs.documentId)).duplicate_of, null);
  },
);

Deno.test("a part whose URL expired is sent again with a fresh URL from the server", opts, async () => {
  const user = await createUser();
  const file = pdfFile(11 * MiB, "slow.pdf", 31);
  let expired = 0;
  const c = client(user.token, {
    concurrency: 1,
    fetch: (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (init?.method === "PUT" && url.includes("partNumber=2&") && expired === 0) {
        expired++;
        // What the storage answers for a presigned URL past its expiry.
        return Promise.resolve(
          new Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", {
            status: 403,
          }),
        );
      }
      return fetch(input, init);
    },
  });
  const init = await c.initializeUpload(file);
  await c.uploadFile(file, init);
  assertEquals(expired, 1);
  const doc = await documentRow(init.documentId);
  assertEquals([doc.status, doc.sha256_verified], ["processing", true]);
});
