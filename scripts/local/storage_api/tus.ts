// Resumable uploads at /storage/v1/upload/resumable: the TUS 1.0.0 core
// protocol with the creation, creation-with-upload and termination
// extensions, as Supabase Storage serves it to tus-js-client (metadata keys bucketName, objectName,
// contentType, cacheControl, metadata; `x-upsert` on creation).
//
// Written here rather than with @tus/server + @tus/s3-store: those bring the
// AWS SDK and its own signer, and the checks that matter (RLS on creation,
// bucket limits, the storage.objects row on completion) would have to be
// hooked in anyway. The bytes go to the local S3 server as a multipart
// upload, one part per PATCH (tus-js-client sends Supabase's 6 MB chunks; S3
// parts other than the last must be at least 5 MiB). A PATCH whose body does
// not arrive whole is dropped, so the offset always names bytes S3 holds and
// an interrupted client resumes from there (HEAD, then PATCH at the offset).
// Upload state is kept in this process: a restarted gateway forgets unfinished
// uploads (their clients start again), which Supabase does not.

import { CORS_HEADERS, invalidRequest, StorageFailure } from "./errors.ts";
import { type Caller, insertObject, type Metadata } from "./metadata.ts";
import type { ObjectStore } from "./object_store.ts";
import { checkMime, checkObjectName, checkSize, sizeLimit } from "./rules.ts";

const TUS_VERSION = "1.0.0";
/** S3's smallest part other than the last. */
const MIN_PART_BYTES = 5 * 1024 * 1024;
/** The largest PATCH body taken at once (a chunk is held in memory before it becomes a part). */
const MAX_PATCH_BYTES = 64 * 1024 * 1024;
/** Unfinished uploads are forgotten (and aborted in S3) after a day without a PATCH, as Supabase's URLs expire. */
const IDLE_MS = 24 * 3600 * 1000;
const MAX_UPLOADS = 10_000;

interface UploadState {
  id: string;
  bucket: string;
  name: string;
  length: number;
  offset: number;
  uploadId: string;
  etags: string[];
  contentType: string;
  cacheControl: string;
  userMetadata: Record<string, unknown> | null;
  upsert: boolean;
  /** Who created it: only they (or the service role) may continue it; the row is written as them. */
  caller: Caller;
  busy: boolean;
  touched: number;
}

export interface ResumableConfig {
  db: Metadata;
  store: ObjectStore;
  globalLimit: number | null;
  /** The public path of the endpoint, for Location. */
  prefix: string;
}

function tusHeaders(extra: Record<string, string> = {}): Headers {
  return new Headers({ ...CORS_HEADERS, "tus-resumable": TUS_VERSION, ...extra });
}

/** `key base64,key base64,key` -> decoded values (a key without a value maps to ""). */
export function parseUploadMetadata(header: string | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const pair of header.split(",")) {
    const [key, value, extra] = pair.trim().split(" ");
    if (!key || extra !== undefined) throw invalidRequest("Upload-Metadata is malformed");
    let decoded = "";
    if (value) {
      try {
        decoded = new TextDecoder("utf-8", { fatal: true }).decode(
          Uint8Array.from(atob(value), (c) => c.charCodeAt(0)),
        );
      } catch {
        throw invalidRequest(`Upload-Metadata value of ${key} is not base64 UTF-8`);
      }
    }
    out.set(key, decoded);
  }
  return out;
}

export class ResumableUploads {
  #uploads = new Map<string, UploadState>();
  constructor(readonly config: ResumableConfig) {}

  options(): Response {
    return new Response(null, {
      status: 204,
      headers: tusHeaders({
        "tus-version": TUS_VERSION,
        "tus-extension": "creation,creation-with-upload,termination",
        ...(this.config.globalLimit !== null ? { "tus-max-size": String(this.config.globalLimit) } : {}),
      }),
    });
  }

