// Bad input to the upload pipeline: each is a 4xx in the one envelope and
// leaves the pipeline's tables exactly as they were (documents, sessions,
// parts, progress rows, webhook receipts, upload jobs).
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, type FunctionAnswer, withDb } from "../support/stack.ts";
import { client, MiB, pdfBytes, pdfFile, sendWebhook, sha256B64, sha256Hex, snapshot, webhookHeaders } from "./_lib.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Runs `act`, expects a 4xx envelope with `code`, and an unchanged database. */
async function refusedWithoutChange(what: string, code: string, act: () => Promise<FunctionAnswer>) {
  await withDb(async (sql) => {
    const before = await snapshot(sql);
    const r = await act();
    assert(r.status >= 400 && r.status < 500, `${what}: status ${r.status} ${JSON.stringify(r.body)}`);
    assertEnvelope(r.body, code);
    assertEquals(typeof r.body.request_id, "string", `${what}: request_id`);
    assertEquals(await snapshot(sql), before, `${what}: the database changed`);
  }, 1);
}

const init = (token: string, body: unknown) => callFunction("upload-handler", { token, body });

Deno.test("init refusals: 51 MB, an .exe, a mismatched extension, a bad hash, missing part hashes", opts, async () => {
  const u = await createUser();
  const hash = await sha256Hex("x");
  await refusedWithoutChange(
    "51 MB declared",
    "file_too_large",
    () => init(u.token, { filename: "big.pdf", contentType: "application/pdf", fileSize: 51 * MiB, sha256: hash }),
  );
  await refusedWithoutChange(
    "an .exe",
    "unsupported_file_extension",
    () => init(u.token, { filename: "setup.exe", contentType: "application/x-msdownload", fileSize: 10, sha256: hash }),
  );
  await refusedWithoutChange(
    "an .exe claiming PDF",
    "unsupported_file_extension",
    () => init(u.token, { filename: "setup.exe", contentType: "application/pdf", fileSize: 10, sha256: hash }),
  );
  await refusedWithoutChange(
    "a .txt claiming PDF",
    "extension_type_mismatch",
    () => init(u.token, { filename: "a.txt", contentType: "application/pdf", fileSize: 10, sha256: hash }),
  );
  await refusedWithoutChange(
    "a hash that is not a SHA-256",
    "validation_failed",
    () => init(u.token, { filename: "a.pdf", contentType: "application/pdf", fileSize: 10, sha256: "abc" }),
  );
  await refusedWithoutChange(
    "a multipart upload without part hashes",
    "validation_failed",
    () => init(u.token, { filename: "a.pdf", contentType: "application/pdf", fileSize: 12 * MiB, sha256: hash }),
  );
  await refusedWithoutChange(
    "no token",
    "missing_token",
    () => callFunction("upload-handler", { body: { filename: "a.pdf" } }),
  );
  await refusedWithoutChange(
    "a NUL in the file name",
    "validation_failed",
    () => init(u.token, { filename: "a\u0000.pdf", contentType: "application/pdf", fileSize: 10, sha256: hash }),
  );
});

Deno.test(
  "completion refusals: bytes that are not the declared hash, a renamed binary, nothing uploaded",
  opts,
  async () => {
    const u = await createUser();
    // A renamed binary: an executable's bytes under report.pdf (hash and size honest).
    const exe = new Uint8Array(70 * 1024);
    exe.set([0x4d, 0x5a, 0x90, 0x00], 0);
    const exeHash = await sha256Hex(exe);
    const r1 = await init(u.token, {
      filename: "report.pdf",
      contentType: "application/pdf",
      fileSize: exe.length,
      sha256: exeHash,
    });
    assertEquals(r1.status, 200, JSON.stringify(r1.body));
    const part = r1.body.data.parts[0];
    const put = await fetch(part.url, {
      method: "PUT",
      headers: { "content-type": "application/pdf", "x-amz-checksum-sha256": part.headers["x-amz-checksum-sha256"] },
      body: exe,
    });
    assertEquals(put.status, 200, await put.text());
    const doc = r1.body.data.documentId;
    await refusedWithoutChange(
      "a renamed binary",
      "content_type_mismatch",
      () =>
        callFunction("upload-handler", {
          method: "PUT",
          token: u.token,
          body: { documentId: doc, action: "complete" },
        }),
    );
    // Deleted: completing again finds nothing stored.
    await refusedWithoutChange(
      "the deleted binary",
      "upload_incomplete",
      () =>
        callFunction("upload-handler", {
          method: "PUT",
          token: u.token,
          body: { documentId: doc, action: "complete" },
        }),
    );

    // Multipart with honest part hashes but a claimed whole-file hash that is not the bytes'.
    const bytes = pdfBytes(11 * MiB, 7);
    const parts = [bytes.slice(0, 5 * MiB), bytes.slice(5 * MiB, 10 * MiB), bytes.slice(10 * MiB)];
    const r2 = await init(u.token, {
      filename: "claims.pdf",
      contentType: "application/pdf",
      fileSize: bytes.length,
      sha256: await sha256Hex("not these bytes"),
      partSha256: await Promise.all(parts.map((p) => sha256B64(p))),
    });
    assertEquals(r2.status, 200, JSON.stringify(r2.body));
    for (const [i, p] of r2.body.data.parts.entries()) {
      const res = await fetch(p.url, {
        method: "PUT",
        headers: { "x-amz-checksum-sha256": p.headers["x-amz-checksum-sha256"] },
        body: parts[i],
      });
      assertEquals(res.status, 200, await res.text());
      const rep = await callFunction("upload-handler", {
        method: "PUT",
        token: u.token,
        body: { documentId: r2.body.data.documentId, action: "part", partNumber: i + 1, etag: res.headers.get("etag") },
      });
      assertEquals(rep.status, 200, JSON.stringify(rep.body));
    }
    await refusedWithoutChange(
      "a hash that does not match the bytes",
      "hash_mismatch",
      () =>
        callFunction("upload-handler", {
          method: "PUT",
          token: u.token,
          body: { documentId: r2.body.data.documentId, action: "complete" },
        }),
    );
  },
);

