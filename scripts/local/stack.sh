# The pieces of the local stack, sourced by scripts/serve and scripts/test.
# Requires scripts/lib/tools.sh to be sourced first and EW_ROOT to be set.

EW_STATE="${EDGEWORKS_STATE_DIR:-$EW_ROOT/.local}"
EW_API_PORT="${EDGEWORKS_API_PORT:-54321}"
EW_DB_PORT="${EDGEWORKS_DB_PORT:-54322}"
EW_REST_PORT="${EDGEWORKS_REST_PORT:-54330}"
EW_S3_PORT="${EDGEWORKS_S3_PORT:-54331}"
EW_RUN="$EW_STATE/run"
EW_LOGS="$EW_STATE/logs"

ew_pid_alive() { # name
  local f="$EW_RUN/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

ew_port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ew_wait_port() { # port what [tries of 0.1 s]
  local i
  for ((i = 0; i < ${3:-300}; i++)); do
    ew_port_in_use "$1" && return 0
    sleep 0.1
  done
  ew_log "$2 did not listen on port $1; see $EW_LOGS"
  return 1
}

ew_stack_check_not_running() {
  if ew_pid_alive gateway || ew_pid_alive postrust; then
    ew_die "a stack is already running from $EW_STATE; stop it with: scripts/serve --stop"
  fi
}

ew_stack_check_ports() {
  local p name
  for p in "api:$EW_API_PORT" "db:$EW_DB_PORT" "rest:$EW_REST_PORT" "s3:$EW_S3_PORT"; do
    name="${p%%:*}"; p="${p#*:}"
    if ew_port_in_use "$p"; then
      ew_die "port $p ($name) is already in use; free it or set EDGEWORKS_${name^^}_PORT"
    fi
  done
}

# Postgres refuses to run as root: use the postgres system user (created by
# Debian's package) or the current user when not root.
ew_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    echo postgres
  else
    id -un
  fi
}

ew_as_pg() { # command...
  if [ "$(id -u)" = 0 ]; then runuser -u "$(ew_pg_user)" -- "$@"; else "$@"; fi
}

# The data directory must be reachable by the postgres user; a clone under a
# private home (e.g. /root) is not, so the data then lives under /var/tmp.
ew_pg_data_dir() {
  local want="$EW_STATE/pg"
  if [ "$(id -u)" != 0 ] || runuser -u "$(ew_pg_user)" -- test -x "$EW_STATE" 2>/dev/null; then
    echo "$want"
  else
    echo "/var/tmp/edgeworks-pg-$(echo -n "$EW_STATE" | sha256sum | cut -c1-12)"
  fi
}

ew_psql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$EW_DB_PORT" -U postgres -d postgres "$@"; }

ew_pg_start() { # reset(0/1)
  local data sock fresh=0
  data="$(ew_pg_data_dir)"; sock="$data.sock"
  if [ "$1" = 1 ]; then rm -rf "$data"; fi
  mkdir -p "$sock"; chmod 700 "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    ew_log "initialising Postgres in $data"
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown "$(ew_pg_user)" "$data" "$sock"
    ew_as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$EW_LOGS/initdb.log" 2>&1 \
      || { cat "$EW_LOGS/initdb.log" >&2; return 1; }
    fresh=1
  fi
  [ "$(id -u)" = 0 ] && chown "$(ew_pg_user)" "$sock"
  touch "$EW_LOGS/postgres.log"; [ "$(id -u)" = 0 ] && chown "$(ew_pg_user)" "$EW_LOGS/postgres.log"
  ew_as_pg "$PG_BIN/pg_ctl" -D "$data" -w -t 60 -l "$EW_LOGS/postgres.log" \
    -o "-p $EW_DB_PORT -c listen_addresses=127.0.0.1 -k $sock -c max_connections=200 -c wal_level=logical" start >/dev/null \
    || { tail -20 "$EW_LOGS/postgres.log" >&2; return 1; }
  echo "$data" > "$EW_RUN/pg.data"
  ew_db_setup "$fresh"
}

# Baseline, then the migrations not yet applied (the Supabase CLI's own
# `db push`, which records them in supabase_migrations.schema_migrations),
# then the seed on a fresh database.
ew_db_setup() { # fresh(0/1)
  ew_psql -f scripts/local/baseline.sql >/dev/null
  ew_db_push "postgresql://postgres:postgres@127.0.0.1:$EW_DB_PORT/postgres" || return 1
  if [ "$1" = 1 ] && [ -f supabase/seed.sql ]; then
    ew_log "seed.sql"
    ew_psql -f supabase/seed.sql >/dev/null || return 1
  fi
  ew_psql -c "notify pgrst, 'reload schema'" >/dev/null
}

