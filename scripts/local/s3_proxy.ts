// The S3 protocol at /storage/v1/s3 for the local stack, the way Supabase
// Storage serves it at {SUPABASE_URL}/storage/v1/s3.
//
// SigV4 signs the host and the path, so a request a client signed for
// 127.0.0.1:54321/storage/v1/s3/<bucket>/<key> can never verify at s3s-fs,
// which listens on its own port at the root. So the gateway does what
// Supabase Storage does: it verifies the client's signature itself (an
// Authorization header or a presigned query), then signs a fresh request for
// s3s-fs with the same local keys and streams the answer back.
//
// Canonicalisation follows S3: each path segment decoded and encoded exactly
// once (no double encoding), query pairs encoded and sorted, signed header
// values trimmed with inner runs of spaces collapsed. WebCrypto only.

import { clientBodyFailed } from "./request_body.ts";

export const ALGORITHM = "AWS4-HMAC-SHA256";
export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/** The longest validity SigV4 allows for a presigned URL (7 days). */
export const MAX_EXPIRES_SECS = 604_800;
/** How far a header-signed request's time may be from ours (S3's limit). */
const MAX_SKEW_MS = 15 * 60 * 1000;
/** Bodies held in memory (to check a declared SHA-256, or to give a chunked upload a length) stop here. */
const MAX_BUFFERED_BODY_BYTES = 256 * 1024 * 1024;
/** Query parameters that carry a presigned URL's signature, not the operation. */
const PRESIGN_PARAMS = new Set([
  "X-Amz-Algorithm",
  "X-Amz-Credential",
  "X-Amz-Date",
  "X-Amz-Expires",
  "X-Amz-SignedHeaders",
  "X-Amz-Signature",
  "X-Amz-Security-Token",
]);
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

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** A refusal, answered as S3 does: `<Error><Code>…</Code><Message>…</Message>…</Error>`. */
export class S3Failure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly detail: Record<string, string> = {},
  ) {
    super(message);
  }
}

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

// --- canonical request ------------------------------------------------------

const utf8 = new TextEncoder();

/** SigV4 URI encoding: every byte but `A-Z a-z 0-9 - . _ ~` as upper-case %XX; `/` kept unless `encodeSlash`. */
export function uriEncode(s: string, encodeSlash: boolean): string {
  let out = "";
  for (const b of utf8.encode(s)) {
    const unreserved = (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
      b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
    if (unreserved || (b === 0x2f && !encodeSlash)) out += String.fromCharCode(b);
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function percentDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Failure(400, "InvalidURI", "Couldn't parse the specified URI.");
  }
}

/** The canonical form of a path as it arrived (percent-encoded): each segment decoded, then encoded once. */
export function canonicalUri(rawPath: string): string {
  if (rawPath === "") return "/";
  return rawPath.split("/").map((seg) => uriEncode(percentDecode(seg), true)).join("/");
}

/** Decoded `[name, value]` pairs of a raw query string (`?` optional); `+` is a literal plus, as S3 signs it. */
export function parseQuery(search: string): [string, string][] {
  const s = search.startsWith("?") ? search.slice(1) : search;
  return s.split("&").filter((p) => p !== "").map((p) => {
    const i = p.indexOf("=");
    return i < 0 ? [percentDecode(p), ""] : [percentDecode(p.slice(0, i)), percentDecode(p.slice(i + 1))];
  });
}

/** Pairs encoded strictly, sorted by encoded name then value, joined as `k=v&…`. */
export function canonicalQuery(pairs: [string, string][]): string {
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return pairs
    .map(([k, v]) => [uriEncode(k, true), uriEncode(v, true)])
    .sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

const canonicalHeaderValue = (v: string) => v.trim().replace(/\s+/g, " ");

export function canonicalRequest(
  method: string,
  uri: string,
  query: string,
  headers: [string, string][],
  signedHeaders: string,
  payloadHash: string,
): string {
  const block = headers.map(([k, v]) => `${k}:${v}\n`).join("");
  return `${method.toUpperCase()}\n${uri}\n${query}\n${block}\n${signedHeaders}\n${payloadHash}`;
}

// --- crypto -----------------------------------------------------------------

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

export async function sha256Hex(data: Uint8Array<ArrayBuffer> | string): Promise<string> {
  const bytes = typeof data === "string" ? utf8.encode(data) : data;
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

async function hmac(key: Uint8Array<ArrayBuffer>, data: string): Promise<Uint8Array<ArrayBuffer>> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, utf8.encode(data)));
}

