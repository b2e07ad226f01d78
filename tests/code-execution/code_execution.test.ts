// code-execution through the gateway: the function, its sandbox and its record.
// The sandbox's many runaway, memory, output and escape cases are pinned in-process
// by tests/code-execution/sandbox/; these check that the function carries them end to end.
import { createClient } from "@supabase/supabase-js";
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, stack, type TestUser } from "../support/stack.ts";

function run(body: unknown, who: TestUser) {
  return callFunction("code-execution", { token: who.token, body });
}

function asUser(who: TestUser) {
  return createClient(stack.url, stack.anonKey, {
    global: { headers: { Authorization: `Bearer ${who.token}` } },
    auth: { persistSession: false, autoRefreshToken: false },
  });
}

// Each test has its own user: runs are rate limited per user (10 burst).
Deno.test("python runs and its run is recorded for its owner only", async () => {
  const user = await createUser();
  const r = await run({ language: "python", code: "print(input().upper())\n{'n': 6 * 7}", stdin: "hello\n" }, user);
  assertEquals(r.status, 200, JSON.stringify(r.body));
  const d = r.body.data;
  assertEquals(d.outcome, "ok");
  assertEquals(d.stdout, "HELLO\n");
  assertEquals(d.result, { n: 42 });
  assert(d.fuel_used > 0 && d.fuel_used <= d.limits.fuel, JSON.stringify(d));
  assert(d.peak_memory_bytes > 0 && d.peak_memory_bytes <= d.limits.memory_bytes);
  assertMatch(d.id, /^[0-9a-f-]{36}$/);

  const mine = await asUser(user).from("code_executions").select("id, outcome, stdout, result, language").eq("id", d.id);
  assertEquals(mine.error, null);
  assertEquals(mine.data, [{ id: d.id, outcome: "ok", stdout: "HELLO\n", result: { n: 42 }, language: "python" }]);

  const other = await createUser();
  const theirs = await asUser(other).from("code_executions").select("id").eq("id", d.id);
  assertEquals(theirs.data, []);
  // Records are the function's account: a user cannot write one.
  const forged = await asUser(user).from("code_executions").insert({
    user_id: user.id, language: "python", code: "1", outcome: "ok", duration_ms: 0, fuel_used: 0, fuel_limit: 0,
    timeout_ms: 1, peak_memory_bytes: 0,
  });
  assert(forged.error !== null, "a user inserted an execution record");
});

Deno.test("typescript and javascript errors come back with their line", async () => {
  const user = await createUser();
  const ts = await run({ language: "typescript", code: "const n: number = 2;\n(n as number) * 21" }, user);
  assertEquals(ts.body.data?.result, 42, JSON.stringify(ts.body));
  const js = await run({ language: "javascript", code: "let a = 1;\nfunction f() {\n  return null.x;\n}\nf()" }, user);
  assertEquals(js.status, 200);
  assertEquals(js.body.data.outcome, "error");
  assertMatch(js.body.data.error.message, /^TypeError/);
  assertEquals(js.body.data.error.line, 3);
});

Deno.test("a runaway is a timeout within its budget, and the next request works", async () => {
  const user = await createUser();
  const r = await run({ language: "javascript", code: "[1, 2].forEach(() => { for (;;) {} })", timeout_ms: 200 }, user);
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(r.body.data.outcome, "timeout");
  assertEquals(r.body.data.fuel_used, r.body.data.limits.fuel);
  assertEquals(r.body.data.limits.timeout_ms, 200);
  const p = await run({ language: "python", code: "while True: pass" }, user);
  assertEquals(p.body.data.outcome, "timeout");
  const next = await run({ language: "javascript", code: "1 + 1" }, user);
  assertEquals(next.body.data.result, 2);
});

Deno.test("a memory bomb is memory_limit and the function serves the next request", async () => {
  const user = await createUser();
  const r = await run({ language: "javascript", code: "'x'.repeat(2 ** 30)" }, user);
  assertEquals(r.body.data?.outcome, "memory_limit", JSON.stringify(r.body));
  const p = await run({ language: "python", code: "[0] * 10**10" }, user);
  assertEquals(p.body.data.outcome, "memory_limit");
  const next = await run({ language: "python", code: "sum(range(10))" }, user);
  assertEquals(next.body.data.result, 45);
});

Deno.test("an output bomb is cut and reported as output_limit", async () => {
  const user = await createUser();
  const r = await run({ language: "python", code: "while True: print('spam' * 100)" }, user);
  assertEquals(r.body.data.outcome, "output_limit");
  assertEquals(r.body.data.output_truncated, true);
  assert(r.body.data.stdout.length <= r.body.data.limits.output_bytes);
});

Deno.test("nothing of the function's host is reachable from the code", async () => {
  const user = await createUser();
  const r = await run({
    language: "javascript",
    code: "[typeof Deno, typeof fetch, typeof require, typeof EdgeRuntime, typeof __edgeworksRunCode]",
  }, user);
  assertEquals(r.body.data.result, ["undefined", "undefined", "undefined", "undefined", "undefined"]);
  const p = await run({ language: "python", code: "import os" }, user);
  assertMatch(p.body.data.error.message, /^ModuleNotFoundError/);
});

Deno.test("bad requests are 4xx in the envelope", async () => {
  const user = await createUser();
  const lang = await run({ language: "ruby", code: "puts 1" }, user);
  assertEquals(lang.status, 422);
  assertEnvelope(lang.body, "validation_failed");
  const big = await run({ language: "python", code: "#" + "x".repeat(70 * 1024) }, user);
  assertEquals(big.status, 422);
  assert(JSON.stringify(big.body.error.details).includes("code"));
  const anon = await callFunction("code-execution", { token: null, body: { language: "python", code: "1" } });
  assertEquals(anon.status, 401);
});

Deno.test("runs are rate limited per user", async () => {
  const busy = await createUser();
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push((await run({ language: "javascript", code: "1" }, busy)).status);
  assert(statuses.includes(429), `no 429 in ${statuses}`);
  // Another user is not limited by the first one's runs.
  assertEquals((await run({ language: "javascript", code: "1" }, await createUser())).status, 200);
});
