#!/usr/bin/env bash
# What the migrations must survive before a hosted project sees them, checked
# with the real Supabase CLI on a database of their own:
#   1. an empty database gets only the local baseline, then `supabase db push`
#      (the command `supabase db push` runs against a hosted project);
#   2. `supabase db lint` (plpgsql_check) on every schema the migrations create,
#      plus public: errors fail, warnings are listed;
#   3. types/database.ts must equal `supabase gen types typescript` of it;
#   4. the privilege catalogue test against it, so grants come from the
#      migrations alone and not from anything a running stack did later.
# Run by scripts/test on the test stack's Postgres:
#   scripts/local/migration_checks.sh <postgres URL of any database on the server>
set -euo pipefail
EW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$EW_ROOT"
source scripts/lib/tools.sh
[ $# = 1 ] || ew_die "usage: scripts/local/migration_checks.sh <postgres URL>"
ew_ensure_deno
ew_ensure_postgres
ew_ensure_plpgsql_check
ew_ensure_supabase_cli
export PATH="$PG_BIN:$PATH"

server_url="${1%%\?*}"
fresh_db="ew_fresh_$$"
fresh_url="${server_url%/*}/$fresh_db"
cli_url="$fresh_url?sslmode=disable"
work="$(mktemp -d /tmp/edgeworks-migration-checks.XXXXXX)"
sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  sql "$server_url" -c "drop database if exists $fresh_db with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ew_log "fresh database $fresh_db: baseline, then supabase db push"
sql "$server_url" -c "create database $fresh_db" >/dev/null
sql "$fresh_url" -f scripts/local/baseline.sql >/dev/null
schemas_sql="select nspname from pg_namespace where nspname !~ '^pg_' and nspname <> 'information_schema' order by 1"
sql "$fresh_url" -tA -c "$schemas_sql" > "$work/schemas.baseline"
"$EW_SUPABASE_CLI" db push --remote="$cli_url" --yes --skip-vault >"$work/push.log" 2>&1 \
  || { cat "$work/push.log" >&2; ew_die "supabase db push failed on a fresh database"; }
applied="$(grep -c '^Applying migration' "$work/push.log" || true)"
local_count="$(find supabase/migrations -maxdepth 1 -name '*.sql' | wc -l)"
[ "$applied" = "$local_count" ] \
  || { cat "$work/push.log" >&2; ew_die "supabase db push applied $applied of $local_count migrations"; }
ew_log "  applied $applied migrations"

# The schemas the migrations created: the catalogue after the push minus the
# catalogue after the baseline, plus public (which exists before either).
sql "$fresh_url" -tA -c "$schemas_sql" > "$work/schemas.migrated"
lint_schemas="$( (echo public; comm -13 "$work/schemas.baseline" "$work/schemas.migrated") | sort -u | paste -sd, -)"
ew_log "supabase db lint on schemas: $lint_schemas"
lint_status=0
"$EW_SUPABASE_CLI" db lint --remote="$cli_url" --schema "$lint_schemas" --level warning --fail-on error \
  >"$work/lint.json" 2>"$work/lint.err" || lint_status=$?
# The CLI prints its findings as JSON; one line per finding reads better in a log.
deno run --quiet --no-prompt --allow-read scripts/local/db_lint_report.ts "$work/lint.json" || lint_status=1
if [ "$lint_status" != 0 ]; then
  cat "$work/lint.err" >&2
  ew_die "supabase db lint found errors"
fi

scripts/gen-types --check --db-url "$fresh_url"

if [ -f tests/platform/security/privileges.test.ts ]; then
  ew_log "privilege catalogue on the fresh database"
  EDGEWORKS_DB_URL="$fresh_url" deno test --quiet -A tests/platform/security/privileges.test.ts
else
  ew_log "no tests/platform/security/privileges.test.ts yet; privilege catalogue skipped"
fi
