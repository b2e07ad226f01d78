// Bucket rules enforced over the stack's S3 endpoint ({SUPABASE_URL}/storage/v1/s3),
// as Supabase Storage enforces them: `[storage.buckets.uploads]` in
// supabase/config.toml takes text/plain, image/*, application/pdf and
// application/octet-stream up to 50 MiB. Each refusal is checked for its
// status, its S3 error code, and that nothing was stored (GET/list afterwards).
import { assert, assertEquals } from "../../support/assert.ts";
import { need } from "../../support/stack.ts";
import { type Credentials, presignUrl, signHeaders, UNSIGNED_PAYLOAD } from "../../../scripts/local/sigv4.ts";

const BUCKET = "uploads";
const LIMIT = 50 * 1024 * 1024;

function storage() {
  const credentials: Credentials = {
    accessKeyId: need("S3_ACCESS_KEY_ID"),
    secretAccessKey: need("S3_SECRET_ACCESS_KEY"),
  };
  return { endpoint: need("S3_ENDPOINT"), credentials, region: need("S3_REGION") };
}

async function presign(method: string, key: string, headers: Record<string, string> = {}): Promise<string> {
  const s = storage();
  return await presignUrl({
    method,
    url: `${s.endpoint}/${BUCKET}/${key}`,
    credentials: s.credentials,
    region: s.region,
    expiresSecs: 300,
    headers,
  });
}

/** A header-signed request (UNSIGNED-PAYLOAD) to `path` under the endpoint. */
async function signed(method: string, path: string, headers: Record<string, string> = {}) {
  const s = storage();
  const url = `${s.endpoint}${path}`;
  const h = new Headers(headers);
  await signHeaders({
    method,
    url,
    headers: h,
    payloadHash: UNSIGNED_PAYLOAD,
    credentials: s.credentials,
    region: s.region,
  });
  return { url, headers: h };
}

function errorCode(xml: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(xml)?.[1];
}

/** The keys stored under `prefix` in the bucket (ListObjectsV2). */
async function keysUnder(prefix: string): Promise<string[]> {
  const { url, headers } = await signed("GET", `/${BUCKET}?list-type=2&prefix=${encodeURIComponent(prefix)}`);
  const r = await fetch(url, { headers });
  const xml = await r.text();
  assertEquals(r.status, 200, xml);
  return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
}

Deno.test("a presigned PUT of text/html into uploads is refused with 415 InvalidMimeType and not stored", async () => {
  const dir = crypto.randomUUID();
  const url = await presign("PUT", `${dir}/page.html`, { "content-type": "text/html" });
  const r = await fetch(url, { method: "PUT", headers: { "content-type": "text/html" }, body: "<script>x</script>" });
  const text = await r.text();
  assertEquals([r.status, errorCode(text)], [415, "InvalidMimeType"], text);
  const get = await fetch(await presign("GET", `${dir}/page.html`));
  assertEquals(get.status, 404);
  await get.body?.cancel();
  assertEquals(await keysUnder(`${dir}/`), []);
  // Control: an allowed type in the same place is stored.
  const ok = await fetch(await presign("PUT", `${dir}/note.txt`, { "content-type": "text/plain" }), {
    method: "PUT",
    headers: { "content-type": "text/plain" },
    body: "fine",
  });
  assertEquals(ok.status, 200, await ok.clone().text());
  await ok.body?.cancel();
  assertEquals(await keysUnder(`${dir}/`), [`${dir}/note.txt`]);
});

