#!/usr/bin/env bash
# Benchmarks usher beside nginx and haproxy with ../shared/bench (same run,
# ratios), plus memory figures. Release build. Loopback only.
#   benches/run.sh [forward|holding|memory|idle|poll|all]
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
  # CONNS connections (default 10,000) that each served one request, idle,
  # in each of IDLE_PROTOS (h1, h2c, tls: HTTP/1.1 over TLS, tls-h2), one fresh
  # usher each; then the floor, a bare tokio task per connection.
  tmp=$(mktemp -d) pid=
  trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  { cat benches/forward.toml
    printf '[server.tls]\nlisten = ["127.0.0.1:18106"]\n[[server.tls.certificates]]\n'
    printf 'cert = "%s"\nkey = "%s"\n' "$tmp/cert.pem" "$tmp/key.pem"; } >"$tmp/idle.toml"
  ( cd "$BENCH" && ./origin.sh start >/dev/null 2>&1 ) || true
  for proto in ${IDLE_PROTOS:-h1 h2c tls tls-h2}; do
    "$USHER" run -c "$tmp/idle.toml" & pid=$!
    for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18101/healthz && break; sleep 0.1; done
    port=18100; [[ $proto == tls* ]] && port=18106
    echo -n "usher: "; python3 benches/idle_conns.py $port "$pid" "${CONNS:-10000}" "$proto"
    kill $pid; wait $pid 2>/dev/null || true
  done
  ( cd "$BENCH" && ./origin.sh stop >/dev/null 2>&1 ) || true
  cargo build --release --example idle_floor >/dev/null
  target/release/examples/idle_floor 127.0.0.1:18110 300 & pid=$!
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18110/ && break; sleep 0.1; done
  echo -n "floor: "; python3 benches/idle_conns.py 18110 "$pid" "${CONNS:-10000}"
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$tmp"; trap - EXIT
fi
if [[ $what == poll || $what == all ]]; then
  # POLL_CLIENTS keep-alive visitors (default 15,000) over POLL_PROCS client
  # processes (one loopback source address each, 127.0.0.2...), each takes
  # a ticket and polls /__usher/status every POLL_INTERVAL seconds for
  # POLL_SECONDS. usher's RSS and CPU are read from /proc.
  cargo build --release --example pollers >/dev/null
  POLLERS=$PWD/target/release/examples/pollers
  n=${POLL_CLIENTS:-15000} procs=${POLL_PROCS:-3} every=${POLL_INTERVAL:-5}
  secs=${POLL_SECONDS:-60} ramp=${POLL_RAMP:-15}
  out=$(mktemp -d)
  "$USHER" run -c benches/polling.toml & pid=$!
  trap 'kill $pid 2>/dev/null || true; rm -rf "$out"' EXIT
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18105/healthz && break; sleep 0.1; done
  rss_kib() { awk '/VmRSS/{print $2}' /proc/$pid/status; }
  cpu_ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
  base=$(rss_kib)
  pids=()
  for i in $(seq "$procs"); do
    "$POLLERS" --target 127.0.0.1:18104 --source "127.0.0.$((i + 1))" --clients $((n / procs)) \
      --interval "$every" --ramp "$ramp" --seconds "$secs" --out "$out/lat.$i" >"$out/sum.$i" &
    pids+=($!)
  done
  # CPU over the steady part: every client connected and polling.
  sleep $((ramp + every)); t0=$(cpu_ticks); s0=$(date +%s.%N)
  peak=0 open=0
  while [ "$(echo "$(date +%s.%N) - $s0 < $secs - $ramp - $every - 3" | bc)" = 1 ]; do
    r=$(rss_kib); [ "$r" -gt "$peak" ] && peak=$r
    f=$(ls /proc/$pid/fd | wc -l); [ "$f" -gt "$open" ] && open=$f; sleep 1
  done
  t1=$(cpu_ticks); s1=$(date +%s.%N)
  for p in "${pids[@]}"; do wait "$p"; done
  cat "$out"/sum.*
  python3 - "$out" "$n" "$base" "$peak" "$t0" "$t1" "$s0" "$s1" "$(getconf CLK_TCK)" "$open" "$every" <<'PY'
import glob, os, struct, sys
out, n, base, peak, t0, t1, s0, s1, hz, fds, every = sys.argv[1:]
n, base, peak, hz, fds = int(n), int(base), int(peak), int(hz), int(fds)
lat = []
for f in glob.glob(os.path.join(out, "lat.*")):
    b = open(f, "rb").read()
    lat += struct.unpack(f"<{len(b) // 4}I", b)
lat.sort()
polls = errors = 0
for f in glob.glob(os.path.join(out, "sum.*")):
    kv = dict(x.split("=", 1) for x in open(f).read().split())
    polls += int(kv["polls"]); errors += int(kv["errors"]) + int(kv["no_ticket"])
pct = lambda p: lat[int((len(lat) - 1) * p)] / 1000 if lat else 0
cpu = (int(t1) - int(t0)) / hz / (float(s1) - float(s0))
per = (peak - base) * 1024 / n
print(f"clients={n} polls={polls} answered={len(lat)} errors={errors} "
      f"p50_ms={pct(0.5):.2f} p99_ms={pct(0.99):.2f} max_ms={pct(1.0):.2f}")
print(f"usher: fds_max={fds} rss_base_kib={base} rss_peak_kib={peak} per_client_bytes={per:.0f} "
      f"cpu_cores={cpu:.3f} (steady part, {n / float(every):.0f} polls/s asked)")
print(f"100000 clients (extrapolated, linear): rss_mib={(base * 1024 + per * 100000) / 2**20:.0f} "
      f"cpu_cores={cpu * 100000 / n:.2f}")
PY
  kill $pid; wait $pid 2>/dev/null || true
  trap - EXIT; rm -rf "$out"
fi
