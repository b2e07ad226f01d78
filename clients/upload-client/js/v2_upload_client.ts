// V2UploadClient: seed 004's browser upload client.
//
// Bytes go straight from the browser to storage through the presigned URLs
// upload-handler issues; the functions decide, sign, track and verify. The
// parts of this client that must agree with the server byte for byte (the
// whole-file and per-part SHA-256, the part plan, what is left on resume,
// the retry schedule, the ETA smoothing) are Rust compiled to wasm
// (../src/lib.rs, the same code the functions run); this file does the I/O.
//
// Resume: the server keeps each multipart session (reconciled with the
// storage's ListParts), so any client signed in as the same user resumes a
// document by id (`resumeUpload`); and this client remembers its unfinished
// uploads (localStorage by default), so `initializeUpload` after a page
// reload picks the same file up where it stopped instead of starting over.
import { createClient, type RealtimeChannel, type SupabaseClient } from "@supabase/supabase-js";
import initWasm, {
  checkDeclared,
  EtaTracker,
  FileHasher,
  isRetryable,
  maxPartAttempts,
  mimeForFilename,
  planUpload,
  retryDelayMs,
} from "../pkg/upload_client.js";
import type { Eta } from "../bindings/Eta.ts";
import type { FileDigests } from "../bindings/FileDigests.ts";
import type { PartUrl } from "../bindings/PartUrl.ts";
import type { UploadPlan } from "../bindings/UploadPlan.ts";
import type { UploadProgress } from "../bindings/UploadProgress.ts";
import type { UploadResult } from "../bindings/UploadResult.ts";

export type { Eta, UploadProgress, UploadResult };

/** What `uploadFile`'s callback receives: the seed's progress plus bytes confirmed by storage. */
export type ClientProgress = UploadProgress & { bytesUploaded: number; totalBytes: number };

/** The few storage calls resume-after-reload needs (localStorage fits). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface UploadConfig {
  /** Refused before anything is sent (the server's limit, 50 MB, applies regardless). */
  maxFileSize?: number;
  /** MIME types offered to the user (the server takes PDF, DOCX and plain text). */
  allowedTypes?: string[];
  /** Progress over Realtime (default true); false polls progress-tracker. */
  enableRealtime?: boolean;
  /** The signed-in user's access token (otherwise the supabase client's session). */
  accessToken?: string;
  /** Parts in flight at once (default 4). */
  concurrency?: number;
  /** Polling period when Realtime is off or fails (default 1000 ms). */
  pollIntervalMs?: number;
  /** Where the wasm is served from (default: next to the module). */
  wasmUrl?: string | URL;
  /** Remembers unfinished uploads across reloads (default localStorage when present). */
  store?: KeyValueStore | null;
  /** The fetch used for every request (tests inject failures through it). */
  fetch?: typeof fetch;
  /** An existing supabase-js client (its Realtime connection is used). */
  supabase?: SupabaseClient;
}

/** A refusal or failure, with the server's (or the client's) stable code. */
export class UploadError extends Error {
  constructor(readonly code: string, message: string, readonly status = 0, readonly details: unknown = null) {
    super(message);
  }
}

const HASH_SLICE = 4 * 1024 * 1024;
let wasmReady: Promise<unknown> | null = null;

interface Pending {
  documentId: string;
  sha256: string;
}

export class V2UploadClient {
  readonly supabase: SupabaseClient;
  private readonly base: string;
  private readonly cfg:
    & Required<Pick<UploadConfig, "concurrency" | "pollIntervalMs" | "enableRealtime">>
    & UploadConfig;
  private readonly http: typeof fetch;
  private readonly tracked = new Set<string>();

  constructor(private readonly supabaseUrl: string, private readonly supabaseKey: string, config: UploadConfig = {}) {
    this.base = supabaseUrl.replace(/\/+$/, "");
    this.cfg = { concurrency: 4, pollIntervalMs: 1000, enableRealtime: true, ...config };
    this.http = config.fetch ?? globalThis.fetch.bind(globalThis);
    const token = config.accessToken;
    // With a token given, supabase-js asks `accessToken` for it on every request and
    // Realtime join (setAuth alone is overridden by its session lookup).
    this.supabase = config.supabase ??
      (token
        ? createClient(this.base, supabaseKey, { accessToken: () => Promise.resolve(token) })
        : createClient(this.base, supabaseKey, { auth: { persistSession: true } }));
  }

