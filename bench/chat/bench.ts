// scripts/bench chat: the chat job queue (seed 000) under load, end to end through
// the gateway, with the offline provider so the figures are the system's own
// (no model latency).
//
//   scripts/bench chat [--clients 8] [--questions 5] [--workers 2] [--batch 5]
//                      [--poll-ms 50] [--burst]
//
// Without SUPABASE_URL (and its companions from a stack's env file) it starts a
// private stack on free ports (its own state dir, no cron, no AI key, so the
// functions use the offline provider) and stops it at the end, as scripts/test
// does. With them, it runs against that stack; for the round-trip count that
// stack should be otherwise idle.
//
// Phases:
//   1. Round trips: a few chat-submits one at a time, then one queue-worker call,
//      counting the gateway's log lines for PostgREST (/rest/v1/...) and auth
//      calls made meanwhile.
//   2. Load: each client is its own user with its own session; it submits a
//      question and polls chat-status until the answer is there, then asks the
//      next (or, with --burst, submits all its questions first, then polls).
//      Meanwhile --workers loops call queue-worker (batch mode) back to back.
//
// Reported: submitted jobs/s, end-to-end latency p50/p95 as the client saw it
// (submit sent -> completed seen by polling, so it includes up to one poll
// interval) and from the database's timestamps (created_at -> completed_at),
// and the PostgREST round trips per chat-submit.

import postgres from "postgres";
import { userAccessToken } from "../../scripts/local/jwt.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

interface Options {
  clients: number;
  questions: number;
  workers: number;
  batch: number;
  pollMs: number;
  burst: boolean;
  calibration: number;
}

function usage(code: number): never {
  console.error(
    "usage: scripts/bench chat [--clients N] [--questions N] [--workers N] [--batch N] [--poll-ms MS] [--burst]",
  );
  Deno.exit(code);
}

function parseArgs(args: string[]): Options {
  const o: Options = { clients: 8, questions: 5, workers: 2, batch: 5, pollMs: 50, burst: false, calibration: 5 };
  const int = (v: string | undefined, name: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      console.error(`${name} must be a whole number from ${min} to ${max}`);
      usage(2);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    switch (a) {
      case "--clients":
        o.clients = int(args[++i], a, 1, 500);
        break;
      case "--questions":
        // A session takes at most 10 questions (the seed's limit).
        o.questions = int(args[++i], a, 1, 10);
        break;
      case "--workers":
        o.workers = int(args[++i], a, 1, 32);
        break;
      case "--batch":
        o.batch = int(args[++i], a, 1, 50);
        break;
      case "--poll-ms":
        o.pollMs = int(args[++i], a, 5, 5000);
        break;
      case "--burst":
        o.burst = true;
        break;
      case "-h":
      case "--help":
        usage(0);
        break;
      default:
        console.error(`unknown option ${a}`);
        usage(2);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------
// The stack: an existing one from the environment, or a private one.

interface Stack {
  url: string;
  serviceKey: string;
  anonKey: string;
  jwtSecret: string;
  dbUrl: string;
  logPath: string;
  private: boolean;
  stop(): Promise<void>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

async function run(cmd: string, args: string[], env: Record<string, string>, logFile: string): Promise<boolean> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, env, clearEnv: true, stdin: "null" }).output();
  const log = await Deno.open(logFile, { write: true, create: true, append: true });
  try {
    await log.write(out.stdout);
    await log.write(out.stderr);
  } finally {
    log.close();
  }
  return out.success;
}

async function startPrivateStack(): Promise<Stack> {
  for (const f of ["chat-submit", "chat-status", "queue-worker", "health"]) {
    try {
      await Deno.stat(`${ROOT}/supabase/functions/${f}/pkg`);
    } catch {
      throw new Error(`supabase/functions/${f}/pkg is missing: run scripts/build first`);
    }
  }
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-bench." });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    // No AI key reaches the functions: they use the offline provider.
    if (k.startsWith("GEMINI_") || k.startsWith("AI_") || k.startsWith("EDGEWORKS_") || k.startsWith("SUPABASE_")) {
      continue;
    }
    env[k] = v;
  }
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: stateDir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
    AI_PROVIDER: "offline",
  });
  const serveLog = `${stateDir}/serve.log`;
  const stop = async () => {
    await run(`${ROOT}/scripts/serve`, ["--stop"], env, serveLog);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  };
  console.error(`starting a private stack in ${stateDir} (offline provider, no cron)...`);
  if (!(await run(`${ROOT}/scripts/serve`, ["--detach", "--no-build"], env, serveLog))) {
    const tail = (await Deno.readTextFile(serveLog).catch(() => "")).split("\n").slice(-30).join("\n");
    await stop();
    throw new Error(`the private stack did not start:\n${tail}`);
  }
  const e = parseEnvFile(await Deno.readTextFile(`${stateDir}/env`));
  return {
    url: e.SUPABASE_URL,
    serviceKey: e.SUPABASE_SERVICE_ROLE_KEY,
    anonKey: e.SUPABASE_ANON_KEY,
    jwtSecret: e.EDGEWORKS_JWT_SECRET,
    dbUrl: e.EDGEWORKS_DB_URL,
    logPath: `${stateDir}/logs/gateway.log`,
    private: true,
    stop,
  };
}

