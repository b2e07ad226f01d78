# The code-execution sandbox (sandbox/, its own cargo workspace): each interpreter is
# built for wasm32 with no imports, then sandbox-fuel meters it (fuel at every loop
# header and function entry, a memory ceiling, imports refused) into static files of
# the code-execution function. Sourced by scripts/build; needs tools.sh first.

# Where the interpreters' build lives: apart from the functions' target dir, so the
# two workspaces never wait on each other's cargo lock and each keeps its cache.
EW_SANDBOX_TARGET="${EDGEWORKS_SANDBOX_TARGET_DIR:-$EW_CACHE/sandbox-target}"
EW_SANDBOX_OUT="supabase/functions/code-execution/sandbox"
# Per-run memory ceiling of each sandbox instance, in MiB. One instance lives at a
# time per isolate (a run is synchronous), inside the hosted 256 MB.
EW_SANDBOX_MEMORY_MIB=64

ew_build_sandbox() {
  local root="$EW_ROOT"
  ew_ensure_wasm_target
  ew_log "sandbox: interpreters for wasm32 and the fuel pass (cargo, $EW_SANDBOX_TARGET)"
  # The sandbox's .cargo/config.toml applies from its own directory.
  (cd "$root/sandbox" && CARGO_TARGET_DIR="$EW_SANDBOX_TARGET" cargo build --quiet --locked --release \
      --target wasm32-unknown-unknown -p edgeworks-sandbox-js -p edgeworks-sandbox-python) \
    || ew_die "sandbox build failed"
  (cd "$root/sandbox" && CARGO_TARGET_DIR="$EW_SANDBOX_TARGET" cargo build --quiet --locked --release \
      -p edgeworks-sandbox-fuel) || ew_die "sandbox-fuel build failed"
  local fuel="$EW_SANDBOX_TARGET/release/sandbox-fuel"
  local wasm_dir="$EW_SANDBOX_TARGET/wasm32-unknown-unknown/release"
  mkdir -p "$root/$EW_SANDBOX_OUT"
  printf '\n%-22s %12s %12s\n' "sandbox module" "wasm bytes" "gzip bytes"
  printf '%-22s %12s %12s\n' ---------------------- ------------ ------------
  local lang crate out
  for lang in javascript python; do
    crate="edgeworks_sandbox_$([ "$lang" = javascript ] && echo js || echo python)"
    out="$root/$EW_SANDBOX_OUT/$lang.wasm"
    "$fuel" "$wasm_dir/$crate.wasm" "$out" --language "$lang" --max-memory-mib "$EW_SANDBOX_MEMORY_MIB" \
      --meter-calls 2>/dev/null || ew_die "sandbox-fuel refused $crate.wasm (run it by hand to see why)"
    printf '%-22s %12d %12d\n' "$lang" "$(wc -c < "$out")" "$(gzip -9 -c "$out" | wc -c)"
  done
  echo
}
