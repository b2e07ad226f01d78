#!/usr/bin/env bash
# Builds the browser upload client: the Rust half to wasm (wasm-bindgen
# --target web, into pkg/), and one ES module for browsers
# (dist/v2_upload_client.js: js/v2_upload_client.ts with supabase-js, bundled
# by `deno bundle`). Idempotent; prints the outputs' sizes.
set -euo pipefail
EW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$EW_ROOT"
source scripts/lib/tools.sh
ew_ensure_wasm_target
ew_ensure_wasm_bindgen
ew_ensure_deno

here=clients/upload-client
cargo build --quiet --release --target wasm32-unknown-unknown -p upload-client
rm -rf "$here/pkg"
wasm-bindgen --target web --remove-name-section --out-dir "$here/pkg" \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/upload_client.wasm"
mkdir -p "$here/dist"
deno bundle --quiet --platform browser --config deno.json -o "$here/dist/v2_upload_client.js" "$here/js/v2_upload_client.ts"
cp "$here/pkg/upload_client_bg.wasm" "$here/dist/"
ls -l "$here/pkg/upload_client_bg.wasm" "$here/dist/v2_upload_client.js" | awk '{print $5, $9}' >&2
