#!/usr/bin/env bash
# Makes the prebuilt V8 library available to the `v8` crate without a download.
#
# The v8 crate's build script downloads librusty_v8 from GitHub. Where a copy sits
# beside the checkout (../shared/v8, as on our build machines), put it into cargo's
# download cache under the name the build script looks for, so that plain
# `cargo build` works offline. Elsewhere this does nothing and cargo downloads the
# same archive as usual. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="$here/../shared/v8/librusty_v8_release_x86_64-unknown-linux-gnu.a.gz"
[ -f "$archive" ] || exit 0
cache="${CARGO_HOME:-$HOME/.cargo}/.rusty_v8"
target="$cache/https___github_com_denoland_rusty_v8_releases_download_v134_5_0_librusty_v8_release_x86_64_unknown_linux_gnu_a_gz"
if [ ! -s "$target" ] || ! cmp -s "$archive" "$target"; then
  mkdir -p "$cache"
  cp "$archive" "$target.tmp"
  mv "$target.tmp" "$target"
  echo "setup-v8: using $archive"
fi
