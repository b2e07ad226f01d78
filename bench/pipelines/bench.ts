// scripts/bench pipelines: scheduling precision and step hand-off.
//
// 1. Schedules: --schedules (1000) schedules, each due once at a time spread
//    over one minute, while --processors (2) job-processor callers each call
//    every --interval-ms (1000, pg_cron's finest granularity is one second),
//    offset from each other. Reports the enqueue lateness (run created -
//    scheduled time) p50/p95/max and how many occurrences were enqueued more
//    than once (runs per occurrence, step jobs per run): must be 0.
// 2. Hand-off: --runs (20) runs of a --steps (5) step pipeline (offline
//    generate-content steps), driven by run-pipelines' batch worker. Reports the
//    time from one step's finish (its result committed, next job enqueued) to
//    the next step's claim, p50/p95.
//
// Uses the stack in the environment (SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY,
// EDGEWORKS_DB_URL: `set -a; source .local/env`), or starts a private one
// (scripts/build first) and stops it afterwards. Nothing asserts on timing;
// an occurrence enqueued twice exits 1. --handoff-only / --schedules-only run one part.
import postgres from "postgres";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}
const SCHEDULES = arg("schedules", 1000);
const PROCESSORS = arg("processors", 2);
const INTERVAL_MS = arg("interval-ms", 1000);
const RUNS = arg("runs", 20);
const STEPS = arg("steps", 5);
const ONLY = Deno.args.includes("--handoff-only")
  ? "handoff"
  : Deno.args.includes("--schedules-only")
  ? "schedules"
  : "both";

interface Stack {
  url: string;
  serviceKey: string;
  dbUrl: string;
  stop(): Promise<void>;
}

const freePort = () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
};

async function privateStack(): Promise<Stack> {
  const dir = await Deno.makeTempDir({ prefix: "edgeworks-bench-pipelines." });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!/^(GEMINI_|AI_|EDGEWORKS_|SUPABASE_|OAUTH_|REPLICATE_)/.test(k)) env[k] = v;
  }
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: dir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
  });
  const serve = (args: string[]) =>
    new Deno.Command(`${ROOT}/scripts/serve`, { args, cwd: ROOT, env, clearEnv: true, stdout: "null", stderr: "null" })
      .output();
  console.error(`starting a private stack in ${dir} ...`);
  if (!(await serve(["--detach", "--no-build"])).success) {
    throw new Error(`the stack did not start; logs in ${dir}/logs`);
  }
  const e: Record<string, string> = {};
  for (const line of (await Deno.readTextFile(`${dir}/env`)).split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) e[line.slice(0, i)] = line.slice(i + 1);
  }
  return {
    url: e.SUPABASE_URL,
    serviceKey: e.SUPABASE_SERVICE_ROLE_KEY,
    dbUrl: e.EDGEWORKS_DB_URL,
    stop: async () => {
      await serve(["--stop"]);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function existing(): Stack | null {
  const g = (k: string) => Deno.env.get(k) ?? "";
  if (!g("SUPABASE_URL")) return null;
  return {
    url: g("SUPABASE_URL"),
    serviceKey: g("SUPABASE_SERVICE_ROLE_KEY"),
    dbUrl: g("EDGEWORKS_DB_URL"),
    stop: async () => {},
  };
}

const pct = (v: number[], p: number) => {
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))];
};
const ms = (n: number) => `${n.toFixed(1)} ms`;

