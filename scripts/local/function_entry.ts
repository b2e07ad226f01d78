// The entry of every local function process: it shapes this Deno into what
// Supabase's edge runtime offers a function, then imports the function itself.
// Deno 2.1 (the hosted runtime's version) has no --preload, so this module
// runs first and loads the function with a dynamic import; the process flags
// (read/write scopes, --deny-run, --deny-ffi) are set by functions_host.ts.
//
//   deno run ... function_entry.ts <absolute path of the function's index.ts>
//
// What it changes, each as on the hosted runtime:
// - no `Worker`, no `Deno.openKv` / `Deno.cron`; `Deno.Command` throws;
// - `Deno.exit` does nothing (the runtime, not the function, ends a worker);
// - `SharedArrayBuffer` is plain `ArrayBuffer`;
// - `EdgeRuntime.waitUntil(promise)` keeps background work alive after the response;
// - synchronous file-system writes throw once the function has started;
// - `Deno.serve` ignores the port and address it is given: the supervisor
//   chose them (EDGEWORKS_FUNCTION_PORT on 127.0.0.1);
// - the supervisor's control requests (authenticated by a per-process token)
//   dispatch `beforeunload` with its reason and report pending background work.

const entry = Deno.args[0];
const port = Number(Deno.env.get("EDGEWORKS_FUNCTION_PORT"));
const controlToken = Deno.env.get("EDGEWORKS_CONTROL_TOKEN") ?? "";
// The function should not see the supervisor's plumbing in its environment.
Deno.env.delete("EDGEWORKS_CONTROL_TOKEN");
if (!entry || !Number.isInteger(port) || port <= 0 || controlToken === "") {
  console.error("function_entry: needs the function's entry path, EDGEWORKS_FUNCTION_PORT and EDGEWORKS_CONTROL_TOKEN");
  Deno.exit(2);
}

// deno-lint-ignore no-explicit-any
const deno = Deno as any;
function replace(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
}
function unsupported(what: string): Error {
  const Err = deno.errors?.NotSupported ?? Error;
  return new Err(`${what} is not available on Supabase's edge runtime`);
}

replace(globalThis, "Worker", undefined);
replace(Deno, "openKv", undefined);
replace(Deno, "cron", undefined);
replace(
  Deno,
  "Command",
  class {
    constructor() {
      throw unsupported("Deno.Command (spawning a process)");
    }
  },
);
replace(globalThis, "SharedArrayBuffer", ArrayBuffer);
replace(Deno, "exit", (code?: number) => {
  console.error(JSON.stringify({ level: "warn", msg: "Deno.exit ignored, as on the edge runtime", code: code ?? 0 }));
});

// EdgeRuntime.waitUntil: background work counted until it settles, so the
// supervisor can let it finish before retiring the process.
const pending = new Set<Promise<unknown>>();
replace(globalThis, "EdgeRuntime", {
  waitUntil<T>(promise: Promise<T>): Promise<T> {
    const p = Promise.resolve(promise);
    pending.add(p);
    p.then(
      () => pending.delete(p),
      (e) => {
        pending.delete(p);
        console.error(
          JSON.stringify({ level: "error", msg: "EdgeRuntime.waitUntil promise rejected", error: String(e) }),
        );
      },
    );
    return p;
  },
});

let served = false;
type Handler = (req: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

async function control(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/__edgeworks/retire") {
    const reason = url.searchParams.get("reason") ?? "WallClockTime";
    // As the hosted runtime does before it stops a worker: listeners read event.detail.reason.
    globalThis.dispatchEvent(new CustomEvent("beforeunload", { detail: { reason } }));
    // Let listeners that start background work register it before we report.
    await new Promise((r) => setTimeout(r, 0));
  }
  return Response.json({ pending: pending.size });
}

const realServe = Deno.serve.bind(Deno) as (
  options: Deno.ServeTcpOptions,
  handler: Handler,
) => Deno.HttpServer;
replace(Deno, "serve", (...args: unknown[]) => {
  if (served) throw unsupported("a second Deno.serve");
  served = true;
  let options: Record<string, unknown> = {};
  let handler: Handler | undefined;
  for (const a of args) {
    if (typeof a === "function") handler = a as Handler;
    else if (a && typeof a === "object") options = a as Record<string, unknown>;
  }
  handler ??= options.handler as Handler | undefined;
  if (!handler) throw new TypeError("Deno.serve needs a handler");
  const user = handler;
  const { port: _p, hostname: _h, handler: _x, ...rest } = options;
  return realServe({
    ...rest,
    hostname: "127.0.0.1",
    port,
    onListen() {},
  }, (req, info) => {
    if (req.headers.get("x-edgeworks-control") === controlToken) return control(req);
    return user(req, info);
  });
});

await import(new URL(`file://${entry}`).href);

// Start-up is over: the hosted runtime refuses synchronous writes from here on
// (they would block every request on the isolate).
for (
  const name of [
    "writeFileSync",
    "writeTextFileSync",
    "mkdirSync",
    "removeSync",
    "renameSync",
    "copyFileSync",
    "truncateSync",
    "symlinkSync",
    "linkSync",
    "chmodSync",
    "chownSync",
    "utimeSync",
    "makeTempDirSync",
    "makeTempFileSync",
    "createSync",
  ]
) {
  if (typeof deno[name] === "function") {
    replace(Deno, name, () => {
      throw unsupported(`Deno.${name} after start-up (use the async API)`);
    });
  }
}
