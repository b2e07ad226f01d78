// scripts/bench ai-chat: what chat-completion adds on top of the provider,
// beside LiteLLM's proxy in front of the same fake OpenAI server, same run.
//
//   scripts/bench ai-chat [--requests 200] [--concurrency 1,32] [--chunks 20] [--delay-ms 2]
//
// Three paths to one fake OpenAI chat-completions server
// (tests/support/fake_ai_providers.ts, its own process), each streamed with
// `stream: true`, the same prompt and the same scripted answer (--chunks
// chunks, --delay-ms apart):
//   direct     the fake itself
//   litellm    LiteLLM proxy (PyPI litellm[proxy], pinned below, installed once
//              into a venv under ~/.cache/edgeworks), one worker, no database
//   edgeworks  chat-completion through the local gateway on a private stack
//              (JWT check, rate limit, budget reservation in one SQL call, key
//              lookup, the stream saved to Postgres as it goes, settlement)
// For each: time to first token (request sent -> first answer text seen) and
// total time (-> end of stream), p50 and p95, at each concurrency; overhead is
// a path's figure minus direct's. Figures, not assertions: nothing fails on timing.
//
// LiteLLM publishes a 2 ms median overhead (4-CPU instances); this machine
// may be smaller and shared, so the comparison that counts is the one measured
// here, in the same run.

import postgres from "postgres";
import { userAccessToken } from "../../scripts/local/jwt.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const LITELLM_VERSION = "1.106.12";
const CACHE = Deno.env.get("EW_CACHE") ?? `${Deno.env.get("HOME")}/.cache/edgeworks`;

interface Options {
  requests: number;
  concurrency: number[];
  chunks: number;
  delayMs: number;
}

function usage(code: number): never {
  console.error("usage: scripts/bench ai-chat [--requests N] [--concurrency 1,32] [--chunks N] [--delay-ms MS]");
  Deno.exit(code);
}

