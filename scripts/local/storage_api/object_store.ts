// The bytes of the Storage API live in the local S3 server (s3s-fs), in the
// bucket and under the key the object has in storage.objects, so the S3
// protocol endpoint (/storage/v1/s3) and the REST API see the same objects.
// Requests are signed with the stack's one SigV4 signer (sigv4.ts).

import { canonicalUri, type Credentials, signHeaders, UNSIGNED_PAYLOAD, uriEncode } from "../sigv4.ts";
import { StorageFailure } from "./errors.ts";

export interface ObjectStoreConfig {
  /** s3s-fs itself, e.g. http://127.0.0.1:54331 */
  upstream: string;
  region: string;
  access_key_id: string;
  secret_access_key: string;
}

export class ObjectStore {
  #upstream: string;
  #credentials: Credentials;
  #region: string;

  constructor(config: ObjectStoreConfig) {
    this.#upstream = config.upstream.replace(/\/+$/, "");
    this.#credentials = { accessKeyId: config.access_key_id, secretAccessKey: config.secret_access_key };
    this.#region = config.region;
  }

  static path(bucket: string, key?: string): string {
    const raw = key === undefined
      ? `/${uriEncode(bucket, true)}`
      : `/${uriEncode(bucket, true)}/${uriEncode(key, false)}`;
    return canonicalUri(raw);
  }

  async send(
    method: string,
    path: string,
    opts: { query?: string; headers?: Record<string, string>; body?: Uint8Array<ArrayBuffer> | null } = {},
  ): Promise<Response> {
    const url = `${this.#upstream}${path}${opts.query ? "?" + opts.query : ""}`;
    const headers = new Headers(opts.headers ?? {});
    // An object stored with Content-Encoding must come back byte for byte.
    headers.set("accept-encoding", "identity");
    await signHeaders({
      method,
      url,
      headers,
      payloadHash: UNSIGNED_PAYLOAD,
      credentials: this.#credentials,
      region: this.#region,
    });
    try {
      return await fetch(url, { method, headers, body: opts.body ?? null, redirect: "manual" });
    } catch (e) {
      throw new StorageFailure(503, "InternalError", `the local S3 server did not answer: ${(e as Error).message}`);
    }
  }

  /** Fails with the S3 answer when it is not a success. */
  async #ok(r: Response, what: string): Promise<Response> {
    if (r.ok) return r;
    const text = await r.text();
    const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? String(r.status);
    throw new StorageFailure(r.status >= 500 ? 500 : 400, "InternalError", `${what} failed in the S3 server: ${code}`);
  }

  async createBucket(bucket: string): Promise<void> {
    const r = await this.send("PUT", ObjectStore.path(bucket));
    const text = await r.text();
    // Already there (config.toml buckets, or a bucket re-created after a delete that left files) is fine.
    if (!r.ok && !/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(text)) {
      throw new StorageFailure(500, "InternalError", `CreateBucket failed in the S3 server (HTTP ${r.status})`);
    }
  }

  /** True when the S3 bucket is gone; false when it still holds files the REST API does not know. */
  async deleteBucket(bucket: string): Promise<boolean> {
    const r = await this.send("DELETE", ObjectStore.path(bucket));
    await r.body?.cancel();
    return r.ok || r.status === 404;
  }

  /** Stores the bytes; returns the ETag S3 gave them. */
  async put(bucket: string, key: string, body: Uint8Array<ArrayBuffer>, contentType: string, cacheControl: string) {
    const r = await this.#ok(
      await this.send("PUT", ObjectStore.path(bucket, key), {
        headers: { "content-type": contentType, "cache-control": cacheControl },
        body,
      }),
      "PutObject",
    );
    await r.body?.cancel();
    return r.headers.get("etag") ?? "";
  }

  /** The raw S3 answer (200, 206, 304, 404, ...), for the caller to stream. */
  async get(bucket: string, key: string, method: "GET" | "HEAD", range?: string | null): Promise<Response> {
    return await this.send(method, ObjectStore.path(bucket, key), range ? { headers: { range } } : {});
  }

  async delete(bucket: string, key: string): Promise<void> {
    const r = await this.send("DELETE", ObjectStore.path(bucket, key));
    await r.body?.cancel();
    if (!r.ok && r.status !== 404) console.error(`storage: DeleteObject ${bucket}/… answered ${r.status}`);
  }

  async copy(srcBucket: string, srcKey: string, dstBucket: string, dstKey: string): Promise<string> {
    const source = `/${uriEncode(srcBucket, true)}/${uriEncode(srcKey, false)}`;
    const r = await this.#ok(
      await this.send("PUT", ObjectStore.path(dstBucket, dstKey), { headers: { "x-amz-copy-source": source } }),
      "CopyObject",
    );
    const xml = await r.text();
    return /<ETag>([^<]*)<\/ETag>/.exec(xml)?.[1]?.replace(/&quot;/g, '"') ?? "";
  }

  // Multipart, for resumable (TUS) uploads: one part per TUS chunk.

  async createMultipart(bucket: string, key: string, contentType: string, cacheControl: string): Promise<string> {
    const r = await this.#ok(
      await this.send("POST", ObjectStore.path(bucket, key), {
        query: "uploads=",
        headers: { "content-type": contentType, "cache-control": cacheControl },
      }),
      "CreateMultipartUpload",
    );
    const id = /<UploadId>([^<]*)<\/UploadId>/.exec(await r.text())?.[1];
    if (!id) throw new StorageFailure(500, "InternalError", "CreateMultipartUpload answered without an UploadId");
    return id;
  }

  async uploadPart(
    bucket: string,
    key: string,
    uploadId: string,
    partNumber: number,
    body: Uint8Array<ArrayBuffer>,
  ): Promise<string> {
    const query = `partNumber=${partNumber}&uploadId=${uriEncode(uploadId, true)}`;
    const r = await this.#ok(await this.send("PUT", ObjectStore.path(bucket, key), { query, body }), "UploadPart");
    await r.body?.cancel();
    return r.headers.get("etag") ?? "";
  }

  async completeMultipart(bucket: string, key: string, uploadId: string, etags: string[]): Promise<string> {
    const xmlEscape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
    const parts = etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${xmlEscape(e)}</ETag></Part>`);
    const body = new TextEncoder().encode(`<CompleteMultipartUpload>${parts.join("")}</CompleteMultipartUpload>`);
    const r = await this.#ok(
      await this.send("POST", ObjectStore.path(bucket, key), {
        query: `uploadId=${uriEncode(uploadId, true)}`,
        headers: { "content-type": "application/xml" },
        body,
      }),
      "CompleteMultipartUpload",
    );
    const xml = await r.text();
    // S3 may answer 200 with an error document.
    if (/<Error>/.test(xml)) throw new StorageFailure(500, "InternalError", "CompleteMultipartUpload failed");
    return /<ETag>([^<]*)<\/ETag>/.exec(xml)?.[1]?.replace(/&quot;/g, '"') ?? "";
  }

  async abortMultipart(bucket: string, key: string, uploadId: string): Promise<void> {
    const r = await this.send("DELETE", ObjectStore.path(bucket, key), {
      query: `uploadId=${uriEncode(uploadId, true)}`,
    });
    await r.body?.cancel();
  }
}
