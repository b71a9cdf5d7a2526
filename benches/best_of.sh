#!/bin/bash
# Best of N against separate runs: the wall time of one `flocks run` of a
# best-of-3 task against three `flocks run`s of the same task one after the
# other, on the same 3 slots, with the fake agent sleeping 5 s and committing.
# Usage: benches/best_of.sh [path/to/flocks]   (default: target/debug/flocks)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flocks=${1:-$root/target/debug/flocks}
fake=$root/tests/support/fake-claude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME=$work/state FAKE_CLAUDE_HOME=$work/fake

project() { # name, top-level flocks.toml line
  local d=$work/$1
  mkdir -p "$d" && cd "$d"
  git init -q -b main
  git config user.name bench && git config user.email bench@example.com
  git commit -q --allow-empty -m init
  printf 'max_agents = 3\n%s\n[validate]\ncommands = ["true"]\n[[containers]]\nname = "local"\nmax_worktrees = 3\n[agent]\ncommand = "%s"\n' \
    "$2" "$fake" > flocks.toml
  printf '{"id":"t","prompt":"@fake sleep 5\\n@fake commit out.txt"}\n' > tasks.jsonl
}
seconds() { date +%s.%N; }

project best "best_of = 3"
start=$(seconds)
"$flocks" run > /dev/null
echo "best-of-3, one run:      $(echo "$(seconds) - $start" | bc) s"

for i in 1 2 3; do project "sep$i" ""; done
start=$(seconds)
for i in 1 2 3; do (cd "$work/sep$i" && "$flocks" run > /dev/null); done
echo "three separate runs:     $(echo "$(seconds) - $start" | bc) s"
