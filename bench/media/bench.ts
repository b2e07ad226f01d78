// scripts/bench media: the media-generation queue (seed 001) with the
// reference worker (workers/media-worker), end to end through the gateway.
//
//   scripts/bench media [--dispatch-jobs 12] [--jobs 200] [--users 8] [--workers 4]
//
// Without SUPABASE_URL (and its companions from a stack's env file, plus the
// MEDIA_WORKER_SECRET the stack's functions were started with) it starts a
// private stack on free ports and stops it at the end.
//
// Phases:
//   1. Dispatch latency with the seed's polling: one SDXL worker polling
//      sdxl_queue every 2 s and one WAN worker polling wan_queue every 5 s,
//      idle; jobs are queued one at a time at random moments. Dispatch =
//      the job's claim (jobs.started_at) minus its enqueue (jobs.created_at),
//      both from the database's clock.
//   2. The same with LISTEN/NOTIFY wake-up (one worker on both queues).
//   3. Sustained throughput: --workers worker processes (notify), --users users
//      queueing --jobs small SDXL jobs at once through queue-job; each job
//      is claimed, rendered (64 px), uploaded through a presigned URL and
//      reported twice (processing + completed) through job-callback. Reported:
//      jobs/s from the first queue-job sent to the last completion, and
//      end-to-end p50/p95 (created_at -> completed_at).
// Beside them: Hatchet's published dispatch latency for warm workers (< 25 ms).

import postgres from "postgres";
import { userAccessToken } from "../../scripts/local/jwt.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

interface Options {
  dispatchJobs: number;
  jobs: number;
  users: number;
  workers: number;
}

function parseArgs(args: string[]): Options {
  const o: Options = { dispatchJobs: 12, jobs: 200, users: 8, workers: 4 };
  const int = (v: string | undefined, name: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      console.error(`${name} must be a whole number from ${min} to ${max}`);
      Deno.exit(2);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--dispatch-jobs") o.dispatchJobs = int(args[++i], a, 2, 500);
    else if (a === "--jobs") o.jobs = int(args[++i], a, 1, 10000);
    else if (a === "--users") o.users = int(args[++i], a, 1, 100);
    else if (a === "--workers") o.workers = int(args[++i], a, 1, 32);
    else {
      console.error("usage: scripts/bench media [--dispatch-jobs N] [--jobs N] [--users N] [--workers N]");
      Deno.exit(a === "-h" || a === "--help" ? 0 : 2);
    }
  }
  return o;
}

interface Stack {
  env: Record<string, string>;
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

async function startStack(): Promise<Stack> {
  const have = (k: string) => Deno.env.get(k) ?? "";
  if (have("SUPABASE_URL")) {
    for (const k of ["SUPABASE_ANON_KEY", "EDGEWORKS_JWT_SECRET", "EDGEWORKS_DB_URL", "MEDIA_WORKER_SECRET"]) {
      if (!have(k)) throw new Error(`SUPABASE_URL is set but ${k} is not`);
    }
    return { env: Deno.env.toObject(), stop: async () => {} };
  }
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-bench-media." });
  const secret = "whsec_" + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("EDGEWORKS_") && !k.startsWith("SUPABASE_") && !k.startsWith("MEDIA_")) env[k] = v;
  }
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: stateDir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
    MEDIA_WORKER_SECRET: secret,
    // The throughput phase sends far more than a user's default burst.
    RATE_LIMIT_QUEUE_JOB: "100000/10000",
  });
  const serve = async (args: string[]) =>
    (await new Deno.Command(`${ROOT}/scripts/serve`, { args, env, clearEnv: true, stdout: "null", stderr: "null" })
      .output()).success;
  const stop = async () => {
    await serve(["--stop"]);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  };
  console.error(`starting a private stack in ${stateDir}...`);
  if (!(await serve(["--detach", "--no-build"]))) {
    await stop();
    throw new Error("the private stack did not start (run scripts/build first?)");
  }
  const e = parseEnvFile(await Deno.readTextFile(`${stateDir}/env`));
  return { env: { ...env, ...e }, stop };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));

