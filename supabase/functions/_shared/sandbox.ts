// The code-execution runner: instantiates a sandbox module (sandbox/, built by
// scripts/build) afresh for every run, with no imports at all, sets its fuel, calls
// it once and reads its report from linear memory. Compiling happens once per
// isolate; an instance is used once and dropped, so nothing a script did survives it.
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
  memory: WebAssembly.Memory;
  fuel: WebAssembly.Global;
  sandbox_report(): number;
  sandbox_input(slot: number, len: number): number;
  sandbox_run(seed: bigint, nowMs: number, outputLimit: number, flags: number): number;
}

// Word indexes of the guest's report block (sandbox/guest/src/lib.rs, `Word`).
const W = {
  status: 0, oom: 1, outputLimit: 2, panicked: 3, stdoutPtr: 4, stdoutLen: 5, stderrPtr: 6,
  stderrLen: 7, resultPtr: 8, resultLen: 9, errorPtr: 10, errorLen: 11, errorLine: 12,
  panicPtr: 13, panicLen: 14,
} as const;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export class Sandbox {
  readonly module: WebAssembly.Module;
  readonly bytes: number;

  constructor(module: WebAssembly.Module, bytes: number) {
    this.module = module;
    this.bytes = bytes;
  }

  /** Reads and compiles a sandbox module (with Deno.readFile: the hosted runtime has no fetch of its bundle). */
  static async load(url: URL): Promise<Sandbox> {
    const bytes = await Deno.readFile(url);
    return new Sandbox(await WebAssembly.compile(bytes), bytes.length);
  }

  run(req: SandboxRequest): SandboxReport {
    const started = performance.now();
    // No imports: the module was checked at build time to import nothing.
    const instance = new WebAssembly.Instance(this.module, {});
    const ex = instance.exports as unknown as SandboxExports;
    // Fuel first: every loop in the guest spends it, copying the inputs included.
    const budget = BigInt(Math.max(0, Math.floor(req.fuel)));
    ex.fuel.value = budget;
    const report = ex.sandbox_report();
    const inputs = [encoder.encode(req.code), encoder.encode(req.stdin ?? "")];
    for (const [slot, bytes] of inputs.entries()) {
      const ptr = ex.sandbox_input(slot, bytes.length);
      if (ptr === 0 && bytes.length > 0) return limitReport("memory_limit", ex, started);
      new Uint8Array(ex.memory.buffer, ptr, bytes.length).set(bytes);
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
    const words = new Uint32Array(ex.memory.buffer, report, 15);
    const text = (ptr: number, len: number) =>
      len === 0 ? "" : decoder.decode(new Uint8Array(ex.memory.buffer, ptr, len));
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
        : `the interpreter stopped: ${trap instanceof Error ? trap.message : String(trap)}`;
      error = { message: `InternalError: ${why}`, line: null };
    }
    return {
      outcome,
      stdout: text(words[W.stdoutPtr], words[W.stdoutLen]),
      stderr: text(words[W.stderrPtr], words[W.stderrLen]),
      result: outcome === "ok" && words[W.resultLen] > 0 ? text(words[W.resultPtr], words[W.resultLen]) : null,
      error,
      fuelUsed,
      peakMemoryBytes: ex.memory.buffer.byteLength,
      durationMs,
    };
  }
}

function limitReport(outcome: SandboxOutcome, ex: SandboxExports, started: number): SandboxReport {
  return {
    outcome, stdout: "", stderr: "", result: null, error: null, fuelUsed: 0,
    peakMemoryBytes: ex.memory.buffer.byteLength, durationMs: performance.now() - started,
  };
}