/** HMAC of the string to sign under kSigning = HMAC(…HMAC("AWS4"+secret, date)…, "aws4_request"). */
async function signatureOf(secret: string, scope: string, stringToSign: string): Promise<string> {
  let key = utf8.encode("AWS4" + secret);
  for (const part of scope.split("/")) key = await hmac(key, part);
  return hex(await hmac(key, stringToSign));
}

async function stringToSign(amzDate: string, scope: string, canonical: string): Promise<string> {
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${await sha256Hex(canonical)}`;
}

function sameText(a: string, b: string): boolean {
  // Compares every byte whatever the first difference, so timing does not reveal a prefix.
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** `YYYYMMDDTHHMMSSZ` */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

function parseAmzDate(s: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return null;
  const t = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  // Date.UTC rolls 20151332 over into the next year; a real date survives the round trip.
  return formatAmzDate(t) === s ? t : null;
}

// --- verification -----------------------------------------------------------

export interface VerifyOptions {
  credentials: Credentials;
  region: string;
  /** "s3" (the default) applies S3's payload rules; AWS's generic test suite signs for "service". */
  service?: string;
  /** Unix milliseconds; defaults to the clock. */
  now?: number;
  /**
   * Called once the signature has matched and before any of the body is read,
   * so a request can be refused on what it declares (size, type, key) without
   * waiting for bytes it should never have sent.
   */
  admit?: () => void;
  /** The most body bytes to read into memory; more is EntityTooLarge. */
  maxBodyBytes?: number;
}

export interface Verified {
  mode: "header" | "query";
  /** A hex SHA-256 the body was checked against, or UNSIGNED-PAYLOAD. */
  payloadHash: string;
  /** The body, when it had to be read to check its hash; otherwise it is still in the request. */
  body: Uint8Array<ArrayBuffer> | null;
  /** The operation's query parameters (presigning parameters removed). */
  query: [string, string][];
}

interface Claim {
  credential: string;
  signedHeaders: string;
  signature: string;
  amzDate: string;
  expiresSecs?: number;
}

function headerClaim(auth: string, headers: Headers): Claim {
  if (!auth.startsWith(ALGORITHM + " ")) {
    throw new S3Failure(
      400,
      "InvalidRequest",
      "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
    );
  }
  const fields = new Map<string, string>();
  for (const part of auth.slice(ALGORITHM.length + 1).split(",")) {
    const i = part.indexOf("=");
    if (i > 0) fields.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const credential = fields.get("Credential"), signedHeaders = fields.get("SignedHeaders");
  const signature = fields.get("Signature");
  if (!credential || !signedHeaders || !signature) {
    throw new S3Failure(
      400,
      "AuthorizationHeaderMalformed",
      "The Authorization header needs Credential, SignedHeaders and Signature.",
    );
  }
  const amzDate = headers.get("x-amz-date");
  if (!amzDate) {
    throw new S3Failure(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header");
  }
  return { credential, signedHeaders, signature, amzDate };
}

function queryClaim(query: [string, string][]): Claim {
  const get = (name: string) => query.find(([k]) => k === name)?.[1];
  const bad = (message: string) => new S3Failure(400, "AuthorizationQueryParametersError", message);
  if (get("X-Amz-Algorithm") !== ALGORITHM) throw bad(`X-Amz-Algorithm only supports "${ALGORITHM}"`);
  const credential = get("X-Amz-Credential"), signedHeaders = get("X-Amz-SignedHeaders");
  const signature = get("X-Amz-Signature"), amzDate = get("X-Amz-Date"), expires = get("X-Amz-Expires");
  if (!credential || !signedHeaders || !signature || !amzDate || !expires) {
    throw bad(
      "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, " +
        "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
    );
  }
  const expiresSecs = /^\d{1,7}$/.test(expires) ? Number(expires) : 0;
  if (expiresSecs < 1 || expiresSecs > MAX_EXPIRES_SECS) {
    throw bad(`X-Amz-Expires must be 1 to ${MAX_EXPIRES_SECS} seconds (7 days)`);
  }
  return { credential, signedHeaders, signature, amzDate, expiresSecs };
}

/** 413 EntityTooLarge, with the limit and the proposed size as S3 gives them. */
export function entityTooLarge(limit: number, proposed: number | null, message?: string): S3Failure {
  const detail: Record<string, string> = { MaxSizeAllowed: String(limit) };
  if (proposed !== null) detail.ProposedSize = String(proposed);
  return new S3Failure(
    413,
    "EntityTooLarge",
    message ?? `Your proposed upload exceeds the maximum allowed size of ${limit} bytes.`,
    detail,
  );
}

/** A client that stops sending before its Content-Length (or whose connection breaks) reaches here. */
function incompleteBody(): S3Failure {
  return new S3Failure(
    400,
    "IncompleteBody",
    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
  );
}

export async function readBody(req: Request, maxBytes = MAX_BUFFERED_BODY_BYTES): Promise<Uint8Array<ArrayBuffer>> {
  const limit = Math.min(maxBytes, MAX_BUFFERED_BODY_BYTES);
  const tooLarge = (proposed: number | null) =>
    limit < MAX_BUFFERED_BODY_BYTES ? entityTooLarge(limit, proposed) : entityTooLarge(
      limit,
      proposed,
      `Bodies read into memory are limited to ${MAX_BUFFERED_BODY_BYTES} bytes here; ` +
        "send large uploads with a Content-Length and UNSIGNED-PAYLOAD.",
    );
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > limit) throw tooLarge(declared);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body?.getReader();
  try {
    for (let r = await reader?.read(); r && !r.done; r = await reader!.read()) {
      size += r.value.length;
      if (size > limit) {
        await reader!.cancel();
        throw tooLarge(null);
      }
      chunks.push(r.value);
    }
  } catch (e) {
    if (e instanceof S3Failure) throw e;
    throw incompleteBody();
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Checks a request's SigV4 signature (Authorization header or presigned
 * query) against the one local key pair; throws an S3Failure saying why not.
 * For S3, a header-signed request must declare x-amz-content-sha256; a hex
 * value is checked against the body, which is then read and returned.
 */
export async function verifyRequest(req: Request, opts: VerifyOptions): Promise<Verified> {
  const service = opts.service ?? "s3";
  const now = opts.now ?? Date.now();
  const url = new URL(req.url);
  const query = parseQuery(url.search);
  const auth = req.headers.get("authorization");
  const presigned = query.some(([k]) => k === "X-Amz-Algorithm" || k === "X-Amz-Signature" || k === "X-Amz-Credential");
  if (auth && presigned) {
    throw new S3Failure(
      400,
      "InvalidArgument",
      "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified",
    );
  }
  if (!auth && !presigned) {
    throw new S3Failure(403, "AccessDenied", "Access Denied: the request is not signed (AWS Signature Version 4)");
  }
  const mode = auth ? "header" : "query";
  const claim = auth ? headerClaim(auth, req.headers) : queryClaim(query);
  const malformed = (message: string) =>
    new S3Failure(400, auth ? "AuthorizationHeaderMalformed" : "AuthorizationQueryParametersError", message);

  const scopeParts = claim.credential.split("/");
  if (scopeParts.length !== 5 || scopeParts[4] !== "aws4_request") {
    throw malformed("The Credential must be <access key>/<date>/<region>/<service>/aws4_request.");
  }
  const [accessKeyId, date, region, scopeService] = scopeParts;
  if (accessKeyId !== opts.credentials.accessKeyId) {
    throw new S3Failure(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.");
  }
  const signedAt = parseAmzDate(claim.amzDate);
  if (signedAt === null) throw malformed("X-Amz-Date must be in the ISO 8601 basic format YYYYMMDDTHHMMSSZ.");
  if (date !== claim.amzDate.slice(0, 8)) throw malformed("The credential date does not match X-Amz-Date.");
  if (region !== opts.region) throw malformed(`The region '${region}' is wrong; expecting '${opts.region}'.`);
  if (scopeService !== service) throw malformed(`The service '${scopeService}' is wrong; expecting '${service}'.`);

  if (claim.expiresSecs !== undefined) {
    if (now < signedAt - MAX_SKEW_MS) throw new S3Failure(403, "AccessDenied", "Request is not valid yet");
    if (now > signedAt + claim.expiresSecs * 1000) throw new S3Failure(403, "AccessDenied", "Request has expired");
  } else if (Math.abs(now - signedAt) > MAX_SKEW_MS) {
    throw new S3Failure(
      403,
      "RequestTimeTooSkewed",
      "The difference between the request time and the current time is too large.",
    );
  }

  const names = claim.signedHeaders.split(";");
  if (!names.includes("host")) throw malformed("SignedHeaders must include host.");
  for (const [name] of req.headers) {
    // As S3: an x-amz-* header changes the operation, so one nobody signed is refused.
    if (name.startsWith("x-amz-") && !names.includes(name)) {
      throw new S3Failure(
        403,
        "AccessDenied",
        `There were headers present in the request which were not signed: ${name}`,
      );
    }
  }
  let payloadHash = req.headers.get("x-amz-content-sha256");
  let body: Uint8Array<ArrayBuffer> | null = null;
  if (payloadHash === null) {
    if (service !== "s3") {
      body = await readBody(req);
      payloadHash = await sha256Hex(body);
    } else if (auth) {
      throw new S3Failure(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256");
    } else {
      payloadHash = UNSIGNED_PAYLOAD;
    }
  }

  const headerLines: [string, string][] = names.map((name) => {
    const value = name === "host" ? (req.headers.get("host") ?? url.host) : req.headers.get(name);
    if (value === null) {
      throw new S3Failure(403, "SignatureDoesNotMatch", `The signed header '${name}' is not in the request.`);
    }
    return [name, canonicalHeaderValue(value)];
  });

  const signedQuery = mode === "query" ? query.filter(([k]) => k !== "X-Amz-Signature") : query;
  const canonical = canonicalRequest(
    req.method,
    canonicalUri(url.pathname),
    canonicalQuery(signedQuery),
    headerLines,
    claim.signedHeaders,
    payloadHash,
  );
  const scope = scopeParts.slice(1).join("/");
  const toSign = await stringToSign(claim.amzDate, scope, canonical);
  const expected = await signatureOf(opts.credentials.secretAccessKey, scope, toSign);
  if (!sameText(expected, claim.signature)) {
    throw new S3Failure(
      403,
      "SignatureDoesNotMatch",
      "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
      { AWSAccessKeyId: accessKeyId, StringToSign: toSign, CanonicalRequest: canonical },
    );
  }

  opts.admit?.();
  if (payloadHash.startsWith("STREAMING-")) {
    throw new S3Failure(
      501,
      "NotImplemented",
      `The local S3 endpoint does not accept aws-chunked payloads (${payloadHash}); sign the body as ` +
        "UNSIGNED-PAYLOAD or with its SHA-256.",
    );
  }
  if (payloadHash !== UNSIGNED_PAYLOAD && body === null) {
    if (!/^[0-9a-f]{64}$/.test(payloadHash)) {
      throw new S3Failure(
        400,
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the lower-case hex SHA-256 of the body.",
      );
    }
    body = await readBody(req, opts.maxBodyBytes);
    if (await sha256Hex(body) !== payloadHash) {
      throw new S3Failure(
        400,
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
      );
    }
  }
  return { mode, payloadHash, body, query: query.filter(([k]) => !PRESIGN_PARAMS.has(k)) };
}

// --- signing ----------------------------------------------------------------

export interface SignInput {
  method: string;
  url: string;
  /** Modified in place: x-amz-date, x-amz-content-sha256 and authorization are set. */
  headers: Headers;
  /** Hex SHA-256 of the body, or UNSIGNED-PAYLOAD. */
  payloadHash: string;
  credentials: Credentials;
  region: string;
  now?: number;
}

/**
 * Header-mode S3 signing. Signs host, content-type, content-md5 and every
 * x-amz-* header; the URL's path and query must already be in canonical form
 * (as `canonicalUri`/`canonicalQuery` produce), so what is sent is what is signed.
 */
export async function signHeaders(input: SignInput): Promise<void> {
  const url = new URL(input.url);
  const amzDate = formatAmzDate(input.now ?? Date.now());
  const scope = `${amzDate.slice(0, 8)}/${input.region}/s3/aws4_request`;
  const h = input.headers;
  h.set("x-amz-date", amzDate);
  h.set("x-amz-content-sha256", input.payloadHash);
  h.delete("authorization");
  const names = [
    "host",
    ...[...h.keys()].filter((n) => n.startsWith("x-amz-") || n === "content-type" || n === "content-md5"),
  ]
    .sort();
  const value = (n: string) => n === "host" ? url.host : canonicalHeaderValue(h.get(n) ?? "");
  const lines: [string, string][] = names.map((n) => [n, value(n)]);
  const signed = names.join(";");
  const canonical = canonicalRequest(
    input.method,
    canonicalUri(url.pathname),
    canonicalQuery(parseQuery(url.search)),
    lines,
    signed,
    input.payloadHash,
  );
  const signature = await signatureOf(
    input.credentials.secretAccessKey,
    scope,
    await stringToSign(amzDate, scope, canonical),
  );
  h.set(
    "authorization",
    `${ALGORITHM} Credential=${input.credentials.accessKeyId}/${scope}, SignedHeaders=${signed}, Signature=${signature}`,
  );
}

export interface PresignInput {
  method: string;
  url: string;
  credentials: Credentials;
  region: string;
  expiresSecs: number;
  now?: number;
  /** Headers the user of the URL must send with exactly these values (host is always signed). */
  headers?: Record<string, string>;
}

/** A presigned S3 URL (payload UNSIGNED-PAYLOAD), path and query in canonical form. */
export async function presignUrl(input: PresignInput): Promise<string> {
  if (!Number.isInteger(input.expiresSecs) || input.expiresSecs < 1 || input.expiresSecs > MAX_EXPIRES_SECS) {
    throw new RangeError(`expiresSecs must be 1..${MAX_EXPIRES_SECS}`);
  }
  const url = new URL(input.url);
  const amzDate = formatAmzDate(input.now ?? Date.now());
  const scope = `${amzDate.slice(0, 8)}/${input.region}/s3/aws4_request`;
  const headers = new Map<string, string>([["host", url.host]]);
  for (const [k, v] of Object.entries(input.headers ?? {})) headers.set(k.toLowerCase(), canonicalHeaderValue(v));
  const names = [...headers.keys()].sort();
  const signed = names.join(";");
  const query = canonicalQuery([
    ...parseQuery(url.search),
    ["X-Amz-Algorithm", ALGORITHM],
    ["X-Amz-Credential", `${input.credentials.accessKeyId}/${scope}`],
    ["X-Amz-Date", amzDate],
    ["X-Amz-Expires", String(input.expiresSecs)],
    ["X-Amz-SignedHeaders", signed],
  ]);
  const path = canonicalUri(url.pathname);
  const canonical = canonicalRequest(
    input.method,
    path,
    query,
    names.map((n) => [n, headers.get(n)!]),
    signed,
    UNSIGNED_PAYLOAD,
  );
  const signature = await signatureOf(
    input.credentials.secretAccessKey,
    scope,
    await stringToSign(amzDate, scope, canonical),
  );
  return `${url.origin}${path}?${query}&X-Amz-Signature=${signature}`;
}

// --- the proxy --------------------------------------------------------------

/** A bucket's rules from `[storage.buckets.<name>]` in supabase/config.toml, sizes in bytes. */
export interface BucketRules {
  /** The effective limit (bucket and `[storage] file_size_limit` combined); null for none. */
  file_size_limit: number | null;
  /** Lower-case `type/subtype` or `type/*`; empty allows every type. */
  allowed_mime_types: string[];
}

