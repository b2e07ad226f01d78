// The stack's SigV4 verifier (scripts/local/sigv4.ts) against AWS's
// published Signature Version 4 test suite (the same vectors the Rust signer
// is pinned to), then S3's own rules: expiry, tampering, wrong keys, payload
// hashes, and the re-signed request the proxy sends upstream.
import { assert, assertEquals } from "../support/assert.ts";
import { s3Proxy } from "../../scripts/local/s3_proxy.ts";
import {
  canonicalUri,
  type Credentials,
  presignUrl,
  S3Failure,
  sha256Hex,
  signHeaders,
  UNSIGNED_PAYLOAD,
  type Verified,
  verifyRequest,
} from "../../scripts/local/sigv4.ts";

const SUITE = await Deno.readTextFile(
  new URL("../../crates/storage/tests/data/sigv4_suite.txt", import.meta.url),
);
const SUITE_KEYS: Credentials = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};
const SUITE_TIME = Date.UTC(2015, 7, 30, 12, 36, 0);
const SUITE_SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
const suiteOpts = (now = SUITE_TIME) => ({ credentials: SUITE_KEYS, region: "us-east-1", service: "service", now });

// Cases a fetch Request cannot carry unchanged, so no server built on one can verify them.
const NOT_REPRESENTABLE: Record<string, string> = {
  "get-slash-dot-slash-unnormalized": "the URL parser removes dot segments",
  "get-slash-pointless-dot-unnormalized": "the URL parser removes dot segments",
  "get-relative-unnormalized": "the URL parser removes dot segments",
  "get-relative-relative-unnormalized": "the URL parser removes dot segments",
  "get-header-key-duplicate": "Headers joins repeated names with ', ' (SigV4 uses ',')",
  "get-header-value-order": "Headers joins repeated names with ', ' (SigV4 uses ',')",
  "get-header-value-multiline": "folded header lines are not valid header values",
};

type Case = { name: string; sections: Map<string, string> };

function suiteCases(): Case[] {
  const cases: Case[] = [];
  let section: { name: string; text: string } | null = null;
  const flush = () => {
    // A section's text ends one newline before the next marker.
    if (section) cases[cases.length - 1].sections.set(section.name, section.text.replace(/\n$/, ""));
    section = null;
  };
  for (const line of SUITE.split(/(?<=\n)/)) {
    if (line.startsWith("=== ")) {
      flush();
      cases.push({ name: line.slice(4).trim(), sections: new Map() });
    } else if (line.startsWith("--- ")) {
      flush();
      section = { name: line.slice(4).trim(), text: "" };
    } else if (section) {
      (section as { text: string }).text += line;
    }
  }
  flush();
  return cases;
}

function get(c: Case, name: string): string {
  const v = c.sections.get(name);
  if (v === undefined) throw new Error(`${c.name}: no section ${name}`);
  return v;
}

/** The case's raw request: method, path (with its query), headers, body. */
function rawRequest(c: Case) {
  const text = get(c, "request");
  const split = text.indexOf("\n\n");
  const head = split < 0 ? text : text.slice(0, split);
  const body = split < 0 ? "" : text.slice(split + 2);
  const [first, ...lines] = head.split("\n").filter((l) => l !== "");
  const method = first.slice(0, first.indexOf(" "));
  const target = first.slice(method.length + 1, first.lastIndexOf(" HTTP/"));
  const headers: [string, string][] = lines.map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1)];
  });
  const host = headers.find(([k]) => k.toLowerCase() === "host")![1];
  return { method, target, headers, body, host };
}

function request(method: string, url: string, headers: [string, string][], body: string): Request {
  return new Request(url, { method, headers, body: method === "GET" || method === "HEAD" ? undefined : body });
}

/** The case as a header-signed request: the published signature in an Authorization header. */
function headerSigned(c: Case): Request {
  const r = rawRequest(c);
  const canonical = get(c, "header-canonical-request").split("\n");
  const signedHeaders = canonical[canonical.length - 2];
  const headers = [...r.headers];
  const present = new Set(headers.map(([k]) => k.toLowerCase()));
  // The signer added x-amz-date (and the session token, the body hash): take them from the canonical request.
  for (const line of canonical.slice(3, canonical.indexOf("", 3))) {
    const name = line.slice(0, line.indexOf(":"));
    if (!present.has(name)) headers.push([name, line.slice(name.length + 1)]);
  }
  headers.push([
    "Authorization",
    `AWS4-HMAC-SHA256 Credential=${SUITE_SCOPE}, SignedHeaders=${signedHeaders}, Signature=${
      get(c, "header-signature")
    }`,
  ]);
  return request(r.method, `http://${r.host}${r.target}`, headers, r.body);
}

