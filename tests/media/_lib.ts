// Shared helpers for the media-generation tests (tests/media/*.test.ts).
//
// The stack's functions must have MEDIA_WORKER_SECRET (scripts/test exports
// one before scripts/serve); the tests sign reports with the same secret. The
// reference worker (workers/media-worker) is started per test that needs it,
// from MEDIA_WORKER_BIN or the shared cargo target dir, and stopped with
// SIGTERM (which also exercises its graceful shutdown).

import { presignUrl } from "../../scripts/local/sigv4.ts";
import { callFunction, createUser, need, stack, type TestUser, withDb } from "../support/stack.ts";
import { webhookHeaders } from "../support/standard_webhooks.ts";

export { callFunction, createUser, need, stack, type TestUser, withDb };

export const mediaTest = { sanitizeOps: false, sanitizeResources: false };

export function workerSecret(): string {
  return need("MEDIA_WORKER_SECRET");
}

/** A user with `credits` media credits. */
export async function userWithCredits(credits: number): Promise<TestUser> {
  const user = await createUser();
  if (credits > 0) {
    await withDb((sql) => sql`select public.media_grant_credits(${user.id}, ${credits}, 'test')`, 1);
  }
  return user;
}

export async function account(userId: string): Promise<{ balance: number; reserved: number }> {
  const rows = await withDb(
    (sql) => sql`select balance, reserved from public.media_credit_accounts where user_id = ${userId}`,
    1,
  );
  return rows[0] ? { balance: rows[0].balance, reserved: rows[0].reserved } : { balance: 0, reserved: 0 };
}

export async function ledger(userId: string): Promise<{ kind: string; amount: number }[]> {
  return await withDb(
    (sql) => sql`select kind, amount from public.media_credit_ledger where user_id = ${userId} order by id`,
    1,
  ) as any;
}

export async function mediaJob(jobId: string): Promise<any> {
  const rows = await withDb((sql) => sql`select * from public.media_jobs where id = ${jobId}`, 1);
  return rows[0];
}

export async function queueJob(token: string, body: unknown) {
  return await callFunction("queue-job", { token, body });
}

/** queue-job that must be accepted; returns the job id. */
export async function queueOk(token: string, body: unknown): Promise<string> {
  const r = await queueJob(token, body);
  if (r.status !== 200) throw new Error(`queue-job answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.job.id;
}

/** Polls until `check` returns a value (not undefined), or throws after `ms`. */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

export async function jobReaches(jobId: string, statuses: string[], ms = 30_000): Promise<any> {
  return await until(`job ${jobId} to reach ${statuses.join("|")}`, async () => {
    const j = await mediaJob(jobId);
    return j && statuses.includes(j.status) ? j : undefined;
  }, ms);
}

/** Claims one named job directly, as a worker would, with a lease of `leaseSeconds`. */
export async function claim(jobId: string, leaseSeconds = 30): Promise<{ lease: string; queue: string }> {
  const rows = await withDb(
    (sql) =>
      sql`select lease_token::text as lease, queue from public.claim_job(${jobId}::uuid, 'test-worker',
          array['sdxl_queue','wan_queue'], null, ${leaseSeconds})`,
    1,
  );
  if (!rows[0]) throw new Error(`job ${jobId} could not be claimed`);
  return rows[0] as any;
}

/** Standard Webhooks headers for `body` (a string), signed with `secret` (the worker's by default) at `ts`. */
export async function signed(
  body: string,
  opts: { id?: string; ts?: number; secret?: string } = {},
): Promise<Record<string, string>> {
  return await webhookHeaders(opts.secret ?? workerSecret(), body, { id: opts.id, timestamp: opts.ts });
}

/** A signed report to job-callback. */
export async function report(body: unknown, opts: { id?: string; ts?: number; secret?: string } = {}) {
  const text = JSON.stringify(body);
  return await callFunction("job-callback", { body: text, headers: await signed(text, opts) });
}

/** The bytes of an object in the media bucket (presigned GET through the gateway's S3). */
export async function readObject(key: string): Promise<Uint8Array> {
  const url = await presignUrl({
    method: "GET",
    url: `${need("S3_ENDPOINT")}/media/${key.split("/").map(encodeURIComponent).join("/")}`,
    credentials: { accessKeyId: need("S3_ACCESS_KEY_ID"), secretAccessKey: need("S3_SECRET_ACCESS_KEY") },
    region: need("S3_REGION"),
    expiresSecs: 300,
    headers: {},
  });
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${key}: ${r.status} ${await r.text()}`);
  return new Uint8Array(await r.arrayBuffer());
}

export const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width and height from a PNG's IHDR. */
export function pngSize(bytes: Uint8Array): [number, number] {
  const v = new DataView(bytes.buffer, bytes.byteOffset);
  return [v.getUint32(16), v.getUint32(20)];
}

function workerBin(): string {
  const explicit = Deno.env.get("MEDIA_WORKER_BIN");
  if (explicit) return explicit;
  const target = Deno.env.get("CARGO_TARGET_DIR") ?? `${Deno.env.get("HOME")}/.cache/edgeworks/target`;
  return `${target}/debug/media-worker`;
}

export interface RunningWorker {
  stop(): Promise<string>;
  output(): string;
}

/** Starts the reference worker against the stack. */
export function startWorker(env: Record<string, string> = {}): RunningWorker {
  const cmd = new Deno.Command(workerBin(), {
    env: {
      EDGEWORKS_DB_URL: stack.dbUrl,
      SUPABASE_URL: stack.url,
      SUPABASE_ANON_KEY: stack.anonKey,
      MEDIA_WORKER_SECRET: workerSecret(),
      MEDIA_WORKER_LEASE_SECONDS: "6",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  let text = "";
  const dec = new TextDecoder();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) text += dec.decode(chunk);
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  return {
    output: () => text,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      await pumps;
      return text;
    },
  };
}

/** Cancels every unfinished media job of `userId` (keeps later tests' queues clean). */
export async function cancelAll(userId: string): Promise<void> {
  await withDb((sql) =>
    sql`select public.cancel_job(id) from public.media_jobs where user_id = ${userId}
          and status in ('queued', 'processing')`, 1);
}