/** From the gateway config (scripts/local/gateway_config.py). */
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

// `deno run --allow-env scripts/local/s3_proxy.ts <METHOD> <bucket>/<key> [content-type] [expires-secs]`
// prints a presigned URL for the stack whose S3_* variables are in the
// environment (`set -a; source .local/env; set +a`), to try storage with curl.
if (import.meta.main) {
  const [method, path, contentType, expires] = Deno.args;
  if (!method || !path) {
    console.error("usage: s3_proxy.ts <METHOD> <bucket>/<key> [content-type] [expires-secs]");
    Deno.exit(2);
  }
  const env = (name: string): string => {
    const v = Deno.env.get(name);
    if (!v) {
      console.error(`${name} is not set: source .local/env first`);
      Deno.exit(2);
    }
    return v;
  };
  console.log(
    await presignUrl({
      method: method.toUpperCase(),
      url: `${env("S3_ENDPOINT")}/${path.replace(/^\/+/, "")}`,
      credentials: { accessKeyId: env("S3_ACCESS_KEY_ID"), secretAccessKey: env("S3_SECRET_ACCESS_KEY") },
      region: env("S3_REGION"),
      expiresSecs: Number(expires ?? 3600),
      headers: contentType ? { "content-type": contentType } : {},
    }),
  );
}