/** The case as a presigned URL: the published canonical query plus the published signature. */
function querySigned(c: Case, edit: (url: string) => string = (u) => u): Request {
  const r = rawRequest(c);
  const query = get(c, "query-canonical-request").split("\n")[2];
  const path = r.target.split("?")[0];
  const url = edit(`http://${r.host}${path}?${query}&X-Amz-Signature=${get(c, "query-signature")}`);
  return request(r.method, url, r.headers, r.body);
}

async function refusal(p: Promise<unknown>): Promise<S3Failure> {
  try {
    await p;
  } catch (e) {
    if (e instanceof S3Failure) return e;
    throw e;
  }
  throw new Error("the request was accepted");
}

const vanilla = () => suiteCases().find((c) => c.name === "get-vanilla")!;

Deno.test("every representable AWS SigV4 suite case verifies, header-signed and presigned", async () => {
  let checked = 0;
  for (const c of suiteCases()) {
    if (c.name in NOT_REPRESENTABLE) continue;
    for (const [mode, req] of [["header", headerSigned(c)], ["query", querySigned(c)]] as const) {
      try {
        const v = await verifyRequest(req, suiteOpts());
        assertEquals(v.mode, mode);
      } catch (e) {
        throw new Error(`${c.name} (${mode}): ${(e as Error).message}`);
      }
      checked++;
    }
  }
  assert(checked >= 40, `only ${checked} verifications ran`);
});

Deno.test("get-vanilla's published signature verifies in both modes and names no presigning parameter upstream", async () => {
  const h = await verifyRequest(headerSigned(vanilla()), suiteOpts());
  const q = await verifyRequest(querySigned(vanilla()), suiteOpts());
  assertEquals([h.mode, q.mode], ["header", "query"]);
  assertEquals(q.query, []);
});

Deno.test("a presigned URL with any query parameter changed or added is refused with SignatureDoesNotMatch", async () => {
  for (
    const edit of [
      (u: string) => u.replace("X-Amz-Expires=3600", "X-Amz-Expires=3601"),
      (u: string) => u.replace("?", "?extra=1&"),
      (u: string) => u.replace("http://example.amazonaws.com/", "http://example.amazonaws.com/other"),
    ]
  ) {
    const f = await refusal(verifyRequest(querySigned(vanilla(), edit), suiteOpts()));
    assertEquals([f.status, f.code], [403, "SignatureDoesNotMatch"]);
  }
});

Deno.test("a signature made with another secret, or for another access key, is refused", async () => {
  const wrongSecret = { ...suiteOpts(), credentials: { ...SUITE_KEYS, secretAccessKey: "not-the-secret" } };
  for (const req of [headerSigned(vanilla()), querySigned(vanilla())]) {
    const f = await refusal(verifyRequest(req, wrongSecret));
    assertEquals([f.status, f.code], [403, "SignatureDoesNotMatch"]);
  }
  const otherKey = { ...suiteOpts(), credentials: { ...SUITE_KEYS, accessKeyId: "AKIDOTHER" } };
  const f = await refusal(verifyRequest(querySigned(vanilla()), otherKey));
  assertEquals([f.status, f.code], [403, "InvalidAccessKeyId"]);
});

Deno.test("a presigned URL is valid through X-Amz-Date + X-Amz-Expires and expired one second later", async () => {
  await verifyRequest(querySigned(vanilla()), suiteOpts(SUITE_TIME + 3600_000));
  const f = await refusal(verifyRequest(querySigned(vanilla()), suiteOpts(SUITE_TIME + 3601_000)));
  assertEquals([f.status, f.code, f.message], [403, "AccessDenied", "Request has expired"]);
});

