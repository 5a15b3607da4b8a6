#!/usr/bin/env python3
"""The load-benchmark harness: sluice side by side with nginx and HAProxy, in one run.

Layout (PRODUCT.md): each proxy runs alone on core 0 with one worker thread; the client and
the upstream share core 1. Every scenario interleaves its targets round by round and reports
medians, and each proxy's ratio to nginx measured in the same run.

    benches/load/run.py throughput [--seconds 10] [--rounds 3]   # HTTP/1.1 (wrk) and HTTP/2 (h2load)
                       [--baseline BINARY]                       # and another sluice build beside it
    benches/load/run.py latency    [--seconds 10] [--rounds 3]   # fixed rate at half nginx's maximum
    benches/load/run.py sse        [--streams 1000,5000] [--hold 10] [--interval-ms 100] [--proxies sluice]
    benches/load/run.py websocket  [--tunnels 1000] [--rounds 20]
    benches/load/run.py tls        [--seconds 10] [--rounds 3]   # new TLS handshakes per second
    benches/load/run.py idle                                     # resident memory of an idle gateway
    benches/load/run.py all
    benches/load/run.py <scenario> --sluice BINARY               # measures that build instead

It installs what it needs (wrk, nginx, haproxy, nghttp2-client, openssl) with apt-get when
missing, builds sluice in release mode, starts everything on 127.0.0.1, and stops every
process it started by its PID. It is not part of CI. Results go to stdout (a Markdown table
per scenario) and to benches/load/results/<scenario>-<time>.json.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROXY_CORE = "0"
LOAD_CORE = "1"
CHAT_BODY = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one word."},
        ],
        "max_tokens": 16,
    }
)
CHAT_ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
    }
)
# How long after an SSE burst has closed its resident memory is read again.
AFTER_CLOSE_SECS = 5
TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy", "h2load": "nghttp2-client",
         "openssl": "openssl", "taskset": "util-linux"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        log("installing", " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def build():
    log("building sluice and the load tools (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "sluice", "--example", "sse_bench"],
                   cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release/sluice", target / "release/examples/sse_bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    """Processes started by the harness, stopped by PID."""

    def __init__(self):
        self.procs = []

    def start(self, core, args, **kw):
        proc = subprocess.Popen(["taskset", "-c", core, *map(str, args)], **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


@contextmanager
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.stop_all()


def rss_kib(pid):
    """Resident memory of a process and its children (nginx's master and worker)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---- the systems under test ------------------------------------------------------------------

def nginx_upstream(p, work, port, h2_port):
    conf = work / "upstream.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
error_log {work}/upstream-error.log warn;
pid {work}/upstream.pid;
events {{ worker_connections 20000; }}
worker_rlimit_nofile 20000;
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{h2_port} http2 backlog=4096;
    location / {{
      default_type application/json;
      return 200 '{CHAT_ANSWER}';
    }}
  }}
}}
""")
    proc = p.start(LOAD_CORE, ["nginx", "-c", conf, "-p", work])
    wait_port(port)
    return proc


def sluice(p, binary, work, port, upstream_port, extra_route="", tls=None, upstream_scheme="http",
           https_port=None):
    conf = work / f"sluice-{port}.toml"
    tls_section = ""
    if tls:
        tls_section = f"""
[[certificates]]
name = "bench"
cert = "{tls[0]}"
key = "{tls[1]}"
"""
    conf.write_text(f"""
[listen]
http = "127.0.0.1:{port}"
https = "127.0.0.1:{https_port or free_port()}"
monitor = "127.0.0.1:{free_port()}"
[server]
workers = 1
max_connections = 19000
[log]
access_log = false
level = "warn"
{tls_section}
[[clusters]]
name = "up"
backends = [{{ url = "{upstream_scheme}://127.0.0.1:{upstream_port}" }}]
[[routes]]
name = "all"
cluster = "up"
websocket = true
{extra_route}
""")
    proc = p.start(PROXY_CORE, [binary, "run", "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def nginx_proxy(p, work, port, upstream_port, h2=False, tls=None):
    conf = work / f"nginx-{port}.conf"
    listen = f"listen 127.0.0.1:{port} backlog=4096;"
    if h2:
        listen = f"listen 127.0.0.1:{port} http2 backlog=4096;"
    if tls:
        listen = f"listen 127.0.0.1:{port} ssl backlog=4096; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
    conf.write_text(f"""
