// scripts/bench sandbox: the code-execution sandbox against the engines it stands in
// for. Figures, not assertions.
//
//   cold start   a fresh Deno process: read + compile the module, then the first run
//                (what the first execution in a new isolate pays)
//   warm start   a new instance on an already compiled module, trivial code
//   workloads    fib(25) and a 1e6-iteration loop, timed inside the sandbox run, and
//                the same code on Deno's own engine (JavaScript) or CPython (Python),
//                each in a subprocess that times the code itself
//
//   --calibrate  runaway shapes at a fixed fuel budget: nanoseconds per unit of fuel
//                for each, the slowest, and the fuel per millisecond that keeps a
//                timeout's CPU at half its timeout_ms (CODE_EXECUTION_FUEL_PER_MS)
import { Sandbox } from "../../supabase/functions/_shared/sandbox.ts";

const dir = new URL("../../supabase/functions/code-execution/sandbox/", import.meta.url);
const args = new Set(Deno.args);
const rounds = 5;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(1)} ms`;

async function gzipSize(bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return (await new Response(stream).arrayBuffer()).byteLength;
}

async function output(cmd: string, cmdArgs: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args: cmdArgs, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout).trim();
}

if (args.has("--cold-child")) {
  // One cold start, in this fresh process; prints JSON.
  const file = Deno.args[Deno.args.indexOf("--cold-child") + 1];
  const t0 = performance.now();
  const sb = await Sandbox.load(new URL(file, dir));
  const compiled = performance.now();
  const r = sb.run({ code: file.startsWith("python") ? "1 + 1" : "1 + 1", fuel: 1e9, outputLimit: 1024 });
  const done = performance.now();
  console.log(JSON.stringify({ compileMs: compiled - t0, firstRunMs: done - compiled, outcome: r.outcome }));
  Deno.exit(0);
}

const modules = {
  javascript: await Sandbox.load(new URL("javascript.wasm", dir)),
  python: await Sandbox.load(new URL("python.wasm", dir)),
};

if (args.has("--calibrate")) {
  const FUEL = 30_000_000;
  const shapes: [keyof typeof modules, string, string][] = [
    ["javascript", "while(true)", "while (true) {}"],
    ["javascript", "forEach + for(;;)", "[1, 2].forEach(() => { for (;;) {} })"],
    ["javascript", "catastrophic regex", "/^(a+)+$/.test('a'.repeat(60) + 'b')"],
    ["javascript", "looping sort comparator", "[3, 1, 2].sort(() => { while (true) {} })"],
    ["javascript", "Array(1e9).fill", "Array(1e9).fill(0)"],
    ["javascript", "bigint sum", "let s = 0n; for (let i = 0n; ; i++) s += i * i"],
    ["javascript", "array churn", "let a = []; for (let i = 0; ; i++) { a.push({ i }); if (a.length > 1000) a = [] }"],
    ["javascript", "string building", "let s = ''; for (;;) { s += 'ab'; if (s.length > 1e4) s = '' }"],
    ["python", "while True", "while True: pass"],
    ["python", "sum(range(10**9))", "sum(range(10**9))"],
    ["python", "RecursionError caught, recurse again", "def f():\n  try: f()\n  except RecursionError: f()\nf()"],
    ["python", "arithmetic", "x = 0\nwhile True: x = (x * 31 + 7) % 1000003"],
    ["python", "string churn", "s = ''\nwhile True: s = (s + 'ab')[-100:]"],
    ["python", "dict churn", "d = {}\ni = 0\nwhile True:\n  d[i % 1000] = str(i)\n  i += 1"],
  ];
  console.log(`calibration: each shape runs until ${FUEL.toLocaleString()} units of fuel are spent (median of 3)\n`);
  console.log(
    `${"language".padEnd(11)} ${"shape".padEnd(38)} ${"outcome".padEnd(9)} ${"time".padStart(10)} ${
      "ns/unit".padStart(8)
    }`,
  );
  let worst = 0;
  for (const [lang, name, code] of shapes) {
    const times: number[] = [];
    let outcome = "";
    for (let i = 0; i < 3; i++) {
      const r = modules[lang].run({ code, fuel: FUEL, outputLimit: 1024 });
      times.push(r.durationMs);
      outcome = r.outcome;
    }
    const t = median(times);
    const ns = (t * 1e6) / FUEL;
    worst = Math.max(worst, ns);
    console.log(
      `${lang.padEnd(11)} ${name.padEnd(38)} ${outcome.padEnd(9)} ${ms(t).padStart(10)} ${ns.toFixed(1).padStart(8)}`,
    );
  }
  const perMs = Math.floor((0.5 * 1e6) / worst);
  console.log(`\nslowest: ${worst.toFixed(1)} ns per unit; for a timeout to cost at most half its timeout_ms in CPU:`);
  console.log(`CODE_EXECUTION_FUEL_PER_MS <= ${perMs.toLocaleString()} (configured default: 50,000)`);
  Deno.exit(0);
}

console.log("sandbox modules");
for (const name of ["javascript.wasm", "python.wasm"]) {
  const bytes = await Deno.readFile(new URL(name, dir));
  console.log(
    `  ${name.padEnd(16)} ${bytes.length.toLocaleString().padStart(12)} bytes ${
      (await gzipSize(bytes)).toLocaleString().padStart(12)
    } gzip`,
  );
}

console.log(`\ncold start (fresh process: read + compile, first run), median of ${rounds}`);
for (const file of ["javascript.wasm", "python.wasm"]) {
  const runs = [];
  for (let i = 0; i < rounds; i++) {
    runs.push(JSON.parse(await output(Deno.execPath(), ["run", "-A", import.meta.filename!, "--cold-child", file])));
  }
  console.log(
    `  ${file.padEnd(16)} compile ${ms(median(runs.map((r) => r.compileMs))).padStart(10)}   first run ${
      ms(median(runs.map((r) => r.firstRunMs))).padStart(10)
    }`,
  );
}

console.log("\nwarm start (new instance, trivial code), median of 50 after 10 warm-up runs");
for (const [lang, sb] of Object.entries(modules)) {
  for (let i = 0; i < 10; i++) sb.run({ code: "1", fuel: 1e9, outputLimit: 1024 });
  const times = [];
  for (let i = 0; i < 50; i++) times.push(sb.run({ code: "1", fuel: 1e9, outputLimit: 1024 }).durationMs);
  console.log(`  ${lang.padEnd(16)} ${ms(median(times)).padStart(10)}`);
}

const workloads = {
  "fib(25)": {
    javascript: "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }\nfib(25)",
    python: "def fib(n):\n  return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(25)",
  },
  "1e6 loop": {
    javascript: "let s = 0;\nfor (let i = 0; i < 1e6; i++) s += i % 7;\ns",
    python: "s = 0\nfor i in range(1000000):\n  s += i % 7\ns",
  },
};

async function native(lang: "javascript" | "python", code: string): Promise<number> {
  if (lang === "javascript") {
    const lines = code.split("\n");
    const last = lines.pop();
    const script = `const t0 = performance.now();\n${
      lines.join("\n")
    }\nconst v = (${last});\nconsole.log(performance.now() - t0);`;
    return Number(await output(Deno.execPath(), ["eval", script]));
  }
  const lines = code.split("\n");
  const last = lines.pop();
  const script = `import time\nt0 = time.perf_counter()\n${
    lines.join("\n")
  }\nv = (${last})\nprint((time.perf_counter() - t0) * 1000)`;
  return Number(await output("python3", ["-c", script]));
}

console.log(`\nworkloads, median of ${rounds} (sandbox time includes instantiation)`);
console.log(
  `  ${"workload".padEnd(10)} ${"language".padEnd(11)} ${"sandbox".padStart(10)} ${"native".padStart(10)} ${
    "ratio".padStart(7)
  }   fuel`,
);
for (const [name, byLang] of Object.entries(workloads)) {
  for (const lang of ["javascript", "python"] as const) {
    const sb: number[] = [];
    const nat: number[] = [];
    let fuel = 0;
    for (let i = 0; i < rounds; i++) {
      const r = modules[lang].run({ code: byLang[lang], fuel: 1e12, outputLimit: 1024 });
      if (r.outcome !== "ok") throw new Error(`${name} ${lang}: ${r.outcome} ${JSON.stringify(r.error)}`);
      sb.push(r.durationMs);
      fuel = r.fuelUsed;
      nat.push(await native(lang, byLang[lang]));
    }
    const [s, n] = [median(sb), median(nat)];
    const engine = lang === "javascript" ? "Deno (V8)" : "CPython";
    console.log(
      `  ${name.padEnd(10)} ${lang.padEnd(11)} ${ms(s).padStart(10)} ${ms(n).padStart(10)} ${
        (s / n).toFixed(0).padStart(6)
      }x   ${fuel.toLocaleString()} (vs ${engine})`,
    );
  }
}
