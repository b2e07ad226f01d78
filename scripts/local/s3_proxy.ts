// The S3 protocol at /storage/v1/s3 for the local stack, the way Supabase
// Storage serves it at {SUPABASE_URL}/storage/v1/s3.
//
// SigV4 signs the host and the path, so a request a client signed for
// 127.0.0.1:54321/storage/v1/s3/<bucket>/<key> can never verify at s3s-fs,
// which listens on its own port at the root. So the gateway does what
// Supabase Storage does: it verifies the client's signature itself (an
// Authorization header or a presigned query), then signs a fresh request for
// s3s-fs with the same local keys and streams the answer back. Both with the
// stack's one SigV4 implementation (sigv4.ts).

import { clientBodyFailed } from "./request_body.ts";
import {
  canonicalQuery,
  canonicalUri,
  EMPTY_SHA256,
  entityTooLarge,
  incompleteBody,
  MAX_BUFFERED_BODY_BYTES,
  parseQuery,
  percentDecode,
  readBody,
  S3Failure,
  signHeaders,
  uriEncode,
  verifyRequest,
} from "./sigv4.ts";

const utf8 = new TextEncoder();
/** Request headers not passed upstream: hop-by-hop, or replaced by our own signature. */

const NOT_FORWARDED = new Set([
  "host",
  "authorization",
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "accept-encoding",
  "x-amz-date",
  "x-amz-content-sha256",
  "x-amz-security-token",
]);
const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding"];

const xmlEscape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function errorResponse(f: S3Failure, resource: string): Response {
  const fields: Record<string, string> = {
    Code: f.code,
    Message: f.message,
    Resource: resource,
    RequestId: crypto.randomUUID(),
    ...f.detail,
  };
  const inner = Object.entries(fields).map(([k, v]) => `<${k}>${xmlEscape(v)}</${k}>`).join("");
  return new Response(`<?xml version="1.0" encoding="UTF-8"?>\n<Error>${inner}</Error>`, {
    status: f.status,
    headers: { "content-type": "application/xml", "access-control-allow-origin": "*" },
  });
}

// --- the proxy --------------------------------------------------------------

/** A bucket's rules from `[storage.buckets.<name>]` in supabase/config.toml, sizes in bytes. */
export interface BucketRules {
  /** The effective limit (bucket and `[storage] file_size_limit` combined); null for none. */
  file_size_limit: number | null;
  /** Lower-case `type/subtype` or `type/*`; empty allows every type. */
  allowed_mime_types: string[];
}

/** From the gateway config (scripts/local/gateway_config.ts). */
export interface S3ProxyConfig {
  /** The S3 server itself, e.g. http://127.0.0.1:54331 (no path). */
  upstream: string;
  region: string;
  access_key_id: string;
  secret_access_key: string;
  /** Rules per bucket; a bucket not listed gets only `default_file_size_limit`. */
  buckets?: Record<string, BucketRules>;
  /** `[storage] file_size_limit` in bytes, for buckets config.toml does not list. */
  default_file_size_limit?: number | null;
}

function withCors(h: Headers): Headers {
  h.set("access-control-allow-origin", "*");
  // Browsers completing a multipart upload need each part's ETag.
  h.set(
    "access-control-expose-headers",
    "etag, content-length, content-range, x-amz-request-id, x-amz-version-id, x-amz-checksum-sha256",
  );
  return h;
}

// --- bucket rules -------------------------------------------------------------

