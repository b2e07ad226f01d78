// The local stand-in for Supabase's edge runtime supervisor. Each function
// runs as its own Deno process (by default the hosted runtime's Deno version)
// started through function_entry.ts, with the hosted restrictions as process
// flags, and this module enforces the hosted limits from outside:
//
// - memory: the process's anonymous RSS (/proc/<pid>/status RssAnon: the
//   isolate's heap and buffers, not the Deno binary's mapped code) over the
//   limit -> the process is killed, requests on it get 546 WORKER_LIMIT;
// - CPU: the main thread's CPU time (/proc/<pid>/task/<pid>/stat; JavaScript
//   and wasm run there, V8's compiler and GC helper threads do not count, as
//   on the hosted runtime which meters the isolate) spent while a request is
//   in flight, over the limit -> 546 and the process is killed. With several
//   requests in flight on one process, each is charged ALL the main thread's
//   CPU since it started: conservative (a request may be charged for its
//   neighbours), never lenient;
// - no response headers within the request timeout -> 504 IDLE_TIMEOUT;
// - wall clock: at half of it the process is retired (`beforeunload` with
//   reason WallClockTime is dispatched in it, new requests boot a fresh
//   process); requests already on it continue, and it is stopped once they
//   and its EdgeRuntime.waitUntil work are done, or at the full wall clock;
// - a process that dies during a request -> 500 WORKER_ERROR; one that does
//   not come up -> 503 BOOT_ERROR. The next request boots a fresh one.
//
// Limits are checked every `sampleMs` and once more when a response's headers
// arrive, so a request that crossed a limit gets the 546 itself.

import { parse as parseToml } from "npm:smol-toml@1.3.1";
import { dirname, isAbsolute, join, normalize, relative } from "node:path";

/** Methods Supabase's functions endpoint accepts; anything else is 405 (HEAD included). */
export const FUNCTION_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

export interface Limits {
  memoryMb: number;
  cpuMs: number;
  requestTimeoutMs: number;
  wallClockMs: number;
  bootTimeoutMs: number;
  sampleMs: number;
}

/** The free plan's limits (Supabase docs, "Edge Functions: Limits"). */
export const FREE_PLAN: Limits = {
  memoryMb: 256,
  cpuMs: 2000,
  requestTimeoutMs: 150_000,
  wallClockMs: 150_000,
  bootTimeoutMs: 30_000,
  sampleMs: 100,
};
/** Paid plans differ only in the wall clock. */
export const PAID_WALL_CLOCK_MS = 400_000;

/**
 * Limits from the environment: EDGEWORKS_EDGE_PLAN (free | paid),
 * EDGEWORKS_EDGE_MEMORY_MB, _CPU_MS, _REQUEST_TIMEOUT_MS, _WALL_CLOCK_MS.
 */
