#!/usr/bin/env bash
# The flocks demo, end to end and without credentials: a fresh example repo,
# five tasks for a demo agent that makes real commits, `flocks run`,
# `flocks status`, `flocks land -y`, and the resulting history.
#
#   examples/demo.sh            # builds flocks, runs the demo in a temp dir
#   KEEP=1 examples/demo.sh     # keep the demo repo to look around
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

echo "== building flocks"
# Ask cargo where the binary is: CARGO_TARGET_DIR, a config's target-dir
# and the build profile all move it.
flocks=$(cargo build --quiet --manifest-path "$root/Cargo.toml" --bin flocks \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\/flocks\)".*/\1/p' | tail -n 1)
if [ ! -x "$flocks" ]; then
  echo "demo: cargo built flocks but did not say where it is" >&2
  exit 1
fi
echo "   $flocks"

demo=$(mktemp -d "${TMPDIR:-/tmp}/flocks-demo.XXXXXX")
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$demo"' EXIT
repo="$demo/repo"
mkdir -p "$repo" && cd "$repo"
git init -q -b main
git config user.name "Demo User"
git config user.email "demo@example.invalid"
printf '# demo project\n' > README.md
git add README.md && git commit -q -m "initial commit"

cat > flocks.toml <<TOML
max_agents = 3
agent_timeout_secs = 60

[agent]
command = "$here/demo-agent"

[[containers]]
name = "local"
backend = "local"
max_worktrees = 3

[validate]
commands = ["test -f docs/intro.md"]
TOML
cat > tasks.jsonl <<'JSONL'
{"id": "intro", "prompt": "Write an introduction in docs/intro.md", "title": "Introduction"}
{"id": "usage", "prompt": "Describe usage in docs/usage.md", "depends_on": ["intro"]}
{"id": "faq", "prompt": "Collect questions in docs/faq.md"}
{"id": "changelog", "prompt": "Start a changelog in CHANGES.md"}
{"id": "credits", "prompt": "Thank contributors in CREDITS.md", "depends_on": ["faq"]}
JSONL

echo "== flocks run (in $repo)"
"$flocks" run --no-progress
echo
echo "== flocks status"
"$flocks" status
echo
echo "== flocks land -y"
"$flocks" land -y
echo
echo "== git log main"
git log --oneline --format='%h %s%n        %(trailers:key=Flocks-Task,separator=%x2C )' main
if [ "${KEEP:-}" = 1 ]; then
  echo "demo repo kept at $repo"
fi
