#!/usr/bin/env bash
# sluice's heap while it holds N SSE streams, counted by heaptrack: the peak while the
# streams open (a burst: every stream's request state, upstream connect and first event at
# once) and what stays allocated while they are held, each per stream, with the call sites
# that hold the most. sluice is killed (SIGKILL) halfway through the hold, so that everything
# allocated at that moment shows in heaptrack's report as never freed.
#
#   benches/load/sse_heap.sh                       # 2,000 streams, an event every 1,000 ms
#   N=5000 INTERVAL_MS=100 benches/load/sse_heap.sh
#   NO_BUILD=1 CARGO_TARGET_DIR=<dir> benches/load/sse_heap.sh
#                                                  # the binaries already in <dir>/release,
#                                                  # e.g. an older build copied aside
#
# Resident memory (`run.py sse`) is this heap plus what the allocator has not handed back;
# this script tells the two apart. Needs heaptrack (installed with apt-get when missing).
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-2000}
INTERVAL_MS=${INTERVAL_MS:-1000}
HOLD=${HOLD:-8}

for tool in heaptrack:heaptrack heaptrack_print:heaptrack curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${tool##*:}"; }
done
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --bin sluice --example sse_bench
release=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
pids=()
source benches/load/callgrind_common.sh
ulimit -n 20000

up=$(port)
"$release/examples/sse_bench" upstream --listen "127.0.0.1:$up" --interval-ms "$INTERVAL_MS" \
  >/dev/null & pids+=($!)
wait_port "$up"
p=$(port)
sluice_conf "$work/sluice.toml" "$p" "$(port)" "$up" auto
sed -i 's/^workers = 1$/workers = 1\nmax_connections = 19000/' "$work/sluice.toml"
heaptrack -o "$work/heap" "$release/sluice" run -c "$work/sluice.toml" >/dev/null 2>&1 &
tracer=$!
wait_port "$p"

"$release/examples/sse_bench" client --url "http://127.0.0.1:$p/v1/chat/completions" \
  --streams "$N" --hold-secs "$HOLD" >"$work/client.out" & pids+=($!)
# The client's first line says that every stream is open.
until grep -q established "$work/client.out"; do sleep 0.1; done
head -1 "$work/client.out"
sleep $((HOLD / 2))
kill -KILL "$(pgrep -P "$tracer" -x sluice)"
wait "$tracer" || true

report=$work/report.txt
heaptrack_print -f "$work"/heap*.zst --print-leaks 1 --print-peaks 0 --print-allocators 0 \
  --print-temporary 0 --merge-backtraces 0 --peak-limit 12 >"$report" 2>/dev/null
# heaptrack prints sizes in powers of 1,000: 7.52M, 512.00K, 336B.
per_stream() { awk -v n="$N" '{ v = $0 + 0; u = substr($0, length($0)); f = (u == "K") ? 1e3 : (u == "M") ? 1e6 : (u == "G") ? 1e9 : 1; printf "%.2f KiB per stream", v * f / 1024 / n }'; }
peak=$(awk '/^peak heap memory consumption:/ {print $5}' "$report")
live=$(awk '/^total memory leaked:/ {print $4}' "$report")
echo "peak heap while opening: $peak, $(echo "$peak" | per_stream)"
echo "heap while holding:      $live, $(echo "$live" | per_stream)"
echo "what holds it (size over allocations, first frames of sluice, tokio, http or bytes):"
awk '/leaked over/ { print "  " $1 " over " $4; n = 0; next }
     /^ *at / { next }
     n < 2 && /(sluice|tokio|http|bytes)::/ { print "      " $1; n++ }' "$report" |
  sed -E 's/::h[0-9a-f]{16}$//; s/_\$u7b\$\$u7b\$closure\$u7d\$\$u7d\$/{{closure}}/g;
          s/\$LT\$/</g; s/\$GT\$/>/g; s/\$C\$/,/g; s/\$u20\$/ /g' | head -40
