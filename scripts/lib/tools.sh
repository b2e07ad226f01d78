# Pinned tool installation, sourced by scripts/serve, scripts/build and scripts/test.
# Every install is idempotent: a tool at the pinned version is left alone.
# Tools live outside the clone so a fresh clone on a warm machine reuses them.

EW_CACHE="${EDGEWORKS_CACHE:-$HOME/.cache/edgeworks}"
EW_TOOLS="$EW_CACHE/tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EW_CACHE/target}"
export PATH="$EW_TOOLS/bin:$EW_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"

POSTRUST_VERSION=3.1.0
S3S_FS_VERSION=0.14.1
DENO_NPM_VERSION=2.9.6
# The Deno of Supabase's hosted edge runtime (2.1.x); functions run on it locally.
DENO_EDGE_NPM_VERSION=2.1.4
SUPABASE_CLI_VERSION=3.1.0
# binaryen's wasm-opt, from npm (the package ships it compiled to JS+wasm, run
# by node: no download at install time, same binary on every platform).
BINARYEN_NPM_VERSION=132.0.0
PG_MAJOR=15

ew_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
ew_die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
ew_wasm_bindgen_version() {
  local root="${1:-$EW_ROOT}"
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock"
}

ew_cargo_install() { # name version [extra args...]
  local name="$1" version="$2"; shift 2
  local stamp="$EW_TOOLS/.installed-$name-$version"
  if [ -f "$stamp" ]; then return 0; fi
  ew_log "installing $name $version (cargo install, once per machine)"
  mkdir -p "$EW_TOOLS"
  # --locked first (the crate's own lockfile); some published lockfiles name
  # versions the registry has since yanked, so fall back to a fresh resolution.
  cargo install --locked --quiet --root "$EW_TOOLS" "$name" --version "$version" "$@" 2>"$EW_TOOLS/.install-$name.log" \
    || cargo install --quiet --root "$EW_TOOLS" "$name" --version "$version" "$@" \
    || ew_die "cargo install $name $version failed"
  touch "$stamp"
}

ew_ensure_wasm_target() {
  if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
    ew_log "adding rust target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown >/dev/null
  fi
}

ew_ensure_wasm_bindgen() {
  local v; v="$(ew_wasm_bindgen_version)"
  [ -n "$v" ] || ew_die "wasm-bindgen not found in Cargo.lock"
  ew_cargo_install wasm-bindgen-cli "$v"
  local got; got="$("$EW_TOOLS/bin/wasm-bindgen" --version | awk '{print $2}')"
  [ "$got" = "$v" ] || ew_die "wasm-bindgen CLI $got does not match Cargo.lock $v"
}

# wasm-opt, post-optimising every function's wasm in scripts/build. Its own
# prefix with an exact package.json and package-lock.json; offline once installed.
# Exports EW_WASM_OPT, the wrapper's path.
ew_ensure_wasm_opt() {
  local prefix="$EW_TOOLS/binaryen"
  local stamp="$EW_TOOLS/.installed-binaryen-$BINARYEN_NPM_VERSION"
  export EW_WASM_OPT="$prefix/node_modules/.bin/wasm-opt"
  if [ ! -f "$stamp" ] || [ ! -x "$EW_WASM_OPT" ]; then
    command -v npm >/dev/null 2>&1 || ew_die "npm is needed to install binaryen (wasm-opt)"
    ew_log "installing binaryen $BINARYEN_NPM_VERSION, for wasm-opt (npm package)"
    mkdir -p "$prefix"
    (cd "$prefix" && [ -f package.json ] || echo '{"private":true}' > package.json)
    (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error --save-exact \
      "binaryen@$BINARYEN_NPM_VERSION" >/dev/null) || ew_die "npm install binaryen@$BINARYEN_NPM_VERSION failed"
    local got; got="$("$EW_WASM_OPT" --version | awk '{print $3}')"
    [ "$got" = "${BINARYEN_NPM_VERSION%%.*}" ] || ew_die "wasm-opt version $got installed, binaryen $BINARYEN_NPM_VERSION pinned"
    touch "$stamp"
  fi
}

ew_ensure_deno() {
  local stamp="$EW_TOOLS/.installed-deno-$DENO_NPM_VERSION"
  if [ ! -f "$stamp" ]; then
    ew_log "installing deno $DENO_NPM_VERSION (npm package)"
    mkdir -p "$EW_TOOLS"
    (cd "$EW_TOOLS" && [ -f package.json ] || echo '{"private":true}' > package.json)
    (cd "$EW_TOOLS" && npm install --no-audit --no-fund --loglevel=error "deno@$DENO_NPM_VERSION" >/dev/null) \
      || ew_die "npm install deno failed"
    touch "$stamp"
  fi
  export DENO_DIR="${DENO_DIR:-$EW_CACHE/deno}"
  export DENO_NO_UPDATE_CHECK=1
}

