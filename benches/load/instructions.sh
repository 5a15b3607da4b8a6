#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a figure that does not
# move with the load of a shared machine (it leaves out the kernel's share, which the
# throughput runs include). For sluice (LLM inspection on and off) and nginx 1.22, each
# forwarding an OpenAI-style POST to an nginx upstream that answers a fixed JSON body.
#
#   benches/load/instructions.sh            # prints one line per proxy
#   KEEP=benches/load/results benches/load/instructions.sh
#                                           # also keeps each callgrind file there, for
#                                           # callgrind_annotate (where the instructions go)
#
# Each proxy runs twice under callgrind, for N1 and N2 requests (h2load --h1 -c4); the
# difference divided by N2 - N1 is the cost of one request, start-up excluded. Needs
# valgrind, nginx, h2load and curl (installed with apt-get when missing). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${N1:-500}
N2=${N2:-2500}

for tool in valgrind:valgrind nginx:nginx-light h2load:nghttp2-client curl:curl; do
  command -v "${tool%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${tool##*:}"; }
done
# NO_BUILD=1 measures the binaries already in the target directory: set CARGO_TARGET_DIR
# to a copy of an older build to measure it beside this one.
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --bin sluice

work=$(mktemp -d)
pids=()
source benches/load/callgrind_common.sh

body='{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one word."}],"max_tokens":16}'
answer='{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21}}'
echo "$body" > "$work/body.json"

up=$(port)
cat > "$work/upstream.conf" <<EOF
worker_processes 1;
daemon off;
error_log $work/upstream.log warn;
pid $work/upstream.pid;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$up; location / { default_type application/json; return 200 '$answer'; } } }
EOF
nginx -c "$work/upstream.conf" -p "$work" & pids+=($!)
wait_http "http://127.0.0.1:$up/"

# One callgrind run: the command line of the proxy, its port, and the request count.
count() {
  local port=$1 n=$2; local out="$work/cg.$n"; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port/" || { echo "proxy did not start" >&2; exit 1; }
  h2load --h1 -n "$n" -c 4 -t 1 -d "$work/body.json" -H 'content-type: application/json' \
    "http://127.0.0.1:$port/v1/chat/completions" | grep -q "$n succeeded"
  kill -INT "$pid" 2>/dev/null || true; kill -QUIT "$pid" 2>/dev/null || true; wait "$pid" || true
  awk '/^summary/ {print $2}' "$out"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$out" "$KEEP/callgrind.$(basename "$1").$port.$n"; fi
}

per_request() {
  local port=$1; shift
  local a b
  a=$(count "$port" "$N1" "$@")
  b=$(count "$port" "$N2" "$@")
  echo $(( (b - a) / (N2 - N1) ))
}

for llm in auto off; do
  p=$(port)
  sluice_conf "$work/sluice-$llm.toml" "$p" "$(port)" "$up" "$llm"
  echo "sluice (llm = $llm): $(per_request "$p" "${CARGO_TARGET_DIR:-target}/release/sluice" run -c "$work/sluice-$llm.toml") instructions/request"
done

p=$(port)
nginx_conf "$work/nginx.conf" "$p" "$up"
echo "nginx: $(per_request "$p" nginx -c "$work/nginx.conf" -p "$work") instructions/request"