/** Sends a request's head over a raw socket (no body follows) and reads the answer, or times out. */
async function headOnly(method: string, url: string, headers: Headers, timeoutMs = 10_000): Promise<string> {
  const u = new URL(url);
  const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const lines = [...headers].map(([k, v]) => `${k}: ${v}\r\n`).join("");
    await conn.write(
      new TextEncoder().encode(`${method} ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\n${lines}\r\n`),
    );
    let text = "";
    const buf = new Uint8Array(8192);
    // The answer must come while the client is still "sending": the connection stays open.
    while (!text.includes("</Error>")) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

Deno.test("a PUT declaring 1 TiB (or 50 MiB + 1) with UNSIGNED-PAYLOAD is refused at once with 413 EntityTooLarge", async () => {
  const dir = crypto.randomUUID();
  for (const size of [2 ** 40, LIMIT + 1]) {
    const { url, headers } = await signed("PUT", `/${BUCKET}/${dir}/big-${size}.bin`, {
      "content-type": "application/octet-stream",
    });
    headers.set("content-length", String(size));
    const started = performance.now();
    const text = await headOnly("PUT", url, headers);
    assert(
      text.startsWith("HTTP/1.1 413"),
      `declared ${size}: ${text.slice(0, 300) || "no answer before the timeout"}`,
    );
    assertEquals(errorCode(text), "EntityTooLarge");
    assert(text.includes(`<MaxSizeAllowed>${LIMIT}</MaxSizeAllowed>`), text);
    assert(performance.now() - started < 10_000);
  }
  assertEquals(await keysUnder(`${dir}/`), []);
});

Deno.test("a key with a 304-byte segment, or over 1024 bytes, is 400 KeyTooLongError (not 500) and nothing is stored", async () => {
  const dir = crypto.randomUUID();
  for (const name of ["s".repeat(304), Array.from({ length: 5 }, () => "k".repeat(250)).join("/")]) {
    const url = await presign("PUT", `${dir}/${name}`, { "content-type": "text/plain" });
    const r = await fetch(url, { method: "PUT", headers: { "content-type": "text/plain" }, body: "x" });
    const text = await r.text();
    assertEquals([r.status, errorCode(text)], [400, "KeyTooLongError"], text);
  }
  assertEquals(await keysUnder(`${dir}/`), []);
});

Deno.test("multipart: text/html is refused at creation; parts summing past 50 MiB are refused at completion, nothing stored", async () => {
  const dir = crypto.randomUUID();
  const key = `${dir}/big.bin`;
  const html = await signed("POST", `/${BUCKET}/${dir}/page.html?uploads`, { "content-type": "text/html" });
  const refused = await fetch(html.url, { method: "POST", headers: html.headers });
  const refusedText = await refused.text();
  assertEquals([refused.status, errorCode(refusedText)], [415, "InvalidMimeType"], refusedText);

  const create = await signed("POST", `/${BUCKET}/${key}?uploads`, { "content-type": "application/octet-stream" });
  const created = await fetch(create.url, { method: "POST", headers: create.headers });
  const createdText = await created.text();
  assertEquals(created.status, 200, createdText);
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(createdText)![1];
  const q = (extra: string) => `?${extra}uploadId=${encodeURIComponent(uploadId)}`;

  // One part over the limit on its own is refused before it is read.
  const huge = await signed("PUT", `/${BUCKET}/${key}${q("partNumber=3&")}`);
  huge.headers.set("content-length", String(LIMIT + 1));
  assertEquals(errorCode(await headOnly("PUT", huge.url, huge.headers)), "EntityTooLarge");

  const part = new Uint8Array(26 * 1024 * 1024);
  const etags: string[] = [];
  for (const n of [1, 2]) {
    const p = await signed("PUT", `/${BUCKET}/${key}${q(`partNumber=${n}&`)}`);
    const r = await fetch(p.url, { method: "PUT", headers: p.headers, body: part });
    assertEquals(r.status, 200, await r.clone().text());
    await r.body?.cancel();
    etags.push(r.headers.get("etag")!);
  }
  const body = `<CompleteMultipartUpload>${
    etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join("")
  }</CompleteMultipartUpload>`;
  const complete = await signed("POST", `/${BUCKET}/${key}${q("")}`);
  const done = await fetch(complete.url, { method: "POST", headers: complete.headers, body });
  const doneText = await done.text();
  assertEquals([done.status, errorCode(doneText)], [413, "EntityTooLarge"], doneText);
  assert(doneText.includes(`<ProposedSize>${2 * part.length}</ProposedSize>`), doneText);
  assertEquals(await keysUnder(`${dir}/`), []);

  const abort = await signed("DELETE", `/${BUCKET}/${key}${q("")}`);
  const aborted = await fetch(abort.url, { method: "DELETE", headers: abort.headers });
  await aborted.body?.cancel();
});
