#!/usr/bin/env bash
# Self-test for tests/support/fake-claude: runs it in a throwaway git repo and
# checks the CLI contract, event shapes, git work, sessions and directives.
# Usage: tests/support/fake_claude_selftest.sh   (prints "N passed, M failed")
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FAKE="$HERE/fake-claude"
PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
ORPHANS=()
cleanup() {
    for p in "${ORPHANS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT

export FAKE_CLAUDE_HOME="$TMP/home"
export IS_SANDBOX=1          # we may be root; real claude refuses root without it
unset ANTHROPIC_API_KEY
REPO="$TMP/repo"
git init -q "$REPO"
git -C "$REPO" -c user.name=t -c user.email=t@example.invalid commit -q --allow-empty -m init

PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }
check() { local name="$1"; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

# run PROMPT [args...]: runs the fake in $REPO (or $CWD) with PROMPT on stdin;
# sets OUT, ERR, RC.  Default args: -p stream-json --verbose skip-permissions.
STD=(-p --output-format stream-json --verbose --dangerously-skip-permissions)
run() {
    local prompt="$1"; shift
    [ $# -eq 0 ] && set -- "${STD[@]}"
    (cd "${CWD:-$REPO}" && printf '%s' "$prompt" | "$FAKE" "$@" >"$TMP/out" 2>"$TMP/err")
    RC=$?
    OUT="$(cat "$TMP/out")"; ERR="$(cat "$TMP/err")"
}
# jq-less JSON probe: pyq 'python expr over L (list of parsed lines)' <<< "$OUT"
pyq() { "$PY" -c "import json,sys; L=[json.loads(l) for l in sys.stdin.read().splitlines()]; print($1)"; }
commits() { git -C "$REPO" rev-list --count HEAD; }

# --- default run commits -----------------------------------------------------
before=$(commits)
run "please do the thing"
check "default run exits 0" [ "$RC" -eq 0 ]
check "default run adds one commit" [ "$(commits)" -eq $((before + 1)) ]
check "default commit message" [ "$(git -C "$REPO" log -1 --format=%s)" = "fake: fake-output.txt" ]
check "fake-output.txt holds the prompt" [ "$(cat "$REPO/fake-output.txt")" = "please do the thing" ]
check "worktree clean after default run" [ -z "$(git -C "$REPO" status --porcelain)" ]

# --- every stream-json line parses; shapes ------------------------------------
if printf '%s\n' "$OUT" | while IFS= read -r line; do
        "$PY" -c 'import json,sys; json.loads(sys.argv[1])' "$line" || exit 1
    done; then ok "every stream-json line parses"; else bad "every stream-json line parses" "$OUT"; fi
check "first event is system/init" [ "$(pyq 'L[0]["type"]+"/"+L[0]["subtype"]+"/"+L[0]["permissionMode"]+"/"+L[0]["apiKeySource"]' <<<"$OUT")" = "system/init/bypassPermissions/none" ]
check "last event is success result" [ "$(pyq 'L[-1]["type"], L[-1]["subtype"], L[-1]["is_error"], L[-1]["terminal_reason"]' <<<"$OUT")" = "result success False completed" ]
check "num_turns counts assistant events" [ "$(pyq 'L[-1]["num_turns"] == sum(e["type"]=="assistant" for e in L) == 2' <<<"$OUT")" = True ]
check "tool_use is Bash git commit + tool_result" [ "$(pyq '[e["message"]["content"][0]["type"] for e in L[1:-1]]' <<<"$OUT")" = "['text', 'tool_use', 'tool_result']" ]
check "session ids consistent" [ "$(pyq 'len({e["session_id"] for e in L})' <<<"$OUT")" = 1 ]

# --- contract errors -----------------------------------------------------------
run "x" -p --output-format stream-json --dangerously-skip-permissions
check "missing --verbose exits 1" [ "$RC" -eq 1 ]
check "missing --verbose message" [ "$ERR" = "Error: When using --print, --output-format=stream-json requires --verbose" ]
run "x" -p --output-format=stream-json --verbose
check "missing --dangerously-skip-permissions fails" [ "$RC" -eq 1 -a -n "$ERR" -a -z "$OUT" ]
run "x" --output-format json --dangerously-skip-permissions
check "missing -p fails" [ "$RC" -eq 1 ]
if [ "$(id -u)" -eq 0 ]; then
    IS_SANDBOX=0 run "x"
    check "root without IS_SANDBOX=1 refused" [ "$RC" -eq 1 -a "$ERR" = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons" ]
fi
run "@fake frobnicate"
check "unknown directive exits 2 with no stdout" [ "$RC" -eq 2 -a -z "$OUT" -a -n "$ERR" ]
run $'@fake text before\n@fake tool Read {"unquoted":1}'
check "bad directive argument exits 2 before any output" [ "$RC" -eq 2 -a -z "$OUT" ]

# --- json output formats ----------------------------------------------------------
run "@fake text hi" -p --output-format json --dangerously-skip-permissions --model m1
check "json format prints one result line" [ "$(pyq 'len(L), L[0]["type"], L[0]["result"]' <<<"$OUT")" = "1 result hi" ]
run $'@fake json-array\n@fake text hi' -p --output-format json --dangerously-skip-permissions --model m1
check "json-array prints [init,...,result]" [ "$(pyq 'len(L), [e["type"] for e in L[0]], L[0][0]["model"]' <<<"$OUT")" = "1 ['system', 'assistant', 'result'] m1" ]

# --- sessions / --resume --------------------------------------------------------
run $'first prompt\n@fake text one'
SID1="$(pyq 'L[0]["session_id"]' <<<"$OUT")"
run "second" -p --output-format stream-json --verbose --dangerously-skip-permissions --resume does-not-exist
check "--resume unknown id fails" [ "$RC" -eq 1 -a -z "$OUT" -a "$ERR" = "No conversation found with session ID: does-not-exist" ]
run $'second prompt\n@fake session-prompts '"$TMP/sp.json" -p --output-format stream-json --verbose --dangerously-skip-permissions --resume "$SID1"
SID2="$(pyq 'L[0]["session_id"]' <<<"$OUT")"
check "--resume known id succeeds" [ "$RC" -eq 0 ]
check "resumed run has a new session id" [ -n "$SID2" -a "$SID2" != "$SID1" ]
check "resumed session carries both prompts" [ "$("$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(len(p), p[0].startswith("first"), p[1].startswith("second"))' "$TMP/sp.json")" = "2 True True" ]
check "session file written for new id" [ -f "$FAKE_CLAUDE_HOME/sessions/$SID2.json" ]
mkdir -p "$TMP/other"
CWD="$TMP/other" run "x" -p --output-format json --dangerously-skip-permissions -r "$SID1"
check "--resume from a different cwd fails" [ "$RC" -eq 1 -a -z "$OUT" -a "$ERR" = "No conversation found with session ID: $SID1" ]

# --- limits and errors -------------------------------------------------------------
run "@fake usage-limit 1760000000"
check "usage-limit exits 1" [ "$RC" -eq 1 ]
check "usage-limit result text" [ "$(pyq 'L[-1]["is_error"], L[-1]["result"]' <<<"$OUT")" = "True Claude AI usage limit reached|1760000000" ]
run "@fake rate-limit-event 1760000000"
check "rate-limit-event shape" [ "$(pyq 'L[1]["rate_limit_info"]["resetsAt"], L[-1]["api_error_status"], L[-1]["is_error"]' <<<"$OUT")" = "1760000000 429 True" ]
run "@fake max-turns"
check "max-turns result" [ "$RC" -eq 1 -a "$(pyq 'L[-1]["subtype"], L[-1]["terminal_reason"], "result" in L[-1]' <<<"$OUT")" = "error_max_turns max_turns False" ]
run "@fake assistant-error authentication_failed"
check "assistant-error sets top-level error" [ "$RC" -eq 1 -a "$(pyq 'L[1]["error"], L[-1]["is_error"]' <<<"$OUT")" = "authentication_failed True" ]
run $'@fake text partial\n@fake exit 7\n@fake text never'
check "exit CODE exits without a result" [ "$RC" -eq 7 -a "$(pyq 'L[-1]["type"]' <<<"$OUT")" = "assistant" ]
run '@fake tool-output "HTTP 429 in a log line"'
check "tool-output keeps success" [ "$RC" -eq 0 -a "$(pyq 'L[2]["message"]["content"][0]["content"]' <<<"$OUT")" = "HTTP 429 in a log line" ]

# --- write / record / env ------------------------------------------------------------
ANTHROPIC_API_KEY=sk-test FLOCKS_TASK=t1 run $'@fake write dirty/file.txt hello\n@fake record '"$TMP/rec.jsonl"$'\n@fake env FLOCKS_TASK '"$TMP/env.txt"
check "write leaves an uncommitted file" [ "$(git -C "$REPO" status --porcelain)" = "?? dirty/" ]
check "record logs argv/env" [ "$(pyq 'L[0]["env"]["ANTHROPIC_API_KEY"], L[0]["env"]["FLOCKS_TASK"], "-p" in L[0]["argv"]' <"$TMP/rec.jsonl")" = "sk-test t1 True" ]
check "env writes variable value" [ "$(cat "$TMP/env.txt")" = "t1" ]
rm -rf "$REPO/dirty"

# --- orphan in its own session -------------------------------------------------------
run "@fake orphan $TMP/orphan.pid"
OPID="$(cat "$TMP/orphan.pid" 2>/dev/null)"
[ -n "$OPID" ] && ORPHANS+=("$OPID")
sess_of() { "$PY" -c 'import sys; s=open("/proc/%s/stat" % sys.argv[1]).read(); print(s.rsplit(")",1)[1].split()[3])' "$1"; }
check "orphan run exits 0" [ "$RC" -eq 0 ]
check "orphan process is alive" [ -n "$OPID" -a -d "/proc/${OPID:-none}" ]
check "orphan is in a different session" [ -n "$OPID" -a "$(sess_of "$OPID" 2>/dev/null)" != "$(sess_of $$)" -a "$(sess_of "$OPID" 2>/dev/null)" = "$OPID" ]

# --- append, if-exists -----------------------------------------------------------------
run "@fake append notes.txt one"
run "@fake append notes.txt two"
check "append adds a line and commits" [ "$(git -C "$REPO" show HEAD:notes.txt)" = "$(printf 'one\ntwo')" ]
run "@fake if-exists $TMP/nope fail
@fake text fine"
check "if-exists skips when absent" [ "$RC" -eq 0 ]
touch "$TMP/yes"
run "@fake if-exists $TMP/yes fail"
check "if-exists runs when present" [ "$RC" -eq 1 ]


# --- remove ----------------------------------------------------------------------------
run "@fake remove notes.txt"
check "remove deletes the file and commits" [ "$RC" -eq 0 -a ! -e "$REPO/notes.txt" -a "$(git -C "$REPO" log -1 --format=%s)" = "fake: remove notes.txt" ]

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
