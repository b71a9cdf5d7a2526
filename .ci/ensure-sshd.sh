#!/usr/bin/env bash
# The SSH backend's tests start their own sshd processes on 127.0.x.y (see
# tests/support/sshd.rs): they need OpenSSH's server and client binaries and
# sshd's privilege-separation directory. No system sshd is started.
set -euo pipefail
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
  # Keep apt from starting a system sshd on :22 (it would take 127.0.x.y:22
  # from the tests) where an init system would do so.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    openssh-server openssh-client
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd
