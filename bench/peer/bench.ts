// The Rust functions against their idiomatic TypeScript peers (../shared/peers/ts:
// supabase-js + jose, the same work), side by side on one private stack: the same
// gateway, PostgREST and Postgres, and the peers run as functions under the same
// functions host, so both sides pay the same supervision and the same Deno (2.1.4).
//
//   scripts/bench peer [--requests 2000] [--concurrency 1,8,32] [--rounds 3]
//                      [--pairs health,chat-submit,fixed] [--cold 5] [--soak 0]
//                      [--peers DIR]
//
// Per pair and concurrency, the sides alternating round by round (medians printed):
//   throughput, latency p50/p95/p99, the function process's CPU per request (utime +
//   stime of every thread, from /proc: what the platform bills and what competes for
//   the cores), its RSS after the load; then cold start (the process killed, the next
//   request spawns a fresh one: spawn -> first answer); with --soak N, N requests at
//   c=32 on each side with the RSS sampled along the way (growth = a leak).
// Pairs: health (GET, a timed rpc/health_ping), chat-submit (POST, a new session per
// request: validation, JWT, rate limit, chat_submit), fixed (PUT on health: the 405
// every request pays before any work). Rate limits are raised equally on both sides;
// the chat queue is emptied between runs, so neither side meets the other's backlog.
// Benchmarks print figures and ratios; nothing here asserts on timing.

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

interface Options {
  requests: number;
  concurrency: number[];
  rounds: number;
  pairs: string[];
  cold: number;
  soak: number;
  peers: string;
  burst: boolean;
  clients: number;
  questions: number;
  workers: number;
  batch: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    requests: 2000,
    concurrency: [1, 8, 32],
    rounds: 3,
    pairs: ["health", "chat-submit", "fixed"],
    cold: 5,
    soak: 0,
    peers: `${ROOT}/../shared/peers/ts`,
    burst: false,
    clients: 32,
    questions: 20,
    workers: 2,
    batch: 5,
  };
  const int = (name: string, v: string | undefined, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`${name} must be an integer >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    switch (a) {
      case "--requests":
        o.requests = int(a, v, 10);
        i++;
        break;
      case "--concurrency":
        o.concurrency = (v ?? "").split(",").map((c) => int(a, c, 1));
        i++;
        break;
      case "--rounds":
        o.rounds = int(a, v, 1);
        i++;
        break;
      case "--pairs":
        o.pairs = (v ?? "").split(",").filter(Boolean);
        for (const p of o.pairs) if (!PAIRS[p]) usage(`unknown pair ${p}`);
        i++;
        break;
      case "--cold":
        o.cold = int(a, v, 0);
        i++;
        break;
      case "--soak":
        o.soak = int(a, v, 0);
        i++;
        break;
      case "--peers":
        o.peers = v ?? "";
        i++;
        break;
      case "--burst":
        o.burst = true;
        break;
      case "--clients":
        o.clients = int(a, v, 1);
        i++;
        break;
      case "--questions":
        o.questions = int(a, v, 1);
        i++;
        break;
      case "--workers":
        o.workers = int(a, v, 1);
        i++;
        break;
      case "--batch":
        o.batch = int(a, v, 1);
        i++;
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  return o;
}

function usage(msg: string): never {
  console.error(`bench peer: ${msg}`);
  console.error(
    "usage: scripts/bench peer [--requests N] [--concurrency 1,8,32] [--rounds N] [--pairs health,chat-submit,fixed] [--cold N] [--soak N] [--peers DIR]\n" +
      "       scripts/bench peer --burst [--clients 32] [--questions 20] [--workers 2] [--batch 5] [--rounds N]",
  );
  Deno.exit(2);
}

// ---------------------------------------------------------------------------
// The stack: private, with the peers served beside the project's functions.

interface Stack {
  url: string;
  anonKey: string;
  serviceKey: string;
  userToken: string;
  dbUrl: string;
  gatewayPid: number;
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
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

async function run(cmd: string, args: string[], env: Record<string, string>, logFile: string): Promise<boolean> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, env, clearEnv: true, stdin: "null" }).output();
  await Deno.writeFile(logFile, new Uint8Array([...out.stdout, ...out.stderr]), { append: true });
  return out.success;
}

const UNLIMITED = "1000000/1000000";

async function startStack(o: Options): Promise<Stack> {
  for (const f of ["health", "chat-submit"]) {
    try {
      await Deno.stat(`${ROOT}/supabase/functions/${f}/pkg`);
    } catch {
      throw new Error(`supabase/functions/${f}/pkg is missing: run scripts/build first`);
    }
  }
  for (const f of ["health-ts", "chat-submit-ts", "_shared"]) {
    try {
      await Deno.stat(`${o.peers}/${f}`);
    } catch {
      throw new Error(`${o.peers}/${f} is missing: point --peers at the peers' ts/ folder`);
    }
  }
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-peer-bench." });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (/^(GEMINI_|AI_|EDGEWORKS_|SUPABASE_|RATE_LIMIT_|CHAT_|CORS_|LOG_LEVEL)/.test(k)) continue;
    env[k] = v;
  }
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: stateDir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
    EDGEWORKS_EXTRA_FUNCTIONS_ROOT: o.peers,
    AI_PROVIDER: "offline",
    // A process is retired at half its wall clock (75 s on the free plan): a run must see
    // one process from start to end, so the bench's processes live for a day.
    EDGEWORKS_EDGE_WALL_CLOCK_MS: String(86_400_000),
    // Raised equally on both sides: the bench measures the work, not the limiter's refusals.
    RATE_LIMIT_HEALTH: UNLIMITED,
    RATE_LIMIT_HEALTH_TS: UNLIMITED,
    RATE_LIMIT_CHAT_SUBMIT: UNLIMITED,
    RATE_LIMIT_CHAT_SUBMIT_TS: UNLIMITED,
  });
  const serveLog = `${stateDir}/serve.log`;
  const stop = async () => {
    await run(`${ROOT}/scripts/serve`, ["--stop"], env, serveLog);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  };
  console.error(`starting a private stack in ${stateDir} with the peers from ${o.peers}...`);
  if (!(await run(`${ROOT}/scripts/serve`, ["--detach", "--no-build"], env, serveLog))) {
    const tail = (await Deno.readTextFile(serveLog).catch(() => "")).split("\n").slice(-30).join("\n");
    await stop();
    throw new Error(`the private stack did not start:\n${tail}`);
  }
  const e = parseEnvFile(await Deno.readTextFile(`${stateDir}/env`));
  const gatewayPid = Number((await Deno.readTextFile(`${stateDir}/run/gateway.pid`)).trim());
  return {
    url: e.SUPABASE_URL,
    anonKey: e.SUPABASE_ANON_KEY,
    serviceKey: e.SUPABASE_SERVICE_ROLE_KEY,
    userToken: e.EDGEWORKS_DEMO_USER_TOKEN,
    dbUrl: e.EDGEWORKS_DB_URL,
    gatewayPid,
    stop,
  };
}