  /** `rest` is the path after /upload/resumable: "" for creation, "/<id>" for an upload. */
  async handle(req: Request, rest: string, caller: Caller): Promise<Response> {
    if (req.headers.get("tus-resumable") !== TUS_VERSION) {
      return new Response("Unsupported TUS version", {
        status: 412,
        headers: tusHeaders({ "tus-version": TUS_VERSION }),
      });
    }
    this.#forgetIdle();
    if (rest === "" || rest === "/") {
      if (req.method === "POST") return await this.#create(req, caller);
      throw new StorageFailure(405, "InvalidRequest", "POST creates an upload");
    }
    const id = rest.slice(1);
    const upload = this.#uploads.get(id);
    // Someone else's upload is as good as missing.
    const same = caller.role === upload?.caller.role && caller.userId === upload?.caller.userId;
    if (!upload || !(same || caller.role === "service_role")) {
      return new Response(null, { status: 404, headers: tusHeaders() });
    }
    if (req.method === "HEAD") {
      return new Response(null, {
        status: 200,
        headers: tusHeaders({
          "upload-offset": String(upload.offset),
          "upload-length": String(upload.length),
          "cache-control": "no-store",
        }),
      });
    }
    if (req.method === "PATCH") return await this.#patch(req, upload);
    if (req.method === "DELETE") {
      this.#uploads.delete(id);
      await this.config.store.abortMultipart(upload.bucket, upload.name, upload.uploadId);
      return new Response(null, { status: 204, headers: tusHeaders() });
    }
    throw new StorageFailure(405, "InvalidRequest", "HEAD, PATCH or DELETE an upload");
  }

