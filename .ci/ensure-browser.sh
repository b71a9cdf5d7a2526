#!/usr/bin/env bash
# The browser tests (tests/web_browser.rs) drive Debian's chromium through
# chromedriver (WebDriver). Leave them out with
# `cargo nextest run --profile skip-browser`.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
