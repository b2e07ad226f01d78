// The code-execution sandbox modules (built by `scripts/build --sandbox`) driven by the
// runner the function uses, in-process: runaways, memory and output bombs, escapes.
// Nothing here depends on timing: outcomes come from the fuel counter and the guest's
// flags; durations are only checked against generous bounds.
import { assert, assertEquals, assertIncludes, assertMatch } from "../../support/assert.ts";
import { Sandbox, type SandboxReport } from "../../../supabase/functions/_shared/sandbox.ts";

const dir = new URL("../../../supabase/functions/code-execution/sandbox/", import.meta.url);
const js = await Sandbox.load(new URL("javascript.wasm", dir));
const py = await Sandbox.load(new URL("python.wasm", dir));

// The function's budget for timeout_ms = 1000 (see README, "Code execution").
const FUEL = 50_000_000;
const OUTPUT_LIMIT = 64 * 1024;

function runJs(code: string, extra: { stdin?: string; typescript?: boolean; fuel?: number } = {}): SandboxReport {
  return js.run({ code, fuel: extra.fuel ?? FUEL, outputLimit: OUTPUT_LIMIT, ...extra });
}
function runPy(code: string, extra: { stdin?: string; fuel?: number } = {}): SandboxReport {
  return py.run({ code, fuel: extra.fuel ?? FUEL, outputLimit: OUTPUT_LIMIT, ...extra });
}

function expectOutcome(r: SandboxReport, outcome: SandboxReport["outcome"], what: string) {
  assertEquals(r.outcome, outcome, `${what}: ${JSON.stringify({ ...r, stdout: r.stdout.slice(0, 200) })}`);
}

Deno.test("the sandbox modules import nothing from their host but their memory", () => {
  for (const sb of [js, py]) {
    assertEquals(WebAssembly.Module.imports(sb.module), [{ module: "sandbox", name: "memory", kind: "memory" }]);
    const exports = WebAssembly.Module.exports(sb.module).map((e) => e.name).sort();
    assertEquals(exports, ["fuel", "memory", "sandbox_input", "sandbox_report", "sandbox_run"]);
  }
});

Deno.test("a script's output, result, stdin and errors come back", () => {
  const a = runJs("console.log('hi', 1 + 1); console.error('warn'); [readline(), readline()]", { stdin: "x\ny\n" });
  expectOutcome(a, "ok", "js");
  assertEquals(a.stdout, "hi 2\n");
  assertEquals(a.stderr, "warn\n");
  assertEquals(JSON.parse(a.result!), ["x", "y"]);
  assert(a.fuelUsed > 0 && a.fuelUsed < FUEL, `fuel ${a.fuelUsed}`);
  assert(a.peakMemoryBytes > 0 && a.peakMemoryBytes <= 64 * 1024 * 1024, `memory ${a.peakMemoryBytes}`);

  const b = runPy("import sys\nprint('hi', 1 + 1)\nprint('warn', file=sys.stderr)\n{'a': [input(), 2.5, None]}", {
    stdin: "x\n",
  });
  expectOutcome(b, "ok", "python");
  assertEquals(b.stdout, "hi 2\n");
  assertEquals(b.stderr, "warn\n");
  assertEquals(JSON.parse(b.result!), { a: ["x", 2.5, null] });

  const e = runJs("let a = 1;\nlet b = 2;\nnull.x");
  expectOutcome(e, "error", "js error");
  assertMatch(e.error!.message, /^TypeError/);
  assertEquals(e.error!.line, 3);
  // The innermost frame's line, not the call's.
  const nested = runJs("let a = 1;\nfunction f() {\n  throw new RangeError('deep');\n}\nf()");
  assertEquals(nested.error, { message: "RangeError: deep", line: 3 });
  const p = runPy("a = 1\nb = {}\nb['k']");
  expectOutcome(p, "error", "python error");
  assertEquals(p.error!.message, "KeyError: 'k'");
  assertEquals(p.error!.line, 3);
  const s = runPy("def f(:\n  pass");
  assertMatch(s.error!.message, /^SyntaxError/);
  assertEquals(s.error!.line, 1);
});

Deno.test("typescript runs with its types erased and keeps its line numbers", () => {
  const ok = runJs(
    "interface P { x: number }\ntype Id = string;\nconst p: P = { x: 2 };\nfunction twice<T>(v: T): T[] { return [v, v]; }\ntwice<number>(p.x as number)",
    { typescript: true },
  );
  expectOutcome(ok, "ok", "ts");
  assertEquals(JSON.parse(ok.result!), [2, 2]);
  const err = runJs("interface P { x: number }\nconst p: P | null = null;\np!.x", { typescript: true });
  assertEquals(err.error!.line, 3);
  const refused = runJs("let a = 1;\nenum E { A }", { typescript: true });
  expectOutcome(refused, "error", "enum");
  assertMatch(refused.error!.message, /^SyntaxError: enums are not erasable/);
  assertEquals(refused.error!.line, 2);
});