function workerBin(): string {
  const target = Deno.env.get("CARGO_TARGET_DIR") ?? `${Deno.env.get("HOME")}/.cache/edgeworks/target`;
  return Deno.env.get("MEDIA_WORKER_BIN") ?? `${target}/release/media-worker`;
}

function startWorker(env: Record<string, string>, extra: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(workerBin(), {
    env: {
      EDGEWORKS_DB_URL: env.EDGEWORKS_DB_URL,
      SUPABASE_URL: env.SUPABASE_URL,
      SUPABASE_ANON_KEY: env.SUPABASE_ANON_KEY,
      MEDIA_WORKER_SECRET: env.MEDIA_WORKER_SECRET,
      ...extra,
    },
    clearEnv: true,
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

async function stopWorkers(ws: Deno.ChildProcess[]) {
  for (const w of ws) {
    try {
      w.kill("SIGTERM");
    } catch {
      // gone
    }
  }
  for (const w of ws) await w.status;
}

async function main() {
  const o = parseArgs(Deno.args);
  const stack = await startStack();
  const env = stack.env;
  const url = env.SUPABASE_URL.replace(/\/+$/, "");
  const sql = postgres(env.EDGEWORKS_DB_URL, { max: 4, onnotice: () => {} });
  const users: { id: string; token: string }[] = [];
  const queueJob = async (token: string, body: unknown) => {
    const r = await fetch(`${url}/functions/v1/queue-job`, {
      method: "POST",
      headers: { apikey: env.SUPABASE_ANON_KEY, authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const b = await r.json();
    if (r.status !== 200) throw new Error(`queue-job ${r.status}: ${JSON.stringify(b)}`);
    return b.job.id as string;
  };
  const waitDone = async (ids: string[], timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const rows = await sql`select count(*)::int as n from public.media_jobs
                              where id = any(${ids}::uuid[]) and status in ('completed','failed','cancelled','expired')`;
      if (rows[0].n === ids.length) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`jobs not finished within ${timeoutMs} ms`);
  };
  const dispatchOf = async (ids: string[]) => {
    const rows = await sql`select extract(epoch from (started_at - created_at)) * 1000 as ms
                             from public.jobs where id = any(${ids}::uuid[]) and started_at is not null`;
    return rows.map((r: any) => Number(r.ms)).sort((a: number, b: number) => a - b);
  };

  try {
    for (let i = 0; i < Math.max(o.users, 2); i++) {
      const id = crypto.randomUUID();
      await sql`insert into auth.users (id, aud, role, email) values (${id}, 'authenticated', 'authenticated', ${`bench-${id}@test.local`})`;
      await sql`select public.media_grant_credits(${id}::uuid, 1000000, 'bench')`;
      users.push({
        id,
        token: await userAccessToken({ secret: env.EDGEWORKS_JWT_SECRET, apiUrl: url, sub: id, expiresIn: 7200 }),
      });
    }
    const small = (prompt: string, jobType = "sdxl_image_fast") => ({ jobType, metadata: { prompt, size: 64 } });

    // Warm the functions (first boot) before measuring.
    {
      const ws = [startWorker(env, { MEDIA_WORKER_ID: "bench-warm" })];
      const ids = await Promise.all([0, 1, 2].map((i) => queueJob(users[0].token, small(`warm ${i}`))));
      await waitDone(ids, 60_000);
      await stopWorkers(ws);
    }

    const dispatchPhase = async (label: string, workers: Record<string, string>[], types: string[]) => {
      const ws = workers.map((w, i) => startWorker(env, { MEDIA_WORKER_ID: `bench-${label}-${i}`, ...w }));
      await new Promise((r) => setTimeout(r, 1000));
      const result: Record<string, number[]> = {};
      for (const t of types) {
        const ids: string[] = [];
        for (let i = 0; i < o.dispatchJobs; i++) {
          // Arrive at a random moment of the poll cycle.
          await new Promise((r) => setTimeout(r, Math.random() * 1500));
          const id = await queueJob(users[1].token, small(`${label} ${i}`, t));
          ids.push(id);
          await waitDone([id], 60_000);
        }
        result[t] = await dispatchOf(ids);
      }
      await stopWorkers(ws);
      return result;
    };

    console.error("phase 1: dispatch with the seed's polling (sdxl 2 s, wan 5 s)...");
    const polled = await dispatchPhase(
      "poll",
      [{ MEDIA_WORKER_WAKE: "poll", MEDIA_WORKER_QUEUES: "sdxl_queue" }, {
        MEDIA_WORKER_WAKE: "poll",
        MEDIA_WORKER_QUEUES: "wan_queue",
      }],
      ["sdxl_image_fast", "image_fast"],
    );
    console.error("phase 2: dispatch with LISTEN/NOTIFY...");
    const notified = await dispatchPhase("notify", [{ MEDIA_WORKER_WAKE: "notify" }], [
      "sdxl_image_fast",
      "image_fast",
    ]);

    console.error(`phase 3: ${o.jobs} jobs from ${o.users} users through ${o.workers} workers...`);
    const ws = Array.from({ length: o.workers }, (_, i) => startWorker(env, { MEDIA_WORKER_ID: `bench-load-${i}` }));
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = performance.now();
    const per = Math.ceil(o.jobs / o.users);
    const ids = (await Promise.all(
      users.slice(0, o.users).map(async (u, ui) => {
        const mine: string[] = [];
        for (let i = 0; i < per && ui * per + i < o.jobs; i++) {
          mine.push(await queueJob(u.token, small(`load ${ui} ${i}`)));
        }
        return mine;
      }),
    )).flat();
    const queuedMs = performance.now() - t0;
    await waitDone(ids, 600_000);
    const totalMs = performance.now() - t0;
    await stopWorkers(ws);
    const e2e = (await sql`select extract(epoch from (completed_at - created_at)) * 1000 as ms, status
                             from public.media_jobs where id = any(${ids}::uuid[])`) as any[];
    const failed = e2e.filter((r) => r.status !== "completed").length;
    const lat = e2e.map((r) => Number(r.ms)).sort((a, b) => a - b);
    const loadDispatch = await dispatchOf(ids);

    const row = (name: string, xs: number[]) =>
      console.log(
        `  ${name.padEnd(44)} p50 ${fmt(quantile(xs, 0.5)).padStart(7)} ms   p95 ${
          fmt(quantile(xs, 0.95)).padStart(7)
        } ms   (n=${xs.length})`,
      );
    console.log("\nmedia queue: dispatch latency (queue-job accepted -> worker claimed, database clock)");
    row("seed polling, sdxl_queue every 2 s", polled.sdxl_image_fast);
    row("seed polling, wan_queue every 5 s", polled.image_fast);
    row("LISTEN/NOTIFY, sdxl_queue", notified.sdxl_image_fast);
    row("LISTEN/NOTIFY, wan_queue", notified.image_fast);
    console.log("  Hatchet (published, warm workers)            < 25 ms");
    console.log(`\nsustained: ${ids.length} jobs, ${o.users} users, ${o.workers} workers (notify), 64 px PNGs`);
    console.log(`  queued in ${fmt(queuedMs)} ms (${(ids.length / (queuedMs / 1000)).toFixed(1)} queue-job/s)`);
    console.log(
      `  all finished in ${fmt(totalMs)} ms: ${
        (ids.length / (totalMs / 1000)).toFixed(1)
      } jobs/s, ${failed} not completed`,
    );
    row("end to end (created -> completed)", lat);
    row("dispatch under load", loadDispatch);
  } finally {
    await sql.end({ timeout: 5 });
    await stack.stop();
  }
}

await main();