# `supabase db push` against a database URL: the same command a hosted project
# gets. Loopback Postgres has no TLS; sslmode=disable says so up front, where the
# CLI would otherwise try TLS and print a warning on every run. --skip-vault:
# config.toml declares no Vault secrets and the local baseline has no vault schema.
ew_db_push() { # db-url
  local out
  ew_ensure_supabase_cli
  out="$("$EW_SUPABASE_CLI" db push --remote="$1?sslmode=disable" --yes --skip-vault 2>&1)" \
    || { printf '%s\n' "$out" >&2; ew_log "supabase db push failed"; return 1; }
  printf '%s\n' "$out" | grep -E '^Applying migration' | sed 's/^/    /' >&2 || true
}

ew_spawn() { # name logfile command...
  local name="$1" log="$2"; shift 2
  setsid "$@" >>"$log" 2>&1 < /dev/null &
  echo $! > "$EW_RUN/$name.pid"
}

ew_secret() {
  local f="$EW_STATE/jwt-secret"
  if [ ! -s "$f" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f")
  fi
  cat "$f"
}

ew_functions() {
  local d
  for d in supabase/functions/*/; do
    d="$(basename "$d")"
    [ "${d#_}" = "$d" ] && [ -f "supabase/functions/$d/index.ts" ] && echo "$d"
  done
}

ew_stack_start() { # reset(0/1)
  mkdir -p "$EW_RUN" "$EW_LOGS"
  chmod 755 "$EW_STATE"
  ew_pg_start "$1" || return 1

  local secret keys
  secret="$(ew_secret)"
  keys="$(EW_SECRET="$secret" deno run --quiet --no-prompt --allow-env=EW_SECRET scripts/local/keys.ts \
    "http://127.0.0.1:$EW_API_PORT")" || return 1
  { read -r EW_ANON_KEY; read -r EW_SERVICE_KEY; read -r EW_DEMO_TOKEN; } <<<"$keys"

  ew_spawn postrust "$EW_LOGS/postrust.log" env \
    PGRST_DB_URI="postgres://authenticator:postgres@127.0.0.1:$EW_DB_PORT/postgres" \
    PGRST_DB_SCHEMAS=public PGRST_DB_ANON_ROLE=anon PGRST_JWT_SECRET="$secret" \
    PGRST_SERVER_HOST=127.0.0.1 PGRST_SERVER_PORT="$EW_REST_PORT" PGRST_COMPAT_MODE=true \
    PGRST_DB_CHANNEL_ENABLED=true PGRST_DB_POOL=20 PGRST_LOG_LEVEL=warn RUST_LOG=warn \
    postrust
  ew_wait_port "$EW_REST_PORT" postrust-server || return 1

  local s3_url=""
  if [ -f scripts/local/s3.sh ]; then
    source scripts/local/s3.sh
    ew_s3_start "$EW_STATE" "$EW_S3_PORT" || return 1
    ew_s3_create_buckets supabase/config.toml || return 1
    # The Storage API's view of the same buckets (limits, public), in storage.buckets.
    deno run --quiet --no-prompt --allow-read scripts/local/buckets.ts record-sql supabase/config.toml \
      | ew_psql >/dev/null || return 1
    s3_url="http://127.0.0.1:$EW_S3_PORT"
  fi

  # What every function sees: the Supabase variables, then supabase/functions/.env,
  # then AI/S3/limit settings passed through from this shell.
  # Functions run on the hosted runtime's Deno unless EDGEWORKS_FUNCTIONS_DENO=current.
  local deno_bin
  case "${EDGEWORKS_FUNCTIONS_DENO:-edge}" in
    edge) ew_ensure_deno_edge; deno_bin="$EW_DENO_EDGE" ;;
    current) deno_bin="$(command -v deno)" ;;
    *) ew_log "EDGEWORKS_FUNCTIONS_DENO must be edge or current"; return 1 ;;
  esac
  EDGEWORKS_REST_PORT="$EW_REST_PORT" EW_API_URL="http://127.0.0.1:$EW_API_PORT" EW_SECRET="$secret" EW_ANON_KEY="$EW_ANON_KEY" \
  EW_SERVICE_KEY="$EW_SERVICE_KEY" EW_DENO="$deno_bin" \
  EW_FUNCTIONS_DB_URL="postgresql://postgres:postgres@127.0.0.1:$EW_DB_PORT/postgres" \
  EW_S3_ENV="$( [ -n "$s3_url" ] && ew_s3_env "http://127.0.0.1:$EW_API_PORT" || true)" \
    deno run --quiet --no-prompt --allow-env --allow-read scripts/local/gateway_config.ts \
    > "$EW_RUN/gateway.json.tmp" || return 1
  # It holds the service-role key, the JWT secret and the S3 secret.
  chmod 600 "$EW_RUN/gateway.json.tmp" && mv "$EW_RUN/gateway.json.tmp" "$EW_RUN/gateway.json"

  # EW_DB_URL: the gateway's Realtime reads the WAL (wal_level=logical above)
  # and checks RLS per subscriber as the database owner.
  ew_spawn gateway "$EW_LOGS/gateway.log" env EW_GATEWAY_CONFIG="$EW_RUN/gateway.json" \
    EW_DB_URL="postgresql://postgres:postgres@127.0.0.1:$EW_DB_PORT/postgres" \
    deno run --quiet --no-prompt --allow-net --allow-read --allow-env --allow-run --allow-sys \
    --allow-write="${TMPDIR:-/tmp}" scripts/local/gateway.ts
  ew_wait_port "$EW_API_PORT" gateway 600 || return 1

  cat > "$EW_STATE/env" <<ENV
SUPABASE_URL=http://127.0.0.1:$EW_API_PORT
SUPABASE_ANON_KEY=$EW_ANON_KEY
SUPABASE_SERVICE_ROLE_KEY=$EW_SERVICE_KEY
EDGEWORKS_DEMO_USER_TOKEN=$EW_DEMO_TOKEN
EDGEWORKS_JWT_SECRET=$secret
EDGEWORKS_DB_URL=postgresql://postgres:postgres@127.0.0.1:$EW_DB_PORT/postgres
EDGEWORKS_REST_URL=http://127.0.0.1:$EW_REST_PORT
ENV
  if [ -n "$s3_url" ]; then ew_s3_env "http://127.0.0.1:$EW_API_PORT" >> "$EW_STATE/env"; fi
  # So that a plain `source .local/env` exports them (child processes such as the
  # benches see them); the lines above stay KEY=value for the readers that grep them.
  echo "export $(sed -n 's/^\([A-Z0-9_]*\)=.*/\1/p' "$EW_STATE/env" | tr '\n' ' ')" >> "$EW_STATE/env"
  chmod 600 "$EW_STATE/env"
}

ew_stack_status() {
  [ -f "$EW_STATE/env" ] || ew_die "no stack state in $EW_STATE"
  local line
  echo
  echo "edgeworks local stack is running."
  echo
  while IFS= read -r line; do
    case "$line" in
      SUPABASE_URL=*) printf '%20s: %s\n' "API URL" "${line#*=}"
                      printf '%20s: %s\n' "Functions URL" "${line#*=}/functions/v1" ;;
      EDGEWORKS_DB_URL=*) printf '%20s: %s\n' "DB URL" "${line#*=}" ;;
      EDGEWORKS_JWT_SECRET=*) printf '%20s: %s\n' "JWT secret" "${line#*=}" ;;
      SUPABASE_ANON_KEY=*) printf '%20s: %s\n' "anon key" "${line#*=}" ;;
      SUPABASE_SERVICE_ROLE_KEY=*) printf '%20s: %s\n' "service_role key" "${line#*=}" ;;
      EDGEWORKS_DEMO_USER_TOKEN=*) printf '%20s: %s\n' "demo user token" "${line#*=}" ;;
      S3_ENDPOINT=*) printf '%20s: %s\n' "S3 endpoint" "${line#*=}" ;;
      S3_REGION=*) printf '%20s: %s\n' "S3 region" "${line#*=}" ;;
      S3_DIRECT_ENDPOINT=*) printf '%20s: %s\n' "S3 server (direct)" "${line#*=}" ;;
      S3_ACCESS_KEY_ID=*) printf '%20s: %s\n' "S3 access key" "${line#*=}" ;;
      S3_SECRET_ACCESS_KEY=*) printf '%20s: %s\n' "S3 secret key" "${line#*=}" ;;
    esac
  done < "$EW_STATE/env"
  printf '%20s: %s\n' "demo user" "demo@edgeworks.local (00000000-0000-4000-8000-000000000001)"
  printf '%20s: %s\n' "functions" "$(ew_functions | tr '\n' ' ')"
  printf '%20s: %s\n' "logs" "$EW_LOGS"
  printf '%20s: %s\n' "env file" "$EW_STATE/env"
  echo
}

ew_stop_pid() { # name
  local f="$EW_RUN/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

ew_stack_stop() {
  ew_stop_pid media-worker
  ew_stop_pid gateway
  ew_stop_pid s3
  ew_stop_pid postrust
  if [ -f "$EW_RUN/pg.data" ]; then
    local data; data="$(cat "$EW_RUN/pg.data")"
    if [ -f "$data/postmaster.pid" ]; then
      ew_as_pg "${PG_BIN:-/usr/lib/postgresql/15/bin}/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -f "$EW_RUN/pg.data"
  fi
}
