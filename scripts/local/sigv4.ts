// AWS Signature Version 4, the one implementation on the TypeScript side:
// verifying a request (Authorization header or presigned query) as S3 does,
// signing one in header mode, and presigning a URL. The gateway's S3 endpoint
// (s3_proxy.ts) verifies clients and re-signs for s3s-fs with it, the Storage
// API (storage_api/object_store.ts) signs its byte access with it, bucket
// setup (buckets.ts) signs CreateBucket with it, and tests presign with it.
//
// Canonicalisation follows S3: each path segment decoded and encoded exactly
// once (no double encoding), query pairs encoded and sorted, signed header
// values trimmed with inner runs of spaces collapsed. WebCrypto only.

export const ALGORITHM = "AWS4-HMAC-SHA256";
export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/** The longest validity SigV4 allows for a presigned URL (7 days). */
export const MAX_EXPIRES_SECS = 604_800;
/** How far a header-signed request's time may be from ours (S3's limit). */
const MAX_SKEW_MS = 15 * 60 * 1000;
/** Bodies held in memory (to check a declared SHA-256, or to give a chunked upload a length) stop here. */
export const MAX_BUFFERED_BODY_BYTES = 256 * 1024 * 1024;
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

export function percentDecode(s: string): string {
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
export function incompleteBody(): S3Failure {
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

// `deno run --allow-env scripts/local/sigv4.ts <METHOD> <bucket>/<key> [content-type] [expires-secs]`
// prints a presigned URL for the stack whose S3_* variables are in the
// environment (`set -a; source .local/env; set +a`), to try storage with curl.
if (import.meta.main) {
  const [method, path, contentType, expires] = Deno.args;
  if (!method || !path) {
    console.error("usage: sigv4.ts <METHOD> <bucket>/<key> [content-type] [expires-secs]");
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
