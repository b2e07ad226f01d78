// progress-tracker beyond the happy path: a document without progress for
// 30 minutes is stuck (in the report and in stuck_documents); a failed step is
// recorded with its retry and reset for another try; the monitoring views show
// each user only their own documents.
import { assert, assertEquals } from "../support/assert.ts";
import { callFunction, createUser, stack, withDb } from "../support/stack.ts";
import { client, documentRow, pdfFile, runUploadJobs, sendWebhook } from "./_lib.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

async function uploaded(token: string, name: string, seed: number): Promise<string> {
  const c = client(token);
  const file = pdfFile(4096, name, seed);
  const r = await c.initializeUpload(file);
  await c.uploadFile(file, r);
  return r.documentId;
}

const asUser = (token: string, path: string) =>
  fetch(`${stack.url}/rest/v1/${path}`, { headers: { apikey: stack.anonKey, authorization: `Bearer ${token}` } })
    .then((r) => r.json());

Deno.test("no progress for 30 minutes is stuck; the views show only the caller's rows", opts, async () => {
  const [a, b] = [await createUser(), await createUser()];
  const doc = await uploaded(a.token, "stuck.pdf", 21);
  await uploaded(b.token, "other.pdf", 22);
  const fresh = await callFunction("progress-tracker", { method: "GET", token: a.token, query: `documentId=${doc}` });
  assertEquals(fresh.body.data.stuck, false);
  await withDb((sql) =>
    sql`update public.documents set last_progress_at = now() - interval '31 minutes' where id = ${doc}`
  );
  const stale = await callFunction("progress-tracker", { method: "GET", token: a.token, query: `documentId=${doc}` });
  assertEquals(stale.body.data.stuck, true);
  const stuckA = await asUser(a.token, "stuck_documents?select=id,user_id");
  assertEquals(stuckA.map((r: any) => r.id), [doc]);
  assertEquals(await asUser(b.token, "stuck_documents?select=id"), []);
  const statsA = await asUser(a.token, "user_upload_stats?select=user_id,uploads");
  assertEquals(statsA, [{ user_id: a.id, uploads: 1 }]);
  const procA = await asUser(a.token, "document_processing_stats?select=user_id,processing");
  assertEquals(procA, [{ user_id: a.id, processing: 1 }]);
  // Flags name users: nobody but the service role reads them.
  const flags = await fetch(`${stack.url}/rest/v1/feature_flags`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${a.token}` },
  });
  assert(flags.status >= 400, `feature_flags readable by a user: ${flags.status}`);
  await flags.body?.cancel();
});

Deno.test(
  "a failed step is recorded with its retry, shows in failed_documents, and DELETE resets it",
  opts,
  async () => {
    const u = await createUser();
    const doc = await uploaded(u.token, "fails.pdf", 23);
    // A retryable failure counts a retry and leaves the step current.
    const soft = await sendWebhook("internal", {
      documentId: doc,
      status: "failed",
      step: "parse",
      error: "parser busy",
      retryable: true,
    });
    assertEquals(soft.status, 200, JSON.stringify(soft.body));
    let row = await documentRow(doc);
    assertEquals([row.status, row.retry_count], ["processing", 1]);
    // A final one fails the document.
    const hard = await sendWebhook("internal", {
      documentId: doc,
      status: "failed",
      step: "parse",
      error: "unreadable",
    });
    assertEquals(hard.status, 200, JSON.stringify(hard.body));
    row = await documentRow(doc);
    assertEquals([row.status, row.error_code], ["failed", "parse_failed"]);
    const failed = await asUser(u.token, "failed_documents?select=id,error_code,retry_count");
    assertEquals(failed, [{ id: doc, error_code: "parse_failed", retry_count: 1 }]);

    // Reset for retry: back to processing, the parse job enqueued again, which finishes it.
    const reset = await callFunction("progress-tracker", {
      method: "DELETE",
      token: u.token,
      body: { documentId: doc },
    });
    assertEquals(reset.status, 200, JSON.stringify(reset.body));
    row = await documentRow(doc);
    assertEquals([row.status, row.processing_step, row.error_code, row.retry_count], ["processing", "parse", null, 2]);
    await runUploadJobs();
    await runUploadJobs();
    assertEquals((await documentRow(doc)).status, "completed");
    const done = await callFunction("progress-tracker", {
      method: "DELETE",
      token: u.token,
      body: { documentId: doc },
    });
    assertEquals([done.status, done.body.error.code], [409, "document_completed"]);
  },
);

Deno.test("with Realtime off the client polls progress-tracker", opts, async () => {
  const u = await createUser();
  const doc = await uploaded(u.token, "polled.pdf", 24);
  const c = client(u.token, { enableRealtime: false, pollIntervalMs: 100 });
  const seen: { status: string; processingStep: string }[] = [];
  const stop = c.subscribeToProgress(u.id, (p) => seen.push(p), [doc]);
  try {
    await runUploadJobs();
    await runUploadJobs();
    const deadline = Date.now() + 10_000;
    while (!seen.some((p) => p.status === "completed") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(seen.some((p) => p.status === "completed"), `polled: ${JSON.stringify(seen)}`);
    assertEquals(c.supabase.getChannels().length, 0, "no Realtime channel was opened");
  } finally {
    stop();
  }
});