function parseArgs(args: string[]): Options {
  const o: Options = { requests: 200, concurrency: [1, 32], chunks: 20, delayMs: 2 };
  const int = (v: string | undefined, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) usage(2);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    switch (args[i]) {
      case "--requests":
        o.requests = int(args[++i], 10, 100_000);
        break;
      case "--concurrency":
        o.concurrency = (args[++i] ?? "").split(",").map((c) => int(c, 1, 256));
        break;
      case "--chunks":
        o.chunks = int(args[++i], 1, 1000);
        break;
      case "--delay-ms":
        o.delayMs = int(args[++i], 0, 1000);
        break;
      case "-h":
      case "--help":
        usage(0);
        break;
      default:
        usage(2);
    }
  }
  return o;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitFor(what: string, url: string, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      await r.body?.cancel();
      if (r.status < 500) return;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`${what} did not come up at ${url}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

async function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ ok: boolean; out: string }> {
  const o = await new Deno.Command(cmd, { args, cwd: ROOT, env, clearEnv: true, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/** LiteLLM's proxy in a venv of its own, installed once per pinned version. */
async function ensureLiteLLM(): Promise<string> {
  const venv = `${CACHE}/litellm-${LITELLM_VERSION}`;
  try {
    await Deno.stat(`${venv}/.installed`);
    return venv;
  } catch { /* install */ }
  console.error(`installing litellm[proxy]==${LITELLM_VERSION} into ${venv} (once)...`);
  const env = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/root" };
  let r = await run("python3", ["-m", "venv", venv], env);
  if (!r.ok) throw new Error(`python3 -m venv failed:\n${r.out}`);
  r = await run(`${venv}/bin/pip`, ["install", "--quiet", "--disable-pip-version-check", `litellm[proxy]==${LITELLM_VERSION}`], env);
  if (!r.ok) throw new Error(`pip install litellm[proxy] failed:\n${r.out.slice(-3000)}`);
  await Deno.writeTextFile(`${venv}/.installed`, LITELLM_VERSION);
  return venv;
}

// ---------------------------------------------------------------------------

interface Sample {
  ttftMs: number;
  totalMs: number;
}

/** Sends one streamed request; times the first answer text and the end. */
async function timed(url: string, headers: Record<string, string>, body: unknown): Promise<Sample> {
  const t0 = performance.now();
  const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  if (r.status !== 200 || !r.body) throw new Error(`${url}: HTTP ${r.status}: ${await r.text()}`);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let seen = "";
  let ttft = -1;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (ttft < 0) {
      seen += dec.decode(value, { stream: true });
      if (seen.includes("w1 ")) ttft = performance.now() - t0;
    }
  }
  if (ttft < 0) throw new Error(`${url}: the stream carried no answer text`);
  return { ttftMs: ttft, totalMs: performance.now() - t0 };
}

async function load(n: number, concurrency: number, one: (i: number) => Promise<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      out.push(await one(w));
    }
  }));
  return out;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

// ---------------------------------------------------------------------------

async function main() {
  const o = parseArgs(Deno.args);
  for (const f of ["chat-completion"]) {
    await Deno.stat(`${ROOT}/supabase/functions/${f}/pkg`).catch(() => {
      throw new Error(`supabase/functions/${f}/pkg is missing: run scripts/build first`);
    });
  }
  const venv = await ensureLiteLLM();
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-bench-ai." });
  const cleanups: (() => Promise<void>)[] = [];
  try {
    // The fake OpenAI server (the other three providers idle beside it).
    const ports = [freePort(), freePort(), freePort(), freePort()];
    const fake = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-net", `${ROOT}/tests/support/fake_ai_providers.ts`, ...ports.map(String)],
      stdout: "null",
      stderr: "null",
    }).spawn();
    cleanups.push(async () => {
      fake.kill();
      await fake.status;
    });
    const fakeUrl = `http://127.0.0.1:${ports[0]}`;
    await waitFor("the fake OpenAI server", `${fakeUrl}/__requests`);

    // LiteLLM in front of it.
    const litellmPort = freePort();
    const cfg = `${stateDir}/litellm.yaml`;
    // LiteLLM refuses to start without a master key; requests carry it, as
    // ours carry a user's token.
    const masterKey = `sk-${Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("")}`;
    await Deno.writeTextFile(
      cfg,
      [
        "model_list:",
        "  - model_name: gpt-4o-mini",
        "    litellm_params:",
        "      model: openai/gpt-4o-mini",
        `      api_base: ${fakeUrl}/v1`,
        "      api_key: bench-openai-key",
        "general_settings:",
        `  master_key: ${masterKey}`,
        "litellm_settings:",
        "  telemetry: false",
        "",
      ].join("\n"),
    );
    const litellm = new Deno.Command(`${venv}/bin/litellm`, {
      args: ["--config", cfg, "--host", "127.0.0.1", "--port", String(litellmPort), "--num_workers", "1"],
      env: { LITELLM_LOG: "ERROR", LITELLM_TELEMETRY: "False", NO_DOCS: "True" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const litellmLog = `${stateDir}/litellm.log`;
    litellm.stderr.pipeTo((await Deno.open(litellmLog, { write: true, create: true })).writable).catch(() => {});
    cleanups.push(async () => {
      litellm.kill();
      await litellm.status;
    });
    const litellmUrl = `http://127.0.0.1:${litellmPort}`;

    // A private stack whose chat-completion talks to the same fake.
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(Deno.env.toObject())) {
      if (/^(GEMINI_|AI_|OPENAI_|ANTHROPIC_|MISTRAL_|EDGEWORKS_|SUPABASE_|RATE_LIMIT_)/.test(k)) continue;
      env[k] = v;
    }
    Object.assign(env, {
      EDGEWORKS_STATE_DIR: stateDir,
      EDGEWORKS_API_PORT: String(freePort()),
      EDGEWORKS_DB_PORT: String(freePort()),
      EDGEWORKS_REST_PORT: String(freePort()),
      EDGEWORKS_S3_PORT: String(freePort()),
      EDGEWORKS_NO_CRON: "1",
      OPENAI_BASE_URL: fakeUrl,
      OPENAI_API_KEY: "bench-openai-key",
      AI_DEFAULT_BUDGET_USD: "1000000",
      RATE_LIMIT_CHAT_COMPLETION: "1000000/1000000",
    });
    console.error(`starting a private stack in ${stateDir}...`);
    const served = await run(`${ROOT}/scripts/serve`, ["--detach", "--no-build"], env);
    cleanups.push(async () => {
      await run(`${ROOT}/scripts/serve`, ["--stop"], env);
    });
    if (!served.ok) throw new Error(`the private stack did not start:\n${served.out.slice(-3000)}`);
    const e = parseEnvFile(await Deno.readTextFile(`${stateDir}/env`));
    await waitFor("LiteLLM", `${litellmUrl}/health/liveliness`).catch(async (err) => {
      const tail = (await Deno.readTextFile(litellmLog).catch(() => "")).split("\n").slice(-20).join("\n");
      throw new Error(`${(err as Error).message}\n${tail}`);
    });

    // One user per concurrent client, as in production (a user's budget row
    // serialises that user's reservations).
    const maxC = Math.max(...o.concurrency);
    const sql = postgres(e.EDGEWORKS_DB_URL, { max: 2, onnotice: () => {} });
    const tokens: string[] = [];
    for (let i = 0; i < maxC; i++) {
      const id = crypto.randomUUID();
      await sql`insert into auth.users (id, aud, role, email) values (${id}, 'authenticated', 'authenticated', ${`bench-${id}@bench.local`})`;
      tokens.push(
        await userAccessToken({ secret: e.EDGEWORKS_JWT_SECRET, apiUrl: e.SUPABASE_URL, sub: id, expiresIn: 7200 }),
      );
    }
    await sql.end();

    const prompt = `Benchmark question [fake chunks=${o.chunks} delay=${o.delayMs}]`;
    const openaiBody = {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: prompt }],
      stream: true,
      stream_options: { include_usage: true },
      max_completion_tokens: 256,
    };
    const paths: Record<string, (w: number) => Promise<Sample>> = {
      direct: () => timed(`${fakeUrl}/v1/chat/completions`, { authorization: "Bearer bench-openai-key" }, openaiBody),
      litellm: () =>
        timed(`${litellmUrl}/v1/chat/completions`, { authorization: `Bearer ${masterKey}` }, { ...openaiBody, max_tokens: 256 }),
      edgeworks: (w) =>
        timed(`${e.SUPABASE_URL}/functions/v1/chat-completion`, { apikey: e.SUPABASE_ANON_KEY, authorization: `Bearer ${tokens[w]}` }, {
          message: prompt,
          model: "gpt-4o-mini",
          max_tokens: 256,
          stream: true,
        }),
    };
    // Warm every path (JIT, connection pools, the function's isolate).
    for (const f of Object.values(paths)) await load(20, 4, f);

    const rows: string[][] = [];
    for (const c of o.concurrency) {
      const results: Record<string, Sample[]> = {};
      for (const [name, f] of Object.entries(paths)) {
        results[name] = await load(o.requests, c, f);
      }
      const d = results.direct;
      for (const [name, s] of Object.entries(results)) {
        const t = s.map((x) => x.ttftMs), all = s.map((x) => x.totalMs);
        const dt = d.map((x) => x.ttftMs), da = d.map((x) => x.totalMs);
        const over = (f: (xs: number[]) => number, a: number[], b: number[]) => name === "direct" ? "-" : (f(a) - f(b)).toFixed(1);
        rows.push([
          String(c), name,
          pct(t, 50).toFixed(1), pct(t, 95).toFixed(1), pct(all, 50).toFixed(1), pct(all, 95).toFixed(1),
          over((x) => pct(x, 50), t, dt), over((x) => pct(x, 95), t, dt),
          over((x) => pct(x, 50), all, da), over((x) => pct(x, 95), all, da),
        ]);
      }
    }
    const head = ["conc", "path", "ttft p50", "ttft p95", "total p50", "total p95", "+ttft p50", "+ttft p95", "+total p50", "+total p95"];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((x, i) => x.padStart(widths[i])).join("  ");
    console.log(`\nai-chat gateway overhead, ms (${o.requests} streamed requests per path and concurrency; answer: ${o.chunks} chunks ${o.delayMs} ms apart)`);
    console.log(`machine: ${navigator.hardwareConcurrency} CPUs; LiteLLM ${LITELLM_VERSION} (1 worker); "+" = minus direct`);
    console.log(line(head));
    for (const r of rows) console.log(line(r));
    console.log("LiteLLM publishes a 2 ms median overhead on 4-CPU instances (its docs' benchmark).");
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench ai-chat: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
