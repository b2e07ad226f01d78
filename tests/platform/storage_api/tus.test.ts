// Resumable uploads at /storage/v1/upload/resumable with the real client,
// tus-js-client, configured as Supabase's docs configure it (6 MB chunks,
// metadata bucketName / objectName / contentType / cacheControl).
import * as tus from "tus-js-client";
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../../support/assert.ts";
import { stack, type TestUser } from "../../support/stack.ts";
import {
  createUser,
  randomBytes,
  rowOf,
  s3Bytes,
  storedNames,
  userClient,
  withBucket,
  withOwnFolderPolicy,
} from "./support.ts";

const CHUNK = 6 * 1024 * 1024;
const endpoint = () => `${stack.url}/storage/v1/upload/resumable`;

function options(user: TestUser, bucket: string, objectName: string, contentType = "application/octet-stream") {
  return {
    endpoint: endpoint(),
    chunkSize: CHUNK,
    retryDelays: [] as number[],
    uploadDataDuringCreation: true,
    removeFingerprintOnSuccess: true,
    headers: { authorization: `Bearer ${user.token}`, "x-upsert": "true" },
    metadata: { bucketName: bucket, objectName, contentType, cacheControl: "3600" },
  };
}

/** Runs an upload to its end; resolves with the HTTP status of a refusal, or 0 on success. */
function run(data: Buffer, opts: tus.UploadOptions): Promise<number> {
  return new Promise((resolve) => {
    const upload = new tus.Upload(data, {
      ...opts,
      onError(e) {
        resolve((e as tus.DetailedError).originalResponse?.getStatus() ?? -1);
      },
      onSuccess() {
        resolve(0);
      },
    });
    upload.start();
  });
}

Deno.test("a 20 MB tus-js-client upload aborted halfway resumes from the server's offset and reads back byte-exact", async () => {
  const user = await createUser();
  await withBucket({ fileSizeLimit: "30MB", allowedMimeTypes: ["application/octet-stream"] }, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const data = randomBytes(20 * 1024 * 1024);
      const name = `${user.id}/big.bin`;

      // First attempt: stopped once more than 10 MB has gone out.
      const url = await new Promise<string>((resolve, reject) => {
        let stopped = false;
        const first: tus.Upload = new tus.Upload(Buffer.from(data), {
          ...options(user, bucket, name),
          onProgress(sent) {
            if (!stopped && sent > 10 * 1024 * 1024) {
              stopped = true;
              first.abort().then(() => resolve(first.url!), reject);
            }
          },
          onError: reject,
          onSuccess: () => reject(new Error("the upload finished before it was interrupted")),
        });
        first.start();
      });
      assert(url.startsWith(endpoint() + "/"), `upload URL ${url}`);
      assertEquals(await storedNames(bucket), [], "no object row before the upload completes");

      // What the server holds: whole chunks only, neither nothing nor everything.
      const head = await fetch(url, {
        method: "HEAD",
        headers: { authorization: `Bearer ${user.token}`, "tus-resumable": "1.0.0" },
      });
      assertEquals(head.status, 200);
      const offset = Number(head.headers.get("upload-offset"));
      assertEquals(head.headers.get("upload-length"), String(data.length));
      assert(offset > 0 && offset < data.length && offset % CHUNK === 0, `offset ${offset}`);

      // Second attempt from the same URL: it must continue at the offset, not start again.
      const sent: string[] = [];
      const status = await run(Buffer.from(data), {
        ...options(user, bucket, name),
        uploadUrl: url,
        onBeforeRequest(req) {
          sent.push(`${req.getMethod()} ${req.getHeader("Upload-Offset") ?? ""}`.trim());
        },
      });
      assertEquals(status, 0);
      assertEquals(sent[0], "HEAD");
      assertEquals(sent[1], `PATCH ${offset}`);
      assert(!sent.some((s) => s.startsWith("POST")), `no new upload was created: ${sent}`);

      const row = await rowOf(bucket, name);
      assertEquals(row?.owner, user.id);
      assertEquals(row?.metadata.size, data.length);
      assertEquals(row?.metadata.mimetype, "application/octet-stream");
      assertEquals(row?.metadata.cacheControl, "max-age=3600");
      const { data: blob, error } = await userClient(user).storage.from(bucket).download(name);
      assertEquals(error, null);
      const back = new Uint8Array(await blob!.arrayBuffer());
      assertEquals(back.length, data.length);
      assert(back.every((b, i) => b === data[i]), "the downloaded bytes are the uploaded bytes");
    });
  });
});

Deno.test("tus uploads are refused before any byte is stored: another user's folder 403, over the bucket limit 413, a disallowed type 415, an unknown bucket 404", async () => {
  const [alice, bob] = [await createUser(), await createUser()];
  await withBucket({ fileSizeLimit: 1024 * 1024, allowedMimeTypes: ["image/png"] }, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const small = Buffer.from(randomBytes(1000));
      // Control: the same upload into her own folder succeeds, so each refusal is about its one difference.
      assertEquals(await run(small, options(alice, bucket, `${alice.id}/ok.png`, "image/png")), 0);

      assertEquals(await run(small, options(alice, bucket, `${bob.id}/intrusion.png`, "image/png")), 403);
      assertEquals(
        await run(
          Buffer.from(randomBytes(1024 * 1024 + 1)),
          options(alice, bucket, `${alice.id}/big.png`, "image/png"),
        ),
        413,
      );
      assertEquals(await run(small, options(alice, bucket, `${alice.id}/page.html`, "text/html")), 415);
      assertEquals(await run(small, options(alice, "no-such-bucket-here", `${alice.id}/x.png`, "image/png")), 404);

      assertEquals(await storedNames(bucket), [`${alice.id}/ok.png`]);
      for (const key of [`${bob.id}/intrusion.png`, `${alice.id}/big.png`, `${alice.id}/page.html`]) {
        assertEquals(await s3Bytes(bucket, key), null, `${key} is not in S3`);
      }
    });
  });
});