const RUNAWAYS: [string, (code: string) => SandboxReport, string][] = [
  ["js while(true)", runJs, "while (true) {}"],
  ["js for(;;) in a function called from forEach", runJs, "function f() { for (;;) {} }\n[1, 2, 3].forEach(f)"],
  ["js catastrophic regex", runJs, "/^(a+)+$/.test('a'.repeat(60) + 'b')"],
  ["js sort comparator that loops", runJs, "[3, 1, 2].sort((a, b) => { while (true) {} })"],
  ["js Array(1e9).fill", runJs, "Array(1e9).fill(0)"],
  ["js bigint arithmetic forever", runJs, "let s = 0n; for (let i = 0n; ; i++) s += i * i"],
  ["js promise chain forever", runJs, "const f = () => Promise.resolve().then(f); f()"],
  ["python while True", runPy, "while True: pass"],
  [
    "python recursion that catches RecursionError and recurses again",
    runPy,
    "def f():\n  try: f()\n  except RecursionError: f()\nf()",
  ],
  ["python sum(range(10**9))", runPy, "sum(range(10**9))"],
  ["python string churn", runPy, "s = ''\nwhile True: s = (s + 'ab')[-100:]"],
];

for (const [name, run, code] of RUNAWAYS) {
  Deno.test(`runaway stopped by fuel as a timeout: ${name}`, () => {
    const r = run(code);
    expectOutcome(r, "timeout", name);
    assertEquals(r.fuelUsed, FUEL);
    // Generous: the calibrated budget lands around 0.1-0.5 s on a development machine.
    assert(r.durationMs < 5000, `${name} took ${r.durationMs} ms`);
  });
}

Deno.test("endless recursion is stopped by the interpreter's own depth limit, as an error", () => {
  const a = runJs("function f() { return f() }\nf()");
  expectOutcome(a, "error", "js recursion");
  assertIncludes(a.error!.message, "recursive calls");
  // boa's limit cannot be caught, so catching and recursing again ends the same way.
  const b = runJs("function f() { try { f() } catch (e) { f() } }\nf()");
  expectOutcome(b, "error", "js recursion with catch");
  const c = runPy("def f(): return f()\nf()");
  expectOutcome(c, "error", "python recursion");
  assertMatch(c.error!.message, /^RecursionError/);
});

Deno.test("more live references to one object than RustPython's 15-bit count is an error that says so", () => {
  const r = runPy("x = [0] * 40000");
  expectOutcome(r, "error", "refcount");
  assertIncludes(r.error!.message, "32767 live references");
  expectOutcome(runPy("len([0] * 30000)"), "ok", "under the count");
});

Deno.test("sum(range(10**12)) is an OverflowError on the 32-bit interpreter, stopped at once", () => {
  const r = runPy("sum(range(10**12))");
  expectOutcome(r, "error", "range");
  assertMatch(r.error!.message, /^OverflowError/);
});

const MEMORY_BOMBS: [string, (code: string) => SandboxReport, string][] = [
  ['js "x".repeat(2**30)', runJs, "'x'.repeat(2 ** 30)"],
  [
    "js a growing array of strings",
    runJs,
    "let s = 'x'; for (let i = 0; i < 16; i++) s += s;\nconst a = []; while (true) a.push(s + a.length)",
  ],
  ["js a growing typed array list", runJs, "const a = []; while (true) a.push(new Uint8Array(1 << 20))"],
  ["python [0]*10**10", runPy, "[0] * 10**10"],
  ["python 'x' * 2**30", runPy, "'x' * 2**30"],
  ["python a growing list", runPy, "x = []\nwhile True: x.append(bytearray(100000))"],
];

for (const [name, run, code] of MEMORY_BOMBS) {
  Deno.test(`memory bomb reported as memory_limit, and the next run works: ${name}`, () => {
    const r = run(code);
    expectOutcome(r, "memory_limit", name);
    assert(r.peakMemoryBytes <= 64 * 1024 * 1024, `peak ${r.peakMemoryBytes}`);
    const next = run("1 + 1");
    expectOutcome(next, "ok", `${name}, next run`);
    assertEquals(next.result, "2");
  });
}

Deno.test("output bombs are cut at the limit and reported as output_limit", () => {
  const a = runJs("while (true) console.log('bomb')");
  expectOutcome(a, "output_limit", "js");
  assert(a.stdout.length <= OUTPUT_LIMIT && a.stdout.length > OUTPUT_LIMIT - 10, `kept ${a.stdout.length}`);
  assert(a.stdout.startsWith("bomb\nbomb\n"));
  const b = runPy("import sys\nwhile True: sys.stderr.write('é' * 1000)");
  expectOutcome(b, "output_limit", "python");
  assert(new TextEncoder().encode(b.stderr).length <= OUTPUT_LIMIT);
  assert(!b.stderr.includes("\ufffd"), "cut on a character boundary");
  const c = runJs("print('x'.repeat(100000))");
  expectOutcome(c, "output_limit", "one big line");
});

