// The code-execution runner: instantiates a sandbox module (sandbox/, built by
// scripts/build) afresh for every run, sets its fuel, calls it once and reads its
// report from linear memory. Compiling happens once per isolate. The module's only
// import is its memory: one per module and isolate, zeroed before every run, so a
// fresh instance starts exactly as on a new memory while the isolate holds one
// memory per language instead of a dead one per run waiting for the collector.
//
// How a run ends is read from the instance, never from a timer: a trap with the fuel
// below zero is a timeout; a trap after the guest flagged the output limit or a
// failed allocation is output_limit / memory_limit; anything else is an error.

export type SandboxLanguage = "javascript" | "typescript" | "python";
export type SandboxOutcome = "ok" | "error" | "timeout" | "memory_limit" | "output_limit";

export interface SandboxRequest {
  code: string;
  stdin?: string;
  /** Loop headers the script may pass (see README, "Code execution"). */
  fuel: number;
  /** Bytes of stdout + stderr kept; crossing it stops the run. */
  outputLimit: number;
  /** Erase TypeScript types before running (JavaScript module only). */
  typescript?: boolean;
  /** The time the script sees, rounded down to the second inside the sandbox. */
  nowMs?: number;
}

export interface SandboxReport {
  outcome: SandboxOutcome;
  stdout: string;
  stderr: string;
  /** The result as JSON text (the last expression's value), or null. */
  result: string | null;
  error: { message: string; line: number | null } | null;
  fuelUsed: number;
  peakMemoryBytes: number;
  durationMs: number;
}

interface SandboxExports {
  fuel: WebAssembly.Global;
  sandbox_report(): number;
  sandbox_input(slot: number, len: number): number;
  sandbox_run(seed: bigint, nowMs: number, outputLimit: number, flags: number): number;
}

