# Shared by instructions.sh and sse_instructions.sh (sourced, not run): process cleanup,
# free ports, readiness waits, and the sluice and nginx configurations they measure.
# Expects `work` (a scratch directory) and `pids` (an array) to be set by the caller.

cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
# For a server that streams on every path: wait for its port to accept instead.
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# sluice_conf FILE HTTP_PORT MONITOR_PORT UPSTREAM_PORT LLM: one worker, no access log, one
# route to one backend.
sluice_conf() {
  cat > "$1" <<EOF
[listen]
http = "127.0.0.1:$2"
monitor = "127.0.0.1:$3"
[server]
workers = 1
[log]
access_log = false
level = "warn"
[[clusters]]
name = "up"
backends = [{ url = "http://127.0.0.1:$4" }]
[[routes]]
name = "all"
cluster = "up"
llm = "$5"
EOF
}

# nginx_conf FILE PORT UPSTREAM_PORT: one process, a keep-alive pool to the upstream,
# buffering off; `/ready` answers at once, for a readiness wait.
nginx_conf() {
  cat > "$1" <<EOF
worker_processes 1;
master_process off;
daemon off;
error_log $work/nginx.log warn;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location = /ready { return 200; }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF
}
