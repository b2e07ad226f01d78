// The local S3 endpoint verifies x-amz-checksum-sha256 as S3 does, for
// PutObject and for UploadPart (s3s-fs checks only the former): a body that
// is not the declared hash is 400 BadDigest and nothing is stored.
import { assert, assertEquals } from "../support/assert.ts";
import { need } from "../support/stack.ts";
import { checkSha256 } from "../../scripts/local/s3_proxy.ts";
import { S3Failure, signHeaders, UNSIGNED_PAYLOAD } from "../../scripts/local/sigv4.ts";
import { sha256B64 } from "./_lib.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const enc = new TextEncoder();

Deno.test("checkSha256 accepts the body's hash and names S3's errors otherwise", async () => {
  const body = enc.encode("hello world");
  await checkSha256(body, await sha256B64(body));
  const wrong = await checkSha256(body, await sha256B64(enc.encode("hello worlD"))).catch((e) => e);
  assert(wrong instanceof S3Failure);
  assertEquals([wrong.status, wrong.code], [400, "BadDigest"]);
  for (const bad of ["", "abc", "!!!!", btoa("short")]) {
    const e = await checkSha256(body, bad).catch((e) => e);
    assertEquals([e.status, e.code], [400, "InvalidRequest"], bad);
  }
});

/** One header-signed request to the stack's S3 endpoint. */
async function s3(
  method: string,
  path: string,
  body: Uint8Array<ArrayBuffer> | null,
  extra: Record<string, string> = {},
) {
  const url = `${need("S3_ENDPOINT")}/${path}`;
  const headers = new Headers(extra);
  await signHeaders({
    method,
    url,
    headers,
    payloadHash: UNSIGNED_PAYLOAD,
    credentials: { accessKeyId: need("S3_ACCESS_KEY_ID"), secretAccessKey: need("S3_SECRET_ACCESS_KEY") },
    region: need("S3_REGION"),
  });
  return await fetch(url, { method, headers, body });
}

Deno.test("an UploadPart whose bytes are not its x-amz-checksum-sha256 is BadDigest and not stored", opts, async () => {
  const key = `documents/checksum-${crypto.randomUUID()}/f.txt`;
  const created = await s3("POST", `${key}?uploads`, null, { "content-type": "text/plain" });
  const xml = await created.text();
  assertEquals(created.status, 200, xml);
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(xml)![1];
  const part = enc.encode("part bytes");
  const q = `partNumber=1&uploadId=${encodeURIComponent(uploadId)}`;
  const bad = await s3("PUT", `${key}?${q}`, part, { "x-amz-checksum-sha256": await sha256B64(enc.encode("other")) });
  assertEquals(bad.status, 400);
  assert((await bad.text()).includes("<Code>BadDigest</Code>"));
  const listed = await s3("GET", `${key}?uploadId=${encodeURIComponent(uploadId)}`, null);
  assert(!(await listed.text()).includes("<PartNumber>1</PartNumber>"), "the refused part was stored");
  const good = await s3("PUT", `${key}?${q}`, part, { "x-amz-checksum-sha256": await sha256B64(part) });
  assertEquals(good.status, 200, await good.text());
  assertEquals(good.headers.get("x-amz-checksum-sha256"), await sha256B64(part));
  await (await s3("DELETE", `${key}?uploadId=${encodeURIComponent(uploadId)}`, null)).body?.cancel();
});
