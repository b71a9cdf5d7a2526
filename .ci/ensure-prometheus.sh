#!/usr/bin/env bash
# The /metrics test (tests/web_metrics.rs) starts a real Prometheus
# (Debian's package) that scrapes `flocks serve`. Leave it out with
# `cargo nextest run --profile skip-prometheus`.
set -euo pipefail
if ! command -v prometheus >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
fi
# The package's service is not needed: the test starts its own server.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