/** S3's limits on a key: 1024 bytes in all; and a segment is a file name for the local server, at most 255. */
const MAX_KEY_BYTES = 1024;
const MAX_KEY_SEGMENT_BYTES = 255;
/** Multipart uploads whose part sizes are remembered; the oldest are forgotten past this. */
const MAX_TRACKED_UPLOADS = 10_000;
/** Query parameters that make a PUT on a key something other than an upload. */
const OBJECT_SUBRESOURCES = ["acl", "tagging", "retention", "legal-hold"];
/** What S3 stores for an object uploaded without a Content-Type. */
const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/** Which operation a request is, as far as the bucket rules care. */
export type Operation =
  | { kind: "put-object"; bucket: string; key: string }
  | { kind: "copy-object"; bucket: string; key: string }
  | { kind: "create-multipart"; bucket: string; key: string }
  | { kind: "upload-part"; bucket: string; key: string; uploadId: string; partNumber: number; copy: boolean }
  | { kind: "complete-multipart"; bucket: string; key: string; uploadId: string }
  | { kind: "abort-multipart"; bucket: string; key: string; uploadId: string }
  | { kind: "post-object"; bucket: string; key: null }
  | { kind: "other"; bucket: string | null; key: string | null };

/** `path` is the part after the prefix, still percent-encoded (`/bucket/key...`). */
export function classify(method: string, path: string, query: [string, string][], headers: Headers): Operation {
  const segments = path.split("/").slice(1);
  const bucket = segments[0] ? percentDecode(segments[0]) : null;
  const rawKey = segments.slice(1).join("/");
  const key = rawKey === "" ? null : percentDecode(rawKey);
  const q = (name: string) => query.find(([k]) => k === name)?.[1];
  if (bucket === null || key === null) {
    if (method === "POST" && bucket !== null && /^multipart\/form-data/i.test(headers.get("content-type") ?? "")) {
      return { kind: "post-object", bucket, key: null };
    }
    return { kind: "other", bucket, key };
  }
  const uploadId = q("uploadId");
  const copy = headers.has("x-amz-copy-source");
  if (method === "PUT") {
    // Tagging, ACLs and retention name an object but store no bytes.
    if (OBJECT_SUBRESOURCES.some((r) => q(r) !== undefined)) return { kind: "other", bucket, key };
    if (uploadId !== undefined && q("partNumber") !== undefined) {
      return { kind: "upload-part", bucket, key, uploadId, partNumber: Number(q("partNumber")), copy };
    }
    return copy ? { kind: "copy-object", bucket, key } : { kind: "put-object", bucket, key };
  }
  if (method === "POST" && q("uploads") !== undefined) return { kind: "create-multipart", bucket, key };
  if (method === "POST" && uploadId !== undefined) return { kind: "complete-multipart", bucket, key, uploadId };
  if (method === "DELETE" && uploadId !== undefined) return { kind: "abort-multipart", bucket, key, uploadId };
  return { kind: "other", bucket, key };
}

/** 400 KeyTooLongError for a key S3 (1024 bytes) or the local file system (255 per segment) cannot hold. */
export function checkKey(key: string): void {
  const bytes = utf8.encode(key).length;
  if (bytes > MAX_KEY_BYTES) {
    throw new S3Failure(400, "KeyTooLongError", "Your key is too long", {
      MaxSizeAllowed: String(MAX_KEY_BYTES),
      Size: String(bytes),
    });
  }
  for (const segment of key.split("/")) {
    const n = utf8.encode(segment).length;
    if (n > MAX_KEY_SEGMENT_BYTES) {
      throw new S3Failure(
        400,
        "KeyTooLongError",
        `Your key is too long: a path segment is ${n} bytes, at most ${MAX_KEY_SEGMENT_BYTES}`,
        { MaxSizeAllowed: String(MAX_KEY_SEGMENT_BYTES), Size: String(n) },
      );
    }
  }
}

/** `type/subtype`, lower-cased, parameters dropped (as the functions' policy reads it). */
function mimeEssence(contentType: string): string {
  return contentType.split(";")[0].trim().toLowerCase();
}