worker_processes 1;
daemon off;
error_log {work}/nginx-{port}-error.log warn;
pid {work}/nginx-{port}.pid;
events {{ worker_connections 20000; }}
worker_rlimit_nofile 20000;
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    {listen}
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
}}
""")
    proc = p.start(PROXY_CORE, ["nginx", "-c", conf, "-p", work])
    wait_port(port)
    return proc


def haproxy(p, work, port, upstream_port, h2=False, tls=None):
    conf = work / f"haproxy-{port}.cfg"
    bind = f"bind 127.0.0.1:{port}" + (" proto h2" if h2 else "")
    if tls:
        bind = f"bind 127.0.0.1:{port} ssl crt {tls[2]}"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 9000
  tune.bufsize 16384
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  option http-keep-alive
  http-reuse always
frontend fe
  {bind}
  option http-no-delay
  default_backend be
backend be
  option http-no-delay
  server up 127.0.0.1:{upstream_port} maxconn 9000
""")
    proc = p.start(PROXY_CORE, ["haproxy", "-f", conf])
    wait_port(port)
    return proc


# ---- clients ---------------------------------------------------------------------------------

def wrk(url, seconds, connections=64, extra=()):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", HERE / "post.lua", *extra, url],
        capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def h2load(url, seconds, work, connections=64, h1=False, rps=None):
    body = work / "body.json"
    body.write_text(CHAT_BODY)
    logfile = work / "h2load.log"
    args = ["taskset", "-c", LOAD_CORE, "h2load", "-t1", f"-c{connections}", "-m1",
            f"-D{seconds}", "--warm-up-time=1", "-d", body, "-H", "content-type: application/json",
            "--log-file", logfile]
    if h1:
        args.append("--h1")
    if rps:
        args.append(f"--rps={rps / connections:.3f}")
    out = subprocess.run([*map(str, args), url], capture_output=True, text=True, check=True).stdout
    done = next(l for l in out.splitlines() if "requests:" in l and "total" in l)
    succeeded = int(done.split("succeeded,")[0].split()[-1])
    durations = []
    for line in logfile.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "200":
            durations.append(int(parts[2]))
    durations.sort()
    pct = lambda q: durations[int((len(durations) - 1) * q)] if durations else 0
    return {"requests": succeeded, "rps": succeeded / seconds, "p50_us": pct(0.5),
            "p99_us": pct(0.99), "p999_us": pct(0.999)}


def median_of(rounds, key):
    return statistics.median(r[key] for r in rounds)


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save(name, data):
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    log("saved", path.relative_to(ROOT))


# ---- scenarios -------------------------------------------------------------------------------