Deno.test("a presigned URL claiming more than 7 days is refused before its signature is checked", async () => {
  const req = querySigned(vanilla(), (u) => u.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801"));
  const f = await refusal(verifyRequest(req, suiteOpts()));
  assertEquals([f.status, f.code], [400, "AuthorizationQueryParametersError"]);
});

Deno.test("a header-signed request more than 15 minutes from the clock is refused as skewed", async () => {
  const f = await refusal(verifyRequest(headerSigned(vanilla()), suiteOpts(SUITE_TIME + 16 * 60_000)));
  assertEquals([f.status, f.code], [403, "RequestTimeTooSkewed"]);
});

Deno.test("an unsigned request is refused with AccessDenied", async () => {
  const f = await refusal(verifyRequest(new Request("http://example.amazonaws.com/b/k"), suiteOpts()));
  assertEquals([f.status, f.code], [403, "AccessDenied"]);
});

// --- S3 rules, with our own signer (its output checked by the verifier above and by s3s-fs end to end) ---

const KEYS: Credentials = { accessKeyId: "EWLOCALTEST", secretAccessKey: "local-test-secret" };
const S3 = { credentials: KEYS, region: "us-east-1" };
const OBJECT = "http://127.0.0.1:54321/storage/v1/s3/uploads/u1/a%20b.txt";

async function headerSignedPut(body: string, payloadHash: string, extra: Record<string, string> = {}) {
  const headers = new Headers(extra);
  await signHeaders({ method: "PUT", url: OBJECT, headers, payloadHash, ...S3 });
  return new Request(OBJECT, { method: "PUT", headers, body });
}

Deno.test("a header-signed S3 upload is accepted with UNSIGNED-PAYLOAD or the body's SHA-256", async () => {
  const unsigned = await verifyRequest(await headerSignedPut("hello", UNSIGNED_PAYLOAD), S3);
  assertEquals([unsigned.payloadHash, unsigned.body], [UNSIGNED_PAYLOAD, null]);
  const hash = await sha256Hex("hello");
  const hashed: Verified = await verifyRequest(await headerSignedPut("hello", hash), S3);
  assertEquals(new TextDecoder().decode(hashed.body!), "hello");
});

Deno.test("a body that does not match its signed SHA-256 is refused with XAmzContentSHA256Mismatch", async () => {
  const f = await refusal(verifyRequest(await headerSignedPut("hellO", await sha256Hex("hello")), S3));
  assertEquals([f.status, f.code], [400, "XAmzContentSHA256Mismatch"]);
});

Deno.test("aws-chunked streaming payloads are refused with 501 NotImplemented", async () => {
  const req = await headerSignedPut("5;chunk-signature=x\r\nhello\r\n", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
  const f = await refusal(verifyRequest(req, S3));
  assertEquals([f.status, f.code], [501, "NotImplemented"]);
});

Deno.test("a header-signed S3 request without x-amz-content-sha256 is refused", async () => {
  const req = await headerSignedPut("hello", UNSIGNED_PAYLOAD);
  const headers = new Headers(req.headers);
  headers.delete("x-amz-content-sha256");
  const f = await refusal(verifyRequest(new Request(OBJECT, { method: "PUT", headers, body: "hello" }), S3));
  assertEquals([f.status, f.code], [400, "InvalidRequest"]);
});

Deno.test("an x-amz-* header nobody signed is refused", async () => {
  const url = await presignUrl({ method: "GET", url: OBJECT, expiresSecs: 60, ...S3 });
  const f = await refusal(verifyRequest(new Request(url, { headers: { "x-amz-copy-source": "/other/key" } }), S3));
  assertEquals([f.status, f.code], [403, "AccessDenied"]);
});

Deno.test("a presigned PUT binds its signed content-type and content-length", async () => {
  const url = await presignUrl({
    method: "PUT",
    url: OBJECT,
    expiresSecs: 60,
    headers: { "content-type": "text/plain", "content-length": "5" },
    ...S3,
  });
  const put = (type: string, body: string) =>
    new Request(url, { method: "PUT", headers: { "content-type": type, "content-length": `${body.length}` }, body });
  assertEquals((await verifyRequest(put("text/plain", "hello"), S3)).mode, "query");
  for (const req of [put("text/html", "hello"), put("text/plain", "hello!")]) {
    assertEquals((await refusal(verifyRequest(req, S3))).code, "SignatureDoesNotMatch");
  }
});

Deno.test("paths are canonicalised by encoding each decoded segment exactly once", () => {
  assertEquals(canonicalUri("/storage/v1/s3/b/a%20b/%E1%88%B4(1)+x"), "/storage/v1/s3/b/a%20b/%E1%88%B4%281%29%2Bx");
  assertEquals(canonicalUri("/b/already%2520encoded"), "/b/already%2520encoded");
  assertEquals(canonicalUri("/b/x%2Fy"), "/b/x%2Fy");
});

// --- the proxy: what reaches the upstream ---

Deno.test("the proxy re-signs for the upstream without the prefix or presigning parameters and streams the body", async () => {
  const seen: { path: string; query: string; body: string; verified: Verified }[] = [];
  const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    try {
      // The upstream checks our re-signed request with the same rules a real S3 server applies.
      const verified = await verifyRequest(req, S3);
      const u = new URL(req.url);
      const body = verified.body ? new TextDecoder().decode(verified.body) : await req.text();
      seen.push({ path: u.pathname, query: u.search, body, verified });
      return new Response("stored", { headers: { etag: '"abc"' } });
    } catch (e) {
      return new Response((e as Error).message, { status: 599 });
    }
  });
  try {
    const handler = s3Proxy({
      upstream: `http://127.0.0.1:${upstream.addr.port}/`,
      region: "us-east-1",
      access_key_id: KEYS.accessKeyId,
      secret_access_key: KEYS.secretAccessKey,
    }, "/storage/v1/s3");

    const partUrl = await presignUrl({
      method: "PUT",
      url: `${OBJECT}?partNumber=2&uploadId=up%2B1`,
      expiresSecs: 60,
      ...S3,
    });
    const chunks = ["part ", "two ", "bytes"];
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (const s of chunks) c.enqueue(new TextEncoder().encode(s));
        c.close();
      },
    });
    const resp = await handler(
      new Request(partUrl, { method: "PUT", body: stream, headers: { "content-length": "14" } }),
    );
    assertEquals([resp.status, await resp.text(), resp.headers.get("etag")], [200, "stored", '"abc"']);
    assertEquals(seen[0].path, "/uploads/u1/a%20b.txt");
    assertEquals(seen[0].query, "?partNumber=2&uploadId=up%2B1");
    assertEquals(seen[0].body, "part two bytes");
    assertEquals(seen[0].verified.mode, "header");

    const tampered = await handler(new Request(partUrl.replace("partNumber=2", "partNumber=3"), { method: "PUT" }));
    assertEquals(tampered.status, 403);
    assertEquals(tampered.headers.get("content-type"), "application/xml");
    assert((await tampered.text()).includes("<Code>SignatureDoesNotMatch</Code>"));
    assertEquals(seen.length, 1);
  } finally {
    await upstream.shutdown();
  }
});

