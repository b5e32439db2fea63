#!/usr/bin/env bash
# Builds edged (release) and runs it with the given arguments, e.g.
#   scripts/run.sh dev examples/hello/worker.js
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-v8.sh
exec cargo run --release --quiet -- "$@"
