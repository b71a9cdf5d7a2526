#!/bin/bash
# Docker clone mode against mount mode, side by side in one run: the extra
# time per attempt of `workspace = "clone"` (objects in as a bundle, the
# branch back through the intake) over `workspace = "mount"` (a worktree on
# the host, seen through the mount, under the .git guard).
#
# Two projects, the same repository (FILES files, ~20 KB each, one commit),
# run at the same time so that both see the same machine: one with a
# `mount` pool (a container that mounts the repo), one with a `clone` pool
# (one that does not); one slot each, N tasks each whose fake agent commits
# one file. Per pool: the first attempt (clone mode sends the whole history
# then), and the mean of the others, of the attempt's wall time (prepare to
# finish, from state.json) and of the agent's own time (its result's
# duration_ms); the overhead is the difference.
#
# Needs a Docker Engine and the tests' image (built here by
# tests/support/docker/make-test-image.sh: it bind-mounts the host's /usr).
# Usage: benches/clone_vs_mount.sh [path/to/flocks]   (default: target/debug/flocks)
#        N=10 FILES=500 benches/clone_vs_mount.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flocks=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/flocks}
fake=$root/tests/support/fake-claude
n=${N:-10}
files=${FILES:-500}
image=flocks-test-base:latest
bash "$root/tests/support/docker/make-test-image.sh" 2>/dev/null
work=$(mktemp -d)
ctrs=()
cleanup() {
  for c in "${ctrs[@]}"; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export XDG_STATE_HOME=$work/state FAKE_CLAUDE_HOME=$work/fake

mkdir "$work/src"
for i in $(seq "$files"); do head -c 15000 /dev/urandom | base64 > "$work/src/f$i.txt"; done
make_repo() {
  mkdir -p "$1" && cd "$1"
  git init -q -b main
  git config user.name bench && git config user.email bench@example.com
  cp -r "$work/src" src
  git add src && git commit -q -m init
}
make_repo "$work/mount"
make_repo "$work/clone"
# The agents run as the repo's owner: uid 1000 (the image's user) when the
# bench runs as root.
if [ "$(id -u)" = 0 ]; then
  chown -R 1000:1000 "$work/mount" "$work/clone"
  user=1000:1000
  # root on a repo that belongs to someone else: git needs this.
  mkdir -p "$work/home" && printf '[safe]\n\tdirectory = *\n' > "$work/home/.gitconfig"
  export HOME=$work/home
else
  user=$(id -u):$(id -g)
fi

start_ctr() { # name, extra docker run args...
  local name=$1
  shift
  docker run -d --name "$name" --network none -v /usr:/usr:ro -v "$fake:$fake:ro" \
    "$@" --entrypoint /bin/sh "$image" -c 'trap "exit 0" 15; while sleep 1 & wait $!; do :; done' >/dev/null
  ctrs+=("$name")
}
tag=flocks-bench-$$
start_ctr "$tag-mount" -v "$work/mount:/workspace"
start_ctr "$tag-clone"

for mode in mount clone; do
  printf '%s\n' \
    'max_agents = 1' 'kill_grace_secs = 1' '' '[[containers]]' \
    "name = \"$mode\"" 'backend = "docker"' "workspace = \"$mode\"" \
    "container = \"$tag-$mode\"" "user = \"$user\"" \
    'env = { FAKE_CLAUDE_HOME = "/tmp/fake" }' '' '[agent]' "command = \"$fake\"" \
    > "$work/$mode/flocks.toml"
  for i in $(seq "$n"); do
    printf '{"id":"t%d","prompt":"@fake commit out%d.txt"}\n' "$i" "$i"
  done > "$work/$mode/tasks.jsonl"
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (before)"
(cd "$work/mount" && "$flocks" run --no-progress > "$work/mount.log" 2>&1) &
m=$!
(cd "$work/clone" && "$flocks" run --no-progress > "$work/clone.log" 2>&1) &
c=$!
wait $m || { cat "$work/mount.log"; exit 1; }
wait $c || { cat "$work/clone.log"; exit 1; }
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) (after)"

python3 - "$work/mount/.flocks/state.json" "$work/clone/.flocks/state.json" <<'PY'
import json, sys
from datetime import datetime

def when(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))

per = {}
for path in sys.argv[1:]:
    for t in json.load(open(path))["tasks"]:
        for a in t["attempts"]:
            wall = (when(a["ended_at"]) - when(a["started_at"])).total_seconds()
            agent = ((a.get("result") or {}).get("duration_ms") or 0) / 1000
            per.setdefault(a["pool"], []).append((when(a["started_at"]), wall, agent))

def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")

rows = {}
for pool in ("mount", "clone"):
    runs = sorted(per.get(pool, []))
    rest = runs[1:]
    rows[pool] = (len(runs), runs[0][1], mean([r[1] for r in rest]), mean([r[2] for r in rest]))
print(f"{'pool':<6} {'attempts':>8} {'first':>8} {'mean wall':>10} {'mean agent':>11} {'overhead':>9}")
for pool, (k, first, wall, agent) in rows.items():
    print(f"{pool:<6} {k:>8} {first:>7.2f}s {wall:>9.2f}s {agent:>10.2f}s {wall - agent:>8.2f}s")
extra = (rows["clone"][2] - rows["clone"][3]) - (rows["mount"][2] - rows["mount"][3])
print(f"clone mode's extra time per attempt (after the first): {extra:+.2f}s")
print(f"clone mode's first attempt (the whole history sent): {rows['clone'][1] - rows['mount'][1]:+.2f}s over mount's")
PY