// --- bucket rules (size, type, key length) ------------------------------------

/**
 * An in-memory S3 behind the proxy: PUT/GET/HEAD/DELETE objects, and
 * multipart uploads (create, parts, complete concatenates in order). Enough
 * to see what reached storage and what did not.
 */
function memoryS3() {
  const objects = new Map<string, { body: Uint8Array; type: string | null }>();
  const uploads = new Map<string, Map<number, Uint8Array>>();
  let requests = 0;
  let nextId = 1;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    requests++;
    await verifyRequest(req, S3);
    const u = new URL(req.url);
    const key = decodeURIComponent(u.pathname);
    const q = u.searchParams;
    if (req.method === "POST" && q.has("uploads")) {
      const id = `up-${nextId++}`;
      uploads.set(id, new Map());
      return new Response(`<InitiateMultipartUploadResult><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`);
    }
    if (req.method === "PUT" && q.has("uploadId")) {
      uploads.get(q.get("uploadId")!)!.set(Number(q.get("partNumber")), new Uint8Array(await req.arrayBuffer()));
      return new Response(null, { headers: { etag: '"p"' } });
    }
    if (req.method === "POST" && q.has("uploadId")) {
      const parts = uploads.get(q.get("uploadId")!)!;
      const named = [...(await req.text()).matchAll(/<PartNumber>(\d+)<\/PartNumber>/g)].map((m) => Number(m[1]));
      const chunks = named.map((n) => parts.get(n)!);
      const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) body.set(c, at), at += c.length;
      objects.set(key, { body, type: null });
      return new Response("<CompleteMultipartUploadResult/>");
    }
    if (req.method === "PUT" && req.headers.has("x-amz-copy-source")) {
      const src = objects.get("/" + decodeURIComponent(req.headers.get("x-amz-copy-source")!).replace(/^\/+/, ""));
      if (!src) return new Response("<Error><Code>NoSuchKey</Code></Error>", { status: 404 });
      objects.set(key, { ...src });
      return new Response("<CopyObjectResult/>");
    }
    if (req.method === "PUT") {
      objects.set(key, { body: new Uint8Array(await req.arrayBuffer()), type: req.headers.get("content-type") });
      return new Response(null, { headers: { etag: '"o"' } });
    }
    if (req.method === "DELETE") {
      objects.delete(key);
      return new Response(null, { status: 204 });
    }
    const o = objects.get(key);
    if (!o) return new Response(null, { status: 404 });
    const headers = { "content-length": String(o.body.length), "content-type": o.type ?? "application/octet-stream" };
    return new Response(req.method === "HEAD" ? null : o.body as Uint8Array<ArrayBuffer>, { headers });
  });
  const proxy = s3Proxy({
    upstream: `http://127.0.0.1:${server.addr.port}`,
    region: "us-east-1",
    access_key_id: KEYS.accessKeyId,
    secret_access_key: KEYS.secretAccessKey,
    // 10 bytes in uploads; "open" is not listed, so it has the default (none).
    buckets: { uploads: { file_size_limit: 10, allowed_mime_types: ["text/plain", "image/*"] } },
    default_file_size_limit: null,
  }, "/storage/v1/s3");
  return { objects, uploads, proxy, requests: () => requests, close: () => server.shutdown() };
}

