# Local object storage: s3s-fs (an S3 server over a directory) on loopback.
# Sourced by scripts/serve (after scripts/lib/tools.sh and ew_ensure_s3s):
#
#   ew_s3_start <state_dir> <port>      start (or reuse) s3s-fs on 127.0.0.1:<port>
#   ew_s3_create_buckets <config.toml>  create every [storage.buckets.<name>]
#   ew_s3_env <api_url>                 print S3_ENDPOINT=<api_url>/storage/v1/s3 S3_DIRECT_ENDPOINT=…
#                                       S3_REGION=… S3_ACCESS_KEY_ID=… S3_SECRET_ACCESS_KEY=…
#   ew_s3_policy_env <config.toml>      print STORAGE_BUCKETS=<json> (bucket limits for the functions)
#   ew_s3_stop <state_dir>              stop the server this state dir started
#
# Layout under <state_dir>: s3/keys (generated once, mode 600, so presigned
# URLs and clients stay valid across restarts), s3/data (the objects),
# s3/s3s-fs.log, run/s3.pid.
#
# s3s-fs takes its keys only as --access-key/--secret-key arguments, so they
# are visible in `ps` on this machine; they are local-only throwaway keys.
# It serves path-style requests at the root. Clients use S3_ENDPOINT, the
# gateway's /storage/v1/s3 (as on Supabase): the prefix and the gateway's
# host are part of what they sign, so the gateway verifies each signature
# itself and re-signs the request for s3s-fs (scripts/local/s3_proxy.ts).
# S3_DIRECT_ENDPOINT is s3s-fs itself, for the gateway and bucket setup.

# `local`, the region `supabase status` prints for the local stack's S3.
EW_S3_REGION="${EW_S3_REGION:-local}"
EW_S3_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

_ew_s3_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
_ew_s3_fail() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; return 1; }

_ew_s3_bin() {
  local bin="${EW_TOOLS:-${EDGEWORKS_CACHE:-$HOME/.cache/edgeworks}/tools}/bin/s3s-fs"
  [ -x "$bin" ] || { _ew_s3_fail "s3s-fs not found at $bin (run: source scripts/lib/tools.sh; ew_ensure_s3s)"; return 1; }
  printf '%s\n' "$bin"
}