/** 415 InvalidMimeType (Supabase Storage's code) for a type the bucket does not take. */
export function checkMime(bucket: string, rules: BucketRules | undefined, contentType: string | null): void {
  if (!rules || rules.allowed_mime_types.length === 0) return;
  const essence = mimeEssence(contentType ?? DEFAULT_CONTENT_TYPE);
  const [type, sub] = essence.split("/");
  const ok = sub !== undefined && sub !== "" &&
    rules.allowed_mime_types.some((p) => p.endsWith("/*") ? p.slice(0, -2) === type : p === essence);
  if (!ok) {
    throw new S3Failure(415, "InvalidMimeType", `mime type ${essence} is not supported by bucket ${bucket}`, {
      ContentType: essence,
    });
  }
}

/** A declared Content-Length as a number; null when absent, 400 when not a length. */
function declaredLength(headers: Headers): number | null {
  const v = headers.get("content-length");
  if (v === null) return null;
  if (!/^\d{1,16}$/.test(v.trim())) {
    throw new S3Failure(400, "InvalidArgument", "Content-Length must be a whole number of bytes.");
  }
  return Number(v.trim());
}

/** `/bucket/key` (or `bucket/key`) of x-amz-copy-source, decoded; a version suffix is dropped. */
function copySource(headers: Headers): { bucket: string; key: string } {
  const raw = (headers.get("x-amz-copy-source") ?? "").split("?")[0].replace(/^\/+/, "");
  const i = raw.indexOf("/");
  if (i <= 0 || i === raw.length - 1) {
    throw new S3Failure(400, "InvalidArgument", "x-amz-copy-source must be <bucket>/<key>.");
  }
  return { bucket: percentDecode(raw.slice(0, i)), key: percentDecode(raw.slice(i + 1)) };
}

/** Bytes in `bytes=first-last` of x-amz-copy-source-range, or null when absent or unreadable. */
function copyRangeLength(headers: Headers): number | null {
  const m = /^bytes=(\d+)-(\d+)$/.exec(headers.get("x-amz-copy-source-range") ?? "");
  return m ? Number(m[2]) - Number(m[1]) + 1 : null;
}

const CHECKSUM_SHA256 = "x-amz-checksum-sha256";

/** 400 InvalidRequest for a malformed x-amz-checksum-sha256, 400 BadDigest for one the body does not have (S3's answers). */
export async function checkSha256(body: Uint8Array<ArrayBuffer>, declared: string): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.from(atob(declared.trim()), (c) => c.charCodeAt(0));
  } catch {
    bytes = new Uint8Array();
  }
  if (bytes.length !== 32) {
    throw new S3Failure(400, "InvalidRequest", "Value for x-amz-checksum-sha256 header is invalid.");
  }
  const actual = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  if (!actual.every((b, i) => b === bytes[i])) {
    throw new S3Failure(400, "BadDigest", "The SHA256 you specified did not match the calculated checksum.");
  }
}

/** Part numbers named in a CompleteMultipartUpload body. */
function completedPartNumbers(xml: string): number[] {
  return [...xml.matchAll(/<PartNumber>\s*(\d+)\s*<\/PartNumber>/g)].map((m) => Number(m[1]));
}

/**
 * The handler for everything under `prefix`: verify, enforce the bucket's
 * rules, re-sign for the upstream (prefix stripped, presigning parameters
 * dropped), forward with the body streamed (or the checked bytes), stream the
 * answer back.
 *
 * Sizes are known before anything is stored: a PUT declares its length (or is
 * read into memory, bounded by the limit); a part's size is remembered when it
 * is stored, so a multipart upload is refused at completion from the sum of
 * the parts it names. After completion the object's real size is read back
 * (HEAD) as a second line: parts this gateway did not see (it restarted) are
 * caught there, and the object is deleted.
 */