const BASE = "http://127.0.0.1:54321/storage/v1/s3";

/** A header-signed request through the proxy (UNSIGNED-PAYLOAD unless a hash is given). */
async function signed(
  method: string,
  path: string,
  opts: { body?: BodyInit | null; headers?: Record<string, string>; payloadHash?: string } = {},
): Promise<Request> {
  const url = `${BASE}${path}`;
  const headers = new Headers(opts.headers ?? {});
  await signHeaders({ method, url, headers, payloadHash: opts.payloadHash ?? UNSIGNED_PAYLOAD, ...S3 });
  return new Request(url, { method, headers, body: opts.body ?? null });
}

async function s3Error(resp: Response): Promise<[number, string | undefined]> {
  const text = await resp.text();
  return [resp.status, /<Code>([^<]*)<\/Code>/.exec(text)?.[1]];
}

Deno.test("a PUT of a type the bucket does not take is refused with 415 InvalidMimeType and not stored", async () => {
  const s3 = memoryS3();
  try {
    const html = await s3.proxy(
      await signed("PUT", "/uploads/x/page.html", { body: "<p>hi</p>", headers: { "content-type": "text/html" } }),
    );
    assertEquals(await s3Error(html), [415, "InvalidMimeType"]);
    // Parameters and case do not change the type; a matching wildcard is taken.
    const png = await s3.proxy(
      await signed("PUT", "/uploads/x/a.png", { body: "png", headers: { "content-type": "IMAGE/PNG; x=1" } }),
    );
    assertEquals(png.status, 200, await png.clone().text());
    await png.body?.cancel();
    const presigned = await presignUrl({
      method: "PUT",
      url: `${BASE}/uploads/x/p.html`,
      expiresSecs: 60,
      headers: { "content-type": "text/html" },
      ...S3,
    });
    const viaUrl = await s3.proxy(
      new Request(presigned, { method: "PUT", headers: { "content-type": "text/html" }, body: "<p>x</p>" }),
    );
    assertEquals(await s3Error(viaUrl), [415, "InvalidMimeType"]);
    assertEquals([...s3.objects.keys()], ["/uploads/x/a.png"]);
  } finally {
    await s3.close();
  }
});