export function limitsFromEnv(get: (k: string) => string | undefined): Limits {
  const plan = get("EDGEWORKS_EDGE_PLAN") ?? "free";
  if (plan !== "free" && plan !== "paid") throw new Error(`EDGEWORKS_EDGE_PLAN must be free or paid, not ${plan}`);
  const num = (k: string, dflt: number) => {
    const v = get(k);
    if (v === undefined || v === "") return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${k} must be a positive number, not ${v}`);
    return n;
  };
  return {
    ...FREE_PLAN,
    memoryMb: num("EDGEWORKS_EDGE_MEMORY_MB", FREE_PLAN.memoryMb),
    cpuMs: num("EDGEWORKS_EDGE_CPU_MS", FREE_PLAN.cpuMs),
    requestTimeoutMs: num("EDGEWORKS_EDGE_REQUEST_TIMEOUT_MS", FREE_PLAN.requestTimeoutMs),
    wallClockMs: num("EDGEWORKS_EDGE_WALL_CLOCK_MS", plan === "paid" ? PAID_WALL_CLOCK_MS : FREE_PLAN.wallClockMs),
  };
}

export interface FunctionSpec {
  name: string;
  /** The entrypoint's folder: the process's working directory, readable. */
  dir: string;
  entry: string;
  /** Files `static_files` names, expanded; readable besides `dir` and the shared folder. */
  staticFiles: string[];
  /** The deno.json the deploy bundler would find from the entrypoint, if any. */
  config: string | null;
}

/** The nearest deno.json / deno.jsonc walking up from `dir` (what the bundler discovers). */
export function nearestDenoConfig(dir: string): string | null {
  for (let d = dir;; d = dirname(d)) {
    for (const name of ["deno.json", "deno.jsonc"]) {
      try {
        if (Deno.statSync(join(d, name)).isFile) return join(d, name);
      } catch { /* not here */ }
    }
    if (dirname(d) === d) return null;
  }
}

function globRegex(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*" && pattern[i + 1] === "*") {
      re += ".*";
      i++;
      if (pattern[i + 1] === "/") i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** Expands one `static_files` glob (`*`, `**`, `?`) relative to `base` into existing files. */
export function expandGlob(base: string, pattern: string): string[] {
  const abs = normalize(isAbsolute(pattern) ? pattern : join(base, pattern));
  const parts = abs.split("/");
  const firstGlob = parts.findIndex((p) => /[*?]/.test(p));
  if (firstGlob < 0) {
    try {
      return Deno.statSync(abs).isFile ? [abs] : [];
    } catch {
      return [];
    }
  }
  const root = parts.slice(0, firstGlob).join("/") || "/";
  const re = globRegex(parts.slice(firstGlob).join("/"));
  const out: string[] = [];
  const walk = (d: string, depth: number) => {
    // Static files sit a few levels below the function; the bound keeps a bad pattern from walking the disk.
    if (depth > 16) return;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)];
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p, depth + 1);
      else if (e.isFile && re.test(relative(root, p))) out.push(p);
    }
  };
  walk(root, 0);
  return out.sort();
}

/**
 * The functions under `functionsRoot` (folders with an index.ts, not `_*`),
 * with entrypoint and static_files from `[functions.<name>]` in config.toml
 * (paths there are relative to the config's folder, as for the CLI).
 */
export async function readFunctionSpecs(configToml: string | null, functionsRoot: string): Promise<FunctionSpec[]> {
  // deno-lint-ignore no-explicit-any
  let config: any = {};
  if (configToml) config = parseToml(await Deno.readTextFile(configToml));
  const base = configToml ? dirname(configToml) : dirname(functionsRoot);
  const specs: FunctionSpec[] = [];
  for (const e of [...Deno.readDirSync(functionsRoot)].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.isDirectory || e.name.startsWith("_")) continue;
    const fn = config.functions?.[e.name] ?? {};
    if (fn.enabled === false) continue;
    const entry = fn.entrypoint ? normalize(join(base, fn.entrypoint)) : join(functionsRoot, e.name, "index.ts");
    try {
      Deno.statSync(entry);
    } catch {
      continue;
    }
    const patterns: string[] = Array.isArray(fn.static_files) ? fn.static_files : [];
    specs.push({
      name: e.name,
      dir: dirname(entry),
      entry,
      staticFiles: patterns.flatMap((p) => expandGlob(base, p)),
      config: nearestDenoConfig(dirname(entry)),
    });
  }
  return specs;
}

/** The hosted runtime's own error responses: `{code, message}` and an sb-error-code header. */
export function runtimeError(status: number, code: string, message: string): Response {
  return Response.json({ code, message }, {
    status,
    headers: {
      "access-control-allow-origin": "*",
      "access-control-expose-headers": "sb-error-code",
      "sb-error-code": code,
    },
  });
}

const WORKER_LIMIT = () =>
  runtimeError(546, "WORKER_LIMIT", "the function's worker was stopped at a resource limit (see the function logs)");
const BOOT_ERROR = () =>
  runtimeError(503, "BOOT_ERROR", "the function's worker failed to boot (see the function logs)");
const WORKER_ERROR = () =>
  runtimeError(500, "WORKER_ERROR", "the function's worker exited with an error (see the function logs)");
const IDLE_TIMEOUT = () =>
  runtimeError(504, "IDLE_TIMEOUT", "the function did not send a response before the request timeout");

type StopReason = "Memory" | "CPUTime" | "WallClockTime" | "Retired";

interface InFlight {
  cpuStartTicks: number;
  stopped: PromiseWithResolvers<StopReason>;
  stopReason: StopReason | null;
}

interface Worker {
  name: string;
  pid: number;
  base: string;
  token: string;
  tmp: string;
  child: Deno.ChildProcess;
  bornAt: number;
  retired: boolean;
  dead: boolean;
  exited: Promise<Deno.CommandStatus>;
  inFlight: Set<InFlight>;
  checkingPending: boolean;
}

/** Main-thread CPU time in clock ticks (USER_HZ, 100 per second on Linux). */
function cpuTicks(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/stat`);
    // Fields after the command name, which is in parentheses and may hold spaces.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15)
  } catch {
    return 0;
  }
}
const TICK_MS = 10;

