#!/bin/bash
# What `sandbox = "bwrap"` costs per attempt, against `sandbox = "none"`,
# measured side by side in one run: rounds alternate between two projects
# (same repository content, same fake agent committing one file, one slot),
# and each round's wall time is divided by its tasks. Then a bigger
# repository, side by side: the first attempt (with bwrap, it builds the
# shared read-only base), the next ones (base up to date: only what the base
# lacks is sent; but a new task checks its worktree out in full, while an
# unsandboxed pool reuses a spare worktree and writes only what differs),
# and what sending the whole history into each task's repository would
# take instead of the base.
#
# Usage: benches/sandbox.sh [path/to/flocks]   (default: target/release/flocks,
#        else target/debug/flocks)
#        ROUNDS=4 TASKS=8 BIG_FILES=4000 BIG_COMMITS=100 benches/sandbox.sh
# Needs bwrap, git, python3, bc. Say the machine's load when you quote it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flocks=${1:-}
if [ -z "$flocks" ]; then
  flocks=$root/target/release/flocks
  [ -x "$flocks" ] || flocks=$root/target/debug/flocks
fi
fake=$root/tests/support/fake-claude
rounds=${ROUNDS:-4}
tasks=${TASKS:-8}
big_files=${BIG_FILES:-4000}
big_commits=${BIG_COMMITS:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME=$work/state HOME=$work/home
mkdir -p "$HOME"
unset FAKE_CLAUDE_HOME

seconds() { date +%s.%N; }
per() { echo "scale=3; ($1) / $2" | bc; }

project() { # dir, sandbox
  mkdir -p "$1" && cd "$1"
  if [ ! -d .git ]; then
    git init -q -b main
    git config user.name bench && git config user.email bench@example.com
    echo bench > README.md && git add README.md && git commit -q -m init
  fi
  printf 'max_agents = 1\n[[containers]]\nname = "p"\nmax_worktrees = 1\nsandbox = "%s"\n[agent]\ncommand = "%s"\n' \
    "$2" "$fake" > flocks.toml
}

tasks_file() { # round, n
  : > tasks.jsonl
  for i in $(seq 1 "$2"); do
    printf '{"id":"r%s-%s","prompt":"@fake commit out-%s.txt"}\n' "$1" "$i" "$i" >> tasks.jsonl
  done
}

echo "flocks: $flocks"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo
echo "== per attempt, $rounds rounds of $tasks tasks (one slot), alternating"
total_none=0 total_bwrap=0
for r in $(seq 1 "$rounds"); do
  for mode in none bwrap; do
    project "$work/$mode" "$mode"
    tasks_file "$r" "$tasks"
    start=$(seconds)
    "$flocks" run > /dev/null
    took=$(echo "$(seconds) - $start" | bc)
    printf '  round %s %-5s %6.2f s (%s s per attempt)\n' "$r" "$mode" "$took" "$(per "$took" "$tasks")"
    if [ "$mode" = none ]; then total_none=$(echo "$total_none + $took" | bc); else total_bwrap=$(echo "$total_bwrap + $took" | bc); fi
  done
done
n=$((rounds * tasks))
a=$(per "$total_none" "$n")
b=$(per "$total_bwrap" "$n")
echo "  none:  $a s per attempt"
echo "  bwrap: $b s per attempt"
echo "  extra: $(echo "$b - $a" | bc) s per attempt"

echo
echo "== a bigger repository: $big_files files of 4 KiB (random), $big_commits commits"
big=$work/big-none
mkdir -p "$big" && cd "$big"
git init -q -b main
git config user.name bench && git config user.email bench@example.com
python3 - "$big_files" "$big_commits" <<'PY' | git fast-import --quiet
import os, sys
files, commits = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
def blob(data):
    out.write(b"data %d\n" % len(data) + data + b"\n")
for c in range(commits):
    out.write(b"commit refs/heads/main\ncommitter bench <b@e.x> %d +0000\n" % (1700000000 + c))
    msg = b"commit %d" % c
    out.write(b"data %d\n%s\n" % (len(msg), msg))
    n = files if c == 0 else max(1, files // 50)
    for i in range(n):
        k = i if c == 0 else (c * 37 + i * 11) % files
        out.write(b"M 100644 inline f/%05d\n" % k)
        blob(os.urandom(4096))
PY
git checkout -q main
echo "  history: $(du -sh .git | cut -f1)"
cp -a "$big" "$work/big-bwrap"
for mode in none bwrap; do
  printf 'max_agents = 1\n[[containers]]\nname = "p"\nmax_worktrees = 1\nsandbox = "%s"\n[agent]\ncommand = "%s"\n' \
    "$mode" "$fake" > "$work/big-$mode/flocks.toml"
done
# Side by side: the first attempt of each, then the next two. Before each,
# the packs are read once, so that a cold page cache (on a busy machine's
# disk) does not count as flocks' time.
warm() { cat "$work"/big-*/.git/objects/pack/* "$XDG_STATE_HOME"/flocks/*/sandbox/base.git/objects/pack/* > /dev/null 2>&1 || true; }
for step in 1 2 3; do
  for mode in none bwrap; do
    cd "$work/big-$mode"
    warm
    : > tasks.jsonl
    for i in $(seq 1 "$step"); do
      printf '{"id":"b%s","prompt":"@fake commit out.txt"}\n' "$i" >> tasks.jsonl
    done
    start=$(seconds)
    "$flocks" run > /dev/null
    took=$(echo "$(seconds) - $start" | bc)
    what="next attempt"
    [ "$step" = 1 ] && what="first attempt"
    [ "$step" = 1 ] && [ "$mode" = bwrap ] && what="first attempt (builds the base)"
    printf '  %-5s %s: %s s\n' "$mode" "$what" "$took"
  done
done
tasks_dir=$(echo "$XDG_STATE_HOME"/flocks/*/sandbox/tasks/b3)
base=$(dirname "$(dirname "$tasks_dir")")/base.git
echo "  the base: $(du -sh "$base" | cut -f1); a task's own repository: $(du -sh "$tasks_dir/work/mirror.git" | cut -f1)"
cd "$work/big-none"
start=$(seconds)
git bundle create -q "$work/all.bundle" main
git init -q --bare "$work/whole.git"
git -C "$work/whole.git" fetch -q "$work/all.bundle" 'refs/heads/main:refs/heads/main'
echo "  without the base, each task's repository would receive the whole history: $(echo "$(seconds) - $start" | bc) s (a $(du -sh "$work/all.bundle" | cut -f1) bundle)"
