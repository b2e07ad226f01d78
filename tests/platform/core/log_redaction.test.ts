// Secrets never reach the logs: requests that carry a user's JWT and an API key
// (in headers, and in the query string where careless clients put them) are
// logged by the functions and the gateway, and no line contains the token, the
// key or the project's JWT secret.
//
// The stack's log is $EDGEWORKS_STATE_DIR/logs/gateway.log (scripts/test sets the
// state dir; a stack from plain `scripts/serve` keeps it in .local/). Functions
// write their JSON lines to the same file, each with its request_id.
import { assert, assertExcludes } from "../../support/assert.ts";
import { callFunction, createUser, eventually, stack } from "../../support/stack.ts";

function logPath(): string {
  const state = Deno.env.get("EDGEWORKS_STATE_DIR") ?? new URL("../../.local", import.meta.url).pathname;
  return `${state.replace(/\/+$/, "")}/logs/gateway.log`;
}

async function logSize(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

async function logSince(path: string, offset: number): Promise<string> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.seek(offset, Deno.SeekMode.Start);
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    file.close();
  }
}

Deno.test("log lines of requests carrying a JWT and an API key contain neither (nor the JWT secret)", async () => {
  const path = logPath();
  const start = await logSize(path);
  const user = await createUser();
  const token = user.token;
  const signature = token.split(".")[2];
  const apikey = stack.anonKey;
  const tag = crypto.randomUUID();
  const ids = {
    submitted: `e2e-redact-submit-${tag}`,
    refused: `e2e-redact-refused-${tag}`,
    health: `e2e-redact-health-${tag}`,
  };

  const submitted = await callFunction("chat-submit", {
    token,
    headers: { "x-request-id": ids.submitted, apikey },
    body: { session_id: `redact-${tag}`, message: "Does the log keep my token?" },
  });
  assert(submitted.status === 200, JSON.stringify(submitted.body));
  // A refusal is logged too (and error paths are where secrets usually slip out).
  const refused = await callFunction("chat-process", {
    token,
    headers: { "x-request-id": ids.refused, apikey },
    body: {},
  });
  assert(refused.status === 403, JSON.stringify(refused.body));
  const health = await fetch(`${stack.functionUrl("health")}?apikey=${apikey}&access_token=${token}`, {
    headers: { authorization: `Bearer ${token}`, apikey, "x-request-id": ids.health },
  });
  await health.body?.cancel();
  assert(health.status === 200);

  // Wait (bounded) until every request's own log line is in the file.
  const text = await eventually("the requests' log lines", async () => {
    const t = await logSince(path, start);
    return Object.values(ids).every((id) => t.includes(id)) ? t : undefined;
  }, { timeoutMs: 10_000, everyMs: 100 });

  const lines = text.split("\n");
  for (const [what, id] of Object.entries(ids)) {
    const mine = lines.filter((l) => l.includes(id));
    assert(mine.length >= 1, `no log line for the ${what} request`);
    for (const line of mine) {
      const entry = JSON.parse(line);
      assert(entry.request_id === id, `a line names the request id outside request_id: ${line.slice(0, 200)}`);
    }
  }
  // Nothing written since the requests started (function lines, gateway lines, the
  // PostgREST calls the functions made) holds a secret.
  assertExcludes(text, token, "the user's JWT");
  assertExcludes(text, signature, "the user's JWT signature");
  assertExcludes(text, apikey, "the API key");
  assertExcludes(text, apikey.split(".")[2], "the API key's signature");
  assertExcludes(text, stack.jwtSecret, "the JWT secret");
  assertExcludes(text, stack.serviceKey, "the service role key");
});
