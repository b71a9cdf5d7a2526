#!/usr/bin/env bash
# ensure-bwrap.sh: bubblewrap (`bwrap`) for the sandboxed local pools'
# tests (`sandbox = "bwrap"`), installed from Debian when missing; then a
# probe that a sandbox with its own PID and network namespaces starts here.
set -euo pipefail
if ! command -v bwrap >/dev/null 2>&1; then
    echo "ensure-bwrap: installing bubblewrap" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends bubblewrap >&2
fi
if ! bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --unshare-net \
        --die-with-parent true 2>/tmp/ensure-bwrap.err; then
    echo "ensure-bwrap: bwrap is installed but cannot start a sandbox here:" >&2
    cat /tmp/ensure-bwrap.err >&2
    exit 1
fi
echo "ensure-bwrap: $(bwrap --version)" >&2