def throughput(args, binary):
    with procs() as p, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up, up_h2 = free_port(), free_port()
        nginx_upstream(p, work, up, up_h2)
        ports = {"sluice": free_port(), "sluice (llm off)": free_port(), "nginx": free_port(),
                 "haproxy": free_port()}
        sluice(p, binary, work, ports["sluice"], up)
        sluice(p, binary, work, ports["sluice (llm off)"], up, extra_route='llm = "off"')
        if args.baseline:
            # Another build of sluice beside this one, for a before-and-after in one run.
            ports["baseline"] = free_port()
            sluice(p, args.baseline, work, ports["baseline"], up)
            ports["baseline (llm off)"] = free_port()
            sluice(p, args.baseline, work, ports["baseline (llm off)"], up, extra_route='llm = "off"')
        nginx_proxy(p, work, ports["nginx"], up)
        haproxy(p, work, ports["haproxy"], up)
        h2_ports = {"sluice": ports["sluice"], "nginx": free_port(), "haproxy": free_port()}
        nginx_proxy(p, work, h2_ports["nginx"], up, h2=True)
        haproxy(p, work, h2_ports["haproxy"], up, h2=True)
        targets = {"direct": up, **ports}
        h1 = {name: [] for name in targets}
        h2 = {name: [] for name in ["direct", *h2_ports]}
        path = "/v1/chat/completions"
        for r in range(args.rounds):
            for name, port in targets.items():
                h1[name].append(wrk(f"http://127.0.0.1:{port}{path}", args.seconds))
                log(f"round {r + 1} http/1.1 {name}: {h1[name][-1]['rps']:.0f} req/s")
            for name, port in {"direct": up_h2, **h2_ports}.items():
                h2[name].append(h2load(f"http://127.0.0.1:{port}{path}", args.seconds, work))
                log(f"round {r + 1} h2c {name}: {h2[name][-1]['rps']:.0f} req/s")
    results = {}
    for proto, data in [("http/1.1 (wrk -t1 -c64)", h1), ("h2c (h2load -t1 -c64 -m1)", h2)]:
        nginx_rps = median_of(data["nginx"], "rps")
        rows = []
        for name, rounds in data.items():
            rps = median_of(rounds, "rps")
            rows.append([name, f"{rps:,.0f}", f"{median_of(rounds, 'p50_us') / 1000:.2f}",
                         f"{median_of(rounds, 'p99_us') / 1000:.2f}",
                         f"{median_of(rounds, 'p999_us') / 1000:.2f}", f"{rps / nginx_rps:.2f}"])
        print(f"\n### Throughput, {proto}, medians of {args.rounds} interleaved rounds of {args.seconds}s\n")
        print(table(["target", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "× nginx"], rows))
        results[proto] = data
    save("throughput", results)


def latency(args, binary):
    with procs() as p, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up, up_h2 = free_port(), free_port()
        nginx_upstream(p, work, up, up_h2)
        ports = {"sluice": free_port(), "nginx": free_port(), "haproxy": free_port()}
        sluice(p, binary, work, ports["sluice"], up)
        nginx_proxy(p, work, ports["nginx"], up)
        haproxy(p, work, ports["haproxy"], up)
        path = "/v1/chat/completions"
        peak = statistics.median(
            wrk(f"http://127.0.0.1:{ports['nginx']}{path}", args.seconds)["rps"] for _ in range(2))
        rate = peak / 2
        log(f"nginx peak {peak:.0f} req/s; fixed rate {rate:.0f} req/s")
        data = {name: [] for name in ["direct", *ports]}
        for r in range(args.rounds):
            for name, port in {"direct": up, **ports}.items():
                data[name].append(h2load(f"http://127.0.0.1:{port}{path}", args.seconds, work,
                                         h1=True, rps=rate))
                log(f"round {r + 1} {name}: p50 {data[name][-1]['p50_us']}us p99 {data[name][-1]['p99_us']}us")
    base50, base99 = median_of(data["direct"], "p50_us"), median_of(data["direct"], "p99_us")
    rows = []
    for name, rounds in data.items():
        p50, p99 = median_of(rounds, "p50_us"), median_of(rounds, "p99_us")
        added = "—" if name == "direct" else f"+{(p50 - base50) / 1000:.3f} / +{(p99 - base99) / 1000:.3f}"
        rows.append([name, f"{median_of(rounds, 'rps'):,.0f}", f"{p50 / 1000:.3f}", f"{p99 / 1000:.3f}", added])
    print(f"\n### Latency at a fixed {rate:,.0f} req/s (half nginx's peak), HTTP/1.1, h2load --rps, "
          f"medians of {args.rounds} rounds\n")
    print(table(["target", "req/s", "p50 ms", "p99 ms", "added p50 / p99 ms"], rows))
    save("latency", {"rate": rate, "data": data})


