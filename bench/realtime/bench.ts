// Realtime fan-out through the local stack's gateway: N supabase-js clients
// subscribed to postgres_changes on one RLS table (owner = auth.uid()), the
// clients spread over U users, while rows are inserted at R per second for
// S seconds, each owned by one of the users. Every row must reach exactly the
// clients of its owner (lost = expected deliveries that never came, leaked =
// deliveries to a client of another user, duplicates). Latency is commit to
// client: the change's commit_timestamp (the database's clock) to its
// arrival (this process's clock; same machine).
//
// Usage: deno run -A bench/realtime/bench.ts [--clients 200] [--users 10] [--rate 100] [--seconds 10]
// Without SUPABASE_URL (and its companions from a stack's env file) it starts a
// private stack on free ports and stops it at the end.
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import postgres from "postgres";
import { userAccessToken } from "../../scripts/local/jwt.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

interface Options {
  clients: number;
  users: number;
  rate: number;
  seconds: number;
}

function parseArgs(args: string[]): Options {
  const o: Options = { clients: 200, users: 10, rate: 100, seconds: 10 };
  for (let i = 0; i < args.length; i++) {
    const k = args[i].replace(/^--/, "") as keyof Options;
    const v = Number(args[++i]);
    if (!(k in o) || !Number.isFinite(v) || v <= 0) {
      console.error("usage: bench.ts [--clients 200] [--users 10] [--rate 100] [--seconds 10]");
      Deno.exit(2);
    }
    o[k] = Math.floor(v);
  }
  o.users = Math.min(o.users, o.clients);
  return o;
}

interface Stack {
  url: string;
  anonKey: string;
  jwtSecret: string;
  dbUrl: string;
  stop(): Promise<void>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function startPrivateStack(): Promise<Stack> {
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-bench-rt." });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("EDGEWORKS_") && !k.startsWith("SUPABASE_")) env[k] = v;
  }
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: stateDir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
  });
  const serve = (args: string[]) =>
    new Deno.Command(`${ROOT}/scripts/serve`, { args, cwd: ROOT, env, clearEnv: true, stdin: "null" }).output();
  const stop = async () => {
    await serve(["--stop"]);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  };
  console.error(`starting a private stack in ${stateDir} ...`);
  const out = await serve(["--detach", "--no-build"]);
  if (!out.success) {
    await stop();
    throw new Error(`the private stack did not start:\n${new TextDecoder().decode(out.stderr).slice(-3000)}`);
  }
  const e: Record<string, string> = {};
  for (const line of (await Deno.readTextFile(`${stateDir}/env`)).split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) e[line.slice(0, i)] = line.slice(i + 1);
  }
  return {
    url: e.SUPABASE_URL,
    anonKey: e.SUPABASE_ANON_KEY,
    jwtSecret: e.EDGEWORKS_JWT_SECRET,
    dbUrl: e.EDGEWORKS_DB_URL,
    stop,
  };
}

function existingStack(): Stack | null {
  const g = (k: string) => Deno.env.get(k) ?? "";
  if (!g("SUPABASE_URL")) return null;
  for (const k of ["SUPABASE_ANON_KEY", "EDGEWORKS_JWT_SECRET", "EDGEWORKS_DB_URL"]) {
    if (!g(k)) throw new Error(`SUPABASE_URL is set but ${k} is not: source the stack's env file`);
  }
  return {
    url: g("SUPABASE_URL").replace(/\/+$/, ""),
    anonKey: g("SUPABASE_ANON_KEY"),
    jwtSecret: g("EDGEWORKS_JWT_SECRET"),
    dbUrl: g("EDGEWORKS_DB_URL"),
    stop: async () => {},
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const o = parseArgs(Deno.args);
  const stack = existingStack() ?? await startPrivateStack();
  const sql = postgres(stack.dbUrl, { max: 4, onnotice: () => {} });
  const table = `rt_bench_${crypto.randomUUID().replace(/-/g, "").slice(0, 10)}`;
  const clients: SupabaseClient[] = [];
  try {
    await sql.unsafe(`
      create table public.${table} (id bigint primary key, owner uuid not null, body text not null);
      alter table public.${table} enable row level security;
      create policy ${table}_own on public.${table} for select to authenticated using (owner = auth.uid());
      grant select on public.${table} to authenticated;
      alter publication supabase_realtime add table public.${table};
    `);
    const users = Array.from({ length: o.users }, () => crypto.randomUUID());
    const tokens = await Promise.all(
      users.map((u) => userAccessToken({ secret: stack.jwtSecret, apiUrl: stack.url, sub: u })),
    );

    // received[client] = ids; latencies of correct deliveries; leaks.
    const received: Map<number, number>[] = [];
    const latencies: number[] = [];
    let leaked = 0, duplicates = 0;
    let firstCommit = Infinity, lastCommit = -Infinity; // the insert rate as the database committed it
    const t0 = performance.now();
    for (let start = 0; start < o.clients; start += 20) {
      const batch = [];
      for (let i = start; i < Math.min(o.clients, start + 20); i++) {
        const userIndex = i % o.users;
        const c = createClient(stack.url, stack.anonKey, { accessToken: () => Promise.resolve(tokens[userIndex]) });
        await c.realtime.setAuth();
        clients.push(c);
        const seen = new Map<number, number>();
        received.push(seen);
        const ch = c.channel(`bench-${i}`).on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table },
          (p: any) => {
            const arrived = Date.now();
            const id = Number(p.new.id);
            const committed = Date.parse(p.commit_timestamp);
            firstCommit = Math.min(firstCommit, committed);
            lastCommit = Math.max(lastCommit, committed);
            if (p.new.owner !== users[userIndex]) leaked++;
            else if (seen.has(id)) duplicates++;
            else latencies.push(arrived - committed);
            seen.set(id, (seen.get(id) ?? 0) + 1);
          },
        );
        batch.push(
          new Promise<void>((resolve, reject) =>
            ch.subscribe((s, err) =>
              s === "SUBSCRIBED" ? resolve() : reject(new Error(`client ${i}: ${s} ${err?.message ?? ""}`))
            )
          ),
        );
      }
      await Promise.all(batch);
    }
    console.error(`${o.clients} clients (${o.users} users) subscribed in ${Math.round(performance.now() - t0)} ms`);

    // Inserts paced by the clock: row k is due at k/rate seconds.
    const total = o.rate * o.seconds;
    const owners: number[] = [];
    const begin = performance.now();
    const pending: Promise<unknown>[] = [];
    for (let k = 0; k < total; k++) {
      const due = begin + (k * 1000) / o.rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const owner = k % o.users;
      owners.push(owner);
      // .then() sends it now: a postgres.js query waits until something awaits it.
      pending.push(sql`insert into ${sql(table)} (id, owner, body) values (${k}, ${users[owner]}, 'x')`.then(() => {}));
    }
    await Promise.all(pending);
    const insertSecs = (performance.now() - begin) / 1000;

    // Expected: row k at every client of its owner.
    let expected = 0;
    const isDone = () => {
      let got = 0;
      for (const m of received) got += m.size;
      return got;
    };
    for (let i = 0; i < o.clients; i++) expected += owners.filter((ow) => ow === i % o.users).length;
    const deadline = Date.now() + 10_000;
    while (isDone() < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 500)); // late duplicates or leaks would land here
    const delivered = isDone();
    latencies.sort((a, b) => a - b);
    const result = {
      clients: o.clients,
      users: o.users,
      inserts: total,
      insert_rate_per_s: Math.round(total / insertSecs),
      commit_rate_per_s: Math.round(((total - 1) * 1000) / Math.max(1, lastCommit - firstCommit)),
      deliveries_expected: expected,
      deliveries_received: delivered,
      lost: expected - delivered,
      leaked,
      duplicates,
      latency_ms: {
        p50: percentile(latencies, 50),
        p95: percentile(latencies, 95),
        p99: percentile(latencies, 99),
        max: latencies[latencies.length - 1],
      },
    };
    console.log(
      `realtime fan-out: ${o.clients} clients / ${o.users} users, ${total} inserts ` +
        `(sent at ${result.insert_rate_per_s}/s, committed at ${result.commit_rate_per_s}/s)\n` +
        `  deliveries ${delivered}/${expected}  lost ${result.lost}  leaked ${leaked}  duplicates ${duplicates}\n` +
        `  commit -> client latency ms: p50 ${result.latency_ms.p50}  p95 ${result.latency_ms.p95}  ` +
        `p99 ${result.latency_ms.p99}  max ${result.latency_ms.max}`,
    );
    console.log(JSON.stringify(result));
    if (result.lost !== 0 || leaked !== 0 || duplicates !== 0) Deno.exitCode = 1;
  } finally {
    await Promise.all(clients.map(async (c) => {
      await c.removeAllChannels();
      c.realtime.disconnect();
    }));
    await sql.unsafe(`drop table if exists public.${table}`).catch(() => {});
    await sql.end({ timeout: 5 });
    await stack.stop();
  }
}

await main();
// supabase-js clients keep timers after disconnect; the figures are printed.
Deno.exit(Deno.exitCode ?? 0);