/** Anonymous resident memory in bytes. */
export function anonRss(pid: number): number {
  try {
    const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^RssAnon:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export interface HostOptions {
  /** The Deno binary functions run on. */
  deno: string;
  functions: FunctionSpec[];
  /** Readable by every function (supabase/functions/_shared). */
  sharedDir: string;
  /** The whole environment of a function process (nothing else is inherited). */
  env: Record<string, string>;
  limits: Limits;
  /** Where per-process temporary folders are made (default: the system's). */
  tmpRoot?: string;
  log?: (line: Record<string, unknown>) => void;
}

const ENTRY = new URL("./function_entry.ts", import.meta.url).pathname;

export class FunctionsHost {
  #opts: HostOptions;
  #specs = new Map<string, FunctionSpec>();
  #current = new Map<string, Worker>();
  #booting = new Map<string, Promise<Worker>>();
  #all = new Set<Worker>();
  #tick: ReturnType<typeof setInterval>;
  #stopping = false;

  constructor(opts: HostOptions) {
    this.#opts = opts;
    for (const f of opts.functions) this.#specs.set(f.name, f);
    this.#tick = setInterval(() => this.#sample(), opts.limits.sampleMs);
  }

  has(name: string): boolean {
    return this.#specs.has(name);
  }

  names(): string[] {
    return [...this.#specs.keys()];
  }

  /** Process ids of the live function processes (for footprint measurements). */
  pids(): number[] {
    return [...this.#all].filter((w) => !w.dead).map((w) => w.pid);
  }

  /** Boots every function now rather than on its first request. */
  async start(): Promise<void> {
    await Promise.all(this.names().map((n) => this.#worker(n).catch(() => {})));
  }

  /**
   * Runs one request on `name`'s current process: `forward` sends it to the
   * given base URL and may throw (a network error that is not the worker's
   * doing is rethrown for the caller to map).
   */
  async handle(name: string, forward: (base: string, signal: AbortSignal) => Promise<Response>): Promise<Response> {
    let w: Worker;
    try {
      w = await this.#worker(name);
    } catch {
      return BOOT_ERROR();
    }
    const rq: InFlight = { cpuStartTicks: cpuTicks(w.pid), stopped: Promise.withResolvers(), stopReason: null };
    w.inFlight.add(rq);
    let finished = false;
    const finish = () => {
      if (!finished) {
        finished = true;
        w.inFlight.delete(rq);
      }
    };
    const abort = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.#opts.limits.requestTimeoutMs);
    let resp: Response;
    try {
      const forwarded = forward(w.base, abort.signal);
      const first = await Promise.race([forwarded, rq.stopped.promise.then(() => null)]);
      if (first === null || rq.stopReason) {
        // The process was stopped under this request; whatever it still sends is dropped.
        forwarded.then((r) => r.body?.cancel().catch(() => {}), () => {});
        finish();
        return WORKER_LIMIT();
      }
      resp = first;
    } catch (e) {
      finish();
      if (rq.stopReason) return WORKER_LIMIT();
      if (timedOut) return IDLE_TIMEOUT();
      // A connection cut because the process died: give its exit a moment to be seen.
      const gone = await Promise.race([
        w.exited.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 1000)),
      ]);
      if (gone) return WORKER_ERROR();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    // The limits once more now the answer is here, so the request that crossed one gets the 546.
    const reason = this.#overLimit(w, rq);
    if (reason) {
      finish();
      await resp.body?.cancel().catch(() => {});
      this.#kill(w, reason);
      return WORKER_LIMIT();
    }
    if (!resp.body) {
      finish();
      return resp;
    }
    // The request stays in flight (CPU metered, process kept) until its body is through.
    const reader = resp.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            finish();
            c.close();
          } else c.enqueue(value);
        } catch (e) {
          finish();
          c.error(e);
        }
      },
      cancel(r) {
        finish();
        return reader.cancel(r);
      },
    });
    return new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#tick);
    const all = [...this.#all];
    for (const w of all) this.#kill(w, "Retired");
    await Promise.all(all.map((w) => w.exited.catch(() => {})));
  }

  #log(line: Record<string, unknown>) {
    (this.#opts.log ?? ((l) => console.error(JSON.stringify(l))))(line);
  }

  #overLimit(w: Worker, rq: InFlight): StopReason | null {
    const { cpuMs, memoryMb } = this.#opts.limits;
    if ((cpuTicks(w.pid) - rq.cpuStartTicks) * TICK_MS > cpuMs) return "CPUTime";
    if (anonRss(w.pid) > memoryMb * 1024 * 1024) return "Memory";
    return null;
  }

  #sample() {
    const now = Date.now();
    const { wallClockMs } = this.#opts.limits;
    for (const w of this.#all) {
      if (w.dead) continue;
      let reason: StopReason | null = null;
      for (const rq of w.inFlight) {
        reason = this.#overLimit(w, rq);
        if (reason) break;
      }
      if (!reason && anonRss(w.pid) > this.#opts.limits.memoryMb * 1024 * 1024) reason = "Memory";
      if (!reason && now - w.bornAt >= wallClockMs) reason = "WallClockTime";
      if (reason) {
        this.#kill(w, reason);
        continue;
      }
      if (!w.retired && now - w.bornAt >= wallClockMs / 2) this.#retire(w);
      if (w.retired && w.inFlight.size === 0 && !w.checkingPending) this.#stopWhenIdle(w);
    }
  }

  /** New requests go to a fresh process from now on; this one is told why. */
  #retire(w: Worker) {
    w.retired = true;
    if (this.#current.get(w.name) === w) this.#current.delete(w.name);
    this.#log({ level: "info", msg: "worker retired", fn: w.name, pid: w.pid, reason: "WallClockTime" });
    this.#control(w, "/__edgeworks/retire?reason=WallClockTime").catch(() => {});
  }

  async #control(w: Worker, path: string): Promise<{ pending: number }> {
    const r = await fetch(`${w.base}${path}`, {
      method: "POST",
      headers: { "x-edgeworks-control": w.token },
      signal: AbortSignal.timeout(2000),
    });
    return await r.json();
  }

  /** A retired process with nothing in flight ends once its waitUntil work is done. */
  async #stopWhenIdle(w: Worker) {
    w.checkingPending = true;
    try {
      const { pending } = await this.#control(w, "/__edgeworks/pending");
      if (pending === 0 && w.inFlight.size === 0) this.#kill(w, "Retired");
    } catch {
      // Unreachable: it will be stopped at the wall clock.
    } finally {
      w.checkingPending = false;
    }
  }

  #kill(w: Worker, reason: StopReason) {
    if (w.dead) return;
    w.dead = true;
    if (this.#current.get(w.name) === w) this.#current.delete(w.name);
    if (reason !== "Retired") {
      this.#log({
        level: "warn",
        msg: "worker stopped at a limit",
        fn: w.name,
        pid: w.pid,
        reason,
        in_flight: w.inFlight.size,
        rss_mb: Math.round(anonRss(w.pid) / 1048576),
      });
    }
    for (const rq of w.inFlight) {
      rq.stopReason = reason;
      rq.stopped.resolve(reason);
    }
    try {
      w.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  #worker(name: string): Promise<Worker> {
    const live = this.#current.get(name);
    if (live && !live.dead && !live.retired) return Promise.resolve(live);
    let booting = this.#booting.get(name);
    if (!booting) {
      const spec = this.#specs.get(name);
      if (!spec) return Promise.reject(new Error(`no function ${name}`));
      booting = this.#boot(spec).finally(() => this.#booting.delete(name));
      this.#booting.set(name, booting);
    }
    return booting;
  }

  async #boot(spec: FunctionSpec): Promise<Worker> {
    if (this.#stopping) throw new Error("stopping");
    const port = freePort();
    const token = Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16).padStart(2, "0")).join(
      "",
    );
    const tmp = await Deno.makeTempDir({ dir: this.#opts.tmpRoot, prefix: `ew-fn-${spec.name}-` });
    const readable = [spec.dir, this.#opts.sharedDir, ...spec.staticFiles];
    const denoDir = this.#opts.env.DENO_DIR;
    // npm packages may read their own files, as on the hosted runtime.
    if (denoDir) readable.push(join(denoDir, "npm"));
    const args = [
      "run",
      "--quiet",
      "--no-prompt",
      ...(spec.config ? ["--config", spec.config] : ["--no-config"]),
      "--allow-net",
      "--allow-env",
      `--allow-read=${readable.join(",")}`,
      `--allow-write=${tmp}`,
      "--deny-run",
      "--deny-ffi",
      ENTRY,
      spec.entry,
    ];
    const child = new Deno.Command(this.#opts.deno, {
      args,
      cwd: spec.dir,
      clearEnv: true,
      env: {
        ...this.#opts.env,
        TMPDIR: tmp,
        EDGEWORKS_FUNCTION_PORT: String(port),
        EDGEWORKS_CONTROL_TOKEN: token,
      },
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const w: Worker = {
      name: spec.name,
      pid: child.pid,
      base: `http://127.0.0.1:${port}`,
      token,
      tmp,
      child,
      bornAt: Date.now(),
      retired: false,
      dead: false,
      exited: child.status,
      inFlight: new Set(),
      checkingPending: false,
    };
    this.#all.add(w);
    let exited = false;
    w.exited.then((s) => {
      exited = true;
      this.#all.delete(w);
      if (!w.dead) {
        w.dead = true;
        if (this.#current.get(w.name) === w) this.#current.delete(w.name);
        this.#log({ level: "error", msg: "function process exited", fn: w.name, pid: w.pid, code: s.code });
      }
      Deno.remove(tmp, { recursive: true }).catch(() => {});
    });
    const deadline = Date.now() + this.#opts.limits.bootTimeoutMs;
    for (;;) {
      if (exited || w.dead) throw new Error(`function ${spec.name} exited while booting`);
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        break;
      } catch {
        if (Date.now() > deadline) {
          this.#kill(w, "Retired");
          throw new Error(`function ${spec.name} did not listen within ${this.#opts.limits.bootTimeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    // The wall clock starts when the worker can serve, as a request-driven boot would see it.
    w.bornAt = Date.now();
    this.#current.set(spec.name, w);
    return w;
  }
}
