#!/usr/bin/env bash
# mdBook builds the manual in docs/ (`mdbook build docs`; .ci/run, then
# .ci/check-links.py). Pinned; without its default features (serve, watch,
# search), which CI does not use and which take most of its build time.
set -euo pipefail
version=0.5.4
if mdbook --version 2>/dev/null | grep -qx "mdbook v$version"; then
  exit 0
fi
cargo install mdbook --locked --version "$version" --no-default-features