// Word indexes of the guest's report block (sandbox/guest/src/lib.rs, `Word`).
const W = {
  status: 0,
  oom: 1,
  outputLimit: 2,
  panicked: 3,
  stdoutPtr: 4,
  stdoutLen: 5,
  stderrPtr: 6,
  stderrLen: 7,
  resultPtr: 8,
  resultLen: 9,
  errorPtr: 10,
  errorLen: 11,
  errorLine: 12,
  panicPtr: 13,
  panicLen: 14,
  heapTop: 15,
} as const;
const WORDS = 16;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export class Sandbox {
  readonly module: WebAssembly.Module;
  readonly bytes: number;
  #pages: { initial: number; maximum: number };
  #memory: WebAssembly.Memory | null = null;
  #abortHint: string;

  constructor(module: WebAssembly.Module, bytes: number) {
    this.module = module;
    this.bytes = bytes;
    // Written by sandbox-fuel: the memory the module imports.
    const [section] = WebAssembly.Module.customSections(module, "edgeworks.sandbox");
    if (!section) throw new Error("not a sandbox module (no edgeworks.sandbox section)");
    const info = JSON.parse(decoder.decode(section));
    this.#pages = { initial: info.memory_initial_pages, maximum: info.memory_maximum_pages };
    // An abort with no flag set has one known cause in RustPython on 32-bit wasm:
    // reference counts have 15 bits (sandbox/python/src/lib.rs).
    this.#abortHint = info.language === "python"
      ? " (the usual cause: more than 32767 live references to one object, e.g. 32767 live ints)"
      : "";
  }

  /** Reads and compiles a sandbox module (with Deno.readFile: the hosted runtime has no fetch of its bundle). */
  static async load(url: URL): Promise<Sandbox> {
    const bytes = await Deno.readFile(url);
    return new Sandbox(await WebAssembly.compile(bytes), bytes.length);
  }

  /** The isolate's memory for this module, zeroed; a fresh one after a run that grew it a lot. */
  #freshMemory(): WebAssembly.Memory {
    const grown = this.#memory && this.#memory.buffer.byteLength > 2 * this.#pages.initial * 65536;
    if (!this.#memory || grown) {
      // Dropping a big memory leaves one garbage memory, only after a big run.
      this.#memory = new WebAssembly.Memory(this.#pages);
    } else {
      new Uint8Array(this.#memory.buffer).fill(0);
    }
    return this.#memory;
  }

  run(req: SandboxRequest): SandboxReport {
    const started = performance.now();
    // The memory is the only import (sandbox-fuel refuses modules that import anything).
    const memory = this.#freshMemory();
    const instance = new WebAssembly.Instance(this.module, { sandbox: { memory } });
    const ex = instance.exports as unknown as SandboxExports;
    // Fuel first: every loop in the guest spends it, copying the inputs included.
    const budget = BigInt(Math.max(0, Math.floor(req.fuel)));
    ex.fuel.value = budget;
    const report = ex.sandbox_report();
    const inputs = [encoder.encode(req.code), encoder.encode(req.stdin ?? "")];
    for (const [slot, bytes] of inputs.entries()) {
      const ptr = ex.sandbox_input(slot, bytes.length);
      if (ptr === 0 && bytes.length > 0) return limitReport("memory_limit", memory, started);
      new Uint8Array(memory.buffer, ptr, bytes.length).set(bytes);
    }
    const seed = new BigUint64Array(1);
    crypto.getRandomValues(seed);
    let trap: unknown = null;
    try {
      ex.sandbox_run(seed[0], req.nowMs ?? Date.now(), req.outputLimit, req.typescript ? 1 : 0);
    } catch (e) {
      trap = e;
    }
    const durationMs = performance.now() - started;
    const words = new Uint32Array(memory.buffer, report, WORDS);
    const text = (ptr: number, len: number) => len === 0 ? "" : decoder.decode(new Uint8Array(memory.buffer, ptr, len));
    const left = ex.fuel.value as bigint;
    const fuelUsed = Number(left < 0n ? budget : budget - left);
    let outcome: SandboxOutcome;
    let error: SandboxReport["error"] = null;
    if (trap === null) {
      if (words[W.status] === 1) outcome = "ok";
      else outcome = words[W.oom] ? "memory_limit" : "error";
    } else if (left < 0n) outcome = "timeout";
    else if (words[W.outputLimit]) outcome = "output_limit";
    else if (words[W.oom]) outcome = "memory_limit";
    else outcome = "error";
    if (words[W.status] === 2) {
      error = { message: text(words[W.errorPtr], words[W.errorLen]), line: words[W.errorLine] || null };
    } else if (outcome === "error") {
      // The interpreter itself stopped: a native stack overflow (V8's RangeError or
      // the guest's shadow stack running out) or a panic inside the interpreter.
      const panic = words[W.panicked] ? text(words[W.panicPtr], words[W.panicLen]) : "";
      const why = trap instanceof RangeError
        ? "Maximum call stack size exceeded"
        : panic
        ? `the interpreter stopped: ${panic}`
        : `the interpreter aborted${this.#abortHint}`;
      error = { message: `InternalError: ${why}`, line: null };
    }
    return {
      outcome,
      stdout: text(words[W.stdoutPtr], words[W.stdoutLen]),
      stderr: text(words[W.stderrPtr], words[W.stderrLen]),
      result: outcome === "ok" && words[W.resultLen] > 0 ? text(words[W.resultPtr], words[W.resultLen]) : null,
      error,
      fuelUsed,
      // The allocator's high-water mark (data and stack lie below it); after a failed
      // allocation the ceiling itself.
      peakMemoryBytes: words[W.oom] ? this.#pages.maximum * 65536 : words[W.heapTop],
      durationMs,
    };
  }
}

function limitReport(outcome: SandboxOutcome, memory: WebAssembly.Memory, started: number): SandboxReport {
  return {
    outcome,
    stdout: "",
    stderr: "",
    result: null,
    error: null,
    fuelUsed: 0,
    peakMemoryBytes: memory.buffer.byteLength,
    durationMs: performance.now() - started,
  };
}

/**
 * Makes the sandbox modules in `dir` (javascript.wasm, python.wasm) the runner the
 * function's Rust reaches through crates/runtime (`Host::run_code`): a global
 * function on the host's side, which no sandboxed script can see (a sandbox
 * instance imports only its memory). Each module is read and compiled on first use,
 * once per isolate.
 */
export function installSandbox(dir: URL): void {
  const loaded = new Map<string, Promise<Sandbox>>();
  const sandbox = (file: string) => {
    let p = loaded.get(file);
    if (!p) {
      p = Sandbox.load(new URL(file, dir));
      // A failed load is retried by the next run, not cached.
      p.catch(() => loaded.delete(file));
      loaded.set(file, p);
    }
    return p;
  };
  (globalThis as { __edgeworksRunCode?: (run: string) => Promise<string> }).__edgeworksRunCode = async (json) => {
    const run = JSON.parse(json) as {
      language: SandboxLanguage;
      code: string;
      stdin: string;
      fuel: number;
      outputLimit: number;
    };
    const sb = await sandbox(run.language === "python" ? "python.wasm" : "javascript.wasm");
    return JSON.stringify(sb.run({
      code: run.code,
      stdin: run.stdin,
      fuel: run.fuel,
      outputLimit: run.outputLimit,
      typescript: run.language === "typescript",
    }));
  };
}
