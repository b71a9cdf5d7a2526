#!/usr/bin/env bash
# The Slurm pool, end to end, on a cluster that runs on this machine
# (.ci/ensure-slurm.sh makes one: munged, slurmctld, slurmd): `hosts check`,
# the dry run, four tasks for the demo agent as two jobs at a time, each
# job's id, node, state, run time and wait from `status --json`, and
# `flocks land`.
#
#   examples/slurm/demo.sh          # builds flocks, runs in a temp dir
#   KEEP=1 examples/slurm/demo.sh   # keep the demo repo to look around
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
sinfo -h >/dev/null 2>&1 || { echo "demo: no Slurm cluster answers: run .ci/ensure-slurm.sh" >&2; exit 1; }

flocks=$(cargo build --quiet --manifest-path "$root/Cargo.toml" --bin flocks \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\/flocks\)".*/\1/p' | tail -n 1)
[ -x "$flocks" ] || { echo "demo: cargo built flocks but did not say where it is" >&2; exit 1; }

demo=$(mktemp -d "${TMPDIR:-/tmp}/flocks-slurm-demo.XXXXXX")
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$demo"' EXIT
repo="$demo/repo"
mkdir -p "$repo" && cd "$repo"
git init -q -b main
git config user.name "Demo User"
git config user.email "demo@example.invalid"
printf '# demo project\n' > README.md
git add README.md && git commit -q -m "initial commit"
partition=$(sinfo -h -o '%P' | sed -n 's/\*$//p' | head -n 1)

cat > flocks.toml <<TOML
agent_timeout_secs = 120
kill_grace_secs = 2

[agent]
command = "$root/examples/demo-agent"

[[containers]]
name = "cluster"
backend = "slurm"
partition = "$partition"
remote_dir = "$demo/shared"
max_worktrees = 2
TOML
cat > tasks.jsonl <<'JSONL'
{"id": "intro", "prompt": "Write an introduction in docs/intro.md"}
{"id": "usage", "prompt": "Describe usage in docs/usage.md"}
{"id": "faq", "prompt": "Collect questions in docs/faq.md"}
{"id": "credits", "prompt": "Thank contributors in CREDITS.md"}
JSONL

echo "== flocks hosts check"
"$flocks" hosts check
echo
echo "== flocks run --dry-run"
"$flocks" run --dry-run | tail -n 3
echo
echo "== flocks run (in $repo)"
"$flocks" run --no-progress
echo
echo "== the jobs (flocks status --json)"
"$flocks" status --json | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tasks"]:
    j = t["job"] or {}
    print("%-8s Slurm job %s on %s: %s, ran %ss, waited %.1fs" % (
        t["id"], j.get("id"), j.get("node"), j.get("state"),
        j.get("elapsed_secs"), t["pending_secs"] or 0))'
echo
echo "== flocks land -y"
"$flocks" land -y
git log --oneline main
[ "${KEEP:-}" != 1 ] || echo "demo repo kept at $repo"
