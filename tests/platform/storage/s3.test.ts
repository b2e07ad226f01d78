// Storage through the running stack's gateway at {SUPABASE_URL}/storage/v1/s3,
// as clients use Supabase Storage's S3 protocol: presigned URLs used with
// plain fetch, no credentials. The gateway checks each signature and s3s-fs
// checks the gateway's re-signed request, so a 200 here means both agreed.
import { assert, assertEquals } from "../../support/assert.ts";
import { need } from "../../support/stack.ts";
import { type Credentials, presignUrl } from "../../../scripts/local/sigv4.ts";

// Declared in supabase/config.toml ([storage.buckets.uploads]); scripts/serve creates it.
const BUCKET = "uploads";

function storage() {
  const endpoint = need("S3_ENDPOINT");
  const credentials: Credentials = {
    accessKeyId: need("S3_ACCESS_KEY_ID"),
    secretAccessKey: need("S3_SECRET_ACCESS_KEY"),
  };
  return { endpoint, credentials, region: need("S3_REGION") };
}

async function presign(
  method: "GET" | "PUT",
  key: string,
  opts: { headers?: Record<string, string>; now?: number; expiresSecs?: number; secret?: string } = {},
): Promise<string> {
  const s = storage();
  return await presignUrl({
    method,
    url: `${s.endpoint}/${BUCKET}/${key}`,
    credentials: opts.secret ? { ...s.credentials, secretAccessKey: opts.secret } : s.credentials,
    region: s.region,
    expiresSecs: opts.expiresSecs ?? 300,
    now: opts.now,
    headers: opts.headers,
  });
}

/** The S3 error code in an XML error body. */
function errorCode(xml: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(xml)?.[1];
}

async function upload(key: string, body: Uint8Array<ArrayBuffer>, contentType = "text/plain"): Promise<Response> {
  const url = await presign("PUT", key, { headers: { "content-type": contentType } });
  return await fetch(url, { method: "PUT", headers: { "content-type": contentType }, body });
}

Deno.test("the stack's S3 endpoint is the gateway's /storage/v1/s3, as on Supabase", () => {
  assertEquals(need("S3_ENDPOINT"), `${need("SUPABASE_URL")}/storage/v1/s3`);
});

Deno.test("a presigned PUT through the gateway stores the bytes and a presigned GET returns them exactly", async () => {
  const key = `${crypto.randomUUID()}/hello.txt`;
  // Multi-byte text and a CRLF: any re-encoding on the way would change the bytes.
  const body = new TextEncoder().encode("hello, storage — ✓ ünïcode\r\nsecond line\n");
  const put = await upload(key, body);
  assertEquals(put.status, 200, await put.clone().text());
  assert(put.headers.get("etag"), "PutObject answers with an ETag");
  await put.body?.cancel();

  const get = await fetch(await presign("GET", key));
  assertEquals(get.status, 200);
  assertEquals(get.headers.get("content-type"), "text/plain");
  assertEquals(new Uint8Array(await get.arrayBuffer()), body);
});

Deno.test("tampered, other-key, wrong-secret and expired presigned URLs are refused with 403", async () => {
  const key = `${crypto.randomUUID()}/hello.txt`;
  const other = `${crypto.randomUUID()}/hello.txt`;
  for (const k of [key, other]) {
    const r = await upload(k, new TextEncoder().encode(`content of ${k}`));
    assertEquals(r.status, 200);
    await r.body?.cancel();
  }
  const good = await presign("GET", key);
  // Control: the untouched URL works, so each 403 below is about the signature.
  const control = await fetch(good);
  assertEquals(control.status, 200);
  await control.body?.cancel();

  const refusals: [string, string, string][] = [
    ["longer expiry", good.replace("X-Amz-Expires=300", "X-Amz-Expires=600"), "SignatureDoesNotMatch"],
    ["another key", good.replace(key, other), "SignatureDoesNotMatch"],
    ["wrong secret", await presign("GET", key, { secret: "not-the-secret" }), "SignatureDoesNotMatch"],
    [
      "expired",
      await presign("GET", key, { now: Date.now() - 2 * 3600_000, expiresSecs: 60 }),
      "AccessDenied",
    ],
    ["no signature", good.slice(0, good.indexOf("?")), "AccessDenied"],
  ];
  for (const [what, url, code] of refusals) {
    assert(url !== good, what);
    const r = await fetch(url);
    const text = await r.text();
    assertEquals(r.status, 403, `${what}: ${text}`);
    assertEquals(errorCode(text), code, `${what}: ${text}`);
    assert(!text.includes(`content of ${other}`), `${what}: leaked the other object`);
  }
});

Deno.test("a presigned PUT refuses a body declared with another content type", async () => {
  const key = `${crypto.randomUUID()}/typed.txt`;
  const url = await presign("PUT", key, { headers: { "content-type": "text/plain" } });
  const r = await fetch(url, { method: "PUT", headers: { "content-type": "text/html" }, body: "<p>hi</p>" });
  const text = await r.text();
  assertEquals([r.status, errorCode(text)], [403, "SignatureDoesNotMatch"], text);
  const get = await fetch(await presign("GET", key));
  assertEquals(get.status, 404, "nothing was stored");
  await get.body?.cancel();
});