export function s3Proxy(config: S3ProxyConfig, prefix: string): (req: Request) => Promise<Response> {
  const credentials = { accessKeyId: config.access_key_id, secretAccessKey: config.secret_access_key };
  const upstream = config.upstream.replace(/\/+$/, "");
  const buckets = config.buckets ?? {};
  const limitOf = (bucket: string): number | null =>
    bucket in buckets ? buckets[bucket].file_size_limit : config.default_file_size_limit ?? null;
  /** uploadId -> part number -> bytes stored. */
  const partSizes = new Map<string, Map<number, number>>();

  const send = async (
    method: string,
    path: string,
    query: string,
    headers: Headers,
    body: BodyInit | null,
    payloadHash: string,
  ): Promise<Response> => {
    const target = `${upstream}${path}${query ? "?" + query : ""}`;
    // Deno's fetch decodes gzip answers unless asked for identity; an object
    // stored with Content-Encoding must come back byte for byte.
    headers.set("accept-encoding", "identity");
    await signHeaders({ method, url: target, headers, payloadHash, credentials, region: config.region });
    try {
      return await fetch(target, {
        method,
        headers,
        body,
        redirect: "manual",
        // @ts-ignore: Deno needs duplex for streamed request bodies
        duplex: "half",
      });
    } catch (e) {
      if (clientBodyFailed(e)) throw incompleteBody();
      throw new S3Failure(503, "ServiceUnavailable", `The local S3 server did not answer: ${(e as Error).message}`);
    }
  };
  const objectPath = (bucket: string, key: string) =>
    canonicalUri(`/${uriEncode(bucket, true)}/${uriEncode(key, false)}`);
  /** Size and type of a stored object, or null when there is none. */
  const head = async (bucket: string, key: string): Promise<{ size: number; type: string | null } | null> => {
    const r = await send("HEAD", objectPath(bucket, key), "", new Headers(), null, EMPTY_SHA256);
    await r.body?.cancel();
    if (r.status === 404) return null;
    if (!r.ok) throw new S3Failure(r.status, "InternalError", `HEAD of the stored object answered ${r.status}`);
    return { size: Number(r.headers.get("content-length") ?? 0), type: r.headers.get("content-type") };
  };
  const remember = (uploadId: string, partNumber: number, size: number) => {
    let parts = partSizes.get(uploadId);
    if (!parts) {
      if (partSizes.size >= MAX_TRACKED_UPLOADS) partSizes.delete(partSizes.keys().next().value!);
      parts = new Map();
      partSizes.set(uploadId, parts);
    }
    parts.set(partNumber, size);
  };

  return async (req) => {
    const url = new URL(req.url);
    if (req.method === "OPTIONS" && req.headers.has("access-control-request-method")) {
      // CORS preflight carries no signature; the real request is verified.
      return new Response(null, {
        status: 204,
        headers: withCors(
          new Headers({
            "access-control-allow-methods": "GET, PUT, POST, DELETE, HEAD",
            "access-control-allow-headers": req.headers.get("access-control-request-headers") ?? "*",
            "access-control-max-age": "3600",
          }),
        ),
      });
    }
    try {
      const rawPath = url.pathname.slice(prefix.length) || "/";
      const op = classify(req.method, rawPath, parseQuery(url.search), req.headers);
      const limit = op.bucket === null ? null : limitOf(op.bucket);
      const rules = op.bucket === null ? undefined : buckets[op.bucket];
      const declared = declaredLength(req.headers);
      // Everything a request declares is judged before its body is read.
      const admit = () => {
        if (op.kind === "post-object") {
          // A browser form upload carries its type and size inside the form; not taken here.
          throw new S3Failure(
            501,
            "NotImplemented",
            "POST object (browser form uploads) is not supported; use a presigned PUT.",
          );
        }
        if (op.key !== null) checkKey(op.key);
        if (op.kind === "put-object" || op.kind === "create-multipart") {
          checkMime(op.bucket, rules, req.headers.get("content-type"));
        }
        if ((op.kind === "put-object" || (op.kind === "upload-part" && !op.copy)) && limit !== null) {
          if (declared !== null && declared > limit) throw entityTooLarge(limit, declared);
        }
      };
      const bodyLimit = (op.kind === "put-object" || op.kind === "upload-part") && limit !== null
        ? limit
        : MAX_BUFFERED_BODY_BYTES;
      const verified = await verifyRequest(req, {
        credentials,
        region: config.region,
        admit,
        maxBodyBytes: bodyLimit,
      });

      // S3 verifies a body against the x-amz-checksum-sha256 it declares; s3s-fs
      // does so for PutObject but not for UploadPart, so the gateway checks both.
      const checksum = req.headers.get(CHECKSUM_SHA256);
      const checksummed = checksum !== null && (op.kind === "put-object" || (op.kind === "upload-part" && !op.copy));
      let body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null = null;
      if (req.method !== "GET" && req.method !== "HEAD") {
        // Streamed when its length is known; s3s-fs (like S3) refuses a header-signed
        // upload without Content-Length, so a chunked one is read to give it one.
        // A completion's part list is read: its sizes are summed before storing.
        // A checksummed body is read to be hashed before anything is stored.
        if (verified.body) body = verified.body;
        else if (declared !== null && op.kind !== "complete-multipart" && !checksummed) body = req.body;
        else body = await readBody(req, bodyLimit);
      }
      if (checksummed) await checkSha256(body instanceof Uint8Array ? body : new Uint8Array(), checksum!);
      const size = body instanceof Uint8Array ? body.length : declared;

      if (op.kind === "copy-object" || (op.kind === "upload-part" && op.copy)) {
        const src = copySource(req.headers);
        const found = await head(src.bucket, src.key);
        if (found) {
          const bytes = op.kind === "upload-part" ? copyRangeLength(req.headers) ?? found.size : found.size;
          if (limit !== null && bytes > limit) throw entityTooLarge(limit, bytes);
          if (op.kind === "copy-object") {
            const replace = (req.headers.get("x-amz-metadata-directive") ?? "").toUpperCase() === "REPLACE";
            checkMime(op.bucket, rules, replace ? req.headers.get("content-type") : found.type);
          }
        }
      }
      let completedParts: number[] = [];
      if (op.kind === "complete-multipart") {
        const xml = body instanceof Uint8Array ? body : new Uint8Array();
        completedParts = completedPartNumbers(new TextDecoder().decode(xml));
        const known = partSizes.get(op.uploadId);
        if (limit !== null && known) {
          const total = completedParts.reduce((sum, n) => sum + (known.get(n) ?? 0), 0);
          if (total > limit) throw entityTooLarge(limit, total);
        }
      }

      const headers = new Headers();
      for (const [k, v] of req.headers) {
        if (!NOT_FORWARDED.has(k) && !k.startsWith("proxy-")) headers.set(k, v);
      }
      const path = canonicalUri(rawPath);
      const query = canonicalQuery(verified.query);
      const resp = await send(req.method, path, query, headers, body, verified.payloadHash);

      if (op.kind === "upload-part" && !op.copy && resp.ok && size !== null) remember(op.uploadId, op.partNumber, size);
      if (op.kind === "abort-multipart" && resp.ok) partSizes.delete(op.uploadId);
      if (op.kind === "complete-multipart" && resp.ok) {
        partSizes.delete(op.uploadId);
        if (limit !== null) {
          // The object's real size, for parts this gateway did not see being stored.
          const stored = await head(op.bucket, op.key);
          if (stored && stored.size > limit) {
            await resp.body?.cancel();
            const del = await send("DELETE", path, "", new Headers(), null, EMPTY_SHA256);
            await del.body?.cancel();
            throw entityTooLarge(limit, stored.size);
          }
        }
      }
      const out = new Headers(resp.headers);
      for (const h of HOP_BY_HOP) out.delete(h);
      if (checksummed && resp.ok && !out.has(CHECKSUM_SHA256)) out.set(CHECKSUM_SHA256, checksum!);
      return new Response(resp.body, { status: resp.status, statusText: resp.statusText, headers: withCors(out) });
    } catch (e) {
      if (e instanceof S3Failure) return errorResponse(e, url.pathname);
      return errorResponse(new S3Failure(500, "InternalError", (e as Error).message), url.pathname);
    }
  };
}
