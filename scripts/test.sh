#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests (a real gateway against real
# upstreams on 127.0.0.1), and the CLI tests of the real binary.
#
# It installs whatever the tests need before running them and never skips a test because
# a dependency is missing. Today the suite needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "cargo is required: install Rust from your distribution or rustup" >&2
  exit 1
fi

cargo test --locked -q "$@"
