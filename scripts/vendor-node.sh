#!/usr/bin/env bash
# Regenerates src/js/node/vendor/ (the embedded third-party node: polyfills)
# from the pinned packages of scripts/node-vendor/package-lock.json. Needs
# Node.js and npm (registry access). Not part of the build or of CI: the
# output is committed.
set -euo pipefail
cd "$(dirname "$0")/node-vendor"
npm ci --no-audit --no-fund --silent
node build.mjs
