#!/usr/bin/env bash
# ensure-docker.sh — make sure a Docker Engine answers `docker info`.
#
# Usage:  bash ensure-docker.sh            (or: source it and call ensure_docker)
#
# - If `docker info` already answers: does nothing (exit 0).
# - Else: installs docker.io from Debian (apt-get update first) when dockerd is
#   missing, starts dockerd in the background and waits up to
#   ENSURE_DOCKER_TIMEOUT (60) seconds for `docker info`.
#
# Environment knobs (all optional):
#   ENSURE_DOCKER_LOG      dockerd log file          (/var/log/flocks-dockerd.log)
#   ENSURE_DOCKER_PIDFILE  dockerd pidfile           (/var/run/flocks-dockerd.pid)
#   ENSURE_DOCKER_TIMEOUT  seconds to wait           (60)
#   ENSURE_DOCKER_HOST     socket to serve, e.g. unix:///tmp/d2.sock (default: the
#                          standard /var/run/docker.sock; DOCKER_HOST is honoured
#                          by the `docker info` probes as usual)
#   ENSURE_DOCKER_CONFIG   daemon config file        (/etc/docker/daemon.json)
#   ENSURE_DOCKER_EXTRA    extra dockerd args (word-split), e.g.
#                          "--data-root /tmp/d2/root --exec-root /tmp/d2/exec"
#
# Why the daemon.json handling: dockerd REFUSES to start when a directive is
# given both as a flag and in /etc/docker/daemon.json ("the following
# directives are specified both as a flag and in the configuration file:
# storage-driver: (from flag: vfs, from file: fuse-overlayfs)"). So every
# default flag below is only added when daemon.json does not set that key.

ensure_docker() {
    local log="${ENSURE_DOCKER_LOG:-/var/log/flocks-dockerd.log}"
    local pidfile="${ENSURE_DOCKER_PIDFILE:-/var/run/flocks-dockerd.pid}"
    local timeout="${ENSURE_DOCKER_TIMEOUT:-60}"
    local conf="${ENSURE_DOCKER_CONFIG:-/etc/docker/daemon.json}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"

    local probe=(docker)
    [ -n "${ENSURE_DOCKER_HOST:-}" ] && probe=(docker -H "$ENSURE_DOCKER_HOST")
    if "${probe[@]}" info >/dev/null 2>&1; then
        return 0
    fi

    if ! command -v dockerd >/dev/null 2>&1; then
        echo "ensure-docker: dockerd missing, installing docker.io" >&2
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq || return 1
        $sudo apt-get install -y -qq --no-install-recommends docker.io >&2 || return 1
    fi
    # The client may be missing too (docker.io ships both, but be defensive).
    command -v docker >/dev/null 2>&1 || {
        echo "ensure-docker: no docker client" >&2; return 1; }

    # A stale pidfile from a dead dockerd makes dockerd refuse to start.
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
        $sudo rm -f "$pidfile"
    fi
    if [ -f "$pidfile" ]; then
        echo "ensure-docker: dockerd already running (pid $(cat "$pidfile")), waiting" >&2
    else
        local -a args=(--pidfile "$pidfile")
        [ "$conf" = /etc/docker/daemon.json ] || args+=(--config-file "$conf")
        # key_in_conf KEY: true when daemon.json sets KEY
        key_in_conf() { [ -f "$conf" ] && grep -q "\"$1\"" "$conf"; }
        key_in_conf storage-driver || args+=(--storage-driver=vfs)
        key_in_conf iptables       || args+=(--iptables=false)
        key_in_conf bridge         || args+=(--bridge=none)
        if [ -n "${ENSURE_DOCKER_HOST:-}" ]; then
            key_in_conf hosts && { echo "ensure-docker: daemon.json sets hosts; ignoring ENSURE_DOCKER_HOST" >&2; } \
                              || args+=(-H "$ENSURE_DOCKER_HOST")
        fi
        # shellcheck disable=SC2206
        [ -n "${ENSURE_DOCKER_EXTRA:-}" ] && args+=(${ENSURE_DOCKER_EXTRA})
        echo "ensure-docker: starting dockerd ${args[*]} (log: $log)" >&2
        # setsid + nohup: survive the caller's shell / CI step ending.
        $sudo mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
        $sudo setsid nohup dockerd "${args[@]}" >>"$log" 2>&1 </dev/null &
    fi

    local i
    for ((i = 0; i < timeout; i++)); do
        if "${probe[@]}" info >/dev/null 2>&1; then
            echo "ensure-docker: engine up after ${i}s" >&2
            return 0
        fi
        sleep 1
    done
    echo "ensure-docker: dockerd did not answer within ${timeout}s; last log lines:" >&2
    tail -n 30 "$log" >&2 2>/dev/null
    return 1
}

# Run when executed, not when sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    ensure_docker
fi
