//! Untrusted code, run by the host's sandbox: what a handler asks for and what it
//! gets back. The sandbox itself (interpreters compiled to wasm, metered by fuel,
//! capped in memory, importing nothing) lives in `sandbox/`; the JavaScript host
//! runs it through `supabase/functions/_shared/sandbox.ts`, which a function's shim
//! installs. These types are the wire format between the two (JSON).

use serde::{Deserialize, Serialize};

/// The interpreters the sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// ECMAScript, evaluated as a script.
    Javascript,
    /// TypeScript, run as JavaScript once its types are erased (the erasable subset).
    Typescript,
    /// Python 3 without its standard library.
    Python,
}

impl Language {
    /// The name used in requests and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Javascript => "javascript",
            Language::Typescript => "typescript",
            Language::Python => "python",
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeRun {
    /// Which interpreter.
    pub language: Language,
    /// The program.
    pub code: String,
    /// What `readline()` / `input()` read.
    pub stdin: String,
    /// Units the run may spend (one per loop iteration and function call inside the
    /// interpreter); the run is stopped when they are gone.
    pub fuel: u64,
    /// Bytes of stdout and stderr together; crossing it stops the run.
    pub output_limit: u32,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The program finished.
    Ok,
    /// The program threw (or did not parse); see [`CodeReport::error`].
    Error,
    /// The fuel ran out.
    Timeout,
    /// The memory ceiling was reached.
    MemoryLimit,
    /// The output limit was crossed; the output kept is cut there.
    OutputLimit,
}

impl Outcome {
    /// The name used in responses and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputLimit => "output_limit",
        }
    }
}

/// The program's error, as its language prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeError {
    /// `TypeError: ...`, `KeyError: 'k'`.
    pub message: String,
    /// 1-based line in the program, when known.
    pub line: Option<u32>,
}

/// What came back from one run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Standard output kept.
    pub stdout: String,
    /// Standard error kept.
    pub stderr: String,
    /// The value of the last expression as JSON text, when the program ended ok and
    /// had one.
    pub result: Option<String>,
    /// Set when the outcome is `error`.
    pub error: Option<CodeError>,
    /// Fuel spent.
    pub fuel_used: u64,
    /// The highest memory address the interpreter used, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time of the run on the host (instantiation included).
    pub duration_ms: f64,
}