Deno.test("javascript reaches nothing of the host", () => {
  const r = runJs(`
    const seen = new Set();
    const names = [];
    const walk = (o, depth) => {
      if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o) || depth > 4) return;
      seen.add(o);
      for (const k of Reflect.ownKeys(o)) {
        names.push(String(k));
        let v; try { v = o[k]; } catch { continue; }
        walk(v, depth + 1);
      }
      walk(Object.getPrototypeOf(o), depth + 1);
    };
    walk(globalThis, 0);
    ({
      types: [typeof fetch, typeof Deno, typeof require, typeof process, typeof WebAssembly, typeof XMLHttpRequest,
              typeof importScripts, typeof Worker, typeof setTimeout, typeof module, typeof Bun],
      viaFunction: typeof Function("return this")().Deno,
      viaEval: eval("eval('typeof globalThis.Deno')"),
      viaConstructor: typeof (() => {}).constructor("return globalThis")().fetch,
      hostNames: names.filter((n) => /^(Deno|fetch|require|process|WebAssembly|Worker|XMLHttpRequest|WebSocket|Request|Response|caches|navigator|location|Bun)$/.test(n)),
    })`);
  expectOutcome(r, "ok", "walk");
  const got = JSON.parse(r.result!);
  assertEquals(got.types, Array(11).fill("undefined"));
  assertEquals(got.viaFunction, "undefined");
  assertEquals(got.viaEval, "undefined");
  assertEquals(got.viaConstructor, "undefined");
  assertEquals(got.hostNames, []);

  const imp = runJs(
    "import('data:text/javascript,export default 1').then(() => console.log('loaded'), (e) => console.log('refused: ' + e.message))",
  );
  expectOutcome(imp, "ok", "import()");
  assertMatch(imp.stdout, /^refused/);
  const stat = runJs("import x from 'node:fs'");
  expectOutcome(stat, "error", "static import");
  // The clock is the request's time in whole seconds.
  const clock = runJs("Date.now() % 1000");
  assertEquals(clock.result, "0");
});

Deno.test("python reaches nothing of the host", () => {
  for (const code of ["import os", "import socket", "import posix", "__import__('os')", "eval(\"__import__('os')\")"]) {
    const r = runPy(code);
    expectOutcome(r, "error", code);
    assertMatch(r.error!.message, /^ModuleNotFoundError/, code);
  }
  const open = runPy("open('/etc/passwd').read()");
  assertMatch(open.error!.message, /^NameError/);
  const io = runPy("import _io\n_io.open('/etc/passwd')");
  expectOutcome(io, "error", "_io.open");
  const clock = runPy("import time\ntime.time() % 1");
  assertEquals(clock.result, "0.0");
  const modules = runPy("import sys\nsorted(sys.builtin_module_names)");
  const names: string[] = JSON.parse(modules.result!);
  for (const forbidden of ["posix", "nt", "_socket", "_signal", "_ctypes", "pwd", "select"]) {
    assert(!names.includes(forbidden), `${forbidden} is built in: ${names}`);
  }
});

Deno.test("the same script spends the same fuel every time", () => {
  const code = "let s = 0; for (let i = 0; i < 10000; i++) s += i; s";
  const a = runJs(code), b = runJs(code);
  assertEquals(a.fuelUsed, b.fuelUsed);
  assertEquals(a.result, "49995000");
});

Deno.test("100 consecutive executions in one isolate keep memory bounded", () => {
  // Needs --v8-flags=--expose-gc (scripts/test passes it): V8 collects dropped
  // instances on its own schedule, so only a heap measured after a full collection
  // says whether anything is kept.
  const gc = (globalThis as { gc?: () => void }).gc;
  assert(gc, "run with --v8-flags=--expose-gc");
  const work = () => {
    expectOutcome(runJs("Array.from({length: 1000}, (_, i) => i * i).length"), "ok", "js");
    expectOutcome(runPy("len([i * i for i in range(1000)])"), "ok", "py");
  };
  for (let i = 0; i < 5; i++) work();
  gc();
  const before = Deno.memoryUsage();
  for (let i = 0; i < 50; i++) work();
  gc();
  const after = Deno.memoryUsage();
  const heap = after.heapUsed - before.heapUsed;
  const rss = after.rss - before.rss;
  console.log(
    `100 executions: V8 heap ${(heap / 1048576).toFixed(1)} MiB, process rss ${(rss / 1048576).toFixed(1)} MiB`,
  );
  // An instance kept alive costs the V8 heap about 0.5 MiB (its tables) and its
  // memory 6-14 MiB; memories are reused, so neither grows with the number of runs.
  assert(heap < 8 * 1024 * 1024, `V8 heap grew ${heap} bytes`);
  assert(rss < 256 * 1024 * 1024, `rss grew ${rss} bytes`);
});
