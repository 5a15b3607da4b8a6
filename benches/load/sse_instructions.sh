#!/usr/bin/env bash
# User-space instructions per forwarded SSE event, counted by callgrind: what each streamed
# token costs the proxy, in a figure that does not move with the load of a shared machine.
# For sluice (LLM inspection on and off) and nginx 1.22, each forwarding STREAMS streams of
# `sse_bench upstream --openai` (a whole Chat Completions chunk every MS ms).
#
#   benches/load/sse_instructions.sh         # prints one line per proxy
#   KEEP=dir benches/load/sse_instructions.sh
#                                            # also keeps each callgrind file there
#
# Each proxy runs twice under callgrind, for T1 and T2 seconds of streaming; the difference
# in instructions divided by the difference in events the client received is the cost of
# one event, start-up and stream openings excluded. Needs valgrind, nginx and curl
# (installed with apt-get when missing). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
STREAMS=${STREAMS:-50}
MS=${MS:-20}
T1=${T1:-3}
T2=${T2:-9}

for tool in valgrind:valgrind nginx:nginx-light curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${tool##*:}"; }
done
# NO_BUILD=1 measures the binaries already in the target directory: set CARGO_TARGET_DIR
# to a copy of an older build to measure it beside this one.
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --bin sluice --example sse_bench
target=${CARGO_TARGET_DIR:-target}/release
tool=$target/examples/sse_bench

work=$(mktemp -d)
pids=()
source benches/load/callgrind_common.sh

up=$(port)
"$tool" upstream --listen "127.0.0.1:$up" --interval-ms "$MS" --openai >/dev/null & pids+=($!)
wait_port "$up"

# One callgrind run: the proxy's port, a URL that answers once it is up, the seconds to
# stream, then the proxy's command line. Prints its instructions and the events received.
count() {
  local port=$1 ready=$2 hold=$3; shift 3
  local out="$work/cg.$port.$hold"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_http "$ready" || { echo "proxy did not start" >&2; exit 1; }
  local result
  result=$("$tool" client --url "http://127.0.0.1:$port/v1/chat/completions" \
    --streams "$STREAMS" --hold-secs "$hold" | grep '^RESULT')
  kill -INT "$pid" 2>/dev/null || true; kill -QUIT "$pid" 2>/dev/null || true; wait "$pid" || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$out" "$KEEP/callgrind.sse.$(basename "$1").$port.$hold"; fi
  echo "$(awk '/^summary/ {print $2}' "$out") $(echo "$result" | sed 's/.*"events":\([0-9]*\).*/\1/')"
}

per_event() {
  local a ea b eb
  read -r a ea < <(count "$1" "$2" "$T1" "${@:3}")
  read -r b eb < <(count "$1" "$2" "$T2" "${@:3}")
  echo "$(( (b - a) / (eb - ea) )) instructions/event ($ea and $eb events)"
}

for llm in auto off; do
  p=$(port) m=$(port)
  sluice_conf "$work/sluice-$llm.toml" "$p" "$m" "$up" "$llm"
  echo "sluice (llm = $llm): $(per_event "$p" "http://127.0.0.1:$m/healthz" "$target/sluice" run -c "$work/sluice-$llm.toml")"
done

p=$(port)
nginx_conf "$work/nginx.conf" "$p" "$up"
echo "nginx: $(per_event "$p" "http://127.0.0.1:$p/ready" nginx -c "$work/nginx.conf" -p "$work")"