async function call(stack: Stack, name: string, method: string, body?: unknown): Promise<any> {
  const r = await fetch(`${stack.url}/functions/v1/${name}`, {
    method,
    headers: {
      authorization: `Bearer ${stack.serviceKey}`,
      apikey: stack.serviceKey,
      "content-type": "application/json",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${name}: ${r.status} ${text}`);
  return JSON.parse(text);
}

async function main() {
  const stack = existing() ?? (await privateStack());
  const sql = postgres(stack.dbUrl, { max: 4, onnotice: () => {} });
  const user = crypto.randomUUID();
  try {
    await sql`insert into auth.users (id, aud, role, email) values (${user}, 'authenticated', 'authenticated', ${`bench-${user}@test.local`})`;

    let twice = { n: 0 }, jobsTwice = { n: 0 };
    if (ONLY !== "handoff") {
      // ---- 1. scheduling precision --------------------------------------------
      console.error(`creating ${SCHEDULES} schedules due within one minute ...`);
      const start = Date.now() + 5_000;
      const rows = Array.from(
        { length: SCHEDULES },
        (_, i) => ({ i, due: new Date(start + Math.floor((i * 60_000) / SCHEDULES)) }),
      );
      const pipelines = await sql`
      insert into public.pipelines (user_id, name)
      select ${user}, 'bench ' || g from generate_series(1, ${SCHEDULES}) g returning id`;
      await sql`insert into public.pipeline_steps (pipeline_id, user_id, position, step_type, config)
              select id, ${user}, 1, 'generate-content', '{"prompt":"bench"}' from public.pipelines where user_id = ${user}`;
      for (let k = 0; k < rows.length; k += 500) {
        const chunk = rows.slice(k, k + 500).map((r) => ({
          user_id: user,
          pipeline_id: pipelines[r.i].id,
          // Yearly: each schedule has exactly one occurrence inside the window.
          cron_expression: "0 0 1 1 *",
          timezone: "UTC",
          next_run_at: r.due,
        }));
        await sql`insert into public.scheduled_jobs ${sql(chunk)}`;
      }
      const until = start + 60_000 + 3_000;
      let calls = 0;
      const processor = async (offset: number) => {
        await new Promise((r) => setTimeout(r, offset));
        while (Date.now() < until) {
          const t = Date.now();
          await call(stack, "job-processor", "POST", { batch_size: 500 });
          calls++;
          await new Promise((r) => setTimeout(r, Math.max(0, INTERVAL_MS - (Date.now() - t))));
        }
      };
      console.error(`${PROCESSORS} processors calling job-processor every ${INTERVAL_MS} ms for ~65 s ...`);
      await Promise.all(Array.from({ length: PROCESSORS }, (_, i) => processor((i * INTERVAL_MS) / PROCESSORS)));
      const runs = await sql`
      select r.id, r.scheduled_job_id, extract(epoch from (r.created_at - r.scheduled_for)) * 1000 as late
        from public.pipeline_runs r join public.scheduled_jobs s on s.id = r.scheduled_job_id
       where s.user_id = ${user} and r.scheduled_for < ${new Date(start + 60_000)}`;
      [twice] = await sql`
      select count(*)::int as n from (
        select r.scheduled_job_id, r.scheduled_for from public.pipeline_runs r
          join public.scheduled_jobs s on s.id = r.scheduled_job_id where s.user_id = ${user}
         group by 1, 2 having count(*) > 1) d`;
      [jobsTwice] = await sql`
      select count(*)::int as n from (
        select j.payload->>'run_id' from public.jobs j
         where j.queue = 'pipelines' and j.owner_id = ${user} group by 1 having count(*) > 1) d`;
      const late = runs.map((r) => Number(r.late));
      console.log("\npipelines: scheduling precision");
      console.log(`  schedules due within one minute : ${SCHEDULES}`);
      console.log(`  processors x interval            : ${PROCESSORS} x ${INTERVAL_MS} ms (${calls} calls)`);
      console.log(`  occurrences enqueued             : ${runs.length} of ${SCHEDULES}`);
      console.log(
        `  enqueue lateness p50 / p95 / max : ${ms(pct(late, 50))} / ${ms(pct(late, 95))} / ${ms(Math.max(...late))}`,
      );
      console.log(`  occurrences enqueued twice       : ${twice.n} (runs), ${jobsTwice.n} (step jobs per run)`);
      // Stop the bench's schedules and leave their jobs out of the next part.
      await sql`update public.scheduled_jobs set is_active = false where user_id = ${user}`;
      await sql`update public.jobs set status = 'cancelled' where queue = 'pipelines' and owner_id = ${user} and status in ('pending', 'retrying')`;
    }
    if (ONLY === "schedules") return;

    // ---- 2. step hand-off ----------------------------------------------------
    const [p] = await sql`insert into public.pipelines (user_id, name) values (${user}, 'bench handoff') returning id`;
    await sql`insert into public.pipeline_steps (pipeline_id, user_id, position, step_type, config)
              select ${p.id}, ${user}, g, 'generate-content', '{"prompt":"bench"}' from generate_series(1, ${STEPS}) g`;
    const runIds: string[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await call(stack, "run-pipelines", "POST", { pipelineId: p.id });
      runIds.push(r.data.run_id);
    }
    console.error(`driving ${RUNS} runs of ${STEPS} steps with run-pipelines' worker ...`);
    const deadline = Date.now() + 120_000;
    for (;;) {
      await call(stack, "run-pipelines", "GET");
      const [left] =
        await sql`select count(*)::int as n from public.pipeline_runs where id = any(${runIds}) and status not in ('succeeded', 'failed')`;
      if (left.n === 0 || Date.now() > deadline) break;
    }
    const handoffs = await sql`
      select extract(epoch from (j.started_at - h.finished_at)) * 1000 as gap
        from public.pipeline_history h
        join public.pipeline_history n on n.run_id = h.run_id and n.position = h.position + 1
        join public.jobs j on j.id = n.job_id
       where h.run_id = any(${runIds})`;
    const gaps = handoffs.map((r) => Number(r.gap));
    const [ok] =
      await sql`select count(*)::int as n from public.pipeline_runs where id = any(${runIds}) and status = 'succeeded'`;
    console.log("\npipelines: step hand-off (finish -> next step claimed)");
    console.log(`  runs x steps                     : ${RUNS} x ${STEPS} (${ok.n} succeeded)`);
    console.log(`  hand-offs measured               : ${gaps.length}`);
    console.log(`  hand-off p50 / p95               : ${ms(pct(gaps, 50))} / ${ms(pct(gaps, 95))}`);
    if (twice.n > 0 || jobsTwice.n > 0) Deno.exitCode = 1;
  } finally {
    await sql`delete from public.jobs where queue = 'pipelines' and owner_id = ${user}`.catch(() => {});
    await sql`delete from auth.users where id = ${user}`.catch(() => {});
    await sql.end();
    await stack.stop();
  }
}

await main();