function existingStack(): Stack | null {
  const g = (k: string) => Deno.env.get(k) ?? "";
  if (!g("SUPABASE_URL")) return null;
  for (const k of ["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "EDGEWORKS_JWT_SECRET", "EDGEWORKS_DB_URL"]) {
    if (!g(k)) throw new Error(`SUPABASE_URL is set but ${k} is not: source the stack's env file`);
  }
  const state = g("EDGEWORKS_STATE_DIR") || `${ROOT}/.local`;
  return {
    url: g("SUPABASE_URL").replace(/\/+$/, ""),
    serviceKey: g("SUPABASE_SERVICE_ROLE_KEY"),
    anonKey: g("SUPABASE_ANON_KEY"),
    jwtSecret: g("EDGEWORKS_JWT_SECRET"),
    dbUrl: g("EDGEWORKS_DB_URL"),
    logPath: `${state}/logs/gateway.log`,
    private: false,
    stop: async () => {},
  };
}

// ---------------------------------------------------------------------------
// HTTP and tokens.

interface Answer {
  status: number;
  body: any;
  retryAfterS: number;
}

async function call(stack: Stack, name: string, token: string, body: unknown): Promise<Answer> {
  const r = await fetch(`${stack.url}/functions/v1/${name}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, apikey: stack.anonKey, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: r.status, body: parsed, retryAfterS: Number(r.headers.get("retry-after") ?? "0") || 0 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Phase 1: round trips, from the gateway's log.

async function logSize(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

async function logSince(path: string, offset: number): Promise<string> {
  const bytes = await Deno.readFile(path);
  return new TextDecoder().decode(bytes.subarray(offset));
}

interface RoundTrips {
  perSubmit: number;
  submitCalls: Record<string, number>;
  workerJobs: number;
  perWorkerCall: number;
  workerCalls: Record<string, number>;
}

/** Counts the gateway's log lines for calls functions make back through it. */
function countBackCalls(chunk: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of chunk.split("\n")) {
    const m = line.match(/^(GET|POST|PATCH|PUT|DELETE|HEAD) (\/(?:rest|auth)\/v1\/\S*) \d{3} /);
    if (m) counts[`${m[1]} ${m[2]}`] = (counts[`${m[1]} ${m[2]}`] ?? 0) + 1;
  }
  return counts;
}

async function waitForLines(path: string, offset: number, pattern: RegExp, n: number): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const chunk = await logSince(path, offset);
    if ((chunk.match(pattern) ?? []).length >= n) return chunk;
    if (Date.now() > deadline) throw new Error(`the gateway log did not show ${n} lines like ${pattern} within 10 s`);
    await sleep(50);
  }
}

async function measureRoundTrips(stack: Stack, token: string, n: number): Promise<RoundTrips> {
  const session = `bench-calibrate-${crypto.randomUUID()}`;
  let offset = await logSize(stack.logPath);
  for (let i = 0; i < n; i++) {
    const r = await call(stack, "chat-submit", token, { session_id: session, message: `calibration question ${i}` });
    if (r.status !== 200) throw new Error(`calibration submit answered ${r.status}: ${JSON.stringify(r.body)}`);
  }
  const submitChunk = await waitForLines(stack.logPath, offset, /^POST \/functions\/v1\/chat-submit 200 /gm, n);
  const submitCalls = countBackCalls(submitChunk);

  offset = await logSize(stack.logPath);
  const w = await call(stack, "queue-worker", stack.serviceKey, {
    batch_size: Math.max(n, 1),
    worker_id: "bench-calibrate",
  });
  if (w.status !== 200) throw new Error(`calibration queue-worker answered ${w.status}: ${JSON.stringify(w.body)}`);
  const workerChunk = await waitForLines(stack.logPath, offset, /^POST \/functions\/v1\/queue-worker 200 /gm, 1);
  const workerCalls = countBackCalls(workerChunk);
  const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  return {
    perSubmit: total(submitCalls) / n,
    submitCalls,
    workerJobs: w.body.data.jobs_processed,
    perWorkerCall: total(workerCalls),
    workerCalls,
  };
}

// ---------------------------------------------------------------------------
// Phase 2: load.

interface JobSample {
  jobId: string;
  submitMs: number; // HTTP time of chat-submit
  e2eMs: number; // submit sent -> completed seen
  dbMs: number; // created_at -> completed_at
  waitMs: number; // created_at -> started_at (last attempt)
  status: string;
}

interface LoadResult {
  samples: JobSample[];
  wallMs: number;
  submitWindowMs: number;
  submitErrors: number;
  statusCalls: number;
  status429: number;
  workerCalls: number;
  workerProcessed: number;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

async function runLoad(stack: Stack, tokens: string[], o: Options): Promise<LoadResult> {
  let stop = false;
  // A worker's failure ends the run at once instead of leaving clients polling.
  let failure: Error | null = null;
  let workerCalls = 0;
  let workerProcessed = 0;
  const workers = Array.from({ length: o.workers }, async (_, i) => {
    const worker_id = `bench-worker-${i}`;
    while (!stop) {
      const r = await call(stack, "queue-worker", stack.serviceKey, { worker_id, batch_size: o.batch });
      workerCalls++;
      if (r.status !== 200) {
        failure = new Error(`queue-worker answered ${r.status}: ${JSON.stringify(r.body)}`);
        throw failure;
      }
      workerProcessed += r.body.data.jobs_processed + r.body.data.jobs_failed;
      // An empty queue: a short pause instead of a busy loop.
      if (r.body.data.iterations === 0) await sleep(10);
    }
  });

  let statusCalls = 0;
  let status429 = 0;
  let submitErrors = 0;
  let firstSubmit = Infinity;
  let lastAccepted = 0;

  async function submit(
    token: string,
    session: string,
    q: number,
  ): Promise<{ jobId: string; sentAt: number; submitMs: number }> {
    const sentAt = performance.now();
    firstSubmit = Math.min(firstSubmit, sentAt);
    const r = await call(stack, "chat-submit", token, {
      session_id: session,
      message: `Bench question ${q}: what is ${q} + ${q}?`,
    });
    const now = performance.now();
    if (r.status !== 200) {
      submitErrors++;
      throw new Error(`chat-submit answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    lastAccepted = Math.max(lastAccepted, now);
    return { jobId: r.body.data.job_id, sentAt, submitMs: now - sentAt };
  }

  async function waitDone(token: string, job: { jobId: string; sentAt: number; submitMs: number }): Promise<JobSample> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (failure) throw failure;
      const r = await call(stack, "chat-status", token, { job_id: job.jobId });
      statusCalls++;
      if (r.status === 429) {
        status429++;
        await sleep(Math.max(r.retryAfterS * 1000, o.pollMs));
        continue;
      }
      if (r.status !== 200) throw new Error(`chat-status answered ${r.status}: ${JSON.stringify(r.body)}`);
      const v = r.body.data.job;
      if (TERMINAL.has(v.status)) {
        const seen = performance.now();
        const created = Date.parse(v.created_at);
        return {
          jobId: job.jobId,
          submitMs: job.submitMs,
          e2eMs: seen - job.sentAt,
          dbMs: Date.parse(v.completed_at) - created,
          waitMs: Date.parse(v.started_at) - created,
          status: v.status,
        };
      }
      if (Date.now() > deadline) throw new Error(`job ${job.jobId} not finished after 120 s`);
      await sleep(o.pollMs);
    }
  }

  const started = performance.now();
  let samples: JobSample[] = [];
  try {
    const perClient = await Promise.all(tokens.map(async (token, c) => {
      const session = `bench-${c}-${crypto.randomUUID()}`;
      const out: JobSample[] = [];
      if (o.burst) {
        const jobs = [];
        for (let q = 0; q < o.questions; q++) jobs.push(await submit(token, session, q));
        for (const j of jobs) out.push(await waitDone(token, j));
      } else {
        for (let q = 0; q < o.questions; q++) out.push(await waitDone(token, await submit(token, session, q)));
      }
      return out;
    }));
    samples = perClient.flat();
  } finally {
    stop = true;
    await Promise.allSettled(workers);
  }
  await Promise.all(workers); // surface a worker failure
  return {
    samples,
    wallMs: performance.now() - started,
    submitWindowMs: lastAccepted - firstSubmit,
    submitErrors,
    statusCalls,
    status429,
    workerCalls,
    workerProcessed,
  };
}