  private async ready(): Promise<void> {
    wasmReady ??= this.cfg.wasmUrl ? initWasm({ module_or_path: this.cfg.wasmUrl }) : initWasm();
    await wasmReady;
  }

  private store(): KeyValueStore | null {
    if (this.cfg.store !== undefined) return this.cfg.store;
    return (globalThis as { localStorage?: KeyValueStore }).localStorage ?? null;
  }

  private async token(): Promise<string> {
    if (this.cfg.accessToken) return this.cfg.accessToken;
    const { data } = await this.supabase.auth.getSession();
    const t = data.session?.access_token;
    if (!t) throw new UploadError("not_signed_in", "sign in before uploading");
    return t;
  }

  private async call(method: string, fn: string, body?: unknown, query?: string): Promise<any> {
    const r = await this.http(`${this.base}/functions/v1/${fn}${query ? `?${query}` : ""}`, {
      method,
      headers: {
        apikey: this.supabaseKey,
        authorization: `Bearer ${await this.token()}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed: any = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: reported below
    }
    if (!r.ok || parsed?.success !== true) {
      const e = parsed?.error;
      throw new UploadError(e?.code ?? "http_error", e?.message ?? `${fn} answered ${r.status}`, r.status, e?.details);
    }
    return parsed.data;
  }

  private static fileKey(file: Blob & { name?: string; lastModified?: number }): string {
    return `v2upload:${file.name ?? "blob"}:${file.size}:${file.lastModified ?? 0}`;
  }

  /** Whole-file and per-part SHA-256, in Rust, reading the file in slices. */
  async hashFile(file: Blob, partSize: number): Promise<FileDigests> {
    await this.ready();
    const hasher = new FileHasher(partSize);
    try {
      for (let at = 0; at < file.size; at += HASH_SLICE) {
        hasher.update(new Uint8Array(await file.slice(at, Math.min(at + HASH_SLICE, file.size)).arrayBuffer()));
      }
      return JSON.parse(hasher.finish()) as FileDigests;
    } finally {
      hasher.free();
    }
  }

  /**
   * Checks, hashes and plans the file, then asks upload-handler for a document
   * and its presigned URLs. After a reload, the same file's unfinished upload
   * is resumed: the result then lists only the parts still missing.
   */
  async initializeUpload(file: File | (Blob & { name: string })): Promise<UploadResult> {
    await this.ready();
    const type = file.type || mimeForFilename(file.name) || "application/octet-stream";
    const refused = checkDeclared(file.name, type);
    if (refused) throw new UploadError(refused, `${file.name}: only PDF, DOCX and plain-text documents are accepted`);
    if (this.cfg.allowedTypes && !this.cfg.allowedTypes.includes(type)) {
      throw new UploadError("unsupported_file_type", `${type} is not allowed here`);
    }
    if (this.cfg.maxFileSize !== undefined && file.size > this.cfg.maxFileSize) {
      throw new UploadError("file_too_large", `${file.name} is larger than ${this.cfg.maxFileSize} bytes`);
    }
    let plan: UploadPlan;
    try {
      plan = JSON.parse(planUpload(file.size)) as UploadPlan;
    } catch (e) {
      throw new UploadError(String((e as Error).message ?? e), `${file.name} cannot be uploaded`);
    }
    const digests = await this.hashFile(file, plan.partSize);
    const store = this.store();
    const key = V2UploadClient.fileKey(file);
    const pending = store?.getItem(key);
    if (pending) {
      const p = JSON.parse(pending) as Pending;
      if (p.sha256 === digests.sha256) {
        try {
          const resumed = await this.resumeInfo(p.documentId);
          if (resumed.status === "uploading") return resumed;
        } catch (e) {
          if (!(e instanceof UploadError) || e.status >= 500 || e.status === 0) throw e;
        }
      }
      store?.removeItem(key);
    }
    const result = await this.call("POST", "upload-handler", {
      filename: file.name,
      contentType: type,
      fileSize: file.size,
      sha256: digests.sha256,
      ...(plan.method === "multipart" ? { partSha256: digests.partSha256 } : {}),
    }) as UploadResult;
    if (!result.duplicate) {
      store?.setItem(key, JSON.stringify({ documentId: result.documentId, sha256: digests.sha256 }));
    }
    this.tracked.add(result.documentId);
    return result;
  }

  /** What the server holds of `documentId` and fresh URLs for the rest (any client of the same user). */
  async resumeInfo(documentId: string): Promise<UploadResult> {
    const r = await this.call(
      "GET",
      "upload-handler",
      undefined,
      `documentId=${encodeURIComponent(documentId)}&resume=true`,
    );
    if (!Array.isArray(r.parts)) {
      // Not uploading any more: the status view.
      return {
        documentId,
        status: r.status,
        uploadMethod: r.uploadMethod,
        duplicate: false,
        partSize: 0,
        parts: [],
        storedParts: r.storedParts ?? [],
        expiresAt: 0,
      };
    }
    return r as UploadResult;
  }

  /** Resumes `documentId` with `file` (the same bytes), e.g. on another device. */
  async resumeUpload(file: Blob, documentId: string, onProgress?: (p: ClientProgress) => void): Promise<string> {
    const info = await this.resumeInfo(documentId);
    this.tracked.add(documentId);
    if (info.status !== "uploading") return documentId;
    return await this.uploadFile(file, info, onProgress);
  }

  /** Sends one part (retried with backoff); resolves to the ETag the storage answered. */
  private async putPart(file: Blob, part: PartUrl): Promise<string | null> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(part.headers)) {
      // The runtime sets Content-Length from the body (browsers forbid setting it).
      if (k.toLowerCase() !== "content-length") headers[k] = v;
    }
    const max = maxPartAttempts();
    for (let attempt = 1;; attempt++) {
      let status = 0;
      let detail = "";
      try {
        const r = await this.http(part.url, {
          method: "PUT",
          headers,
          body: file.slice(part.offset, part.offset + part.size),
        });
        status = r.status;
        detail = await r.text();
        if (r.ok) return r.headers.get("etag");
      } catch (e) {
        detail = String((e as Error)?.message ?? e);
      }
      const code = /<Code>([^<]+)<\/Code>/.exec(detail)?.[1];
      if (status === 403 && code === "AccessDenied" && /expired/i.test(detail)) {
        // The presigned URL outlived its validity (a slow or paused upload): the caller
        // asks the server for fresh URLs and sends the part again.
        throw new UploadError("url_expired", `part ${part.partNumber}: its URL expired`, status, {
          partNumber: part.partNumber,
        });
      }
      if (!isRetryable(status) || attempt >= max) {
        throw new UploadError(
          "part_failed",
          `part ${part.partNumber} failed (${status || "no answer"}${code ? ` ${code}` : ""})`,
          status,
          {
            partNumber: part.partNumber,
            storageCode: code ?? null,
          },
        );
      }
      await new Promise((r) => setTimeout(r, retryDelayMs(attempt, Math.random())));
    }
  }

  /**
   * Sends the parts in `result` (in parallel, each retried with backoff), reports
   * each part to upload-handler, then completes: the server checks size, type and
   * SHA-256 against what storage holds. Resolves to the document id.
   */
  async uploadFile(
    file: Blob & { name?: string; lastModified?: number },
    result: UploadResult,
    onProgress?: (p: ClientProgress) => void,
  ): Promise<string> {
    await this.ready();
    const id = result.documentId;
    this.tracked.add(id);
    const total = file.size;
    const report = (status: string, step: string, bytes: number, eta: Eta | null, errorCode: string | null = null) =>
      onProgress?.({
        documentId: id,
        status,
        progress: total ? Math.min(100, (bytes * 100) / total) : 100,
        processingStep: step,
        eta,
        errorCode,
        stuck: false,
        bytesUploaded: bytes,
        totalBytes: total,
      });
    if (result.duplicate || result.status !== "uploading") {
      report(result.status, "completed", total, null);
      return id;
    }
    const pending = new Set(result.parts.map((p) => p.partNumber));
    let done = total - result.parts.reduce((s, p) => s + p.size, 0);
    const eta = new EtaTracker();
    const started = Date.now();
    eta.observe("upload", (done * 100) / total, started);
    report("uploading", "upload", done, null);
    const queue = [...result.parts];
    // Each stored part is reported to upload-handler (its record of the session, and
    // the ETag for completion) without holding up the next part; all must land before
    // completing.
    const reports: Promise<unknown>[] = [];
    const worker = async () => {
      for (let part = queue.shift(); part; part = queue.shift()) {
        let etag: string | null;
        try {
          etag = await this.putPart(file, part);
        } catch (e) {
          if (!(e instanceof UploadError) || e.code !== "url_expired") throw e;
          // One refresh per expiry: every part still queued gets its fresh URL too.
          const fresh = new Map((await this.resumeInfo(id)).parts.map((p) => [p.partNumber, p]));
          for (const [i, q] of queue.entries()) queue[i] = fresh.get(q.partNumber) ?? q;
          const again = fresh.get(part.partNumber);
          if (!again) throw e;
          etag = await this.putPart(file, again);
        }
        pending.delete(part.partNumber);
        done += part.size;
        const pct = (done * 100) / total;
        eta.observe("upload", pct, Date.now());
        report("uploading", "upload", done, JSON.parse(eta.estimate("upload", pct)) as Eta | null);
        if (result.uploadMethod === "multipart") {
          // The server's own record of the part (ListParts), for other devices and for its ETA.
          reports.push(this.call("PUT", "upload-handler", {
            documentId: id,
            action: "part",
            partNumber: part.partNumber,
            ...(etag ? { etag } : {}),
          }));
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(this.cfg.concurrency, queue.length)) }, worker));
    } finally {
      eta.free();
      // Settled before leaving, whatever happened: no report is left in flight.
      await Promise.allSettled(reports);
    }
    await Promise.all(reports);
    const completed = await this.call("PUT", "upload-handler", { documentId: id, action: "complete" });
    this.store()?.removeItem(V2UploadClient.fileKey(file));
    report(completed.status, completed.processingStep, total, null, completed.errorCode ?? null);
    return id;
  }

  /** progress-tracker's view of a document (with its ETA). */
  async getProgress(documentId: string): Promise<UploadProgress> {
    return await this.call("GET", "progress-tracker", undefined, `documentId=${encodeURIComponent(documentId)}`);
  }

  /**
   * Calls `callback` with every progress broadcast and status change of the
   * user's documents. Over Realtime (a private broadcast channel for progress,
   * postgres_changes on realtime_progress_updates for status changes); when
   * Realtime is off or its channel fails, by polling progress-tracker for the
   * documents this client uploads. Returns the unsubscribe function.
   */
  subscribeToProgress(userId: string, callback: (p: UploadProgress) => void, documentIds: string[] = []): () => void {
    for (const d of documentIds) this.tracked.add(d);
    let timer: ReturnType<typeof setInterval> | null = null;
    let channel: RealtimeChannel | null = null;
    let stopped = false;
    const poll = () => {
      if (timer || stopped) return;
      timer = setInterval(async () => {
        for (const d of [...this.tracked]) {
          try {
            const p = await this.getProgress(d);
            callback(p);
            if (p.status === "completed" || p.status === "failed") this.tracked.delete(d);
          } catch {
            // A failed poll is retried on the next tick.
          }
        }
      }, this.cfg.pollIntervalMs);
    };
    if (!this.cfg.enableRealtime) {
      poll();
    } else {
      const fromRow = (r: any): UploadProgress => ({
        documentId: r.document_id,
        status: r.status,
        progress: Number(r.progress ?? 0),
        processingStep: r.processing_step,
        eta: null,
        errorCode: r.error_code ?? null,
        stuck: false,
      });
      channel = this.supabase.channel(`uploads:${userId}`, { config: { private: true } })
        .on("broadcast", { event: "progress_update" }, (m: any) => callback(fromRow(m.payload)))
        .on("postgres_changes", {
          event: "INSERT",
          schema: "public",
          table: "realtime_progress_updates",
          filter: `user_id=eq.${userId}`,
        }, (m: any) => callback(fromRow(m.new.payload)))
        .subscribe((status: string) => {
          // Realtime down or refused: poll until (if ever) the channel joins.
          if (status === "CHANNEL_ERROR" || status === "TIMED_OUT" || status === "CLOSED") poll();
          if (status === "SUBSCRIBED" && timer) {
            clearInterval(timer);
            timer = null;
          }
        });
    }
    return () => {
      stopped = true;
      if (timer) clearInterval(timer);
      if (channel) void this.supabase.removeChannel(channel);
    };
  }
}
