// Job queue benchmark: the edgeworks SQL queue against graphile-worker, on the same
// Postgres, same driver (node-postgres), same concurrency, trivial jobs.
//
//   node bench/queue/bench.mjs --db-url URL [--jobs 5000] [--concurrency 8] [--batches 1,50]
//                              [--rounds 3] [--no-rest] [--no-chain]
//
// Run through `scripts/bench queue`, which installs the pinned packages, makes a
// throwaway database with the migrations applied, and drops it afterwards.
//
// For each batch size b, each engine:
//   enqueue  N jobs from `concurrency` producers, b jobs per call
//            (ours: enqueue_job / enqueue_jobs; graphile: addJob / addJobs)
//   drain    the N jobs with `concurrency` workers
//            (ours: claim_jobs(p_batch => b), then for b = 1 complete_job_and_claim until
//             nothing is left (--no-chain: complete_job and claim_jobs apart), for b > 1
//             complete_jobs;
//             graphile: run() with that concurrency; for b > 1 its localQueue of size b
//             and completeJobBatchDelay 0, its own batching)
// Each figure is the median of --rounds runs, the engines alternating. Besides jobs/s it
// reports the database CPU per job (postmaster children, from /proc, when the server
// runs on this host): on a shared machine wall-clock rates swing with the neighbours,
// CPU per job much less.
// With SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY set, the same two phases for ours
// through PostgREST /rpc (the path edge functions use), on the stack's database.

import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";

// The pinned packages live outside the clone (scripts/bench installs them into
// EW_BENCH_NODE); both are CommonJS, so load them with a require rooted there.
const BENCH_NODE = process.env.EW_BENCH_NODE;
if (!BENCH_NODE) {
  console.error("bench: EW_BENCH_NODE is not set; run this through scripts/bench queue");
  process.exit(2);
}
const require = createRequire(`${BENCH_NODE}/package.json`);
const pg = require("pg");
const { makeWorkerUtils, run } = require("graphile-worker");
const GW_VERSION = require("graphile-worker/package.json").version;

const args = parseArgs(process.argv.slice(2));
const DB_URL = args["db-url"] ?? process.env.EDGEWORKS_DB_URL;
const N = int(args.jobs ?? "5000", "jobs");
const C = int(args.concurrency ?? "8", "concurrency");
const BATCHES = (args.batches ?? "1,50").split(",").map((b) => int(b, "batches"));
const REST_URL = (process.env.SUPABASE_URL ?? "").replace(/\/+$/, "");
const SERVICE_KEY = process.env.SUPABASE_SERVICE_ROLE_KEY ?? "";
const SKIP_REST = args["no-rest"] === true;
// Batch 1: chain each completion with the next claim (complete_job_and_claim, as
// queue-worker does) unless --no-chain asks for separate claim_jobs + complete_job calls.
const CHAIN = args["no-chain"] !== true;

if (!DB_URL) fail("--db-url (or EDGEWORKS_DB_URL) is required");

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) fail(`unexpected argument ${a}`);
    const [k, v] = a.slice(2).split("=", 2);
    if (v !== undefined) out[k] = v;
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out[k] = argv[++i];
    else out[k] = true;
  }
  return out;
}

