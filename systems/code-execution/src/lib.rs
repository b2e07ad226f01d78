//! edgeworks-code-execution: seed 002's code-execution. Untrusted JavaScript,
//! TypeScript and Python run inside the function, in the sandbox of `sandbox/`
//! (interpreters compiled to wasm, a fresh instance per run, stopped by fuel and a
//! memory ceiling, nothing of the host reachable), reached through
//! `Host::run_code`. Each run is recorded in `code_executions`.
//!
//! It owns the request's limits (code and stdin size, timeout → fuel), the mapping
//! from a sandbox report to the response and the record, and nothing else.
#![deny(missing_docs)]

pub mod code_execution;
pub mod settings;