# The edge runtime's Deno, in its own prefix beside today's (npm would otherwise
# replace one version with the other). Exports EW_DENO_EDGE, the binary's path.
ew_ensure_deno_edge() {
  ew_ensure_deno
  local prefix="$EW_TOOLS/deno-edge"
  local stamp="$EW_TOOLS/.installed-deno-edge-$DENO_EDGE_NPM_VERSION"
  if [ ! -f "$stamp" ]; then
    ew_log "installing deno $DENO_EDGE_NPM_VERSION, the edge runtime's (npm package)"
    mkdir -p "$prefix"
    (cd "$prefix" && [ -f package.json ] || echo '{"private":true}' > package.json)
    (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error --save-exact "deno@$DENO_EDGE_NPM_VERSION" >/dev/null) \
      || ew_die "npm install deno@$DENO_EDGE_NPM_VERSION failed"
    local got; got="$("$prefix/node_modules/deno/deno" --version | awk 'NR==1 {print $2}')"
    [ "$got" = "$DENO_EDGE_NPM_VERSION" ] || ew_die "deno $got installed, $DENO_EDGE_NPM_VERSION pinned"
    touch "$stamp"
  fi
  # The binary itself: this version's .bin/deno is a node wrapper that spawns
  # it, and a supervisor must hold the process that runs the function.
  export EW_DENO_EDGE="$prefix/node_modules/deno/deno"
  # Deno 2.1 trusts only its bundled roots unless told otherwise; adding the
  # system store lets it reach the npm registry where the machine's own CA
  # (e.g. a proxy's) is needed, as the current Deno does here without asking.
  export DENO_TLS_CA_STORE="${DENO_TLS_CA_STORE:-mozilla,system}"
}

ew_ensure_postgres() {
  local bindir="/usr/lib/postgresql/$PG_MAJOR/bin"
  if [ ! -x "$bindir/initdb" ]; then
    ew_log "installing postgresql-$PG_MAJOR (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR" >/dev/null \
      || ew_die "could not install postgresql-$PG_MAJOR"
  fi
  export PG_BIN="$bindir"
}

ew_ensure_postrust() { ew_cargo_install postrust-server "$POSTRUST_VERSION"; }
ew_ensure_s3s() { ew_cargo_install s3s-fs "$S3S_FS_VERSION" --features binary; }

# The real Supabase CLI, for what it does without Docker: db push/lint with
# --db-url, migration list/new, gen types. The npm package ships the binary in
# an optional per-platform package (@supabase/cli-linux-x64), so no download at
# install time. Its own prefix keeps it from re-resolving the deno package.
ew_ensure_supabase_cli() {
  local prefix="$EW_TOOLS/supabase-cli"
  local stamp="$EW_TOOLS/.installed-supabase-cli-$SUPABASE_CLI_VERSION"
  if [ ! -f "$stamp" ]; then
    ew_log "installing supabase CLI $SUPABASE_CLI_VERSION (npm package)"
    mkdir -p "$prefix"
    (cd "$prefix" && [ -f package.json ] || echo '{"private":true}' > package.json)
    (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error --include=optional --save-exact \
      "supabase@$SUPABASE_CLI_VERSION" >/dev/null) || ew_die "npm install supabase failed"
    local got; got="$("$prefix/node_modules/.bin/supabase" --version 2>/dev/null)" \
      || ew_die "the supabase CLI does not run; is its platform package (@supabase/cli-*) installed?"
    [ "$got" = "$SUPABASE_CLI_VERSION" ] || ew_die "supabase CLI $got installed, $SUPABASE_CLI_VERSION pinned"
    touch "$stamp"
  fi
  export EW_SUPABASE_CLI="$prefix/node_modules/.bin/supabase"
}

# plpgsql_check, which `supabase db lint` needs; Debian packages it per major.
ew_ensure_plpgsql_check() {
  if [ ! -f "/usr/share/postgresql/$PG_MAJOR/extension/plpgsql_check.control" ]; then
    ew_log "installing postgresql-$PG_MAJOR-plpgsql-check (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR-plpgsql-check" >/dev/null \
      || ew_die "could not install postgresql-$PG_MAJOR-plpgsql-check"
  fi
}

# wal2json, the logical decoding plugin the gateway's Realtime reads
# postgres_changes with; Debian packages it per major.
ew_ensure_wal2json() {
  if [ ! -f "/usr/lib/postgresql/$PG_MAJOR/lib/wal2json.so" ]; then
    ew_log "installing postgresql-$PG_MAJOR-wal2json (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR-wal2json" >/dev/null \
      || ew_die "could not install postgresql-$PG_MAJOR-wal2json"
  fi
}

# openssl for the TLS shim test (tests/shim/http1.test.ts makes a throwaway CA).
ew_ensure_openssl() {
  if ! command -v openssl >/dev/null; then
    ew_log "installing openssl (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null \
      || ew_die "could not install openssl"
  fi
}

# Chromium for the upload client's browser test (driven by npm playwright-core
# through executablePath; no browser download). Debian's build, pinned by the
# release's archive.
ew_ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    ew_log "installing chromium (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
      || ew_die "could not install chromium"
  fi
}