function int(s, name) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a positive integer, got ${s}`);
  return n;
}

function fail(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const silentLogger = {
  // graphile-worker's Logger interface: scope() returns a logger.
  scope() {
    return silentLogger;
  },
  error(m) {
    console.error(`graphile-worker: ${m}`);
  },
  warn() {},
  info() {},
  debug() {},
};

function chunks(n, size) {
  const out = [];
  for (let start = 0; start < n; start += size) out.push([start, Math.min(size, n - start)]);
  return out;
}

/** Runs `tasks` (thunks) with at most `c` in flight. */
async function pool(tasks, c) {
  let next = 0;
  async function lane() {
    while (next < tasks.length) {
      const t = tasks[next++];
      await t();
    }
  }
  await Promise.all(Array.from({ length: c }, lane));
}

// Postgres CPU time: on a shared machine wall-clock rates swing with the neighbours'
// load; the CPU the database spent per job does not. Readable when the server runs on
// this host (the postmaster and its children in /proc); otherwise not reported.
let POSTMASTER = null;
const TICK_MS = 10; // USER_HZ is 100 on Linux

function procStat(pid) {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
    return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** CPU ms of the postmaster's children: exited ones (reaped) plus live ones. */
function postgresCpuMs() {
  if (!POSTMASTER) return null;
  const pm = procStat(POSTMASTER);
  if (!pm) return null;
  // Fields after the comm: index 0 is state; utime/stime 11/12, cutime/cstime 13/14.
  let ticks = Number(pm[13]) + Number(pm[14]);
  for (const d of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(d)) continue;
    const st = procStat(d);
    if (st && Number(st[1]) === POSTMASTER) ticks += Number(st[11]) + Number(st[12]);
  }
  return ticks * TICK_MS;
}

// WAL written during a phase: the server's insert position before and after (the
// whole server's WAL, so run it on a database nobody else is writing to). With index
// insertions, it is what a job costs in writes beyond the heap rows themselves.
async function walLsn() {
  const c = new pg.Client({ connectionString: DB_URL });
  await c.connect();
  try {
    const { rows } = await c.query("select pg_current_wal_lsn()::text as lsn");
    return rows[0].lsn;
  } finally {
    await c.end();
  }
}

async function walBytesSince(lsn) {
  const c = new pg.Client({ connectionString: DB_URL });
  await c.connect();
  try {
    const { rows } = await c.query("select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8 as b", [lsn]);
    return rows[0].b;
  } finally {
    await c.end();
  }
}

async function timed(fn) {
  const w0 = await walLsn();
  const c0 = postgresCpuMs();
  const t0 = process.hrtime.bigint();
  await fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = postgresCpuMs();
  const walBytes = await walBytesSince(w0);
  return { secs, cpuMs: c0 === null || c1 === null ? null : c1 - c0, walBytes };
}

// ---------------------------------------------------------------------------
// edgeworks (direct SQL, node-postgres, prepared statements like graphile-worker)
// ---------------------------------------------------------------------------

async function oursEnqueue(pgPool, queue, batch) {
  const tasks = chunks(N, batch).map(([start, size]) => async () => {
    if (size === 1) {
      await pgPool.query({
        name: "ew_enqueue_one",
        text: "select id from public.enqueue_job(p_queue => $1, p_kind => 'bench', p_payload => $2::jsonb)",
        values: [queue, JSON.stringify({ i: start })],
      });
    } else {
      const items = Array.from({ length: size }, (_, k) => ({ queue, kind: "bench", payload: { i: start + k } }));
      await pgPool.query({
        name: "ew_enqueue_many",
        text: "select id from public.enqueue_jobs($1::jsonb)",
        values: [JSON.stringify(items)],
      });
    }
  });
  return await timed(() => pool(tasks, C));
}

async function oursDrain(pgPool, queue, batch) {
  let done = 0;
  async function worker(w) {
    const client = await pgPool.connect();
    try {
      for (;;) {
        const { rows } = await client.query({
          name: "ew_claim",
          text: "select id, lease_token from public.claim_jobs($1, array[$2], null, $3, 60)",
          values: [`bench-w${w}`, queue, batch],
        });
        if (rows.length === 0) return;
        if (rows.length === 1 && CHAIN) {
          // What queue-worker does while it has time for another batch: the completion
          // claims the next job in the same call (one round trip and commit per job).
          let held = rows[0];
          for (;;) {
            const next = await client.query({
              name: "ew_complete_claim",
              text:
                "select id, lease_token from public.complete_job_and_claim($1, $2, null, $3, array[$4], null, 1, 60)",
              values: [held.id, held.lease_token, `bench-w${w}`, queue],
            });
            done += 1;
            if (next.rows.length === 0) return;
            held = next.rows[0];
          }
        } else if (rows.length === 1) {
          await client.query({
            name: "ew_complete",
            text: "select 1 from public.complete_job($1, $2, null)",
            values: [rows[0].id, rows[0].lease_token],
          });
        } else {
          const items = rows.map((r) => ({ job: r.id, lease_token: r.lease_token }));
          const res = await client.query({
            name: "ew_complete_many",
            text: "select completed from public.complete_jobs($1::jsonb)",
            values: [JSON.stringify(items)],
          });
          if (res.rows.some((r) => !r.completed)) throw new Error("a lease was lost during the bench");
        }
        done += rows.length;
      }
    } finally {
      client.release();
    }
  }
  const t = await timed(() => Promise.all(Array.from({ length: C }, (_, w) => worker(w))));
  const { rows } = await pgPool.query(
    "select count(*) filter (where status = 'completed')::int as ok, count(*)::int as all from public.jobs where queue = $1",
    [queue],
  );
  if (rows[0].ok !== N || rows[0].all !== N || done !== N) {
    throw new Error(`ours: drained ${done}, completed ${rows[0].ok} of ${rows[0].all}, expected ${N}`);
  }
  return t;
}

async function benchOurs(batch) {
  const pgPool = new pg.Pool({ connectionString: DB_URL, max: C + 2 });
  try {
    const queue = `bench_${batch}_${process.pid}`;
    const enqueue = await oursEnqueue(pgPool, queue, batch);
    const drain = await oursDrain(pgPool, queue, batch);
    await pgPool.query("delete from public.jobs where queue = $1", [queue]);
    await pgPool.query("delete from public.workers where id like 'bench-w%'");
    await pgPool.query("vacuum analyze public.jobs");
    // The stored history (public.job_events is a view of it and of the jobs' rows).
    await pgPool.query("vacuum analyze job_history.job_events");
    return { enqueue, drain };
  } finally {
    await pgPool.end();
  }
}

// ---------------------------------------------------------------------------
// graphile-worker, through its own API
// ---------------------------------------------------------------------------

async function benchGraphile(batch) {
  const utils = await makeWorkerUtils({ connectionString: DB_URL, maxPoolSize: C + 2, logger: silentLogger });
  try {
    await utils.migrate();
    const queueTask = "bench";
    const tasks = chunks(N, batch).map(([start, size]) => async () => {
      if (size === 1) {
        await utils.addJob(queueTask, { i: start });
      } else {
        await utils.addJobs(
          Array.from({ length: size }, (_, k) => ({ identifier: queueTask, payload: { i: start + k } })),
        );
      }
    });
    const enqueue = await timed(() => pool(tasks, C));

    let done = 0;
    let failed = 0;
    let resolveDone;
    const allDone = new Promise((r) => (resolveDone = r));
    const preset = batch > 1 ? { worker: { localQueue: { size: batch }, completeJobBatchDelay: 0 } } : { worker: {} };
    let runner;
    const drain = await timed(async () => {
      runner = await run({
        connectionString: DB_URL,
        concurrency: C,
        maxPoolSize: C + 2,
        noHandleSignals: true,
        pollInterval: 1000,
        logger: silentLogger,
        taskList: { [queueTask]: async () => {} },
        preset,
      });
      runner.events.on("job:success", () => {
        if (++done === N) resolveDone();
      });
      runner.events.on("job:error", () => failed++);
      await allDone;
      // "job:success" fires before the completion is written (graphile-worker does not
      // await it): the drain ends when the jobs are gone from its table.
      await utils.withPgClient(async (c) => {
        for (let i = 0; i < 10_000; i++) {
          const { rows } = await c.query("select count(*)::int as n from graphile_worker._private_jobs");
          if (rows[0].n === 0) return;
          await new Promise((r) => setTimeout(r, 1));
        }
        throw new Error("graphile-worker: jobs left after the drain");
      });
    });
    await runner.stop();
    if (failed) throw new Error(`graphile-worker: ${failed} jobs failed`);
    await utils.withPgClient((c) => c.query("vacuum analyze graphile_worker._private_jobs"));
    return { enqueue, drain };
  } finally {
    await utils.release();
  }
}

// ---------------------------------------------------------------------------
// edgeworks through PostgREST (/rest/v1/rpc), as edge functions call it
// ---------------------------------------------------------------------------

async function rpc(fn, body) {
  const res = await fetch(`${REST_URL}/rest/v1/rpc/${fn}`, {
    method: "POST",
    headers: {
      apikey: SERVICE_KEY,
      authorization: `Bearer ${SERVICE_KEY}`,
      "content-type": "application/json",
      accept: "application/json",
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${fn}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function benchRest(batch) {
  const queue = `bench_rest_${batch}_${process.pid}`;
  const tasks = chunks(N, batch).map(([start, size]) => async () => {
    if (size === 1) {
      await rpc("enqueue_job", { p_queue: queue, p_kind: "bench", p_payload: { i: start } });
    } else {
      await rpc("enqueue_jobs", {
        p_jobs: Array.from({ length: size }, (_, k) => ({ queue, kind: "bench", payload: { i: start + k } })),
      });
    }
  });
  const enqueue = await timed(() => pool(tasks, C));
  let done = 0;
  const drain = await timed(() =>
    Promise.all(Array.from({ length: C }, async (_, w) => {
      for (;;) {
        const rows = await rpc("claim_jobs", { p_worker: `bench-rest-w${w}`, p_queues: [queue], p_batch: batch });
        if (rows.length === 0) return;
        if (rows.length === 1 && CHAIN) {
          let held = rows[0];
          for (;;) {
            const next = await rpc("complete_job_and_claim", {
              p_job: held.id,
              p_lease_token: held.lease_token,
              p_result: null,
              p_worker: `bench-rest-w${w}`,
              p_queues: [queue],
            });
            done += 1;
            if (next.length === 0) return;
            held = next[0];
          }
        } else if (rows.length === 1) {
          await rpc("complete_job", { p_job: rows[0].id, p_lease_token: rows[0].lease_token, p_result: null });
        } else {
          await rpc("complete_jobs", {
            p_completions: rows.map((r) => ({ job: r.id, lease_token: r.lease_token })),
          });
        }
        done += rows.length;
      }
    }))
  );
  if (done !== N) throw new Error(`rest: drained ${done} of ${N}`);
  const stats = await rpc("queue_stats", { p_queue: queue });
  if (stats.completed !== N) throw new Error(`rest: ${stats.completed} completed of ${N}`);
  return { enqueue, drain };
}

// ---------------------------------------------------------------------------

const ROUNDS = int(args.rounds ?? "3", "rounds");

function median(xs) {
  const v = xs.filter((x) => x !== null).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function summarize(runs) {
  const out = {};
  for (const phase of ["enqueue", "drain"]) {
    out[phase] = {
      rate: median(runs.map((r) => N / r[phase].secs)),
      cpuPerJob: median(runs.map((r) => (r[phase].cpuMs === null ? null : r[phase].cpuMs / N))),
      walPerJob: median(runs.map((r) => r[phase].walBytes / N)),
    };
  }
  return out;
}

function pad(s, n, right = true) {
  s = String(s);
  return right ? s.padStart(n) : s.padEnd(n);
}

function fmt(x, digits = 0) {
  return x === null || x === undefined ? "-" : x.toFixed(digits);
}

async function main() {
  const server = new pg.Client({ connectionString: DB_URL });
  await server.connect();
  const { rows } = await server.query(
    `select current_setting('server_version') as v, pg_backend_pid() as pid,
            to_regproc('public.complete_jobs') is not null as ok`,
  );
  const backend = procStat(rows[0].pid); // read while the backend still exists
  if (backend) POSTMASTER = Number(backend[1]);
  await server.end();
  if (!rows[0].ok) fail("the queue migration is not applied to this database");

  console.log(
    `Postgres ${rows[0].v}; ${N} jobs; concurrency ${C}; median of ${ROUNDS} alternating rounds; ` +
      `graphile-worker ${GW_VERSION}; node ${process.version}`,
  );
  const results = [];
  for (const batch of BATCHES) {
    const ours = [];
    const gw = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate so neither engine always runs on the warmer cache or the quieter moment.
      if (r % 2 === 0) {
        ours.push(await benchOurs(batch));
        gw.push(await benchGraphile(batch));
      } else {
        gw.push(await benchGraphile(batch));
        ours.push(await benchOurs(batch));
      }
    }
    results.push({ batch, ours: summarize(ours), gw: summarize(gw) });
    console.log(`  batch ${batch}: done`);
  }
  const rest = [];
  if (REST_URL && SERVICE_KEY && !SKIP_REST) {
    for (const batch of BATCHES) rest.push({ batch, r: await benchRest(batch) });
  }

  const line = "-".repeat(104);
  console.log(line);
  console.log(
    pad("phase", 16, false) + pad("batch", 6) + pad("ours jobs/s", 13) + pad("graphile jobs/s", 17) +
      pad("ours/gw", 9) + pad("ours pg-CPU ms/job", 20) + pad("gw pg-CPU ms/job", 18) + pad("gw/ours", 9),
  );
  console.log(line);
  for (const { batch, ours, gw } of results) {
    for (const phase of ["enqueue", "drain"]) {
      const a = ours[phase];
      const b = gw[phase];
      console.log(
        pad(phase === "enqueue" ? "enqueue" : "claim+complete", 16, false) + pad(batch, 6) +
          pad(fmt(a.rate), 13) + pad(fmt(b.rate), 17) + pad(fmt(a.rate / b.rate, 2), 9) +
          pad(fmt(a.cpuPerJob, 3), 20) + pad(fmt(b.cpuPerJob, 3), 18) +
          pad(a.cpuPerJob && b.cpuPerJob ? fmt(b.cpuPerJob / a.cpuPerJob, 2) : "-", 9),
      );
    }
  }
  console.log(line);
  console.log("ours/gw > 1: ours faster. gw/ours (CPU) > 1: ours spends less database CPU per job.");
  console.log(
    CHAIN
      ? "ours at batch 1: each completion claims the next job in the same call (complete_job_and_claim)."
      : "ours at batch 1: claim_jobs and complete_job as separate calls (--no-chain).",
  );
  console.log("WAL bytes per job (the server's, median):");
  for (const { batch, ours, gw } of results) {
    for (const phase of ["enqueue", "drain"]) {
      console.log(
        pad(phase === "enqueue" ? "enqueue" : "claim+complete", 16, false) + pad(batch, 6) +
          pad(`ours ${fmt(ours[phase].walPerJob)}`, 13) + pad(`graphile ${fmt(gw[phase].walPerJob)}`, 17),
      );
    }
  }
  if (rest.length) {
    console.log("edgeworks through PostgREST /rpc (service key), one run:");
    for (const { batch, r } of rest) {
      console.log(pad("enqueue", 16, false) + pad(batch, 6) + pad(fmt(N / r.enqueue.secs), 13));
      console.log(pad("claim+complete", 16, false) + pad(batch, 6) + pad(fmt(N / r.drain.secs), 13));
    }
    console.log(line);
  } else {
    console.log("PostgREST path skipped (set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to include it)");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
