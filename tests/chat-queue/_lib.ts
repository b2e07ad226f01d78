// Shared helpers for the chat job queue end-to-end tests (tests/chat-queue/*.test.ts).
//
// The stack's functions talk to the fake Gemini server (tests/support/fake_gemini.ts)
// that scripts/test starts and names in FAKE_GEMINI_URL. Tests run one at a time
// (deno test's default), so a test may script the fake's next answers; a scripted
// test processes only its own job (chat-process with job_id), so no other job can
// take its scripted answer.

import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { callFunction, eventually, need, stack } from "../support/stack.ts";
import type { RecordedRequest, Step } from "../support/fake_gemini.ts";
import type { Database } from "../../types/database.ts";

/** supabase-js typed by the schema (types/database.ts, generated from the migrations). */
export type ChatClient = SupabaseClient<Database>;

export function fakeGeminiUrl(): string {
  return need("FAKE_GEMINI_URL").replace(/\/+$/, "");
}

export const fakeGemini = {
  async script(steps: Step | Step[]): Promise<void> {
    const r = await fetch(`${fakeGeminiUrl()}/__script`, { method: "POST", body: JSON.stringify(steps) });
    if (!r.ok) throw new Error(`fake Gemini refused the script: ${r.status} ${await r.text()}`);
    await r.body?.cancel();
  },
  async requests(): Promise<RecordedRequest[]> {
    const r = await fetch(`${fakeGeminiUrl()}/__requests`);
    return await r.json();
  },
  /** Clears the script (and the recorded requests). */
  async reset(): Promise<void> {
    const r = await fetch(`${fakeGeminiUrl()}/__reset`, { method: "POST" });
    await r.body?.cancel();
  },
};

/**
 * The question a recorded generateContent request asks: the last part of its last
 * `contents` entry (consecutive user messages are merged into one entry's parts).
 */
export function questionAsked(req: RecordedRequest): string {
  const contents = (req.body as any)?.contents ?? [];
  const parts = contents[contents.length - 1]?.parts ?? [];
  return parts[parts.length - 1]?.text ?? "";
}

/** supabase-js as a signed-in user (no session storage, no refresh timers). */
export function userClient(token: string): ChatClient {
  return createClient<Database>(stack.url, stack.anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { headers: { Authorization: `Bearer ${token}` } },
  });
}

/** supabase-js with the service_role key (what workers and schedulers use). */
export function serviceClient(): ChatClient {
  return userClient(stack.serviceKey);
}

export interface Invoked {
  status: number;
  body: any;
}

/** functions.invoke, with the status and body whether it succeeded or not. */
export async function invoke(
  client: ChatClient,
  name: string,
  options: { body?: unknown; method?: "GET" | "POST"; headers?: Record<string, string> } = {},
): Promise<Invoked> {
  const { data, error, response } = await client.functions.invoke(name, options as any) as any;
  if (!error) return { status: response?.status ?? 200, body: data };
  const res: Response | undefined = error.context;
  if (!res || typeof res.status !== "number") throw error;
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body };
}

/** A session id no other test uses. */
export function sessionId(label: string): string {
  return `e2e-${label}-${crypto.randomUUID()}`;
}

/** Submits a question as `token`; throws unless it was accepted. */
export async function submitOk(token: string, session_id: string, message: string): Promise<string> {
  const r = await callFunction("chat-submit", { token, body: { session_id, message } });
  if (r.status !== 200) throw new Error(`chat-submit answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.data.job_id;
}

/** chat-status for one job, as the service role (sees every job). */
export async function jobView(jobId: string, token = stack.serviceKey): Promise<any> {
  const r = await callFunction("chat-status", { token, body: { job_id: jobId } });
  if (r.status !== 200) throw new Error(`chat-status answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.data.job;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/**
 * Runs queue-worker (batch mode) until every job in `jobIds` is finished, or 20 s pass.
 * Returns the finished views by job id.
 */
export async function drain(jobIds: string[], timeoutMs = 20_000): Promise<Map<string, any>> {
  const done = new Map<string, any>();
  await eventually(`jobs ${jobIds.length} to finish`, async () => {
    const w = await callFunction("queue-worker", { token: stack.serviceKey, body: { batch_size: 10 } });
    if (w.status !== 200) throw new Error(`queue-worker answered ${w.status}: ${JSON.stringify(w.body)}`);
    for (const id of jobIds) {
      if (done.has(id)) continue;
      const v = await jobView(id);
      if (TERMINAL.has(v.status)) done.set(id, v);
    }
    return done.size === jobIds.length ? true : undefined;
  }, { timeoutMs, everyMs: 100 });
  return done;
}

/**
 * Calls chat-process for exactly this job until it is finished; a not-yet-due
 * job (backoff) answers 409 job_not_claimable, which just means "not yet".
 */
export async function processUntilDone(jobId: string, workerId: string, timeoutMs = 20_000): Promise<any> {
  return await eventually(`job ${jobId} to finish`, async () => {
    const r = await callFunction("chat-process", {
      token: stack.serviceKey,
      body: { job_id: jobId, worker_id: workerId },
    });
    if (r.status !== 200 && !(r.status === 409 && r.body?.error?.code === "job_not_claimable")) {
      throw new Error(`chat-process answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    const v = await jobView(jobId);
    return TERMINAL.has(v.status) ? v : undefined;
  }, { timeoutMs, everyMs: 100 });
}