  async #create(req: Request, caller: Caller): Promise<Response> {
    const { db, store, globalLimit } = this.config;
    if (req.headers.has("upload-defer-length")) throw invalidRequest("Upload-Defer-Length is not supported");
    const lengthHeader = req.headers.get("upload-length") ?? "";
    if (!/^\d{1,15}$/.test(lengthHeader)) throw invalidRequest("Upload-Length must be a whole number of bytes");
    const length = Number(lengthHeader);
    const meta = parseUploadMetadata(req.headers.get("upload-metadata"));
    const bucketName = meta.get("bucketName");
    const objectName = meta.get("objectName");
    if (!bucketName || !objectName) throw invalidRequest("Upload-Metadata must name bucketName and objectName");
    const name = checkObjectName(objectName);
    const bucket = await db.bucket(bucketName);
    if (!bucket) throw new StorageFailure(404, "NoSuchBucket", "Bucket not found");
    const contentType = meta.get("contentType") || "application/octet-stream";
    checkMime(bucket, contentType);
    checkSize(bucket, globalLimit, length);
    const upsert = req.headers.get("x-upsert") === "true";
    // Refused now, before any byte is sent, if the caller may not write this object.
    await db.mayInsert(caller, bucket.id, name, upsert);
    if (!upsert && await db.objectRow(bucket.id, name)) {
      throw new StorageFailure(409, "Duplicate", "The resource already exists");
    }
    let userMetadata: Record<string, unknown> | null = null;
    if (meta.get("metadata")) {
      try {
        userMetadata = JSON.parse(meta.get("metadata")!);
      } catch {
        throw invalidRequest("the metadata value must be JSON");
      }
    }
    const cache = meta.get("cacheControl");
    const cacheControl = cache ? `max-age=${cache.replace(/^max-age=/, "")}` : "no-cache";
    if (this.#uploads.size >= MAX_UPLOADS) {
      throw new StorageFailure(503, "SlowDown", "too many unfinished resumable uploads");
    }
    const uploadId = await store.createMultipart(bucket.id, name, contentType, cacheControl);
    const id = crypto.randomUUID();
    const state: UploadState = {
      id,
      bucket: bucket.id,
      name,
      length,
      offset: 0,
      uploadId,
      etags: [],
      contentType,
      cacheControl,
      userMetadata,
      upsert,
      caller,
      busy: false,
      touched: Date.now(),
    };
    this.#uploads.set(id, state);
    if (length === 0) await this.#finish(state);
    // creation-with-upload (Supabase's docs set uploadDataDuringCreation): the POST carries the first chunk.
    else if (req.headers.get("content-type") === "application/offset+octet-stream") {
      const appended = await this.#append(req, state);
      if (appended) return appended;
    }
    const location = `${new URL(req.url).origin}${this.config.prefix}/${id}`;
    return new Response(null, {
      status: 201,
      headers: tusHeaders({ location, "upload-offset": String(state.offset) }),
    });
  }

  async #patch(req: Request, upload: UploadState): Promise<Response> {
    if ((req.headers.get("content-type") ?? "") !== "application/offset+octet-stream") {
      throw new StorageFailure(415, "InvalidRequest", "PATCH needs Content-Type: application/offset+octet-stream");
    }
    const offset = req.headers.get("upload-offset");
    if (offset === null || !/^\d+$/.test(offset)) throw invalidRequest("Upload-Offset is required");
    if (upload.busy) throw new StorageFailure(423, "ResourceLocked", "another PATCH to this upload is in progress");
    if (Number(offset) !== upload.offset) {
      return new Response(`Upload-Offset is ${upload.offset}`, {
        status: 409,
        headers: tusHeaders({ "upload-offset": String(upload.offset) }),
      });
    }
    return await this.#append(req, upload) ??
      new Response(null, { status: 204, headers: tusHeaders({ "upload-offset": String(upload.offset) }) });
  }

  /** Adds the request's body at the upload's offset; a Response when it was not taken, else null. */
  async #append(req: Request, upload: UploadState): Promise<Response | null> {
    upload.busy = true;
    try {
      const remaining = upload.length - upload.offset;
      const chunk = await readChunk(req.body, Math.min(remaining, MAX_PATCH_BYTES));
      const declared = req.headers.get("content-length");
      if (chunk === null || (chunk !== "too-large" && declared !== null && Number(declared) !== chunk.length)) {
        // The body broke off: nothing of it is kept, the client resumes from the same offset.
        return new Response("the chunk did not arrive whole", { status: 400, headers: tusHeaders() });
      }
      if (chunk === "too-large") {
        throw new StorageFailure(413, "EntityTooLarge", "the chunk goes past Upload-Length");
      }
      if (chunk.length > 0) {
        const last = upload.offset + chunk.length === upload.length;
        if (!last && chunk.length < MIN_PART_BYTES) {
          throw invalidRequest(
            `chunks other than the last must be at least ${MIN_PART_BYTES} bytes (Supabase uses 6 MB)`,
          );
        }
        const etag = await this.config.store.uploadPart(
          upload.bucket,
          upload.name,
          upload.uploadId,
          upload.etags.length + 1,
          chunk,
        );
        upload.etags.push(etag);
        upload.offset += chunk.length;
        upload.touched = Date.now();
      }
      if (upload.offset === upload.length) await this.#finish(upload);
      return null;
    } finally {
      upload.busy = false;
    }
  }

  /** Completes the S3 object and writes its row as the uploader; an RLS refusal now deletes the bytes. */
  async #finish(upload: UploadState): Promise<void> {
    const { db, store, globalLimit } = this.config;
    this.#uploads.delete(upload.id);
    const bucket = await db.bucket(upload.bucket);
    if (!bucket) {
      await store.abortMultipart(upload.bucket, upload.name, upload.uploadId);
      throw new StorageFailure(404, "NoSuchBucket", "Bucket not found");
    }
    const limit = sizeLimit(bucket, globalLimit);
    if (limit !== null && upload.length > limit) {
      await store.abortMultipart(upload.bucket, upload.name, upload.uploadId);
      checkSize(bucket, globalLimit, upload.length);
    }
    let etag: string;
    if (upload.etags.length === 0) {
      await store.abortMultipart(upload.bucket, upload.name, upload.uploadId);
      etag = await store.put(upload.bucket, upload.name, new Uint8Array(), upload.contentType, upload.cacheControl);
    } else {
      etag = await store.completeMultipart(upload.bucket, upload.name, upload.uploadId, upload.etags);
    }
    const now = new Date().toISOString();
    try {
      await db.asCaller(upload.caller, async (tx) => {
        await insertObject(tx, {
          bucket: upload.bucket,
          name: upload.name,
          owner: upload.caller.userId,
          metadata: {
            eTag: etag,
            size: upload.length,
            mimetype: upload.contentType,
            cacheControl: upload.cacheControl,
            lastModified: now,
            contentLength: upload.length,
            httpStatusCode: 200,
          },
          userMetadata: upload.userMetadata,
          upsert: upload.upsert,
        });
      });
    } catch (e) {
      // The policy changed (or another upload took the name) since creation: the bytes go too.
      await store.delete(upload.bucket, upload.name);
      throw e;
    }
  }

  #forgetIdle(): void {
    const cutoff = Date.now() - IDLE_MS;
    for (const [id, u] of this.#uploads) {
      if (u.touched < cutoff && !u.busy) {
        this.#uploads.delete(id);
        this.config.store.abortMultipart(u.bucket, u.name, u.uploadId).catch(() => {});
      }
    }
  }
}

/** The whole body, null when it broke off, "too-large" past `max` bytes. */
async function readChunk(
  stream: ReadableStream<Uint8Array> | null,
  max: number,
): Promise<Uint8Array<ArrayBuffer> | null | "too-large"> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (stream) {
    const reader = stream.getReader();
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        size += r.value.length;
        if (size > max) {
          await reader.cancel().catch(() => {});
          return "too-large";
        }
        chunks.push(r.value);
      }
    } catch {
      return null;
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