async function psql(stack: Stack, ...sql: string[]): Promise<void> {
  const out = await new Deno.Command("psql", {
    args: [stack.dbUrl, "-q", "-v", "ON_ERROR_STOP=1", ...sql.flatMap((q) => ["-c", q])],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`psql: ${new TextDecoder().decode(out.stderr)}`);
}

/** Empties what chat-submit runs leave behind (sessions and their jobs). */
async function resetChat(stack: Stack): Promise<void> {
  await psql(
    stack,
    "delete from public.jobs where queue = 'chat'",
    "delete from public.chat_sessions",
    "vacuum analyze public.jobs, job_history.job_events, public.chat_sessions",
  );
}

// ---------------------------------------------------------------------------
// The function processes, from /proc.

function stat(pid: number): string[] | null {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return s.slice(s.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** The live process serving `name` under this stack's gateway. */
function functionPid(stack: Stack, name: string): number | null {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    const st = stat(pid);
    if (!st || Number(st[1]) !== stack.gatewayPid || st[0] === "Z") continue;
    let cmd = "";
    try {
      cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    } catch {
      continue;
    }
    if (cmd.split("\0").some((a) => a.endsWith(`/${name}/index.ts`))) return pid;
  }
  return null;
}

/** CPU ms of every thread of the process (utime + stime; USER_HZ = 100). */
function cpuMs(pid: number): number {
  const st = stat(pid);
  return st ? (Number(st[11]) + Number(st[12])) * 10 : NaN;
}

/** CPU ms of the main thread alone (where JavaScript and wasm run; what the hosted runtime meters). */
function mainCpuMs(pid: number): number {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/stat`);
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------
// Load.

interface Pair {
  rust: string;
  ts: string;
  /** The request for the i-th call of a run; `tag` makes session ids unique per run. */
  request(stack: Stack, fn: string, tag: string, i: number): Request;
  /** The status every answer must have. */
  expect: number;
  resetBetweenRuns: boolean;
}

const PAIRS: Record<string, Pair> = {
  health: {
    rust: "health",
    ts: "health-ts",
    request: (s, fn) =>
      new Request(`${s.url}/functions/v1/${fn}`, {
        headers: { apikey: s.anonKey, authorization: `Bearer ${s.anonKey}` },
      }),
    expect: 200,
    resetBetweenRuns: false,
  },
  "chat-submit": {
    rust: "chat-submit",
    ts: "chat-submit-ts",
    request: (s, fn, tag, i) =>
      new Request(`${s.url}/functions/v1/${fn}`, {
        method: "POST",
        headers: { apikey: s.anonKey, authorization: `Bearer ${s.userToken}`, "content-type": "application/json" },
        body: JSON.stringify({ session_id: `pb-${tag}-${i}`, message: `What is ${i} plus ${i}? Answer briefly.` }),
      }),
    expect: 200,
    resetBetweenRuns: true,
  },
  fixed: {
    rust: "health",
    ts: "health-ts",
    request: (s, fn) =>
      new Request(`${s.url}/functions/v1/${fn}`, {
        method: "PUT",
        headers: { apikey: s.anonKey, authorization: `Bearer ${s.anonKey}` },
      }),
    expect: 405,
    resetBetweenRuns: false,
  },
};

interface RunResult {
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  cpuPerReq: number;
  mainCpuPerReq: number;
  rss: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

let runCounter = 0;

/** `n` requests with `c` in flight; every answer must have the pair's status. */
async function load(
  stack: Stack,
  pair: Pair,
  fn: string,
  n: number,
  c: number,
): Promise<{ secs: number; lat: number[] }> {
  const tag = `${Date.now().toString(36)}-${runCounter++}`;
  const lat: number[] = [];
  let next = 0;
  let bad = 0;
  let badSample = "";
  const lane = async () => {
    while (next < n) {
      const i = next++;
      const t0 = performance.now();
      const r = await fetch(pair.request(stack, fn, tag, i));
      const text = await r.text();
      lat.push(performance.now() - t0);
      if (r.status !== pair.expect) {
        bad++;
        badSample ||= `${r.status} ${text.slice(0, 200)}`;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, lane));
  const secs = (performance.now() - t0) / 1000;
  if (bad) throw new Error(`${fn}: ${bad} of ${n} answers were not ${pair.expect} (first: ${badSample})`);
  return { secs, lat };
}

async function measure(stack: Stack, pair: Pair, fn: string, n: number, c: number): Promise<RunResult> {
  if (pair.resetBetweenRuns) await resetChat(stack);
  // Warm: the process is up, its connections open and its hot code optimised. V8 tiers
  // both sides up in the background (JavaScript and wasm functions alike): a short
  // warm-up leaves that compiling inside the measured run, so both get the same 1,000.
  await load(stack, pair, fn, Math.min(1000, Math.max(50, n / 2)), c);
  const pid = functionPid(stack, fn);
  if (pid === null) throw new Error(`no process found for ${fn}`);
  const cpu0 = cpuMs(pid);
  const main0 = mainCpuMs(pid);
  const { secs, lat } = await load(stack, pair, fn, n, c);
  const cpu1 = cpuMs(pid);
  const main1 = mainCpuMs(pid);
  if (functionPid(stack, fn) !== pid) throw new Error(`${fn}'s process changed during the run`);
  lat.sort((a, b) => a - b);
  return {
    rps: n / secs,
    p50: percentile(lat, 50),
    p95: percentile(lat, 95),
    p99: percentile(lat, 99),
    cpuPerReq: (cpu1 - cpu0) / n,
    mainCpuPerReq: (main1 - main0) / n,
    rss: rssMb(pid),
  };
}

/** Kills the function's process; the next request spawns a fresh one. Spawn -> first answer, ms. */
async function coldStart(stack: Stack, pair: Pair, fn: string): Promise<number> {
  const pid = functionPid(stack, fn);
  if (pid !== null) {
    Deno.kill(pid, "SIGKILL");
    for (let i = 0; i < 200 && stat(pid) !== null && stat(pid)![0] !== "Z"; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // Let the supervisor see the exit, so the next request boots rather than fails.
    await new Promise((r) => setTimeout(r, 300));
  }
  const t0 = performance.now();
  const r = await fetch(pair.request(stack, fn, `cold-${runCounter++}`, 0));
  await r.text();
  const ms = performance.now() - t0;
  if (r.status !== pair.expect) throw new Error(`${fn}: cold request answered ${r.status}`);
  return ms;
}

// ---------------------------------------------------------------------------

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-");
const pad = (s: string | number, n: number) => String(s).padStart(n);

// ---------------------------------------------------------------------------
// Throughput mode: clients that do not wait for answers.

async function countChat(stack: Stack, status: string): Promise<number> {
  const out = await new Deno.Command("psql", {
    args: [stack.dbUrl, "-qAt", "-c", `select count(*) from public.jobs where queue = 'chat' and status = '${status}'`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`psql: ${new TextDecoder().decode(out.stderr)}`);
  return Number(new TextDecoder().decode(out.stdout).trim());
}

interface BurstResult {
  submitRate: number;
  completeRate: number;
  cpuPerSubmit: number;
}

/**
 * `clients` clients each submit `questions` questions (each into its own session) back
 * to back, waiting only for the submit's answer, never for the question's; meanwhile
 * `workers` queue-worker loops (the Rust worker: it answers both sides' jobs) drain the
 * queue. Submitted jobs/s: all submits over the time they took; completed jobs/s: all
 * jobs over the time until the last was completed.
 */
async function burst(stack: Stack, fn: string, o: Options): Promise<BurstResult> {
  await resetChat(stack);
  const pair = PAIRS["chat-submit"];
  await load(stack, pair, fn, 50, 8); // warm
  await resetChat(stack);
  const pid = functionPid(stack, fn);
  if (pid === null) throw new Error(`no process found for ${fn}`);
  const total = o.clients * o.questions;
  let stop = false;
  const workers = Array.from({ length: o.workers }, async (_, i) => {
    while (!stop) {
      const r = await fetch(`${stack.url}/functions/v1/queue-worker`, {
        method: "POST",
        headers: {
          apikey: stack.anonKey,
          authorization: `Bearer ${stack.serviceKey}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ worker_id: `peer-bench-worker-${i}`, batch_size: o.batch }),
      });
      const body = await r.json();
      if (r.status !== 200) throw new Error(`queue-worker answered ${r.status}: ${JSON.stringify(body)}`);
      if (body.data.iterations === 0) await new Promise((res) => setTimeout(res, 10));
    }
  });
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  const { secs } = await load(stack, pair, fn, total, o.clients);
  const cpu1 = cpuMs(pid);
  let done = 0;
  for (let i = 0; i < 6000 && done < total; i++) {
    done = await countChat(stack, "completed");
    if (done < total) await new Promise((res) => setTimeout(res, 50));
  }
  const completeSecs = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(workers);
  if (done < total) throw new Error(`${fn}: ${done} of ${total} jobs completed`);
  return { submitRate: total / secs, completeRate: total / completeSecs, cpuPerSubmit: (cpu1 - cpu0) / total };
}

async function burstMode(stack: Stack, o: Options): Promise<void> {
  const res: Record<"rust" | "ts", BurstResult[]> = { rust: [], ts: [] };
  const pair = PAIRS["chat-submit"];
  for (let r = 0; r < o.rounds; r++) {
    const order: ("rust" | "ts")[] = r % 2 === 0 ? ["rust", "ts"] : ["ts", "rust"];
    for (const side of order) res[side].push(await burst(stack, pair[side], o));
  }
  const med = (side: "rust" | "ts", k: keyof BurstResult) => median(res[side].map((x) => x[k]));
  console.log(
    `burst: ${o.clients} clients x ${o.questions} questions (no client waits for an answer), ` +
      `${o.workers} queue-worker loops (batch ${o.batch}, offline provider); median of ${o.rounds} alternating rounds`,
  );
  console.log(pad("submit side", 14) + pad("submitted/s", 13) + pad("completed/s", 13) + pad("CPU ms/submit", 15));
  for (const side of ["rust", "ts"] as const) {
    console.log(
      pad(pair[side], 14) + pad(f(med(side, "submitRate")), 13) + pad(f(med(side, "completeRate")), 13) +
        pad(f(med(side, "cpuPerSubmit"), 3), 15),
    );
  }
  console.log(
    pad("rust/ts", 14) + pad(f(med("rust", "submitRate") / med("ts", "submitRate"), 2), 13) +
      pad(f(med("rust", "completeRate") / med("ts", "completeRate"), 2), 13) +
      pad(f(med("rust", "cpuPerSubmit") / med("ts", "cpuPerSubmit"), 2), 15),
  );
}

async function main() {
  const o = parseArgs(Deno.args);
  const stack = await startStack(o);
  try {
    if (o.burst) return await burstMode(stack, o);
    console.log(
      `${o.rounds} alternating rounds per pair and concurrency, medians; ${o.requests} requests per run at c>1, ` +
        `${
          Math.max(100, o.requests / 4)
        } at c=1; functions on the stack's Deno (scripts/serve default: the edge runtime's 2.1.4)`,
    );
    const rows: string[] = [];
    const header = pad("pair", 12) + pad("c", 4) + pad("side", 8) + pad("req/s", 9) + pad("p50 ms", 9) +
      pad("p95 ms", 9) + pad("p99 ms", 9) + pad("CPU ms/req", 12) + pad("main ms/req", 12) + pad("RSS MB", 9);
    for (const name of o.pairs) {
      const pair = PAIRS[name];
      for (const c of o.concurrency) {
        const n = c === 1 ? Math.max(100, Math.floor(o.requests / 4)) : o.requests;
        const res: Record<"rust" | "ts", RunResult[]> = { rust: [], ts: [] };
        for (let r = 0; r < o.rounds; r++) {
          // Alternate, so neither side always runs on the warmer cache or the quieter moment.
          const order: ("rust" | "ts")[] = r % 2 === 0 ? ["rust", "ts"] : ["ts", "rust"];
          for (const side of order) res[side].push(await measure(stack, pair, pair[side], n, c));
        }
        const med = (side: "rust" | "ts", k: keyof RunResult) => median(res[side].map((x) => x[k]));
        for (const side of ["rust", "ts"] as const) {
          rows.push(
            pad(name, 12) + pad(c, 4) + pad(side, 8) + pad(f(med(side, "rps")), 9) + pad(f(med(side, "p50"), 1), 9) +
              pad(f(med(side, "p95"), 1), 9) + pad(f(med(side, "p99"), 1), 9) +
              pad(f(med(side, "cpuPerReq"), 3), 12) + pad(f(med(side, "mainCpuPerReq"), 3), 12) +
              pad(f(med(side, "rss"), 1), 9),
          );
        }
        const ratio = (k: keyof RunResult, d = 2) => f(med("rust", k) / med("ts", k), d);
        rows.push(
          pad(name, 12) + pad(c, 4) + pad("rust/ts", 8) + pad(ratio("rps"), 9) + pad(ratio("p50"), 9) +
            pad(ratio("p95"), 9) + pad(ratio("p99"), 9) + pad(ratio("cpuPerReq"), 12) +
            pad(ratio("mainCpuPerReq"), 12) + pad(ratio("rss"), 9),
        );
        console.error(`  ${name} c=${c}: done`);
      }
    }
    console.log("-".repeat(header.length));
    console.log(header);
    console.log("-".repeat(header.length));
    for (const r of rows) console.log(r);
    console.log("-".repeat(header.length));
    console.log(
      "rust/ts: req/s > 1 and the others < 1 favour Rust. CPU: the function process, all threads; main: its main thread.",
    );

    if (o.cold > 0) {
      const cold: Record<string, number[]> = {};
      for (let r = 0; r < o.cold; r++) {
        for (const p of o.pairs.filter((p) => p !== "fixed")) {
          const pair = PAIRS[p];
          if (pair.resetBetweenRuns) await resetChat(stack);
          const order = r % 2 === 0 ? [pair.rust, pair.ts] : [pair.ts, pair.rust];
          for (const fn of order) (cold[fn] ??= []).push(await coldStart(stack, pair, fn));
        }
      }
      console.log(`cold start (process killed; spawn -> first answer), median of ${o.cold}:`);
      for (const p of o.pairs.filter((p) => p !== "fixed")) {
        const a = median(cold[PAIRS[p].rust]);
        const b = median(cold[PAIRS[p].ts]);
        console.log(`  ${pad(p, 12)}  rust ${pad(f(a), 6)} ms   ts ${pad(f(b), 6)} ms   rust/ts ${f(a / b, 2)}`);
      }
    }

    if (o.soak > 0) {
      console.log(`soak: ${o.soak} requests at c=32 per function, RSS (MB) sampled every ${o.soak / 6}:`);
      for (const p of o.pairs.filter((p) => p !== "fixed")) {
        const pair = PAIRS[p];
        for (const fn of [pair.rust, pair.ts]) {
          const samples: number[] = [];
          const step = Math.ceil(o.soak / 6);
          for (let done = 0; done < o.soak; done += step) {
            if (pair.resetBetweenRuns) await resetChat(stack);
            await load(stack, pair, fn, Math.min(step, o.soak - done), 32);
            const pid = functionPid(stack, fn);
            samples.push(pid === null ? NaN : rssMb(pid));
          }
          console.log(
            `  ${pad(fn, 16)} ${samples.map((x) => pad(f(x, 1), 7)).join("")}   growth over the last 5/6: ` +
              `${f(samples[samples.length - 1] - samples[0], 1)} MB`,
          );
        }
      }
    }
  } finally {
    await stack.stop();
  }
}

await main();