_ew_s3_random_hex() { # bytes
  od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# Creates <state_dir>/s3/keys once; later runs reuse it.
_ew_s3_keys() {
  local dir="$1/s3"
  mkdir -p "$dir"
  if [ ! -s "$dir/keys" ]; then
    local ak sk
    ak="EWLOCAL$(_ew_s3_random_hex 7 | tr 'a-f' 'A-F')"
    sk="$(_ew_s3_random_hex 20)"
    (umask 077 && printf 'S3_ACCESS_KEY_ID=%s\nS3_SECRET_ACCESS_KEY=%s\n' "$ak" "$sk" >"$dir/keys.tmp")
    mv "$dir/keys.tmp" "$dir/keys"
  fi
  chmod 600 "$dir/keys"
  EW_S3_ACCESS_KEY_ID="$(sed -n 's/^S3_ACCESS_KEY_ID=//p' "$dir/keys")"
  EW_S3_SECRET_ACCESS_KEY="$(sed -n 's/^S3_SECRET_ACCESS_KEY=//p' "$dir/keys")"
  [ -n "$EW_S3_ACCESS_KEY_ID" ] && [ -n "$EW_S3_SECRET_ACCESS_KEY" ] \
    || { _ew_s3_fail "$dir/keys is malformed; delete it to generate new keys"; return 1; }
}

# Any HTTP answer (an unauthenticated GET / is refused with 403) means up.
_ew_s3_answers() { # port
  local code
  code="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

ew_s3_start() { # state_dir port
  local state="$1" port="$2"
  [ -n "$state" ] && [ -n "$port" ] || { _ew_s3_fail "usage: ew_s3_start <state_dir> <port>"; return 1; }
  local bin; bin="$(_ew_s3_bin)" || return 1
  mkdir -p "$state/run" "$state/s3/data"
  state="$(cd "$state" && pwd)"
  _ew_s3_keys "$state" || return 1
  EW_S3_STATE="$state"
  EW_S3_PORT="$port"
  printf '%s\n' "$port" >"$state/s3/port"

  local pidfile="$state/run/s3.pid"
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    if _ew_s3_answers "$port"; then
      _ew_s3_log "s3s-fs already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
      return 0
    fi
    _ew_s3_fail "pid $(cat "$pidfile") from $pidfile is alive but 127.0.0.1:$port does not answer"
    return 1
  fi
  if _ew_s3_answers "$port"; then
    _ew_s3_fail "127.0.0.1:$port is already taken by another process"
    return 1
  fi

  _ew_s3_log "starting s3s-fs on 127.0.0.1:$port (data in $state/s3/data)"
  RUST_LOG="${EW_S3_LOG_LEVEL:-warn}" nohup "$bin" \
    --host 127.0.0.1 --port "$port" \
    --access-key "$EW_S3_ACCESS_KEY_ID" --secret-key "$EW_S3_SECRET_ACCESS_KEY" \
    "$state/s3/data" >>"$state/s3/s3s-fs.log" 2>&1 </dev/null &
  local pid=$!
  printf '%s\n' "$pid" >"$pidfile"

  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$state/s3/s3s-fs.log" >&2
      rm -f "$pidfile"
      _ew_s3_fail "s3s-fs exited during startup (log: $state/s3/s3s-fs.log)"
      return 1
    fi
    if _ew_s3_answers "$port"; then
      return 0
    fi
    sleep 0.1
  done
  _ew_s3_fail "s3s-fs did not answer on 127.0.0.1:$port within 10 s (log: $state/s3/s3s-fs.log)"
  return 1
}

ew_s3_stop() { # state_dir
  local pidfile="$1/run/s3.pid"
  [ -s "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    local i
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

ew_s3_env() { # api_url
  [ -n "${EW_S3_STATE:-}" ] && [ -n "${EW_S3_PORT:-}" ] || { _ew_s3_fail "ew_s3_env: call ew_s3_start first"; return 1; }
  [ -n "${1:-}" ] || { _ew_s3_fail "usage: ew_s3_env <api_url>"; return 1; }
  printf 'S3_ENDPOINT=%s/storage/v1/s3\n' "${1%/}"
  printf 'S3_DIRECT_ENDPOINT=http://127.0.0.1:%s\n' "$EW_S3_PORT"
  printf 'S3_REGION=%s\n' "$EW_S3_REGION"
  printf 'S3_ACCESS_KEY_ID=%s\n' "$EW_S3_ACCESS_KEY_ID"
  printf 'S3_SECRET_ACCESS_KEY=%s\n' "$EW_S3_SECRET_ACCESS_KEY"
}

ew_s3_create_buckets() { # config.toml
  local config="$1"
  [ -f "$config" ] || { _ew_s3_fail "ew_s3_create_buckets: no such file: $config"; return 1; }
  [ -n "${EW_S3_STATE:-}" ] || { _ew_s3_fail "ew_s3_create_buckets: call ew_s3_start first"; return 1; }
  # The keys reach the script through its environment, never argv.
  (
    export S3_ENDPOINT="http://127.0.0.1:$EW_S3_PORT" S3_REGION="$EW_S3_REGION" \
      S3_ACCESS_KEY_ID="$EW_S3_ACCESS_KEY_ID" S3_SECRET_ACCESS_KEY="$EW_S3_SECRET_ACCESS_KEY"
    deno run --quiet --no-prompt --allow-read --allow-net --allow-env "$EW_S3_SCRIPT_DIR/buckets.ts" create "$config"
  )
}

ew_s3_policy_env() { # config.toml
  local json
  json="$(deno run --quiet --no-prompt --allow-read "$EW_S3_SCRIPT_DIR/buckets.ts" policy-json "$1")" || return 1
  printf 'STORAGE_BUCKETS=%s\n' "$json"
}