Deno.test("a part whose bytes are not its declared SHA-256 is refused by the storage", opts, async () => {
  const u = await createUser();
  const file = pdfFile(11 * MiB, "parts.pdf", 9);
  const c = client(u.token);
  const r = await c.initializeUpload(file);
  const p = r.parts[1];
  const wrong = pdfBytes(p.size, 1234);
  const res = await fetch(p.url, {
    method: "PUT",
    headers: { "x-amz-checksum-sha256": p.headers["x-amz-checksum-sha256"] },
    body: wrong,
  });
  assertEquals(res.status, 400);
  assert((await res.text()).includes("<Code>BadDigest</Code>"));
  // A checksum other than the signed one does not even verify.
  const forged = await fetch(p.url, {
    method: "PUT",
    headers: { "x-amz-checksum-sha256": await sha256B64(wrong) },
    body: wrong,
  });
  assertEquals(forged.status, 403);
  await forged.body?.cancel();
});

Deno.test("part numbers out of range and another user's document are refused", opts, async () => {
  const [a, b] = [await createUser(), await createUser()];
  const c = client(a.token);
  const r = await c.initializeUpload(pdfFile(11 * MiB, "mine.pdf", 3));
  const part = (token: string, partNumber: unknown, documentId = r.documentId) =>
    callFunction("upload-handler", { method: "PUT", token, body: { documentId, action: "part", partNumber } });
  await refusedWithoutChange("part 0", "part_out_of_range", () => part(a.token, 0));
  await refusedWithoutChange("part 4 of 3", "part_out_of_range", () => part(a.token, 4));
  await refusedWithoutChange("part 10001", "part_out_of_range", () => part(a.token, 10_001));
  await refusedWithoutChange("part -1", "part_out_of_range", () => part(a.token, -1));
  await refusedWithoutChange("part 1.5", "validation_failed", () => part(a.token, 1.5));
  // B learns nothing: the same 404 as for a document that does not exist.
  await refusedWithoutChange("B reports a part of A's document", "document_not_found", () => part(b.token, 1));
  await refusedWithoutChange(
    "B completes A's document",
    "document_not_found",
    () =>
      callFunction("upload-handler", {
        method: "PUT",
        token: b.token,
        body: { documentId: r.documentId, action: "complete" },
      }),
  );
  await refusedWithoutChange(
    "B reads A's document",
    "document_not_found",
    () =>
      callFunction("upload-handler", {
        method: "GET",
        token: b.token,
        query: `documentId=${r.documentId}&resume=true`,
      }),
  );
  await refusedWithoutChange(
    "B reads A's progress",
    "document_not_found",
    () => callFunction("progress-tracker", { method: "GET", token: b.token, query: `documentId=${r.documentId}` }),
  );
  await refusedWithoutChange(
    "B resets A's progress",
    "document_not_found",
    () => callFunction("progress-tracker", { method: "DELETE", token: b.token, body: { documentId: r.documentId } }),
  );
  await refusedWithoutChange(
    "a user reports progress",
    "reporter_required",
    () =>
      callFunction("progress-tracker", {
        token: a.token,
        body: { documentId: r.documentId, stage: "upload", progress: 5 },
      }),
  );
  await refusedWithoutChange("a missing document", "document_not_found", () => part(a.token, 1, crypto.randomUUID()));
  // Over REST with B's token, A's rows do not exist.
  const rest = await fetch(`${Deno.env.get("SUPABASE_URL")}/rest/v1/documents?id=eq.${r.documentId}`, {
    headers: { apikey: Deno.env.get("SUPABASE_ANON_KEY")!, authorization: `Bearer ${b.token}` },
  });
  assertEquals(await rest.json(), []);
});

