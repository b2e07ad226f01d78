// Helpers of the upload pipeline's end-to-end tests (seed 004).
import { callFunction, need, type Sql, stack, withDb } from "../support/stack.ts";
import { type UploadConfig, V2UploadClient } from "../../clients/upload-client/js/v2_upload_client.ts";
import { webhookHeaders as signedHeaders } from "../support/standard_webhooks.ts";

export { V2UploadClient };

export const MiB = 1024 * 1024;

/** `size` bytes that sniff as a PDF: the header, then pseudo-random bytes (seeded, so files differ per seed). */
export function pdfBytes(size: number, seed = Math.floor(Math.random() * 2 ** 31)): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  out.set(new TextEncoder().encode("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), 0);
  return out;
}

export function pdfFile(size: number, name = "report.pdf", seed?: number): File {
  return new File([pdfBytes(size, seed)], name, { type: "application/pdf", lastModified: 1_700_000_000_000 });
}

export async function sha256Hex(bytes: Uint8Array<ArrayBuffer> | string): Promise<string> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  return [...new Uint8Array(await crypto.subtle.digest("SHA-256", data))].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

export async function sha256B64(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))));
}

/** An in-memory store standing in for localStorage (one per "browser"). */
export function memoryStore() {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    size: () => m.size,
  };
}

export function client(token: string, config: UploadConfig = {}): V2UploadClient {
  return new V2UploadClient(stack.url, stack.anonKey, { accessToken: token, store: memoryStore(), ...config });
}

export type Source = "llamaparse" | "storage" | "embedding" | "internal";

/** The Standard Webhooks headers for `body` from `source`, signed with its secret from the environment. */
export async function webhookHeaders(
  source: Source,
  body: string,
  opts: { id?: string; timestamp?: number; secret?: string } = {},
): Promise<Record<string, string>> {
  const secret = opts.secret ?? need(`UPLOAD_WEBHOOK_SECRET_${source.toUpperCase()}`);
  return {
    ...await signedHeaders(secret, body, { id: opts.id, timestamp: opts.timestamp }),
    "content-type": "application/json",
  };
}

export async function sendWebhook(
  source: Source,
  payload: Record<string, unknown>,
  opts: { id?: string; timestamp?: number; secret?: string; headers?: Record<string, string> } = {},
) {
  const body = JSON.stringify({ source, ...payload });
  const headers = { ...(await webhookHeaders(source, body, opts)), ...(opts.headers ?? {}) };
  return await callFunction("processing-webhook", { body, headers });
}

/** Runs queue-worker for the upload job kinds until nothing is left. */
export async function runUploadJobs() {
  const r = await callFunction("queue-worker", {
    token: stack.serviceKey,
    body: { batch_size: 10, job_types: ["upload_parse", "upload_embed"] },
  });
  if (r.status !== 200) throw new Error(`queue-worker: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.data;
}

/** Turns a flag on for one user (by targeting, rollout untouched). */
export async function enableFlagFor(sql: Sql, flag: string, userId: string) {
  await sql`update public.feature_flags set is_enabled = true,
              target_user_ids = array_append(target_user_ids, ${userId}::uuid) where name = ${flag}`;
}

export async function documentRow(id: string) {
  return await withDb(async (sql) => (await sql`select * from public.documents where id = ${id}`)[0]);
}

/**
 * Everything the upload pipeline stores, for an "unchanged database" check:
 * documents, sessions, parts, progress rows, webhook receipts and upload jobs.
 */
export async function snapshot(sql: Sql): Promise<string> {
  const rows = await Promise.all([
    sql`select id, status, progress, processing_step, sha256_verified, error_code, retry_count, updated_at
          from public.documents order by id`,
    sql`select document_id, upload_id, reconciled_at, completed_at from public.upload_sessions order by document_id`,
    sql`select document_id, part_number, size, etag from public.upload_parts order by document_id, part_number`,
    sql`select count(*)::int as n from public.realtime_progress_updates`,
    sql`select source, webhook_id from private.upload_webhook_receipts order by source, webhook_id`,
    sql`select id, status, attempts from public.jobs where queue = 'uploads' order by id`,
  ]);
  return JSON.stringify(rows);
}