def sse(args, binary, tool):
    results = {}
    for n in [int(x) for x in args.streams.split(",")]:
        rows = []
        for name in args.proxies.split(","):
            with procs() as p, tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                up = free_port()
                p.start(LOAD_CORE, [tool, "upstream", "--listen", f"127.0.0.1:{up}",
                                    "--interval-ms", args.interval_ms], stdout=subprocess.DEVNULL)
                wait_port(up)
                port = free_port()
                proxy = {"sluice": lambda: sluice(p, binary, work, port, up),
                         "nginx": lambda: nginx_proxy(p, work, port, up),
                         "haproxy": lambda: haproxy(p, work, port, up)}[name]()
                time.sleep(1)
                idle = rss_kib(proxy.pid)
                client = p.start(LOAD_CORE, [tool, "client", "--url",
                                             f"http://127.0.0.1:{port}/v1/chat/completions",
                                             "--streams", n, "--hold-secs", args.hold],
                                 stdout=subprocess.PIPE, text=True)
                established = client.stdout.readline().strip()
                time.sleep(args.hold / 2)
                held = rss_kib(proxy.pid)
                out = client.stdout.read()
                client.wait()
                # What the burst leaves behind once every stream has closed: freed memory
                # handed back to the OS, or kept.
                time.sleep(AFTER_CLOSE_SECS)
                after = rss_kib(proxy.pid)
                result = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
                result.update(idle_kib=idle, held_kib=held, per_stream_kib=(held - idle) / n,
                              after_kib=after, established=established)
                log(f"{n} streams via {name}: {result}")
                results[f"{n}/{name}"] = result
                rows.append([name, result["streams"], f"{result['per_stream_kib']:.1f}",
                             f"{result['p50_us'] / 1000:.2f}", f"{result['p99_us'] / 1000:.2f}",
                             result["coalesced"], result["errors"], f"{idle / 1024:.1f}",
                             f"{after / 1024:.1f}"])
        print(f"\n### SSE, {n} concurrent streams, an event every {args.interval_ms} ms, held {args.hold}s\n")
        print(table(["proxy", "streams", "KiB per stream", "latency p50 ms", "latency p99 ms",
                     "coalesced frames", "errors", "RSS before MiB",
                     f"RSS {AFTER_CLOSE_SECS}s after close MiB"], rows))
    save("sse", results)


def websocket(args, binary, tool):
    rows, results = [], {}
    for name in ["sluice", "nginx", "haproxy"]:
        with procs() as p, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            up = free_port()
            p.start(LOAD_CORE, [tool, "upstream", "--listen", f"127.0.0.1:{up}", "--interval-ms", 1000],
                    stdout=subprocess.DEVNULL)
            wait_port(up)
            port = free_port()
            proxy = {"sluice": lambda: sluice(p, binary, work, port, up),
                     "nginx": lambda: nginx_proxy(p, work, port, up),
                     "haproxy": lambda: haproxy(p, work, port, up)}[name]()
            time.sleep(1)
            idle = rss_kib(proxy.pid)
            client = p.start(LOAD_CORE, [tool, "ws", "--url", f"ws://127.0.0.1:{port}/ws",
                                         "--tunnels", args.tunnels, "--rounds", args.ws_rounds],
                             stdout=subprocess.PIPE, text=True)
            client.stdout.readline()
            client.stdout.readline()  # holding
            held = rss_kib(proxy.pid)
            out = client.stdout.read()
            client.wait()
            result = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
            result.update(per_tunnel_kib=(held - idle) / max(result["tunnels"], 1))
            results[name] = result
            rows.append([name, result["tunnels"], f"{result['per_tunnel_kib']:.1f}",
                         f"{result['p50_us'] / 1000:.3f}", f"{result['p99_us'] / 1000:.3f}"])
    print(f"\n### WebSocket echo through the tunnel, {args.tunnels} tunnels × {args.ws_rounds} round trips\n")
    print(table(["proxy", "tunnels", "KiB per tunnel", "RTT p50 ms", "RTT p99 ms"], rows))
    save("websocket", results)