Deno.test(
  "webhooks: bad signature, old timestamp, unknown source; a replay is acknowledged without effect",
  opts,
  async () => {
    const u = await createUser();
    const c = client(u.token);
    const file = pdfFile(2048, "hook.pdf", 11);
    const r = await c.initializeUpload(file);
    await c.uploadFile(file, r);
    const doc = r.documentId;
    const body = { documentId: doc, status: "processing", step: "parse", progress: 10 };

    await refusedWithoutChange(
      "a bad signature",
      "signature_mismatch",
      () => sendWebhook("internal", body, { secret: "whsec_" + btoa("not the secret") }),
    );
    await refusedWithoutChange(
      "a timestamp ten minutes old",
      "signature_expired",
      () => sendWebhook("internal", body, { timestamp: Math.floor(Date.now() / 1000) - 600 }),
    );
    await refusedWithoutChange(
      "no signature",
      "signature_missing",
      () => callFunction("processing-webhook", { body: { source: "internal", ...body } }),
    );
    await refusedWithoutChange(
      "an unknown source",
      "validation_failed",
      () => callFunction("processing-webhook", { body: { source: "ftp", ...body } }),
    );
    await refusedWithoutChange(
      "a signature from another source's secret",
      "signature_mismatch",
      () => sendWebhook("storage", body, { secret: Deno.env.get("UPLOAD_WEBHOOK_SECRET_INTERNAL") }),
    );
    await refusedWithoutChange(
      "a disabled integration",
      "integration_disabled",
      () => sendWebhook("llamaparse", { documentId: doc, status: "completed" }),
    );
    await refusedWithoutChange(
      "a step that is not current",
      "step_not_current",
      () => sendWebhook("internal", { documentId: doc, status: "completed", step: "embed" }),
    );

    // The first delivery takes effect once; the same id and body again is acknowledged, nothing more.
    const id = `msg_${crypto.randomUUID()}`;
    const text = JSON.stringify({ source: "internal", ...body });
    const headers = await webhookHeaders("internal", text, { id });
    const first = await callFunction("processing-webhook", { body: text, headers });
    assertEquals(first.status, 200, JSON.stringify(first.body));
    assertEquals(first.body.data.duplicate, false);
    await withDb(async (sql) => {
      const before = await snapshot(sql);
      const again = await callFunction("processing-webhook", { body: text, headers });
      assertEquals(again.status, 200);
      assertEquals(again.body.data.duplicate, true);
      assertEquals(await snapshot(sql), before, "a replay changed the database");
    }, 1);
    // The same id with another body is a forgery or a sender bug: refused.
    const other = JSON.stringify({ source: "internal", ...body, progress: 90 });
    await refusedWithoutChange(
      "a reused webhook-id with another body",
      "webhook_id_reused",
      async () =>
        callFunction("processing-webhook", { body: other, headers: await webhookHeaders("internal", other, { id }) }),
    );
  },
);

Deno.test("no secret reaches a response or the logs", opts, async () => {
  const u = await createUser();
  const secrets = ["LLAMAPARSE", "STORAGE", "EMBEDDING", "INTERNAL"]
    .map((s) => Deno.env.get(`UPLOAD_WEBHOOK_SECRET_${s}`)!)
    .flatMap((s) => [s, s.replace(/^whsec_/, "")]);
  secrets.push(
    Deno.env.get("S3_SECRET_ACCESS_KEY")!,
    Deno.env.get("SUPABASE_SERVICE_ROLE_KEY")!,
    Deno.env.get("UPLOAD_LLAMA_PARSE_API_KEY")!,
  );
  const answers = [
    await init(u.token, {
      filename: "s.pdf",
      contentType: "application/pdf",
      fileSize: 12 * MiB,
      sha256: await sha256Hex("s"),
      partSha256: ["x"],
    }),
    await init(u.token, {
      filename: "s.pdf",
      contentType: "application/pdf",
      fileSize: 100,
      sha256: await sha256Hex("s"),
    }),
    await sendWebhook("internal", { documentId: crypto.randomUUID(), status: "completed", step: "parse" }),
    await sendWebhook("storage", { documentId: crypto.randomUUID(), status: "completed" }, {
      secret: "whsec_" + btoa("x"),
    }),
  ];
  const logs = await Deno.readTextFile(`${Deno.env.get("EDGEWORKS_STATE_DIR")}/logs/gateway.log`);
  for (const s of secrets) {
    for (const a of answers) assert(!JSON.stringify(a.body).includes(s), "a secret in a response");
    assert(!logs.includes(s), "a secret in the logs");
  }
});
