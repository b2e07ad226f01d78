// The Supabase Storage REST API at /storage/v1 for the local stack (the S3
// protocol at /storage/v1/s3 is s3_proxy.ts): buckets, objects, signed
// download and upload URLs, and resumable (TUS) uploads, speaking the wire
// format storage-js and tus-js-client use.
//
// Metadata is in the local `storage` schema, read and written as the caller
// so that RLS policies on storage.objects decide (metadata.ts); bytes are in
// the local S3 server under the same bucket and key (object_store.ts).
// Every refusal happens before any byte is stored.

import { CORS_HEADERS, failureResponse, invalidRequest, noSuchBucket, noSuchKey, StorageFailure } from "./errors.ts";
import { type Claims, Hs256 } from "./jwt.ts";
import {
  API_ROLES,
  type ApiRole,
  type BucketRow,
  type Caller,
  insertObject,
  Metadata,
  type ObjectRow,
} from "./metadata.ts";
import { parseMultipart } from "./multipart.ts";
import { ObjectStore, type ObjectStoreConfig } from "./object_store.ts";
import {
  checkBucketName,
  checkMime,
  checkMimeTypes,
  checkObjectName,
  checkSize,
  parseSize,
  sizeLimit,
} from "./rules.ts";
import { ResumableUploads } from "./tus.ts";

export interface StorageApiConfig {
  db_url: string;
  jwt_secret: string;
  s3: ObjectStoreConfig & { default_file_size_limit?: number | null };
}

/** How long a signed upload URL is valid (Supabase's is two hours). */
const SIGNED_UPLOAD_SECS = 7200;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Bodies are read into memory before anything is stored; never more than this whatever the limits say. */
const MAX_BODY_BYTES = 1024 * 1024 * 1024;

export interface StorageApi {
  handle(req: Request, path: string): Promise<Response>;
  close(): Promise<void>;
}

/** `prefix` is where the API is mounted (/storage/v1); `handle` gets the path after it. */
export function storageApi(config: StorageApiConfig, prefix = "/storage/v1"): StorageApi {
  const db = new Metadata(config.db_url);
  const store = new ObjectStore(config.s3);
  const jwt = new Hs256(config.jwt_secret);
  const globalLimit = config.s3.default_file_size_limit ?? null;
  const tus = new ResumableUploads({ db, store, globalLimit, prefix: `${prefix}/upload/resumable` });
  const api = new Api(db, store, jwt, globalLimit);

  return {
    async handle(req, path) {
      try {
        const resumable = path === "/upload/resumable" || path.startsWith("/upload/resumable/");
        if (req.method === "OPTIONS") {
          const pre = preflight(req);
          if (resumable) { for (const [k, v] of tus.options().headers) pre.headers.set(k, v); }
          return pre;
        }
        if (resumable) return await tus.handle(req, path.slice("/upload/resumable".length), await api.caller(req));
        return await api.route(req, path);
      } catch (e) {
        if (e instanceof StorageFailure) return failureResponse(e);
        console.error(`storage: ${req.method} ${path}: ${(e as Error).stack ?? e}`);
        return failureResponse(new StorageFailure(500, "InternalError", "Internal Server Error"));
      }
    },
    async close() {
      await db.close();
    },
  };
}

function preflight(req: Request): Response {
  return new Response(null, {
    status: 204,
    headers: {
      ...CORS_HEADERS,
      "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
      "access-control-allow-headers": req.headers.get("access-control-request-headers") ?? "*",
      "access-control-max-age": "3600",
    },
  });
}

const json = (body: unknown, status = 200) => Response.json(body, { status, headers: CORS_HEADERS });

/** Path segments after a route's fixed part, percent-decoded. */
function decodePath(raw: string): string {
  try {
    return raw.split("/").map(decodeURIComponent).join("/");
  } catch {
    throw invalidRequest("the path is not valid percent-encoding");
  }
}

/** `bucket/the/object/name` -> [bucket, name]; the name is checked. */
function splitObjectPath(raw: string): [string, string] {
  const path = decodePath(raw.replace(/^\/+/, ""));
  const i = path.indexOf("/");
  if (i <= 0) throw invalidRequest("expected /<bucket>/<object name>");
  return [path.slice(0, i), checkObjectName(path.slice(i + 1))];
}

