#!/usr/bin/env bash
# Installs the pinned esbuild (the bundler `edged deploy <dir>` runs, the
# version wrangler 4 pins) from the npm registry into a private directory and
# prints that directory, for EDGED_ESBUILD_PATH. Idempotent; needs Node.js and
# npm, and the npm registry on the first run.
set -euo pipefail
VERSION=0.28.2
DIR="${EDGED_TOOLS_DIR:-$HOME/.cache/edged}/esbuild-$VERSION"
if ! [ -f "$DIR/node_modules/esbuild/package.json" ] ||
  ! grep -q "\"version\": \"$VERSION\"" "$DIR/node_modules/esbuild/package.json"; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo '{"name":"edged-tools","private":true}' >"$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --silent "esbuild@$VERSION" >&2
fi
node -e "require('$DIR/node_modules/esbuild').build" >&2
echo "$DIR"
