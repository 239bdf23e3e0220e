#!/usr/bin/env bash
# instructions_per_request.sh BIN CONFIG PORT [PATH] -- instructions the
# server executes per request, counted by valgrind's callgrind: the one
# figure here the shared machine's noise does not move. Runs BIN with
# CONFIG under callgrind on CPU 0, warms it with wrk (2 s, CPU 1), zeroes
# the counters, counts over an 8 s wrk run at C connections (64), and divides
# by the requests wrk made. Loopback only. Needs valgrind (apt-get install
# valgrind). Start the harness's origin first when CONFIG forwards.
#   benches/instructions_per_request.sh target/release/usher benches/forward.toml 18100
# Under valgrind, SHA-256 runs its portable code (valgrind hides the CPU's
# SHA extensions): compare binaries with each other, not with a real run.
set -euo pipefail
bin=$(realpath "$1"); conf=$(realpath "$2"); port=$3; path=${4:-/}
url="http://127.0.0.1:$port$path"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$(dirname "$conf")" && exec taskset -c 0 valgrind --tool=callgrind \
  --callgrind-out-file="$out/cg.%p" "$bin" run -c "$conf" >"$out/server.log" 2>&1) &
vg=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "$url" && break; sleep 0.3; done
pid=$(pgrep -f -n "callgrind.*$conf") || pid=$vg
taskset -c 1 wrk -t1 -c"${C:-64}" -d2s "$url" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
run=$(taskset -c 1 wrk -t1 -c"${C:-64}" -d8s "$url")
n=$(awk '/requests in/{print $1}' <<<"$run")
# An error answer (say, the origin down) costs other instructions: count
# only runs where every answer was 2xx or 3xx.
if grep -q 'Non-2xx' <<<"$run"; then
  echo "refusing the count: $(grep 'Non-2xx' <<<"$run" | xargs) of $n (is the origin up?)" >&2
  bad=1
fi
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
kill "$pid" 2>/dev/null; wait "$vg" 2>/dev/null || true
f=$(ls "$out"/cg.*.1 | head -1)
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
[ -z "${bad:-}" ] || exit 1
echo "$(basename "$bin") $(basename "$conf") requests=$n instructions=$ir per_request=$((ir / n))"
