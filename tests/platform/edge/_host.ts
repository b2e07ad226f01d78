// A supervisor of its own for the edge tests: the fixture functions under
// tests/fixtures/edge, on the hosted runtime's Deno, with the limits a test asks for.
import { FREE_PLAN, FunctionsHost, type Limits, readFunctionSpecs } from "../../../scripts/local/functions_host.ts";

const root = new URL("../../fixtures/edge/", import.meta.url).pathname;

/** The Deno functions run on: the edge lane's (scripts/lib/tools.sh exports EW_DENO_EDGE). */
export function edgeDeno(): string {
  const d = Deno.env.get("EW_DENO_EDGE");
  if (!d) {
    throw new Error(
      "EW_DENO_EDGE is not set: run through scripts/test, or source scripts/lib/tools.sh and ew_ensure_deno_edge",
    );
  }
  return d;
}

export async function startHost(
  limits: Partial<Limits> = {},
  env: Record<string, string> = {},
): Promise<FunctionsHost> {
  const functions = await readFunctionSpecs(`${root}config.toml`, `${root}functions`);
  return new FunctionsHost({
    deno: edgeDeno(),
    functions,
    sharedDir: `${root}functions/_shared`,
    env: { DENO_DIR: Deno.env.get("DENO_DIR") ?? "", DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...env },
    limits: { ...FREE_PLAN, ...limits },
    log: () => {},
  });
}

/** Calls a fixture function straight through the host (no gateway in between). */
export function call(host: FunctionsHost, name: string, query = ""): Promise<Response> {
  return host.handle(name, (base, signal) => fetch(`${base}/${name}${query}`, { signal }));
}

/** A loopback server that records POST bodies, for work that reports after the response. */
export function callbackServer() {
  const bodies: string[] = [];
  const waiters: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    bodies.push(await req.text());
    waiters.splice(0).forEach((w) => w());
    return new Response("ok");
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    bodies,
    /** Resolves with the first body, or rejects after `ms`. */
    async next(ms: number): Promise<string> {
      const deadline = Date.now() + ms;
      while (bodies.length === 0) {
        if (Date.now() > deadline) throw new Error(`no callback within ${ms} ms`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, 50);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
      return bodies.shift()!;
    },
    close: () => server.shutdown(),
  };
}
