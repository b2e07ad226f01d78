//! The limits of a run, from the function's environment.
//!
//! The fuel calibration: one unit of fuel is one loop iteration or one function call
//! inside the interpreter (sandbox/fuel). How much CPU a unit stands for depends on
//! what the script does; `scripts/bench sandbox --calibrate` runs fourteen runaway
//! shapes at a fixed budget and prints each one's nanoseconds per unit. On the
//! development machine they ranged from 2.7 to 9.0 ns (slowest: Python's
//! `sum(range(...))`); 50,000 units per millisecond of `timeout_ms` keep the slowest
//! shape's CPU at or under half its timeout, so the longest timeout (1000 ms, 50 M
//! units) stops a runaway after at most ~0.45 s of CPU there: well inside the hosted
//! 2 s per request, with room for a machine twice as slow.

use edgeworks_core::ApiError;
use edgeworks_runtime::Env;
use edgeworks_service::FromEnv;

/// The memory ceiling of a sandbox instance. Set at build time by `sandbox-fuel
/// --max-memory-mib` (scripts/lib/sandbox.sh, `EW_SANDBOX_MEMORY_MIB`): both ends
/// must say the same.
pub const MEMORY_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest program, in UTF-8 bytes (`CODE_EXECUTION_MAX_CODE_BYTES`).
    pub max_code_bytes: usize,
    /// Largest stdin, in UTF-8 bytes (`CODE_EXECUTION_MAX_STDIN_BYTES`).
    pub max_stdin_bytes: usize,
    /// stdout + stderr kept, in bytes; crossing it stops the run
    /// (`CODE_EXECUTION_OUTPUT_BYTES`).
    pub output_bytes: u32,
    /// Fuel per millisecond of `timeout_ms` (`CODE_EXECUTION_FUEL_PER_MS`, see the
    /// module documentation).
    pub fuel_per_ms: u64,
    /// The longest `timeout_ms` accepted, and the default (`CODE_EXECUTION_MAX_TIMEOUT_MS`).
    pub max_timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_code_bytes: 64 * 1024,
            max_stdin_bytes: 64 * 1024,
            output_bytes: 64 * 1024,
            fuel_per_ms: 50_000,
            max_timeout_ms: 1_000,
        }
    }
}

fn read<T: std::str::FromStr + PartialOrd + Copy>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    match lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<T>().ok().filter(|x| *x >= min && *x <= max).ok_or_else(|| {
            ApiError::new(
                500,
                "misconfigured",
                format!("{name} must be a number in its allowed range"),
            )
        }),
    }
}

impl Limits {
    /// Reads the settings; a value out of its range is a 500 naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Limits, ApiError> {
        let d = Limits::default();
        Ok(Limits {
            max_code_bytes: read(
                &lookup,
                "CODE_EXECUTION_MAX_CODE_BYTES",
                d.max_code_bytes,
                1,
                512 * 1024,
            )?,
            max_stdin_bytes: read(
                &lookup,
                "CODE_EXECUTION_MAX_STDIN_BYTES",
                d.max_stdin_bytes,
                0,
                512 * 1024,
            )?,
            // The guest keeps at most 256 KiB per stream.
            output_bytes: read(&lookup, "CODE_EXECUTION_OUTPUT_BYTES", d.output_bytes, 1, 256 * 1024)?,
            fuel_per_ms: read(&lookup, "CODE_EXECUTION_FUEL_PER_MS", d.fuel_per_ms, 1, 10_000_000)?,
            // Above 1.5 s of timeout nothing is left of the hosted 2 s CPU budget.
            max_timeout_ms: read(&lookup, "CODE_EXECUTION_MAX_TIMEOUT_MS", d.max_timeout_ms, 1, 1_500)?,
        })
    }

    /// The fuel for a run given the caller's `timeout_ms` (or the longest allowed).
    pub fn fuel_for(&self, timeout_ms: Option<u32>) -> (u32, u64) {
        let ms = timeout_ms.unwrap_or(self.max_timeout_ms).clamp(1, self.max_timeout_ms);
        (ms, u64::from(ms) * self.fuel_per_ms)
    }
}

impl FromEnv for Limits {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Limits::from_lookup(env.lookup())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timeout_is_the_longest_and_fuel_scales_with_it() {
        let s = Limits::default();
        assert_eq!(s.fuel_for(None), (1_000, 50_000_000));
        assert_eq!(s.fuel_for(Some(250)), (250, 12_500_000));
        assert_eq!(s.fuel_for(Some(60_000)), (1_000, 50_000_000));
    }

    #[test]
    fn a_value_out_of_range_names_the_variable() {
        let e =
            Limits::from_lookup(|k| (k == "CODE_EXECUTION_MAX_TIMEOUT_MS").then(|| "5000".to_string())).unwrap_err();
        assert_eq!(e.status(), 500);
        assert!(e.message().contains("CODE_EXECUTION_MAX_TIMEOUT_MS"));
    }
}