def tls(args, binary):
    with procs() as p, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cert, key, pem = work / "cert.pem", work / "key.pem", work / "both.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        pem.write_text(cert.read_text() + key.read_text())
        up, up_h2 = free_port(), free_port()
        nginx_upstream(p, work, up, up_h2)
        # Each port from the kernel: `sl + 1` could be a port another process holds.
        sl, sl_https = free_port(), free_port()
        sluice(p, binary, work, sl, up, tls=(cert, key), https_port=sl_https)
        ports = {"sluice": sl_https, "nginx": free_port(), "haproxy": free_port()}
        wait_port(ports["sluice"])
        nginx_proxy(p, work, ports["nginx"], up, tls=(cert, key))
        haproxy(p, work, ports["haproxy"], up, tls=(cert, key, pem))
        data = {name: [] for name in ports}
        for r in range(args.rounds):
            for name, port in ports.items():
                # Connection: close makes every request a new connection and a full handshake.
                result = wrk(f"https://localhost:{port}/v1/chat/completions", args.seconds,
                             connections=16, extra=("-H", "Connection: close"))
                data[name].append(result)
                log(f"round {r + 1} {name}: {result['rps']:.0f} handshakes/s")
    nginx_rps = median_of(data["nginx"], "rps")
    rows = [[name, f"{median_of(rounds, 'rps'):,.0f}", f"{median_of(rounds, 'rps') / nginx_rps:.2f}"]
            for name, rounds in data.items()]
    print(f"\n### New TLS handshakes per second (ECDSA P-256, TLS 1.3, wrk -c16 with Connection: close), "
          f"medians of {args.rounds} rounds\n")
    print(table(["proxy", "handshakes/s", "× nginx"], rows))
    save("tls", data)


def idle(args, binary):
    with procs() as p, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        up, up_h2 = free_port(), free_port()
        nginx_upstream(p, work, up, up_h2)
        port = free_port()
        proc = sluice(p, binary, work, port, up)
        wrk(f"http://127.0.0.1:{port}/v1/chat/completions", 3)
        time.sleep(2)
        after_load = rss_kib(proc.pid)
    with procs() as p, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        proc = sluice(p, binary, work, port, free_port())
        time.sleep(1)
        fresh = rss_kib(proc.pid)
    print("\n### Resident memory of sluice (workers = 1)\n")
    print(table(["state", "RSS MiB"], [["idle, just started", f"{fresh / 1024:.1f}"],
                                       ["idle, after 3s of load at 64 connections", f"{after_load / 1024:.1f}"]]))
    save("idle", {"fresh_kib": fresh, "after_load_kib": after_load})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["throughput", "latency", "sse", "websocket", "tls", "idle", "all"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1000,5000")
    parser.add_argument("--hold", type=int, default=10)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--proxies", default="sluice,nginx,haproxy",
                        help="sse: which proxies to run, e.g. `sluice` alone to iterate faster")
    parser.add_argument("--baseline", type=Path,
                        help="throughput: another sluice binary to measure beside this build")
    parser.add_argument("--sluice", type=Path,
                        help="measure this sluice binary instead of this tree's build (an "
                             "older build copied aside, for a before-and-after)")
    parser.add_argument("--tunnels", type=int, default=1000)
    parser.add_argument("--ws-rounds", type=int, default=20)
    args = parser.parse_args()
    if os.cpu_count() < 2:
        sys.exit("needs two cores: one for the proxy, one for the client and upstream")
    ensure_tools()
    binary, tool = build()
    binary = args.sluice or binary
    scenarios = ["idle", "throughput", "latency", "sse", "websocket", "tls"] if args.scenario == "all" else [args.scenario]
    for name in scenarios:
        if name in ("sse", "websocket"):
            globals()[name](args, binary, tool)
        else:
            globals()[name](args, binary)


if __name__ == "__main__":
    main()
