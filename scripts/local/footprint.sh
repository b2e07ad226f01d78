#!/usr/bin/env bash
# Resident memory of a running local stack, and what it would be with N
# functions (default 19: every function the five seeds name, plus health).
#   scripts/local/footprint.sh [N]      (EDGEWORKS_STATE_DIR selects the stack, default .local)
# Warm the functions first (one request each) for the figure the README gives.
set -euo pipefail
EW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="${EDGEWORKS_STATE_DIR:-$EW_ROOT/.local}"
want="${1:-19}"
[ -f "$state/run/gateway.pid" ] || { echo "no running stack in $state" >&2; exit 1; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

gateway="$(cat "$state/run/gateway.pid")"
fn_kb=0 fn_n=0 rest_kb=0
for pid in $(pgrep -P "$gateway"); do
  if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'function_entry\.ts'; then
    fn_kb=$((fn_kb + $(rss_kb "$pid"))); fn_n=$((fn_n + 1))
  else
    rest_kb=$((rest_kb + $(rss_kb "$pid")))
  fi
done
rest_kb=$((rest_kb + $(rss_kb "$gateway")))
for name in postrust s3; do
  [ -f "$state/run/$name.pid" ] && rest_kb=$((rest_kb + $(rss_kb "$(cat "$state/run/$name.pid")")))
done
if [ -f "$state/run/pg.data" ]; then
  pm="$(head -1 "$(cat "$state/run/pg.data")/postmaster.pid")"
  for pid in "$pm" $(pgrep -P "$pm"); do rest_kb=$((rest_kb + $(rss_kb "$pid"))); done
fi
[ "$fn_n" -gt 0 ] || { echo "no function processes under the gateway" >&2; exit 1; }
per=$((fn_kb / fn_n))
printf 'functions: %d processes, %d MB (%d MB each)\n' "$fn_n" $((fn_kb / 1024)) $((per / 1024))
printf 'the rest (Postgres, PostgREST, S3, gateway): %d MB\n' $((rest_kb / 1024))
printf 'stack now: %d MB RSS\n' $(((fn_kb + rest_kb) / 1024))
printf 'projected with %d functions: %d MB RSS\n' "$want" $(((rest_kb + want * per) / 1024))