Deno.test("a PUT declaring more than the bucket's limit is refused with 413 EntityTooLarge before its body is read", async () => {
  const s3 = memoryS3();
  try {
    let pulled = 0;
    // A body that never ends: answering at all proves nothing waited for it.
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(new Uint8Array(1024));
      },
    });
    const req = await signed("PUT", "/uploads/x/huge.txt", {
      body: endless,
      headers: { "content-type": "text/plain", "content-length": String(2 ** 40) },
    });
    const resp = await s3.proxy(req);
    const text = await resp.text();
    assertEquals(resp.status, 413, text);
    assert(text.includes("<Code>EntityTooLarge</Code>") && text.includes("<MaxSizeAllowed>10</MaxSizeAllowed>"), text);
    assert(text.includes(`<ProposedSize>${2 ** 40}</ProposedSize>`), text);
    assert(pulled <= 1, `the proxy read ${pulled} chunks of a refused body`);
    assertEquals(s3.requests(), 0, "nothing reached storage");
  } finally {
    await s3.close();
  }
});

Deno.test("an upload over the limit is refused whatever way its size arrives: chunked, hashed, or exactly at the limit allowed", async () => {
  const s3 = memoryS3();
  try {
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("123456"));
        c.enqueue(new TextEncoder().encode("7890X"));
        c.close();
      },
    });
    const r1 = await s3.proxy(
      await signed("PUT", "/uploads/c.txt", { body: chunked, headers: { "content-type": "text/plain" } }),
    );
    assertEquals(await s3Error(r1), [413, "EntityTooLarge"]);
    const eleven = "12345678901";
    const r2 = await s3.proxy(
      await signed("PUT", "/uploads/h.txt", {
        body: eleven,
        payloadHash: await sha256Hex(eleven),
        headers: { "content-type": "text/plain" },
      }),
    );
    assertEquals(await s3Error(r2), [413, "EntityTooLarge"]);
    assertEquals(s3.objects.size, 0);
    const ten = await s3.proxy(
      await signed("PUT", "/uploads/ten.txt", { body: "1234567890", headers: { "content-type": "text/plain" } }),
    );
    assertEquals(ten.status, 200);
    await ten.body?.cancel();
    assertEquals([...s3.objects.keys()], ["/uploads/ten.txt"]);
  } finally {
    await s3.close();
  }
});

Deno.test("a key over 1024 bytes or with a segment over 255 bytes is refused with 400 KeyTooLongError", async () => {
  const s3 = memoryS3();
  try {
    for (
      const key of [
        "a".repeat(256),
        ["b", "c", "d", "e", "f"].map((c) => c.repeat(250)).join("/"),
      ]
    ) {
      const put = await s3.proxy(
        await signed("PUT", `/uploads/${key}`, { body: "x", headers: { "content-type": "text/plain" } }),
      );
      assertEquals(await s3Error(put), [400, "KeyTooLongError"]);
      const get = await s3.proxy(await signed("GET", `/uploads/${key}`));
      assertEquals(await s3Error(get), [400, "KeyTooLongError"]);
    }
    // Multi-byte characters count as bytes: 128 × "é" is 256 bytes.
    const accented = await s3.proxy(
      await signed("PUT", `/uploads/${encodeURIComponent("é".repeat(128))}`, { body: "x" }),
    );
    assertEquals(await s3Error(accented), [400, "KeyTooLongError"]);
    assertEquals(s3.requests(), 0);
    const ok = await s3.proxy(
      await signed("PUT", `/uploads/${"a".repeat(255)}`, { body: "x", headers: { "content-type": "text/plain" } }),
    );
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
  } finally {
    await s3.close();
  }
});

async function multipart(s3: ReturnType<typeof memoryS3>, key: string, type: string): Promise<string> {
  const r = await s3.proxy(await signed("POST", `/uploads/${key}?uploads`, { headers: { "content-type": type } }));
  const text = await r.text();
  assertEquals(r.status, 200, text);
  return /<UploadId>([^<]+)<\/UploadId>/.exec(text)![1];
}

async function uploadPart(s3: ReturnType<typeof memoryS3>, key: string, id: string, n: number, body: string) {
  return await s3.proxy(await signed("PUT", `/uploads/${key}?partNumber=${n}&uploadId=${id}`, { body }));
}

