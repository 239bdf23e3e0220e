#!/usr/bin/env bash
# cpu_per_request.sh URL PID... -- CPU time each server process spends per
# request: reads utime and stime (/proc/PID/stat, all threads), runs one wrk
# against URL (loopback only) on CPU 1, reads them again and divides by the
# requests wrk counted. Start the servers pinned to CPU 0 first.
#   env: C [64] connections, D [5s] duration.
# Example (usher and nginx's proxy beside it, the harness's peers running):
#   benches/cpu_per_request.sh http://127.0.0.1:18100/ $(pgrep -f forward.toml)
set -euo pipefail
url=$1; shift
case "$url" in http://127.0.0.1:*|http://localhost:*) ;; *) echo "loopback URLs only: $url" >&2; exit 2 ;; esac
tick=$(getconf CLK_TCK)
declare -A u0 s0
for p in "$@"; do read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat"); u0[$p]=$u; s0[$p]=$s; done
out=$(taskset -c 1 wrk -t2 -c"${C:-64}" -d"${D:-5s}" "$url" 2>&1)
reqs=$(awk '/requests in/{print $1}' <<<"$out")
rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
echo "rps=$rps requests=$reqs"
for p in "$@"; do
  read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
  awk -v n="$(cat "/proc/$p/comm")" -v p="$p" -v du=$((u - u0[$p])) -v ds=$((s - s0[$p])) \
      -v r="$reqs" -v t="$tick" \
      'BEGIN{printf "  %s(%s): user %.2f us/request, sys %.2f us/request\n", n, p, du/t*1e6/r, ds/t*1e6/r}'
done