// ---------------------------------------------------------------------------
// Report.

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join("\n");
}

const ms = (v: number) => `${Math.round(v)} ms`;

async function main() {
  const o = parseArgs(Deno.args);
  const stack = existingStack() ?? await startPrivateStack();
  const sql = postgres(stack.dbUrl, { max: 2, onnotice: () => {} });
  const stopAll = async () => {
    await sql.end({ timeout: 5 }).catch(() => {});
    await stack.stop();
  };
  const onSignal = () => {
    stopAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    // One user per client (and one for the calibration): sessions reference auth.users.
    const ids = Array.from({ length: o.clients + 1 }, () => crypto.randomUUID());
    for (const id of ids) {
      await sql`insert into auth.users (id, aud, role, email) values (${id}, 'authenticated', 'authenticated', ${`bench-${id}@bench.local`})`;
    }
    const tokens = await Promise.all(
      ids.map((id) => userAccessToken({ secret: stack.jwtSecret, apiUrl: stack.url, sub: id })),
    );

    const trips = await measureRoundTrips(stack, tokens[0], o.calibration);
    const load = await runLoad(stack, tokens.slice(1), o);

    const jobIds = load.samples.map((s) => s.jobId);
    const providers = await sql`
      select coalesce(provider, '?') as provider, count(*)::int as n from public.chat_messages
       where role = 'assistant' and job_id = any(${jobIds}::uuid[]) group by 1 order by 1`;
    const completed = load.samples.filter((s) => s.status === "completed");
    const e2e = completed.map((s) => s.e2eMs);
    const db = completed.map((s) => s.dbMs);
    const wait = completed.map((s) => s.waitMs);
    const sub = load.samples.map((s) => s.submitMs);
    const mode = o.burst
      ? "burst (all questions first, then poll)"
      : "conversation (ask, wait for the answer, ask again)";

    console.log(
      `\nchat job queue bench: ${o.clients} clients x ${o.questions} questions, ${o.workers} queue-worker loops (batch ${o.batch}), poll every ${o.pollMs} ms`,
    );
    console.log(`mode: ${mode}; stack: ${stack.private ? "private (started for this run)" : stack.url}`);
    console.log(`provider: ${providers.map((p) => `${p.provider} (${p.n})`).join(", ") || "none"}\n`);
    console.log(table([
      [
        "jobs submitted / completed / failed",
        `${load.samples.length} / ${completed.length} / ${load.samples.length - completed.length}`,
      ],
      ["submit errors, chat-status 429s", `${load.submitErrors}, ${load.status429} of ${load.statusCalls} polls`],
      ["run wall time", ms(load.wallMs)],
      ["submitted jobs/s (over the run)", (load.samples.length / (load.wallMs / 1000)).toFixed(1)],
      [
        "submitted jobs/s (over the submit window)",
        load.submitWindowMs > 0 ? (load.samples.length / (load.submitWindowMs / 1000)).toFixed(1) : "-",
      ],
      ["completed jobs/s", (completed.length / (load.wallMs / 1000)).toFixed(1)],
      ["chat-submit HTTP p50 / p95", `${ms(percentile(sub, 50))} / ${ms(percentile(sub, 95))}`],
      ["end to end, client view p50 / p95", `${ms(percentile(e2e, 50))} / ${ms(percentile(e2e, 95))}`],
      ["end to end, DB created->completed p50 / p95", `${ms(percentile(db, 50))} / ${ms(percentile(db, 95))}`],
      ["queue wait, DB created->started p50 / p95", `${ms(percentile(wait, 50))} / ${ms(percentile(wait, 95))}`],
      ["queue-worker calls (jobs they finished)", `${load.workerCalls} (${load.workerProcessed})`],
    ]));
    console.log(
      `\nround trips through the gateway (from its log, ${o.calibration} submits one at a time on an idle queue):`,
    );
    console.log(table([
      [
        "per chat-submit",
        `${trips.perSubmit.toFixed(2)}  (${
          Object.entries(trips.submitCalls).map(([k, v]) => `${k} x${v}`).join(", ")
        })`,
      ],
      [
        `one queue-worker call, ${trips.workerJobs} jobs`,
        `${trips.perWorkerCall}  (${Object.entries(trips.workerCalls).map(([k, v]) => `${k} x${v}`).join(", ")})`,
      ],
    ]));
    if (providers.some((p) => p.provider !== "offline")) {
      console.log("\nnote: some answers did not come from the offline provider; this stack has an AI key configured.");
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await stopAll();
  }
}

try {
  await main();
} catch (e) {
  console.error(`bench failed: ${e instanceof Error ? e.message : e}`);
  Deno.exit(1);
}