function completion(parts: number[]): string {
  return `<CompleteMultipartUpload>${
    parts.map((n) => `<Part><PartNumber>${n}</PartNumber><ETag>"p"</ETag></Part>`).join("")
  }</CompleteMultipartUpload>`;
}

Deno.test("multipart: a disallowed type is refused at creation, a part or a total over the limit is refused, nothing stored", async () => {
  const s3 = memoryS3();
  try {
    const html = await s3.proxy(
      await signed("POST", "/uploads/m.html?uploads", { headers: { "content-type": "text/html" } }),
    );
    assertEquals(await s3Error(html), [415, "InvalidMimeType"]);
    assertEquals(s3.uploads.size, 0);

    const id = await multipart(s3, "m.txt", "text/plain");
    const big = await uploadPart(s3, "m.txt", id, 1, "12345678901");
    assertEquals(await s3Error(big), [413, "EntityTooLarge"]);
    assertEquals(s3.uploads.get(id)!.size, 0, "the oversized part was not stored");
    for (const n of [1, 2]) {
      const r = await uploadPart(s3, "m.txt", id, n, "123456");
      assertEquals(r.status, 200);
      await r.body?.cancel();
    }
    const done = await s3.proxy(await signed("POST", `/uploads/m.txt?uploadId=${id}`, { body: completion([1, 2]) }));
    const text = await done.text();
    assertEquals(done.status, 413, text);
    assert(text.includes("<ProposedSize>12</ProposedSize>"), text);
    assertEquals(s3.objects.has("/uploads/m.txt"), false);

    // The same upload completed with one part fits.
    const one = await s3.proxy(await signed("POST", `/uploads/m.txt?uploadId=${id}`, { body: completion([1]) }));
    assertEquals(one.status, 200, await one.clone().text());
    await one.body?.cancel();
  } finally {
    await s3.close();
  }
});

Deno.test("multipart: parts the proxy never saw are caught after completion, and the object is deleted", async () => {
  const s3 = memoryS3();
  try {
    const id = await multipart(s3, "late.txt", "text/plain");
    // As if stored before the gateway restarted: straight into storage, past the proxy.
    s3.uploads.get(id)!.set(1, new Uint8Array(8)).set(2, new Uint8Array(8));
    const done = await s3.proxy(await signed("POST", `/uploads/late.txt?uploadId=${id}`, { body: completion([1, 2]) }));
    const text = await done.text();
    assertEquals(done.status, 413, text);
    assert(text.includes("<ProposedSize>16</ProposedSize>"), text);
    assertEquals(s3.objects.has("/uploads/late.txt"), false);
  } finally {
    await s3.close();
  }
});

Deno.test("a copy into a bucket is held to its rules: size and, with REPLACE, the new type", async () => {
  const s3 = memoryS3();
  try {
    s3.objects.set("/open/big.txt", { body: new Uint8Array(64), type: "text/plain" });
    s3.objects.set("/open/page.html", { body: new Uint8Array(4), type: "text/html" });
    const big = await s3.proxy(
      await signed("PUT", "/uploads/big.txt", { headers: { "x-amz-copy-source": "/open/big.txt" } }),
    );
    assertEquals(await s3Error(big), [413, "EntityTooLarge"]);
    const html = await s3.proxy(
      await signed("PUT", "/uploads/p.html", { headers: { "x-amz-copy-source": "open/page.html" } }),
    );
    assertEquals(await s3Error(html), [415, "InvalidMimeType"]);
    const replaced = await s3.proxy(
      await signed("PUT", "/uploads/p.txt", {
        headers: {
          "x-amz-copy-source": "open/page.html",
          "x-amz-metadata-directive": "REPLACE",
          "content-type": "text/html",
        },
      }),
    );
    assertEquals(await s3Error(replaced), [415, "InvalidMimeType"]);
    assertEquals([...s3.objects.keys()].filter((k) => k.startsWith("/uploads/")), []);
    // A bucket with no rules takes anything.
    const open = await s3.proxy(
      await signed("PUT", "/open/copy.html", { headers: { "x-amz-copy-source": "open/page.html" } }),
    );
    assertEquals(open.status, 200);
    await open.body?.cancel();
  } finally {
    await s3.close();
  }
});
