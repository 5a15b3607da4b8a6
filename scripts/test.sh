#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests (a real gateway against real
# upstreams on 127.0.0.1), and the CLI tests of the real binary.
#
# It installs whatever the tests need before running them and never skips a test because
# a dependency is missing: the Rust toolchain (required, not installed here),
# redis-server, which the rate-limit tests start on free ports of 127.0.0.1 (installed with
# apt-get when missing; CI runs as root), and the deployment checks' tools, which
# scripts/check-deploy.sh installs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "cargo is required: install Rust from your distribution or rustup" >&2
  exit 1
fi

if ! need redis-server; then
  echo "redis-server not found: installing it (apt-get install redis-server)" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
need redis-server || { echo "redis-server is required and could not be installed" >&2; exit 1; }

# The deployment files (docker/, k8s/, grafana/), rendered and validated without a cluster or
# a Docker engine. It installs its own pinned tools under target/deploy-tools (PyPI, npm
# and Debian packages) and fails, never skips, when it cannot.
scripts/check-deploy.sh

cargo test --locked -q "$@"
