#!/usr/bin/env bash
# Benchmarks usher beside nginx and haproxy with ../shared/bench (same run,
# ratios), plus memory figures. Release build. Loopback only.
#   benches/run.sh [forward|holding|memory|idle|all]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-../shared/bench}
what=${1:-all}
cargo build --release --bin usher >/dev/null
USHER=$PWD/target/release/usher
# The admin token of holding.toml (its /admin/status is read below).
[[ -s benches/admin.token ]] || (umask 077 && openssl rand -hex 32 > benches/admin.token)
ADMIN_AUTH="Authorization: Bearer $(cat benches/admin.token)"

if [[ $what == forward || $what == all ]]; then
  EXTRA_START="$USHER run -c $PWD/benches/forward.toml" EXTRA_PORT=18100 \
    "$BENCH/compare.sh" nginx-proxy http://127.0.0.1:18100/ haproxy
fi
if [[ $what == holding || $what == all ]]; then
  EXTRA_START="$USHER run -c $PWD/benches/holding.toml" EXTRA_PORT=18102 \
    "$BENCH/compare.sh" nginx-holding http://127.0.0.1:18102/
fi
if [[ $what == memory || $what == all ]]; then
  # A million tickets: RSS before and after, from one usher process.
  "$USHER" run -c benches/holding.toml & pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18103/healthz && break; sleep 0.1; done
  curl -s -o /dev/null http://127.0.0.1:18102/   # warm: first ticket, pages built
  before=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  n=${TICKETS:-1000000}
  # wrk keeps no cookies: every request is a new visitor and a new ticket
  lua=$(mktemp); cat >"$lua" <<LUA
local n = 0
request = function() n = n + 1; return wrk.format("GET", "/") end
LUA
  taskset -c 1 wrk -t2 -c64 -d120s -s "$lua" http://127.0.0.1:18102/ >/dev/null &
  wrkpid=$!
  while kill -0 $wrkpid 2>/dev/null; do
    issued=$(curl -s -H "$ADMIN_AUTH" http://127.0.0.1:18103/admin/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["room"]["issued"])')
    [ "$issued" -ge "$n" ] && { kill $wrkpid; break; }
    sleep 1
  done
  wait $wrkpid 2>/dev/null || true
  after=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  status=$(curl -s -H "$ADMIN_AUTH" http://127.0.0.1:18103/admin/status)
  issued=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["room"]["issued"])' "$status")
  line=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["room"]["line_memory_bytes"])' "$status")
  echo "tickets_issued=$issued rss_before_kib=$before rss_after_kib=$after rss_growth_mib=$(( (after - before) / 1024 )) line_memory_bytes=$line"
  kill $pid; wait $pid 2>/dev/null || true
  trap - EXIT
fi
if [[ $what == idle || $what == all ]]; then
  "$USHER" run -c benches/forward.toml & pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18101/healthz && break; sleep 0.1; done
  ( cd "$BENCH" && ./origin.sh start >/dev/null 2>&1 ) || true
  python3 benches/idle_conns.py 18100 "$pid" "${CONNS:-10000}"
  ( cd "$BENCH" && ./origin.sh stop >/dev/null 2>&1 ) || true
  kill $pid; wait $pid 2>/dev/null || true
fi