async function readJson(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (text.trim() === "") return {};
  try {
    const v = JSON.parse(text);
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch { /* answered below */ }
  throw invalidRequest("the body must be a JSON object");
}

/** Reads a body into memory, refusing it once it passes `limit` bytes. */
async function readBytes(stream: ReadableStream<Uint8Array> | null, limit: number, tooLarge: () => StorageFailure) {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (stream) {
    const reader = stream.getReader();
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      size += r.value.length;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge();
      }
      chunks.push(r.value);
    }
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export function bucketJson(b: BucketRow) {
  return {
    id: b.id,
    name: b.name,
    owner: b.owner ?? "",
    public: b.public,
    file_size_limit: b.file_size_limit === null ? null : Number(b.file_size_limit),
    allowed_mime_types: b.allowed_mime_types,
    created_at: b.created_at.toISOString(),
    updated_at: b.updated_at.toISOString(),
  };
}

function fileObjectJson(o: ObjectRow, name = o.name) {
  return {
    name,
    id: o.id,
    updated_at: o.updated_at.toISOString(),
    created_at: o.created_at.toISOString(),
    last_accessed_at: o.last_accessed_at.toISOString(),
    metadata: o.metadata,
  };
}

/** What an upload carries, from a multipart form (storage-js with a Blob/File) or a raw body. */
interface Upload {
  bytes: Uint8Array<ArrayBuffer>;
  contentType: string;
  cacheControl: string;
  userMetadata: Record<string, unknown> | null;
}

class Api {
  constructor(
    readonly db: Metadata,
    readonly store: ObjectStore,
    readonly jwt: Hs256,
    readonly globalLimit: number | null,
  ) {}

  /** The caller from `Authorization: Bearer` (or `apikey`): a token signed with the stack's secret. */
  async caller(req: Request): Promise<Caller> {
    const auth = req.headers.get("authorization");
    const token = auth && /^bearer\s+/i.test(auth) ? auth.replace(/^bearer\s+/i, "").trim() : req.headers.get("apikey");
    if (!token) throw new StorageFailure(401, "InvalidJWT", "headers must have required property 'authorization'");
    const claims = await this.jwt.verify(token, (why) =>
      new StorageFailure(
        401,
        "InvalidJWT",
        why === "expired" ? "jwt expired" : why === "signature" ? "invalid signature" : "jwt malformed",
      ));
    const role = claims.role as ApiRole;
    if (!API_ROLES.includes(role)) throw new StorageFailure(401, "InvalidJWT", "the token's role is not an API role");
    const sub = typeof claims.sub === "string" && UUID.test(claims.sub) ? claims.sub : null;
    return { role, claims, userId: role === "authenticated" ? sub : null };
  }

  /** A bucket an object operation names, looked up by the server itself (not subject to RLS). */
  async bucketFor(id: string): Promise<BucketRow> {
    const b = await this.db.bucket(id);
    if (!b) throw noSuchBucket();
    return b;
  }

  async route(req: Request, path: string): Promise<Response> {
    const m = req.method;
    let r: RegExpExecArray | null;
    if (path === "/bucket" || path === "/bucket/") {
      if (m === "GET") return await this.listBuckets(req);
      if (m === "POST") return await this.createBucket(req);
    }
    if ((r = /^\/bucket\/([^/]+)\/empty\/?$/.exec(path)) && m === "POST") {
      return await this.emptyBucket(req, decodePath(r[1]));
    }
    if ((r = /^\/bucket\/([^/]+)\/?$/.exec(path))) {
      const id = decodePath(r[1]);
      if (m === "GET") return await this.getBucket(req, id);
      if (m === "PUT") return await this.updateBucket(req, id);
      if (m === "DELETE") return await this.deleteBucket(req, id);
    }
    if ((r = /^\/object\/list\/([^/]+)\/?$/.exec(path)) && m === "POST") {
      return await this.list(req, decodePath(r[1]));
    }
    if (path === "/object/move" && m === "POST") return await this.moveOrCopy(req, "move");
    if (path === "/object/copy" && m === "POST") return await this.moveOrCopy(req, "copy");
    if ((r = /^\/object\/upload\/sign\/(.+)$/.exec(path))) {
      if (m === "POST") return await this.signUpload(req, r[1]);
      if (m === "PUT") return await this.uploadSigned(req, r[1]);
    }
    if ((r = /^\/object\/sign\/([^/]+)\/?$/.exec(path)) && m === "POST") {
      return await this.signMany(req, decodePath(r[1]));
    }
    if ((r = /^\/object\/sign\/(.+)$/.exec(path))) {
      if (m === "POST") return await this.sign(req, r[1]);
      if (m === "GET" || m === "HEAD") return await this.downloadSigned(req, r[1]);
    }
    if ((r = /^\/object\/info\/(?:(?:authenticated|public)\/)?(.+)$/.exec(path)) && m === "GET") {
      return await this.info(req, r[1]);
    }
    if ((r = /^\/object\/public\/(.+)$/.exec(path)) && (m === "GET" || m === "HEAD")) {
      return await this.downloadPublic(req, r[1]);
    }
    if ((r = /^\/object\/authenticated\/(.+)$/.exec(path)) && (m === "GET" || m === "HEAD")) {
      return await this.download(req, r[1]);
    }
    if ((r = /^\/object\/([^/]+)\/?$/.exec(path)) && m === "DELETE") {
      return await this.removeMany(req, decodePath(r[1]));
    }
    if ((r = /^\/object\/([^/]+\/.+)$/.exec(path))) {
      if (m === "GET" || m === "HEAD") return await this.download(req, r[1]);
      if (m === "POST") return await this.upload(req, r[1], req.headers.get("x-upsert") === "true");
      if (m === "PUT") return await this.upload(req, r[1], true);
      if (m === "DELETE") return await this.removeOne(req, r[1]);
    }
    throw new StorageFailure(404, "NotFound", `Route ${m}:${path} not found`);
  }

  // --- buckets --------------------------------------------------------------

  async listBuckets(req: Request): Promise<Response> {
    const caller = await this.caller(req);
    const q = new URL(req.url).searchParams;
    const limit = Math.min(Math.max(Number(q.get("limit") ?? 1000) || 1000, 1), 1000);
    const offset = Math.max(Number(q.get("offset") ?? 0) || 0, 0);
    const search = q.get("search") ?? "";
    const column = ["id", "name", "created_at", "updated_at"].includes(q.get("sortColumn") ?? "")
      ? q.get("sortColumn")!
      : "name";
    const desc = (q.get("sortOrder") ?? "asc").toLowerCase() === "desc";
    const rows = await this.db.asCaller(caller, (tx) =>
      tx<BucketRow[]>`select * from storage.buckets
                      where ${search} = '' or strpos(lower(name), lower(${search})) > 0
                      order by ${tx(column)} ${desc ? tx`desc` : tx`asc`}
                      limit ${limit} offset ${offset}`);
    return json(rows.map(bucketJson));
  }

  async getBucket(req: Request, id: string): Promise<Response> {
    const caller = await this.caller(req);
    const rows = await this.db.asCaller(
      caller,
      (tx) => tx<BucketRow[]>`select * from storage.buckets where id = ${id}`,
    );
    if (!rows[0]) throw noSuchBucket();
    return json(bucketJson(rows[0]));
  }

  async createBucket(req: Request): Promise<Response> {
    const caller = await this.caller(req);
    const body = await readJson(req);
    const id = checkBucketName(body.id ?? body.name);
    const limit = parseSize(body.file_size_limit);
    const types = checkMimeTypes(body.allowed_mime_types);
    // The row first (RLS on storage.buckets decides; with no policy only the
    // service role may create), then the S3 bucket, in one transaction.
    await this.db.asCaller(caller, async (tx) => {
      if ((await tx`select 1 from storage.buckets where id = ${id}`).length > 0) {
        throw new StorageFailure(409, "BucketAlreadyExists", "The resource already exists");
      }
      await tx`insert into storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types)
               values (${id}, ${id}, ${caller.userId}, ${caller.userId}, ${body.public === true}, ${limit}, ${types})`;
      await this.store.createBucket(id);
    });
    return json({ name: id });
  }

  async updateBucket(req: Request, id: string): Promise<Response> {
    const caller = await this.caller(req);
    const body = await readJson(req);
    const limit = parseSize(body.file_size_limit);
    const types = checkMimeTypes(body.allowed_mime_types);
    const rows = await this.db.asCaller(
      caller,
      (tx) =>
        tx`update storage.buckets set public = coalesce(${
          typeof body.public === "boolean" ? body.public : null
        }, public),
                file_size_limit = ${limit}, allowed_mime_types = ${types}, updated_at = now()
         where id = ${id} returning id`,
    );
    if (rows.length === 0) throw noSuchBucket();
    return json({ message: "Successfully updated" });
  }

  async deleteBucket(req: Request, id: string): Promise<Response> {
    const caller = await this.caller(req);
    await this.db.asCaller(caller, async (tx) => {
      if ((await tx`select 1 from storage.buckets where id = ${id}`).length === 0) throw noSuchBucket();
      // Counted by the server: a bucket whose objects the caller cannot see is still not empty.
      const [{ n }] = await this.db.sql`select count(*)::int as n from storage.objects where bucket_id = ${id}`;
      if (n > 0) throw new StorageFailure(409, "InvalidRequest", "The bucket you tried to delete is not empty");
      const rows = await tx`delete from storage.buckets where id = ${id} returning id`;
      if (rows.length === 0) throw new StorageFailure(403, "AccessDenied", "the bucket could not be deleted (RLS)");
    });
    if (!(await this.store.deleteBucket(id))) {
      console.error(`storage: bucket ${id} deleted; its S3 directory still holds files written through /storage/v1/s3`);
    }
    return json({ message: "Successfully deleted" });
  }

  async emptyBucket(req: Request, id: string): Promise<Response> {
    const caller = await this.caller(req);
    await this.bucketFor(id);
    const names = await this.db.asCaller(
      caller,
      (tx) => tx<{ name: string }[]>`delete from storage.objects where bucket_id = ${id} returning name`,
    );
    for (const { name } of names) await this.store.delete(id, name);
    return json({ message: "Successfully emptied" });
  }

  // --- uploads ----------------------------------------------------------------

  /** The upload's bytes and attributes, refused on size as soon as it passes the bucket's limit. */
  async readUpload(req: Request, bucket: BucketRow): Promise<Upload> {
    const limit = sizeLimit(bucket, this.globalLimit) ?? MAX_BODY_BYTES;
    const declared = Number(req.headers.get("content-length") ?? NaN);
    const contentType = req.headers.get("content-type") ?? "";
    if (/^multipart\/form-data/i.test(contentType)) {
      // storage-js sends a File/Blob as a form: its part is the file, `cacheControl` and `metadata` fields beside it.
      // The form's framing adds a little, so the declared length is only a bound on the whole.
      if (declared > limit + 64 * 1024) checkSize(bucket, this.globalLimit, declared);
      const bytes = await readBytes(req.body, limit + 64 * 1024, () => invalidSize(bucket, this.globalLimit));
      const form = parseMultipart(bytes, contentType);
      if (!form.file) throw invalidRequest("the form has no file");
      checkSize(bucket, this.globalLimit, form.file.bytes.length);
      const cache = form.fields.get("cacheControl");
      const meta = form.fields.get("metadata");
      return {
        bytes: form.file.bytes,
        contentType: form.file.contentType,
        cacheControl: cache ? `max-age=${cache.replace(/^max-age=/, "")}` : "no-cache",
        userMetadata: typeof meta === "string" ? parseUserMetadata(meta) : null,
      };
    }
    if (Number.isFinite(declared)) checkSize(bucket, this.globalLimit, declared);
    const bytes = await readBytes(req.body, limit, () => invalidSize(bucket, this.globalLimit));
    const xMeta = req.headers.get("x-metadata");
    return {
      bytes,
      contentType: contentType || "application/octet-stream",
      cacheControl: req.headers.get("cache-control") ?? "no-cache",
      userMetadata: xMeta ? parseUserMetadata(new TextDecoder().decode(base64Bytes(xMeta))) : null,
    };
  }

  /**
   * Stores an object: the row as the caller (RLS), the bytes in S3, the row's
   * eTag, all in one transaction, so a refusal or a failed write leaves neither.
   */
  async storeObject(
    caller: Caller,
    bucket: BucketRow,
    name: string,
    upload: Upload,
    upsert: boolean,
    owner: string | null,
  ): Promise<ObjectRow> {
    checkMime(bucket, upload.contentType);
    checkSize(bucket, this.globalLimit, upload.bytes.length);
    await this.db.asCaller(caller, async (tx) => {
      const now = new Date().toISOString();
      const metadata = {
        eTag: "",
        size: upload.bytes.length,
        mimetype: upload.contentType,
        cacheControl: upload.cacheControl,
        lastModified: now,
        contentLength: upload.bytes.length,
        httpStatusCode: 200,
      };
      await insertObject(tx, { bucket: bucket.id, name, owner, metadata, userMetadata: upload.userMetadata, upsert });
      const etag = await this.store.put(bucket.id, name, upload.bytes, upload.contentType, upload.cacheControl);
      // The eTag is the server's own bookkeeping, written outside the caller's role.
      await tx`reset role`;
      await tx`update storage.objects set metadata = metadata || ${tx.json({ eTag: etag })}
               where bucket_id = ${bucket.id} and name = ${name}`;
    });
    return (await this.db.objectRow(bucket.id, name))!;
  }

  async upload(req: Request, rawPath: string, upsert: boolean): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    const bucket = await this.bucketFor(bucketId);
    // Type and declared size are judged before the body is read.
    const ct = req.headers.get("content-type") ?? "";
    if (ct && !/^multipart\/form-data/i.test(ct)) checkMime(bucket, ct);
    const upload = await this.readUpload(req, bucket);
    const row = await this.storeObject(caller, bucket, name, upload, upsert, caller.userId);
    return json({ Id: row.id, Key: `${bucketId}/${name}` });
  }

  // --- downloads ----------------------------------------------------------------

  /** Streams the object's bytes with the headers Storage sends (type, length, cache, ETag, range). */
  async serve(req: Request, row: ObjectRow): Promise<Response> {
    const method = req.method === "HEAD" ? "HEAD" : "GET";
    const s3 = await this.store.get(row.bucket_id, row.name, method, req.headers.get("range"));
    if (s3.status === 404) {
      await s3.body?.cancel();
      throw noSuchKey();
    }
    if (!s3.ok) {
      await s3.body?.cancel();
      throw new StorageFailure(
        s3.status === 416 ? 416 : 500,
        s3.status === 416 ? "InvalidRange" : "InternalError",
        `the S3 server answered ${s3.status}`,
      );
    }
    const meta = row.metadata ?? {};
    const headers = new Headers(CORS_HEADERS);
    headers.set("content-type", String(meta.mimetype ?? s3.headers.get("content-type") ?? "application/octet-stream"));
    headers.set("cache-control", String(meta.cacheControl ?? "no-cache"));
    for (const h of ["content-length", "content-range", "accept-ranges", "last-modified"]) {
      const v = s3.headers.get(h);
      if (v !== null) headers.set(h, v);
    }
    headers.set("etag", String(meta.eTag || s3.headers.get("etag") || ""));
    const download = new URL(req.url).searchParams.get("download");
    if (download !== null) {
      const file = download === "" ? row.name.split("/").pop()! : download;
      headers.set("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(file)}`);
    }
    return new Response(method === "HEAD" ? null : s3.body, { status: s3.status, headers });
  }

  /** The caller's view of one object row (RLS applies); 404 when they cannot see it. */
  async visibleRow(caller: Caller, bucket: string, name: string): Promise<ObjectRow> {
    const rows = await this.db.asCaller(
      caller,
      (tx) => tx<ObjectRow[]>`select * from storage.objects where bucket_id = ${bucket} and name = ${name}`,
    );
    if (!rows[0]) throw noSuchKey();
    return rows[0];
  }

  async download(req: Request, rawPath: string): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    await this.bucketFor(bucketId);
    return await this.serve(req, await this.visibleRow(caller, bucketId, name));
  }

  async downloadPublic(req: Request, rawPath: string): Promise<Response> {
    const [bucketId, name] = splitObjectPath(rawPath);
    const bucket = await this.db.bucket(bucketId);
    // A private bucket answers as a missing one: its existence is not public.
    if (!bucket || !bucket.public) throw noSuchBucket();
    const row = await this.db.objectRow(bucketId, name);
    if (!row) throw noSuchKey();
    return await this.serve(req, row);
  }

  async info(req: Request, rawPath: string): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    await this.bucketFor(bucketId);
    const o = await this.visibleRow(caller, bucketId, name);
    const meta = o.metadata ?? {};
    return json({
      id: o.id,
      version: o.version,
      name: o.name,
      bucket_id: o.bucket_id,
      size: meta.size ?? null,
      content_type: meta.mimetype ?? null,
      cache_control: meta.cacheControl ?? null,
      etag: meta.eTag ?? null,
      last_modified: meta.lastModified ?? null,
      created_at: o.created_at.toISOString(),
      updated_at: o.updated_at.toISOString(),
      last_accessed_at: o.last_accessed_at.toISOString(),
      metadata: o.user_metadata ?? {},
    });
  }

  // --- list, move, copy, delete ------------------------------------------------

  async list(req: Request, bucketId: string): Promise<Response> {
    const caller = await this.caller(req);
    await this.bucketFor(bucketId);
    const body = await readJson(req);
    let prefix = typeof body.prefix === "string" ? body.prefix.replace(/^\/+/, "") : "";
    if (prefix !== "" && !prefix.endsWith("/")) prefix += "/";
    const limit = Math.min(Math.max(Number(body.limit ?? 100) || 100, 1), 1000);
    const offset = Math.max(Number(body.offset ?? 0) || 0, 0);
    const search = typeof body.search === "string" ? body.search.toLowerCase() : "";
    const sortBy = (body.sortBy ?? {}) as { column?: string; order?: string };
    const column = ["name", "created_at", "updated_at", "last_accessed_at"].includes(sortBy.column ?? "")
      ? sortBy.column!
      : "name";
    const desc = (sortBy.order ?? "asc").toLowerCase() === "desc";
    const rows = await this.db.asCaller(
      caller,
      (tx) =>
        tx<ObjectRow[]>`select * from storage.objects where bucket_id = ${bucketId} and starts_with(name, ${prefix})`,
    );
    // Directly under the prefix: files as themselves, deeper paths as one folder entry each (id null).
    const entries = new Map<
      string,
      ReturnType<typeof fileObjectJson> | {
        name: string;
        id: null;
        updated_at: null;
        created_at: null;
        last_accessed_at: null;
        metadata: null;
      }
    >();
    for (const o of rows) {
      const rest = o.name.slice(prefix.length);
      const slash = rest.indexOf("/");
      const entry = slash < 0 ? rest : rest.slice(0, slash);
      if (search && !entry.toLowerCase().includes(search)) continue;
      if (slash < 0) entries.set(`f:${entry}`, fileObjectJson(o, entry));
      else if (!entries.has(`d:${entry}`)) {
        entries.set(`d:${entry}`, {
          name: entry,
          id: null,
          updated_at: null,
          created_at: null,
          last_accessed_at: null,
          metadata: null,
        });
      }
    }
    const sorted = [...entries.values()].sort((a, b) => {
      const av = (a as Record<string, unknown>)[column] as string | null;
      const bv = (b as Record<string, unknown>)[column] as string | null;
      const c = av === bv ? 0 : av === null ? -1 : bv === null ? 1 : av < bv ? -1 : 1;
      return (desc ? -c : c) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    });
    return json(sorted.slice(offset, offset + limit));
  }

  async moveOrCopy(req: Request, op: "move" | "copy"): Promise<Response> {
    const caller = await this.caller(req);
    const body = await readJson(req);
    const str = (v: unknown, what: string) => {
      if (typeof v !== "string" || v === "") throw invalidRequest(`body must have required property '${what}'`);
      return v;
    };
    const srcBucket = str(body.bucketId, "bucketId");
    const srcKey = checkObjectName(str(body.sourceKey, "sourceKey"));
    const dstKey = checkObjectName(str(body.destinationKey, "destinationKey"));
    const dstBucketId = typeof body.destinationBucket === "string" && body.destinationBucket
      ? body.destinationBucket
      : srcBucket;
    await this.bucketFor(srcBucket);
    const dstBucket = await this.bucketFor(dstBucketId);
    const source = await this.visibleRow(caller, srcBucket, srcKey);
    const meta = source.metadata ?? {};
    // The destination bucket's rules hold for what arrives there.
    checkMime(dstBucket, String(meta.mimetype ?? "application/octet-stream"));
    checkSize(dstBucket, this.globalLimit, Number(meta.size ?? 0));
    const upsert = req.headers.get("x-upsert") === "true";
    if (op === "move") {
      if (srcBucket === dstBucketId && srcKey === dstKey) return json({ message: "Successfully moved" });
      await this.db.asCaller(caller, async (tx) => {
        if (upsert) await tx`delete from storage.objects where bucket_id = ${dstBucketId} and name = ${dstKey}`;
        const moved =
          await tx`update storage.objects set bucket_id = ${dstBucketId}, name = ${dstKey}, updated_at = now()
                               where bucket_id = ${srcBucket} and name = ${srcKey} returning id`;
        if (moved.length === 0) throw noSuchKey();
        await this.store.copy(srcBucket, srcKey, dstBucketId, dstKey);
      });
      await this.store.delete(srcBucket, srcKey);
      return json({ message: "Successfully moved" });
    }
    await this.db.asCaller(caller, async (tx) => {
      const userMetadata = body.copyMetadata === false
        ? (body.metadata as Record<string, unknown> | undefined) ?? null
        : source.user_metadata;
      await insertObject(tx, {
        bucket: dstBucketId,
        name: dstKey,
        owner: caller.userId,
        metadata: { ...meta, lastModified: new Date().toISOString() },
        userMetadata,
        upsert,
      });
      await this.store.copy(srcBucket, srcKey, dstBucketId, dstKey);
    });
    const row = await this.db.objectRow(dstBucketId, dstKey);
    return json({ Id: row?.id, Key: `${dstBucketId}/${dstKey}` });
  }

  async removeOne(req: Request, rawPath: string): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    await this.bucketFor(bucketId);
    const rows = await this.db.asCaller(
      caller,
      (tx) => tx`delete from storage.objects where bucket_id = ${bucketId} and name = ${name} returning id`,
    );
    if (rows.length === 0) throw noSuchKey();
    await this.store.delete(bucketId, name);
    return json({ message: "Successfully deleted" });
  }

  async removeMany(req: Request, bucketId: string): Promise<Response> {
    const caller = await this.caller(req);
    const body = await readJson(req);
    if (!Array.isArray(body.prefixes) || body.prefixes.some((p) => typeof p !== "string")) {
      throw invalidRequest("body must have required property 'prefixes' (a list of object names)");
    }
    await this.bucketFor(bucketId);
    const names = (body.prefixes as string[]).map((p) => p.replace(/^\/+/, ""));
    const rows = await this.db.asCaller(
      caller,
      (tx) =>
        tx<ObjectRow[]>`delete from storage.objects where bucket_id = ${bucketId} and name = any(${names})
                      returning *`,
    );
    for (const o of rows) await this.store.delete(bucketId, o.name);
    return json(rows.map((o) => ({ ...fileObjectJson(o), bucket_id: o.bucket_id, owner: o.owner ?? undefined })));
  }

  // --- signed URLs --------------------------------------------------------------

  async signedUrlFor(bucket: string, name: string, expiresIn: number): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const token = await this.jwt.sign({ url: `${bucket}/${name}`, iat: now, exp: now + expiresIn });
    return `/object/sign/${bucket}/${name}?token=${token}`;
  }

  expiresIn(body: Record<string, unknown>): number {
    const v = Number(body.expiresIn);
    if (!Number.isInteger(v) || v < 1) {
      throw invalidRequest("body must have required property 'expiresIn' (seconds, >= 1)");
    }
    return v;
  }

  async sign(req: Request, rawPath: string): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    const body = await readJson(req);
    const expiresIn = this.expiresIn(body);
    await this.bucketFor(bucketId);
    await this.visibleRow(caller, bucketId, name);
    return json({ signedURL: await this.signedUrlFor(bucketId, name, expiresIn) });
  }

  async signMany(req: Request, bucketId: string): Promise<Response> {
    const caller = await this.caller(req);
    const body = await readJson(req);
    const expiresIn = this.expiresIn(body);
    if (!Array.isArray(body.paths) || body.paths.some((p) => typeof p !== "string")) {
      throw invalidRequest("body must have required property 'paths'");
    }
    await this.bucketFor(bucketId);
    const paths = body.paths as string[];
    const visible = await this.db.asCaller(
      caller,
      (tx) =>
        tx<{ name: string }[]>`select name from storage.objects where bucket_id = ${bucketId} and name = any(${paths})`,
    );
    const seen = new Set(visible.map((r) => r.name));
    const out = [];
    for (const path of paths) {
      out.push(
        seen.has(path)
          ? { error: null, path, signedURL: await this.signedUrlFor(bucketId, path, expiresIn) }
          : { error: "Either the object does not exist or you do not have access to it", path, signedURL: null },
      );
    }
    return json(out);
  }

  /** The claims of a signed URL's token, which must name exactly this object. */
  async urlToken(req: Request, bucket: string, name: string): Promise<Claims> {
    const token = new URL(req.url).searchParams.get("token");
    if (!token) throw invalidRequest("querystring must have required property 'token'");
    const claims = await this.jwt.verify(
      token,
      (why) =>
        why === "expired"
          ? new StorageFailure(400, "ExpiredToken", "jwt expired")
          : new StorageFailure(400, "InvalidSignature", "invalid signature"),
    );
    if (claims.url !== `${bucket}/${name}`) throw new StorageFailure(400, "InvalidSignature", "url mismatch");
    return claims;
  }

  async downloadSigned(req: Request, rawPath: string): Promise<Response> {
    const [bucketId, name] = splitObjectPath(rawPath);
    const claims = await this.urlToken(req, bucketId, name);
    // An upload token is not a download token.
    if ("upsert" in claims || "owner" in claims) throw new StorageFailure(400, "InvalidSignature", "invalid signature");
    const row = await this.db.objectRow(bucketId, name);
    if (!row) throw noSuchKey();
    return await this.serve(req, row);
  }

  async signUpload(req: Request, rawPath: string): Promise<Response> {
    const caller = await this.caller(req);
    const [bucketId, name] = splitObjectPath(rawPath);
    await this.bucketFor(bucketId);
    const upsert = req.headers.get("x-upsert") === "true";
    // The caller must be allowed to write this object now; the token then stands in for them.
    await this.db.mayInsert(caller, bucketId, name, upsert);
    if (!upsert && await this.db.objectRow(bucketId, name)) {
      throw new StorageFailure(409, "Duplicate", "The resource already exists");
    }
    const now = Math.floor(Date.now() / 1000);
    const token = await this.jwt.sign({
      owner: caller.userId ?? undefined,
      url: `${bucketId}/${name}`,
      upsert,
      iat: now,
      exp: now + SIGNED_UPLOAD_SECS,
    });
    return json({ url: `/object/upload/sign/${bucketId}/${name}?token=${token}`, token });
  }

  async uploadSigned(req: Request, rawPath: string): Promise<Response> {
    const [bucketId, name] = splitObjectPath(rawPath);
    const claims = await this.urlToken(req, bucketId, name);
    if (!("upsert" in claims)) throw new StorageFailure(400, "InvalidSignature", "invalid signature");
    const bucket = await this.bucketFor(bucketId);
    const ct = req.headers.get("content-type") ?? "";
    if (ct && !/^multipart\/form-data/i.test(ct)) checkMime(bucket, ct);
    const upload = await this.readUpload(req, bucket);
    const owner = typeof claims.owner === "string" && UUID.test(claims.owner) ? claims.owner : null;
    // Authorised when the URL was signed; the write itself is the server's.
    const service: Caller = { role: "service_role", claims: { role: "service_role" }, userId: null };
    const row = await this.storeObject(service, bucket, name, upload, claims.upsert === true, owner);
    return json({ Id: row.id, Key: `${bucketId}/${name}` });
  }
}

function invalidSize(bucket: BucketRow, globalLimit: number | null): StorageFailure {
  const limit = sizeLimit(bucket, globalLimit) ?? MAX_BODY_BYTES;
  return new StorageFailure(413, "EntityTooLarge", `The object exceeded the maximum allowed size (${limit} bytes)`);
}

function base64Bytes(s: string): Uint8Array {
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    throw invalidRequest("x-metadata must be base64");
  }
}

function parseUserMetadata(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch { /* below */ }
  throw invalidRequest("metadata must be a JSON object");
}
